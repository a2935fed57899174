"""deploy/kubernetes: both overlays render with `kubectl kustomize`, every object passes
kubernetes-validate in strict mode, and the objects fit together (selectors, probes, GPUs,
the engines' headless Service behind ENGINE_URLS)."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import pytest
import yaml

from mistral_serve.config import Settings

from .conftest import KUBERNETES, REPO, tool

OVERLAYS = ("tp1", "tp2", "tp1-embeddings", "tp1-shared-files")


@functools.cache
def render(overlay: str) -> str:
    result = subprocess.run(
        [tool("kubectl"), "kustomize", str(KUBERNETES / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def objects(overlay: str) -> dict[tuple[str, str], dict]:
    """(kind, name without kustomize's hash suffix) → object."""
    found = {}
    for doc in yaml.safe_load_all(render(overlay)):
        name = doc["metadata"]["name"]
        if doc["kind"] in ("ConfigMap", "Secret"):
            name = name.rsplit("-", 1)[0]
        found[(doc["kind"], name)] = doc
    return found


def validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--quiet", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_passes_strict_validation(overlay, tmp_path):
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(render(overlay))
    result = validate(rendered)
    assert result.returncode == 0, result.stdout + result.stderr


def test_strict_validation_can_fail(tmp_path):
    # The check above means something: a misspelt field is refused.
    docs = list(yaml.safe_load_all(render("tp1")))
    statefulset = next(doc for doc in docs if doc["kind"] == "StatefulSet")
    statefulset["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    rendered = tmp_path / "typo.yaml"
    rendered.write_text(yaml.safe_dump(statefulset))
    assert validate(rendered).returncode != 0


def engine_container(found: dict) -> dict:
    [container] = found[("StatefulSet", "mistral-serve-engine")]["spec"]["template"]["spec"][
        "containers"
    ]
    return container


@pytest.mark.parametrize(("overlay", "gpus", "replicas"), [("tp1", "1", 2), ("tp2", "2", 1)])
def test_each_engine_asks_for_its_tensor_parallel_share_of_gpus(overlay, gpus, replicas):
    found = objects(overlay)
    statefulset = found[("StatefulSet", "mistral-serve-engine")]
    assert statefulset["spec"]["replicas"] == replicas
    container = engine_container(found)
    assert container["resources"]["requests"]["nvidia.com/gpu"] == gpus
    assert container["resources"]["limits"]["nvidia.com/gpu"] == gpus
    settings = found[("ConfigMap", "mistral-serve-settings")]["data"]
    assert settings["TENSOR_PARALLEL_SIZE"] == gpus


def test_engines_load_weights_under_a_startup_probe_then_are_watched():
    container = engine_container(objects("tp1"))
    assert container["image"] == "mistral-serve-engine:0.1.0"  # deploy/Dockerfile's engine
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/health"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 1800  # 30 min to load
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert mounts["dshm"] == "/dev/shm"
    assert mounts["model-cache"] == "/cache"


def test_engines_keep_a_model_cache_volume_and_leave_one_at_a_time():
    found = objects("tp1")
    [claim] = found[("StatefulSet", "mistral-serve-engine")]["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "model-cache"
    budget = found[("PodDisruptionBudget", "mistral-serve-engine")]
    assert budget["spec"]["maxUnavailable"] == 1
    labels = found[("StatefulSet", "mistral-serve-engine")]["spec"]["template"]["metadata"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels["labels"].items()


def test_the_gateway_finds_engines_through_the_headless_service():
    found = objects("tp1")
    headless = found[("Service", "mistral-serve-engines")]
    assert headless["spec"]["clusterIP"] == "None"
    assert found[("StatefulSet", "mistral-serve-engine")]["spec"]["serviceName"] == (
        "mistral-serve-engines"
    )
    data = found[("ConfigMap", "mistral-serve-settings")]["data"]
    [port] = headless["spec"]["ports"]
    assert data["ENGINE_URLS"] == f"dns://mistral-serve-engines:{port['port']}"
    assert data["ENGINE_METRICS_DNS_NAME"] == "mistral-serve-engines"
    # Every setting the gateway reads from the ConfigMap is valid.
    settings = Settings(_env_file=None, **{key.lower(): value for key, value in data.items()})
    assert settings.engine_urls == ["dns://mistral-serve-engines:8000"]


def test_the_gateway_scales_and_serves_behind_a_service():
    found = objects("tp1")
    gateway = found[("Deployment", "mistral-serve-gateway")]
    [container] = gateway["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["gateway"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert gateway["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    hpa = found[("HorizontalPodAutoscaler", "mistral-serve-gateway")]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "mistral-serve-gateway"
    assert hpa["spec"]["minReplicas"] >= 2
    service = found[("Service", "mistral-serve")]
    assert service["spec"]["selector"] == gateway["spec"]["selector"]["matchLabels"]


def test_the_hub_token_comes_from_the_secret():
    found = objects("tp1")
    assert "HUGGING_FACE_HUB_TOKEN" in found[("Secret", "mistral-serve-secrets")]["data"]
    assert "HUGGING_FACE_HUB_TOKEN" not in found[("ConfigMap", "mistral-serve-settings")]["data"]
    env = {item["name"]: item for item in engine_container(found)["env"]}
    reference = env["HUGGING_FACE_HUB_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert reference["name"].startswith("mistral-serve-secrets-")  # kustomize's hashed name


def test_the_collector_runs_the_project_config_and_the_engines_the_project_script():
    found = objects("tp1")
    collector = found[("ConfigMap", "mistral-serve-otel-collector")]["data"]
    assert (
        collector["otel-collector-config.yaml"]
        == (REPO / "config" / "otel-collector-config.yaml").read_text()
    )
    script = found[("ConfigMap", "mistral-serve-engine-script")]["data"]
    assert script["vllm-engine.sh"] == (KUBERNETES / "base" / "vllm-engine.sh").read_text()
    deployment = found[("Deployment", "mistral-serve-otel-collector")]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["port"] == "health"


def test_the_embeddings_component_adds_an_embedding_engine_the_gateway_finds():
    found = objects("tp1-embeddings")
    statefulset = found[("StatefulSet", "mistral-serve-embed-engine")]
    [container] = statefulset["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["ENGINE_EXTRA_ARGS"] == "--runner pooling"
    assert env["MODEL_ID"] == "intfloat/e5-mistral-7b-instruct"
    assert container["image"] == "mistral-serve-engine:0.1.0"
    service = found[("Service", "mistral-serve-embed-engines")]
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= labels.items()
    settings = found[("ConfigMap", "mistral-serve-settings")]["data"]
    assert settings["ENGINE_URLS"].split(",") == [
        "dns://mistral-serve-engines:8000",
        "dns://mistral-serve-embed-engines:8000",
    ]
    # the chat engines are the tp1 layout's, unchanged
    assert found[("StatefulSet", "mistral-serve-engine")]["spec"]["replicas"] == 2


def test_shared_files_put_every_gateways_files_dir_on_one_volume():
    found = objects("tp1-shared-files")
    claim = found[("PersistentVolumeClaim", "mistral-serve-files")]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    pod = found[("Deployment", "mistral-serve-gateway")]["spec"]["template"]["spec"]
    assert {"name": "files", "persistentVolumeClaim": {"claimName": "mistral-serve-files"}} in (
        pod["volumes"]
    )
    [gateway] = pod["containers"]
    mounts = {mount["mountPath"]: mount["name"] for mount in gateway["volumeMounts"]}
    # FILES_DIR's default under the data folder; the rest of the folder (a ledger spool) stays
    # each replica's own.
    data_dir = Settings(_env_file=None, MISTRAL_SERVE_DATA_DIR="/var/lib/mistral-serve")
    assert mounts[str(data_dir.files_path)] == "files"
    assert mounts["/var/lib/mistral-serve"] == "data"
