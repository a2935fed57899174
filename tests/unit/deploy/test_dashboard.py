"""deploy/signoz: the dashboard JSON is what its generator writes, its panels resolve, and every
gateway metric it reads is one the gateway emits: semconv.METRICS, which a test holds to the
instruments created (vllm:* names: tests/integration)."""

from __future__ import annotations

import importlib.util
import json

from mistral_serve.telemetry import semconv

from .conftest import DEPLOY

SIGNOZ = DEPLOY / "signoz"
HISTOGRAM_SERIES = (".bucket", ".count", ".sum")


def generator():
    spec = importlib.util.spec_from_file_location("make_dashboard", SIGNOZ / "make_dashboard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dashboard_metrics(dashboard: dict) -> set[str]:
    return {
        aggregation["metricName"]
        for panel in dashboard["spec"]["panels"].values()
        for query in panel["spec"]["queries"]
        for built in query["spec"]["plugin"]["spec"]["queries"]
        if built["type"] == "builder_query"
        for aggregation in built["spec"]["aggregations"]
    }


def test_the_json_is_what_the_generator_writes():
    assert (SIGNOZ / "mistral-serve-dashboard.json").read_text() == generator().render()


def test_every_layout_item_points_at_a_panel():
    dashboard = json.loads((SIGNOZ / "mistral-serve-dashboard.json").read_text())
    refs = {
        item["content"]["$ref"].removeprefix("#/spec/panels/")
        for layout in dashboard["spec"]["layouts"]
        for item in layout["spec"]["items"]
    }
    assert refs == set(dashboard["spec"]["panels"])


def test_gateway_metrics_on_the_dashboard_are_ones_the_gateway_emits():
    dashboard = json.loads((SIGNOZ / "mistral-serve-dashboard.json").read_text())
    read = dashboard_metrics(dashboard)
    ours = set()
    for metric in read:
        if metric.startswith("vllm:"):
            continue
        base = metric
        for suffix in HISTOGRAM_SERIES:
            base = base.removesuffix(suffix)
        assert base in semconv.METRICS, metric
        ours.add(base)
    assert ours and any(metric.startswith("vllm:") for metric in read)  # it reads both kinds
