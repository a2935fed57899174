"""deploy/kubernetes/base/vllm-engine.sh (the engine entrypoint of Compose and Kubernetes) gives
vLLM the same flags `mistral-serve up` gives its own engines, for the same settings.

The script runs for real under sh, with a stand-in `python3` first on PATH that records the
argv and environment vLLM would have been started with.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mistral_serve.config import Settings
from mistral_serve.engines.vllm_args import (
    VLLM_SERVER_MODULE,
    build_vllm_args,
    engine_patches_env,
)
from mistral_serve.models.profiles import resolve_model

from .conftest import KUBERNETES

SCRIPT = KUBERNETES / "base" / "vllm-engine.sh"

RECORDER = """#!{python}
import json, os, sys
if sys.argv[1] == "-c":  # the script asking whether the image has the engine plugin
    sys.exit(1 if os.environ.get("STUB_NO_PLUGIN") else 0)
record = {{"argv": sys.argv[1:], "env": dict(os.environ)}}
json.dump(record, open(os.environ["RECORD_TO"], "w"))
"""


def run_script(tmp_path: Path, **env: str) -> tuple[list[str], dict[str, str]]:
    """The argv after ``python3`` and the environment the script execs vLLM with."""
    argv, env, _ = run_script_logged(tmp_path, **env)
    return argv, env


def run_script_logged(tmp_path: Path, **env: str) -> tuple[list[str], dict[str, str], str]:
    """The same, and what the script wrote to stderr."""
    stub = tmp_path / "bin"
    stub.mkdir(exist_ok=True)
    (stub / "python3").write_text(RECORDER.format(python=sys.executable))
    (stub / "python3").chmod(0o755)
    record = tmp_path / "record.json"
    base = {"PATH": f"{stub}:/usr/bin:/bin", "RECORD_TO": str(record)}
    done = subprocess.run(
        ["sh", str(SCRIPT)], env={**base, **env}, check=True, timeout=30, capture_output=True
    )
    recorded = json.loads(record.read_text())
    return recorded["argv"], recorded["env"], done.stderr.decode()


def up_args(settings: Settings) -> list[str]:
    """What `up` gives a GPU engine for ``settings``, listening where the script listens."""
    model = resolve_model(settings, has_gpu=True)
    args = build_vllm_args(
        settings,
        model=model.source,
        served_names=model.served_names,
        mistral_format=model.mistral_format,
        port=8000,
        on_gpu=True,
    )
    args[args.index("--host") + 1] = "0.0.0.0"  # a container's engine is reached from outside
    return ["-m", VLLM_SERVER_MODULE, *args]


@pytest.mark.parametrize(
    "env",
    [
        {},  # the default model, Hugging Face format
        {"MODEL_ID": "mistralai/Mistral-7B-Instruct-v0.3"},  # Mistral format
        {"MODEL_ID": "mistralai/Mistral-Small-3.2-24B-Instruct-2506", "TENSOR_PARALLEL_SIZE": "2"},
        {"MODEL_ID": "mistralai/Mixtral-8x7B-Instruct-v0.1", "SERVED_MODEL_NAME": "mixtral"},
        {"MAX_MODEL_LEN": "8192", "DTYPE": "float16", "GPU_MEMORY_UTILIZATION": "0.85"},
        {"ENGINE_EXTRA_ARGS": "--max-num-seqs 256 --override-generation-config '{\"a\": 1}'"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector:4318"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector:4317",
         "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
    ],
)  # fmt: skip
def test_same_flags_as_up(tmp_path, env):
    argv, _ = run_script(tmp_path, **env)
    assert argv == up_args(Settings(_env_file=None, **{k.lower(): v for k, v in env.items()}))


@pytest.mark.parametrize(
    ("files", "mistral_format"),
    [
        (("params.json", "consolidated.safetensors", "tokenizer.model.v3"), True),
        (("params.json", "consolidated-00001.safetensors", "tekken.json"), True),
        (("config.json", "model.safetensors", "tokenizer.model"), False),  # Hugging Face format
        (("params.json", "consolidated.safetensors"), False),  # no Mistral tokenizer
    ],
)
def test_a_local_folder_is_recognised_as_up_recognises_it(tmp_path, files, mistral_format):
    folder = tmp_path / "model"
    folder.mkdir()
    for name in files:  # both sides look only at which files exist
        (folder / name).write_text("")
    argv, _ = run_script(tmp_path, MODEL_ID=str(folder))
    assert argv == up_args(Settings(_env_file=None, model_id=str(folder)))
    assert ("--tokenizer-mode" in argv) == mistral_format


def test_engine_telemetry_environment(tmp_path):
    _, env = run_script(
        tmp_path,
        OTEL_EXPORTER_OTLP_ENDPOINT="http://otel-collector:4318",
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment.name=prod",
        ENGINE_REPLICA="1",
    )
    assert env["OTEL_SERVICE_NAME"] == "mistral-serve-engine"
    assert env["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] == "http/protobuf"
    assert env["OTEL_RESOURCE_ATTRIBUTES"] == (
        "deployment.environment.name=prod,mistral_serve.engine.replica=1"
    )


def test_no_telemetry_flag_without_an_endpoint(tmp_path):
    argv, env = run_script(tmp_path)
    assert "--otlp-traces-endpoint" not in argv
    assert "OTEL_SERVICE_NAME" not in env


def test_the_hub_token_reaches_vllm_as_hf_token(tmp_path):
    _, env = run_script(tmp_path, HUGGING_FACE_HUB_TOKEN="hf_secret")
    assert env["HF_TOKEN"] == "hf_secret"


@pytest.mark.parametrize(
    "env",
    [
        {},  # on by default
        {"ENGINE_PATCHES": "off"},
        {"VLLM_PLUGINS": "lora_filesystem_resolver"},  # a list of plugins: the patches join it
        {"VLLM_PLUGINS": "mistral_serve_patches"},
        {"VLLM_PLUGINS": ""},
        {"VLLM_PLUGINS": "lora_filesystem_resolver", "ENGINE_PATCHES": "off"},
    ],
)
def test_the_engine_plugin_is_switched_as_up_switches_it(tmp_path, env):
    _, recorded, _ = run_script_logged(tmp_path, **env)
    settings = Settings(
        _env_file=None, **{k.lower(): v for k, v in env.items() if k != "VLLM_PLUGINS"}
    )
    expected = {**env, **engine_patches_env(settings, env)}
    assert {name: recorded.get(name) for name in expected} == expected


def test_an_image_without_the_engine_plugin_is_said_out_loud(tmp_path):
    _, _, said = run_script_logged(tmp_path, STUB_NO_PLUGIN="1")
    assert "no mistral-serve engine plugin" in said
    _, _, said = run_script_logged(tmp_path, STUB_NO_PLUGIN="1", ENGINE_PATCHES="off")
    assert said == ""
