"""The command line: bad settings stop the start with one line; demo-model writes a model."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mistral_serve.cli import build_parser, main
from mistral_serve.config import Settings
from mistral_serve.engines.supervisor import free_port
from mistral_serve.launch.engines import engine_specs
from mistral_serve.models.profiles import resolve_model
from mistral_serve.store import Store, UsageRecords
from mistral_serve.store.batches import BatchRecords, NewRequest
from mistral_serve.store.database import configured_url
from tests.unit.store.test_batches import job
from tests.unit.store.test_usage import row as usage_row


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("PORT", "ENGINE_URLS")}
    return subprocess.run(
        [sys.executable, "-m", "mistral_serve.cli", *args],
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"PORT": "abc"}, "PORT"),
        ({"TENSOR_PARALLEL_SIZE": "0"}, "TENSOR_PARALLEL_SIZE"),
        ({"ENGINE_REPLICAS": "-1"}, "ENGINE_REPLICAS"),
        ({"TENSOR_PARALLEL_SIZE": "2"}, "TENSOR_PARALLEL_SIZE"),  # no GPU here
    ],
)
def test_a_bad_setting_stops_up_with_one_line(env, variable, tmp_path):
    result = run_cli("up", MISTRAL_SERVE_CACHE_DIR=str(tmp_path), **env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"mistral-serve: configuration error: {variable}:")


def test_gateway_needs_engine_urls():
    result = run_cli("gateway")
    assert result.returncode == 2
    assert "ENGINE_URLS" in result.stderr


def test_secrets_stay_out_of_error_lines():
    result = run_cli("up", HUGGING_FACE_HUB_TOKEN="hf_topsecret", PORT="abc")
    assert "hf_topsecret" not in result.stderr + result.stdout


def test_demo_model_command(tmp_path, capsys):
    assert main(["demo-model", str(tmp_path / "m"), "--variant", "v3"]) == 0
    assert (tmp_path / "m" / "params.json").exists()
    assert "demo model (v3)" in capsys.readouterr().out


def test_parser_knows_every_mode():
    parser = build_parser()
    for command in ("up", "gateway"):
        assert parser.parse_args([command]).command == command
    with pytest.raises(SystemExit):
        parser.parse_args(["demo-model", "x", "--variant", "v2"])


class ReadyHandler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        self.send_response(self.status if self.path == "/ready" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.parametrize(("status", "exit_code"), [(200, 0), (503, 1)])
def test_healthcheck_follows_ready(monkeypatch, status, exit_code):
    handler = type("Handler", (ReadyHandler,), {"status": status})
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        monkeypatch.setenv("HOST", "0.0.0.0")
        monkeypatch.setenv("PORT", str(server.server_address[1]))
        try:
            assert main(["healthcheck", "--timeout", "2"]) == exit_code
        finally:
            server.shutdown()


def test_healthcheck_fails_when_nothing_listens(monkeypatch, capsys):
    monkeypatch.setenv("PORT", str(free_port()))
    assert main(["healthcheck"]) == 1
    assert "not ready" in capsys.readouterr().err


def test_up_refuses_a_taken_port_before_starting_engines(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_cli(
            "up", HOST="127.0.0.1", PORT=str(port), MISTRAL_SERVE_CACHE_DIR=str(tmp_path)
        )
    assert result.returncode == 2
    assert f"PORT: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert not (tmp_path / "demo-v3").exists()  # refused before any work


def test_engines_get_fixed_ports_from_engine_base_port(tmp_path):
    settings = Settings(_env_file=None, model_id="demo", cache_dir=tmp_path, engine_base_port=8100)
    model = resolve_model(settings, has_gpu=False)
    specs = engine_specs(settings, model, None, 2, {})
    assert [spec.url for spec in specs] == ["http://127.0.0.1:8100", "http://127.0.0.1:8101"]
    assert specs[1].command[specs[1].command.index("--port") + 1] == "8101"
    free = engine_specs(Settings(_env_file=None, cache_dir=tmp_path), model, None, 1, {})
    assert free[0].url != "http://127.0.0.1:8100"


def test_engines_run_in_the_environment_they_are_given(tmp_path):
    """The CLI's environment, plus what the engines need; the Hugging Face cache the gateway
    was told of (also from .env only) is the one the engines look in."""
    settings = Settings(
        _env_file=None, model_id="demo", cache_dir=tmp_path, hf_hub_cache=tmp_path / "hub"
    )
    model = resolve_model(settings, has_gpu=False)
    [spec] = engine_specs(settings, model, None, 1, {"PATH": "/bin", "LANG": "C"})
    assert spec.env["PATH"] == "/bin" and spec.env["LANG"] == "C"
    assert spec.env["HF_HUB_CACHE"] == str(tmp_path / "hub")
    assert spec.env["VLLM_CPU_KVCACHE_SPACE"] == "1" and "HF_HOME" not in spec.env


def test_keys_create_list_update_revoke(capsys):
    """On the store in MISTRAL_SERVE_DATA_DIR (each test's own, see conftest)."""
    assert main(["keys", "create", "--name", "app", "--models", "demo", "--expires", "30d"]) == 0
    made = dict(line.split(":", 1) for line in capsys.readouterr().out.splitlines())
    key_id, key = made["key id"].strip(), made["key"].strip()
    assert key.startswith(f"msk_{key_id}_")
    assert main(["keys", "list"]) == 0
    listing = capsys.readouterr().out
    assert key_id in listing and "active" in listing and key.split("_")[2] not in listing
    assert main(["keys", "update", key_id, "--priority", "4", "--models", "all"]) == 0
    updated = json.loads(capsys.readouterr().out)
    assert updated["priority"] == 4 and updated["models"] is None
    assert main(["keys", "revoke", key_id]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "revoked"
    assert main(["keys", "show", "nosuchkey"]) == 1


def test_keys_refuses_a_bad_expiry_with_one_line(capsys):
    assert main(["keys", "create", "--name", "x", "--expires", "soon"]) == 2
    assert "not a duration" in capsys.readouterr().err


def test_keys_limits_are_set_shown_and_cleared(capsys):
    assert main(["keys", "create", "--name", "batch", "--rpm", "60", "--tpm", "90000",
                 "--max-concurrent", "4", "--tokens-per-day", "1000000"]) == 0  # fmt: skip
    key_id = dict(line.split(":", 1) for line in capsys.readouterr().out.splitlines())["key id"]
    key_id = key_id.strip()
    assert main(["keys", "list"]) == 0
    assert "rpm=60 tpm=90000 max_concurrent=4 tokens_per_day=1000000" in capsys.readouterr().out
    assert main(["keys", "update", key_id, "--rpm", "none", "--tokens-per-month", "5000"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["rpm"] is None and shown["tpm"] == 90000 and shown["tokens_per_month"] == 5000
    assert main(["keys", "update", key_id, "--tpm", "0"]) == 2
    assert "positive number or none" in capsys.readouterr().err


def test_usage_reports_the_ledger(capsys, tmp_path):
    """Rows written as the gateway writes them; reported by day, model and key."""
    settings = Settings(_env_file=None)

    async def write() -> None:
        store = await Store.open(configured_url(settings))
        try:
            now = datetime.now(UTC)
            await UsageRecords(store).write(
                [
                    usage_row(key_id="k1", created_at=now).encode(),
                    usage_row(key_id="k2", created_at=now).encode(),
                ]
            )
        finally:
            await store.close()

    asyncio.run(write())
    assert main(["usage"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["DAY", "REQUESTS", "PROMPT_TOKENS", "COMPLETION_TOKENS",
                                "TOTAL_TOKENS"]  # fmt: skip
    assert table[1].split()[1:] == ["2", "20", "10", "30"]
    assert main(["usage", "--by", "key", "--key", "k2", "--format", "json"]) == 0
    (only,) = json.loads(capsys.readouterr().out)
    assert only["key"] == "k2" and only["requests"] == 1 and only["total_tokens"] == 15
    assert main(["usage", "--by", "model", "--format", "csv", "--since", "2020-01-01"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "m,2,20,10,30"
    assert main(["usage", "--since", "soon"]) == 2
    assert "--since" in capsys.readouterr().err


def fake_nvidia_smi(folder, mib: int = 81559) -> str:
    """A PATH on which `nvidia-smi` reports two GPUs of ``mib`` MiB (an H100 80 GB: 81559)."""
    folder.mkdir(exist_ok=True)
    script = folder / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        f"  *memory.total*) printf '0, {mib}\\n1, {mib}\\n' ;;\n"
        "  *) printf '0\\n1\\n' ;;\n"
        "esac\n"
    )
    script.chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


def test_up_refuses_a_layout_that_cannot_hold_the_model_before_loading_it(tmp_path):
    result = run_cli(
        "up",
        PATH=fake_nvidia_smi(tmp_path / "bin"),
        HOST="127.0.0.1",
        PORT=str(free_port()),
        MODEL_ID="mistralai/Mixtral-8x7B-Instruct-v0.1",
        TENSOR_PARALLEL_SIZE="1",
        HF_HUB_CACHE=str(tmp_path / "hub"),
        MISTRAL_SERVE_CACHE_DIR=str(tmp_path),
    )
    assert result.returncode == 2, result.stderr
    assert "configuration error: Mixtral 8x7B needs 94 GiB per engine" in result.stderr
    assert result.stderr.rstrip().endswith("set TENSOR_PARALLEL_SIZE=2")


def test_plan_prints_the_layouts_and_the_recommendation(capsys):
    assert main(["plan", "mixtral-8x7b", "--gpus", "2xH100", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["kv_bytes_per_token"] == 131072 and result["gpus"] == "2xH100"
    assert [(each["tensor_parallel"], each["fits"]) for each in result["layouts"]] == [
        (1, False),
        (2, True),
    ]
    assert result["recommended"]["tensor_parallel"] == 2
    assert main(["plan", "mistralai/Mistral-7B-Instruct-v0.3", "--max-model-len", "8192"]) == 0
    text = capsys.readouterr().out
    assert "KV cache per token: 128 KiB" in text
    assert "recommended: ENGINE_REPLICAS=2 TENSOR_PARALLEL_SIZE=1" in text


def test_plan_says_when_nothing_fits_and_refuses_what_it_cannot_size(capsys):
    assert main(["plan", "mistral-large", "--gpus", "2xH100"]) == 1
    assert "does not fit" in capsys.readouterr().out
    assert main(["plan", "acme/unknown-model"]) == 2
    assert main(["plan", "mistral-7b", "--gpus", "3xTPU"]) == 2
    assert "unknown GPU" in capsys.readouterr().err


def test_plan_places_a_fleet_from_a_models_file(capsys, tmp_path):
    example = Path(__file__).parents[2] / "config" / "models.example.yaml"
    assert main(["plan", "--fleet", str(example), "--gpus", "2xH100"]) == 0
    text = capsys.readouterr().out
    assert "| mistral-7b-instruct | 0 | generate | 0 | 0.70 |" in text
    assert "| e5-mistral | 0 | embed | 0 | 0.25 |" in text
    assert "support-bot, sql-writer (2)" in text
    assert main(["plan", "--fleet", str(example), "--gpus", "1xL4"]) == 1
    assert "does not fit: mistral-7b-instruct: it needs" in capsys.readouterr().out
    bad = tmp_path / "models.yaml"
    bad.write_text("models:\n  - name: chat\n    source: demo\n    replicas: 0\n")
    assert main(["plan", "--fleet", str(bad)]) == 2
    assert "models[0] (chat): replicas: Input should be greater than" in capsys.readouterr().err
    assert main(["plan"]) == 2  # a model or a fleet
    assert main(["plan", "mistral-7b", "--fleet", str(example)]) == 2


def test_batch_list_show_and_cancel_for_operators(capsys):
    """On the store in MISTRAL_SERVE_DATA_DIR: every key's jobs, one job's detail, a cancel."""

    async def made() -> None:
        store = await Store.open(configured_url(Settings()))
        try:
            records = BatchRecords(store)
            request = NewRequest(1, "r1", {"model": "demo"}, "")
            await records.add(replace(job("batch_a", key="k1"), total=1), [request])
            await records.add(replace(job("batch_b", key="k2", minutes=1), total=1), [request])
        finally:
            await store.close()

    asyncio.run(made())
    assert main(["batch", "list"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split()[:5] == ["ID", "KEY", "API", "MODEL", "STATUS"]
    assert [line.split()[0] for line in listing[1:]] == ["batch_b", "batch_a"]
    assert main(["batch", "list", "--key", "k1", "--json"]) == 0
    assert [each["id"] for each in json.loads(capsys.readouterr().out)] == ["batch_a"]
    assert main(["batch", "show", "batch_a"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["key_id"], shown["requests"]["pending"], shown["status"]) == (
        "k1",
        1,
        "in_progress",
    )
    assert main(["batch", "cancel", "batch_a"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "cancelling"
    assert main(["batch", "show", "batch_nope"]) == 1
