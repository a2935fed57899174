"""docker-compose.yml, as `docker-compose config` (Debian's docker-compose) renders it with the
sample environment: the 2x H100 layouts, healthchecks, secrets and what is published."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from mistral_serve.config import Settings

from .conftest import REPO, VLLM_IMAGE, tool

ENGINES = {"engine-0", "engine-1", "engine-tp2", "engine-embed"}


def render(tmp_path: Path, **settings: str) -> dict:
    """The compose file with config/sample.env as .env, plus ``settings`` appended to it."""
    env_file = tmp_path / ".env"
    lines = [(REPO / "config" / "sample.env").read_text()]
    lines += [f"{key}={value}" for key, value in settings.items()]
    env_file.write_text("\n".join(lines) + "\n")
    clean = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}  # nothing leaks in from here
    result = subprocess.run(
        [tool("docker-compose"), "--env-file", str(env_file), "-f", "docker-compose.yml", "config"],
        cwd=REPO,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def compose(tmp_path_factory) -> dict:
    """The sample environment's rendering, shared: `docker-compose config` takes seconds."""
    return render(tmp_path_factory.mktemp("compose"))


def devices(service: dict) -> list[str]:
    [reservation] = service["deploy"]["resources"]["reservations"]["devices"]
    assert reservation["driver"] == "nvidia"
    assert reservation["capabilities"] == ["gpu"]
    return reservation["device_ids"]


def test_store_profile_offers_postgres_and_redis_to_the_gateway_only(compose):
    services = compose["services"]
    for name in ("postgres", "redis"):
        assert services[name]["profiles"] == ["store"]
        assert "ports" not in services[name]  # reached on the Compose network only
        assert services[name]["healthcheck"]["test"]
    gateway = services["gateway"]["environment"]
    assert {"DATABASE_URL", "REDIS_URL", "LIMITS_ON_STORE_ERROR"} <= set(gateway)


def test_sample_env_selects_two_tp1_engines_with_one_gpu_each(compose):
    sample = (REPO / "config" / "sample.env").read_text().splitlines()
    assert "COMPOSE_PROFILES=tp1" in sample
    services = compose["services"]
    assert set(services) == {"gateway", "otel-collector", "postgres", "redis", *ENGINES}
    for name, gpu in (("engine-0", "0"), ("engine-1", "1")):
        assert services[name]["profiles"] == ["tp1"]
        assert services[name]["environment"]["TENSOR_PARALLEL_SIZE"] == "1"
        assert devices(services[name]) == [gpu]


def test_tp2_is_one_engine_over_both_gpus(compose):
    engine = compose["services"]["engine-tp2"]
    assert engine["profiles"] == ["tp2"]
    assert engine["environment"]["TENSOR_PARALLEL_SIZE"] == "2"
    assert devices(engine) == ["0", "1"]
    # Tensor parallelism needs shared memory between the worker processes.
    assert engine["shm_size"] == "16gb"
    assert engine["ulimits"]["memlock"] == -1


def test_the_embed_profile_shares_gpu_0_with_a_chat_engine(compose):
    """An embedding engine beside the chat engine on GPU 0, found by the gateway under the same
    name as every engine; their shares of the GPU fit together."""
    embed = compose["services"]["engine-embed"]
    assert embed["profiles"] == ["embed"] and devices(embed) == ["0"]
    environment = embed["environment"]
    assert environment["ENGINE_EXTRA_ARGS"] == "--runner pooling"
    assert environment["MODEL_ID"] == "intfloat/e5-mistral-7b-instruct"
    assert environment["MAX_MODEL_LEN"] == "4096"
    assert embed["networks"]["default"]["aliases"] == ["engines"]
    assert environment["GPU_MEMORY_UTILIZATION"] == "0.25"


def test_only_the_gateway_is_published(compose):
    services = compose["services"]
    assert [port["target"] for port in services["gateway"]["ports"]] == [8000]
    assert [name for name, service in services.items() if service.get("ports")] == ["gateway"]
    assert all("expose" not in service for service in services.values())


def test_healthchecks_restarts_and_healthy_dependencies_everywhere(compose):
    for name, service in compose["services"].items():
        assert service["healthcheck"]["test"][0] == "CMD", name
        assert service["restart"] == "unless-stopped", name
        for dependency in service.get("depends_on", {}).values():
            assert dependency == {"condition": "service_healthy"}, name
    assert compose["services"]["gateway"]["healthcheck"]["test"] == [
        "CMD", "mistral-serve", "healthcheck"
    ]  # fmt: skip
    assert "otel-collector" in compose["services"]["gateway"]["depends_on"]


def test_engines_run_the_tested_vllm_image_with_the_shared_model_cache(compose):
    for name in ENGINES:
        engine = compose["services"][name]
        # The engine image: the tested official vLLM image with the project's vLLM plugin.
        assert engine["image"] == "mistral-serve-engine:0.1.0"
        assert engine["build"]["target"] == "engine"
        assert engine["build"]["args"]["VLLM_VERSION"] == VLLM_IMAGE.split(":")[1]
        assert engine["environment"]["ENGINE_PATCHES"] == "on"
        assert "model-cache:/cache:rw" in engine["volumes"]
        assert engine["environment"]["HF_HOME"] == "/cache/huggingface"
        assert engine["entrypoint"] == ["sh", "/opt/mistral-serve/vllm-engine.sh"]
    assert "model-cache" in compose["volumes"]


def test_the_gateway_and_collector_find_every_engine_by_one_name(compose):
    services = compose["services"]
    for name in ENGINES:
        assert services[name]["networks"]["default"]["aliases"] == ["engines"]
    assert services["gateway"]["environment"]["ENGINE_URLS"] == "dns://engines:8000"
    assert services["otel-collector"]["environment"]["ENGINE_METRICS_DNS_NAME"] == "engines"


def test_the_gateway_environment_is_valid_settings(compose):
    environment = compose["services"]["gateway"]["environment"]
    settings = Settings(_env_file=None, **{key.lower(): v for key, v in environment.items()})
    assert settings.engine_urls == ["dns://engines:8000"]
    assert settings.telemetry_enabled


def test_the_hub_token_reaches_the_engines_only_and_is_never_built_in(tmp_path):
    compose = render(tmp_path, HUGGING_FACE_HUB_TOKEN="hf_compose_secret")
    for name, service in compose["services"].items():
        has_token = "hf_compose_secret" in yaml.safe_dump(service)
        assert has_token == (name in ENGINES), name
        assert "hf_compose_secret" not in yaml.safe_dump(service.get("build", {}))
    assert "HUGGING_FACE_HUB_TOKEN" not in (REPO / "deploy" / "Dockerfile").read_text()


def test_signoz_cloud_is_chosen_from_env(tmp_path):
    compose = render(
        tmp_path,
        SIGNOZ_EXPORTER="otlp/signoz-cloud",
        SIGNOZ_CLOUD_REGION="eu",
        SIGNOZ_INGESTION_KEY="cloud_key",
    )
    collector = compose["services"]["otel-collector"]["environment"]
    assert collector["SIGNOZ_EXPORTER"] == "otlp/signoz-cloud"
    assert collector["SIGNOZ_CLOUD_REGION"] == "eu"
    assert collector["SIGNOZ_INGESTION_KEY"] == "cloud_key"
    gateway = compose["services"]["gateway"]
    assert "cloud_key" not in yaml.safe_dump(gateway)  # the key stays with the collector
