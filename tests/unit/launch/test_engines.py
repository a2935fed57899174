"""The engines `up` starts for a models file: each model's flags, kind and names, on the CPU
or placed on GPUs (a faked nvidia-smi), and the refusals before anything loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mistral_serve.config import Settings
from mistral_serve.errors import ConfigError
from mistral_serve.launch.engines import fleet_specs, plan_engines
from mistral_serve.models.fleet import load_fleet

from ..test_cli import fake_nvidia_smi

DEMO_FLEET = Path(__file__).parents[3] / "config" / "models.demo.yaml"


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_the_demo_fleet_on_the_cpu(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no nvidia-smi
    settings = Settings(_env_file=None, MISTRAL_SERVE_CACHE_DIR=tmp_path, models_file=DEMO_FLEET)
    specs, remote = plan_engines(settings, {})
    assert remote == []
    chat, embed = specs
    assert (chat.name, embed.name) == ("demo 0", "demo-embed 0")
    served = chat.command[chat.command.index("--served-model-name") + 1 :][:2]
    assert served == ["demo", "demo-chat"]  # its name, then its alias
    assert flag(chat.command, "--tokenizer-mode") == "mistral"  # the v3 demo: Mistral format
    assert "--runner" not in chat.command
    assert flag(chat.command, "--lora-modules") == f"demo-lora={tmp_path / 'demo-lora'}"
    assert (tmp_path / "demo-lora" / "adapter_config.json").exists()  # the built-in, built
    assert flag(embed.command, "--runner") == "pooling"
    assert "--structured-outputs-config" not in embed.command  # a demo chat model's flag only
    assert "CUDA_VISIBLE_DEVICES" not in embed.env and embed.env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert chat.url != embed.url


def write(tmp_path: Path, *models: dict) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": list(models)}))
    return path


CHAT = {
    "name": "chat",
    "source": "mistralai/Mistral-7B-Instruct-v0.3",
    "replicas": 2,
    "max_model_len": 32768,
    "adapters": [{"name": "support", "path": "/adapters/support"}],
    "max_loras": 2,
    "engine_args": ["--seed", "7"],
}
EMBED = {"name": "e5", "source": "intfloat/e5-mistral-7b-instruct", "max_model_len": 4096}


def test_a_fleet_is_placed_on_the_gpus(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path / "bin"))  # two H100s
    remote = {"name": "code", "engine_urls": ["http://10.0.0.7:8000"]}
    path = write(tmp_path, CHAT, EMBED, remote)
    settings = Settings(
        _env_file=None, MISTRAL_SERVE_CACHE_DIR=tmp_path, hf_hub_cache=tmp_path, models_file=path
    )
    specs, remote_urls = plan_engines(settings, {})
    assert remote_urls == ["http://10.0.0.7:8000"]
    by_name = {spec.name: spec for spec in specs}
    assert set(by_name) == {"chat 0", "chat 1", "e5 0"}
    # the planner's placement (tests/unit/models/test_placement.py): replicas on both GPUs,
    # e5 beside the first at its least share, the chat engines grown into the rest
    placed = {
        name: (spec.env["CUDA_VISIBLE_DEVICES"], flag(spec.command, "--gpu-memory-utilization"))
        for name, spec in by_name.items()
    }
    assert placed == {"chat 0": ("0", "0.7"), "chat 1": ("1", "0.95"), "e5 0": ("0", "0.25")}
    chat = by_name["chat 0"].command
    assert flag(chat, "--max-model-len") == "32768" and flag(chat, "--max-loras") == "2"
    assert flag(chat, "--lora-modules") == "support=/adapters/support"
    assert "--enable-lora" in chat and flag(chat, "--seed") == "7"
    assert flag(by_name["e5 0"].command, "--runner") == "pooling"
    assert flag(by_name["e5 0"].command, "--max-model-len") == "4096"


def test_a_fleet_that_does_not_fit_is_refused_before_anything_loads(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path / "bin"))
    path = write(tmp_path, {**CHAT, "gpu_memory_share": 0.8}, {**EMBED, "replicas": 2})
    settings = Settings(_env_file=None, MISTRAL_SERVE_CACHE_DIR=tmp_path, hf_hub_cache=tmp_path)
    with pytest.raises(ConfigError, match="models file: the fleet does not fit on 2xGPU"):
        fleet_specs(settings, load_fleet(path), {})


def test_tensor_parallel_needs_gpus(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    path = write(tmp_path, {"name": "big", "source": "demo", "tensor_parallel_size": 2})
    settings = Settings(_env_file=None, MISTRAL_SERVE_CACHE_DIR=tmp_path)
    with pytest.raises(ConfigError, match="big: tensor_parallel_size 2 needs GPUs"):
        fleet_specs(settings, load_fleet(path), {})


def test_an_embedding_model_with_adapters_is_refused_on_the_cpu_too(tmp_path: Path, monkeypatch):
    """Its kind read from its family (the file does not say it), as on GPUs."""
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    path = write(tmp_path, {**EMBED, "adapters": [{"name": "a", "path": "/a"}]})
    settings = Settings(_env_file=None, MISTRAL_SERVE_CACHE_DIR=tmp_path, hf_hub_cache=tmp_path)
    with pytest.raises(ConfigError, match="e5: an embedding model takes no adapters"):
        fleet_specs(settings, load_fleet(path), {})
