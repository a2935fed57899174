"""deploy/Dockerfile: clean under hadolint, non-root, healthchecked, and pinned to the tested
vLLM. (No Docker engine runs on the test machines: the image is not built here.)"""

from __future__ import annotations

import re
import subprocess

from .conftest import DEPLOY, REPO, VLLM_IMAGE, tool

DOCKERFILE = DEPLOY / "Dockerfile"


def stages() -> dict[str, list[str]]:
    """Each named stage's instructions (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    result: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM \S+ AS (\S+)", line)
        if match:
            current = result.setdefault(match.group(1), [])
        current.append(line)
    return result


def test_hadolint_is_clean():
    result = subprocess.run(
        [tool("hadolint"), "--no-color", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_can_fail():
    # The check above means something: a root image with an unpinned apt install is refused.
    bad = "FROM debian:12\nRUN apt-get update && apt-get install -y curl\n"
    result = subprocess.run(
        [tool("hadolint"), "--no-color", "-"], input=bad, capture_output=True, text=True
    )
    assert result.returncode != 0


def test_the_default_target_is_the_small_non_root_gateway():
    all_stages = stages()
    assert list(all_stages)[-1] == "gateway"  # `docker build` without --target
    gateway = all_stages["gateway"]
    assert gateway[0].startswith("FROM python:")
    assert "slim" in gateway[0]
    assert "USER 10001" in gateway
    assert any(line.startswith("HEALTHCHECK") and "healthcheck" in line for line in gateway)
    assert 'CMD ["gateway"]' in gateway
    # No engine, no CUDA: only the virtual environment from the build stage comes in.
    assert [line for line in gateway if "--from=" in line] == [
        "COPY --from=build /opt/mistral-serve /opt/mistral-serve"
    ]


def test_every_runtime_stage_is_non_root_and_healthchecked():
    for name in ("gateway", "standalone", "collector"):
        stage = stages()[name]
        users = [line for line in stage if line.startswith("USER ")]
        assert users and users[-1] != "USER root", name
        assert any(line.startswith("HEALTHCHECK") for line in stage), name


def test_vllm_is_pinned_to_the_tested_release_everywhere():
    tag = VLLM_IMAGE.split(":")[1]
    assert f"ARG VLLM_VERSION={tag}" in DOCKERFILE.read_text()
    assert f"${{VLLM_VERSION:-{tag}}}" in (REPO / "docker-compose.yml").read_text()
    assert f"VLLM_VERSION={tag}" in (REPO / "config" / "sample.env").read_text().splitlines()
    engines = (DEPLOY / "kubernetes" / "base" / "engines.yaml").read_text()
    assert f"image: mistral-serve-engine  # FROM {VLLM_IMAGE}" in engines


def test_the_engine_image_is_the_official_vllm_image_with_the_engine_plugin():
    engine = stages()["engine"]
    assert engine[0] == "FROM vllm/vllm-openai:${VLLM_VERSION} AS engine"
    [install] = [line for line in engine if line.startswith("RUN ")]
    # The package without the gateway's dependencies, and proof that vLLM can load the plugin.
    assert "pip install --no-deps /wheels/mistral_serve-" in install
    assert 'python3 -c "import mistral_serve.engine_plugin"' in install


def test_the_build_context_holds_only_what_the_image_needs():
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in ignore  # everything excluded by default …
    assert {"!pyproject.toml", "!README.md", "!src/"} <= set(ignore)  # … but the package
