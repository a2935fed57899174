"""The command line: bad settings stop the start with one line; demo-model writes a model."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from mistral_serve.cli import build_parser, main


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


def test_up_refuses_a_taken_port_before_starting_engines(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_cli(
            "up", HOST="127.0.0.1", PORT=str(port), MISTRAL_SERVE_CACHE_DIR=str(tmp_path)
        )
    assert result.returncode == 2
    assert f"PORT: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert not (tmp_path / "demo-v3").exists()  # refused before any work
