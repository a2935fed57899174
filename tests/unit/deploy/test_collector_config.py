"""config/otel-collector-config.yaml: parsed, its ${env:…} references resolved the way the
collector resolves them, and every pipeline wired to components that exist."""

from __future__ import annotations

import re

import pytest
import yaml

from .conftest import REPO

CONFIG = REPO / "config" / "otel-collector-config.yaml"
ENV_REFERENCE = re.compile(r"\$\{env:([A-Z0-9_]+)(?::-([^}]*))?\}")


def load(env: dict[str, str]) -> dict:
    """The config as the collector sees it: env references expanded (unset, no default → "")."""
    text = ENV_REFERENCE.sub(lambda m: env.get(m.group(1), m.group(2) or ""), CONFIG.read_text())
    return yaml.safe_load(text)


@pytest.mark.parametrize(
    ("env", "exporter"),
    [({}, "otlp/signoz"), ({"SIGNOZ_EXPORTER": "otlp/signoz-cloud"}, "otlp/signoz-cloud")],
)
def test_every_pipeline_is_wired_to_defined_components(env, exporter):
    config = load(env)
    pipelines = config["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics", "logs"}
    for name, pipeline in pipelines.items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline[kind]:
                assert component in config[kind], f"{name}: {component} is not defined"
        assert pipeline["processors"][0] == "memory_limiter", "memory_limiter must come first"
        assert pipeline["processors"][-1] == "batch", "batch must come last"
        assert "resourcedetection" in pipeline["processors"]
        assert pipeline["exporters"] == [exporter]
    assert "otlp" in pipelines["traces"]["receivers"]
    assert "otlp" in pipelines["logs"]["receivers"]
    assert set(pipelines["metrics"]["receivers"]) == {"otlp", "prometheus/engines"}
    for extension in config["service"]["extensions"]:
        assert extension in config["extensions"]


def test_otlp_listens_on_both_standard_ports():
    protocols = load({})["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    assert protocols["http"]["endpoint"].endswith(":4318")


def test_engines_are_scraped_without_created_series():
    [job] = load({})["receivers"]["prometheus/engines"]["config"]["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    [dns] = job["dns_sd_configs"]
    assert dns == {"names": ["engines"], "type": "A", "port": 8000, "refresh_interval": "30s"}
    [drop] = job["metric_relabel_configs"]
    assert drop == {"source_labels": ["__name__"], "regex": ".*_created", "action": "drop"}
    assert re.fullmatch(drop["regex"], "vllm:request_success_created")


def test_signoz_cloud_gets_its_region_and_ingestion_key_from_the_environment():
    exporters = load({"SIGNOZ_CLOUD_REGION": "eu", "SIGNOZ_INGESTION_KEY": "k"})["exporters"]
    cloud = exporters["otlp/signoz-cloud"]
    assert cloud["endpoint"] == "ingest.eu.signoz.cloud:443"
    assert cloud["headers"] == {"signoz-ingestion-key": "k"}
    assert cloud["tls"]["insecure"] is False
    assert exporters["otlp/signoz"]["endpoint"] == "signoz-otel-collector:4317"
