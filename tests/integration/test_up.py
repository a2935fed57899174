"""`mistral-serve up` as a user runs it: engines and gateway from one command, and gone after
SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import openai
import psutil
import pytest

from mistral_serve.engines.supervisor import free_port

from .conftest import ENGINE_START_TIMEOUT_S, start_process, wait_until_ok

pytestmark = pytest.mark.integration


def run_up(env_overrides: dict[str, str], cache_dir, log_path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = dict(
        os.environ,
        HOST="127.0.0.1",
        PORT=str(port),
        MISTRAL_SERVE_CACHE_DIR=str(cache_dir),
        VLLM_CPU_KVCACHE_SPACE="1",
        **env_overrides,
    )
    return start_process([sys.executable, "-m", "mistral_serve.cli", "up"], env, log_path), port


def finish(process: subprocess.Popen, log_path, timeout_s: float) -> str:
    """Wait for ``process`` to exit; its whole output."""
    process.wait(timeout=timeout_s)
    return log_path.read_text(errors="replace")


def test_up_serves_then_stops_everything_on_sigterm(demo_cache, tmp_path):
    log_path = tmp_path / "up.log"
    process, port = run_up({"MODEL_ID": "demo"}, demo_cache, log_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ok(url + "/ready", process, log_path, ENGINE_START_TIMEOUT_S)

        client = openai.OpenAI(base_url=url + "/v1", api_key="unused")
        reply = client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        assert reply.choices[0].message.content

        family = psutil.Process(process.pid).children(recursive=True)
        assert family, "up should have started engine processes"
        process.send_signal(signal.SIGTERM)
        output = finish(process, log_path, 180)
        assert process.returncode == 0, output
        assert "engine 0: ready after" in output  # progress was shown
        assert "[engine 0]" in output  # engine logs were relayed with the replica's name
        time.sleep(0.5)
        survivors = [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not survivors, f"still running after up exited: {survivors}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_up_reports_the_engines_own_error_when_it_cannot_start(demo_cache, tmp_path):
    missing = tmp_path / "no-such-model"
    started = time.monotonic()
    log_path = tmp_path / "up.log"
    process, _ = run_up({"MODEL_ID": str(missing)}, demo_cache, log_path)
    output = finish(process, log_path, ENGINE_START_TIMEOUT_S)
    assert process.returncode == 3, output
    last_line = output.strip().splitlines()[-1]
    assert last_line.startswith("mistral-serve: engine failed to start: engine 0 exited")
    assert str(missing) in last_line  # vLLM's own complaint about the path, not a timeout
    assert time.monotonic() - started < 120
