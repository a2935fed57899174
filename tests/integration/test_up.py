"""`mistral-serve up` as a user runs it: engines and gateway from one command, and gone after
SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import openai
import psutil
import pytest

from mistral_serve.engines.supervisor import free_port

pytestmark = pytest.mark.integration


def run_up(env_overrides: dict[str, str], cache_dir) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = dict(
        os.environ,
        HOST="127.0.0.1",
        PORT=str(port),
        MISTRAL_SERVE_CACHE_DIR=str(cache_dir),
        VLLM_CPU_KVCACHE_SPACE="1",
        **env_overrides,
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "mistral_serve.cli", "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return process, port


def test_up_serves_then_stops_everything_on_sigterm(demo_cache):
    process, port = run_up({"MODEL_ID": "demo"}, demo_cache)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert process.poll() is None, process.stdout.read()
            try:
                if httpx.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "not ready in time"
            time.sleep(0.5)

        client = openai.OpenAI(base_url=url + "/v1", api_key="unused")
        reply = client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        assert reply.choices[0].message.content

        family = psutil.Process(process.pid).children(recursive=True)
        assert family, "up should have started engine processes"
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=90)
        assert process.returncode == 0, output
        assert "engine 0: ready after" in output  # progress was shown
        assert "[engine 0]" in output  # engine logs were relayed with the replica's name
        time.sleep(0.5)
        survivors = [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not survivors, f"still running after up exited: {survivors}"
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_up_reports_the_engines_own_error_when_it_cannot_start(demo_cache, tmp_path):
    missing = tmp_path / "no-such-model"
    started = time.monotonic()
    process, _ = run_up({"MODEL_ID": str(missing)}, demo_cache)
    output, _ = process.communicate(timeout=180)
    assert process.returncode == 3, output
    last_line = output.strip().splitlines()[-1]
    assert last_line.startswith("mistral-serve: engine failed to start: engine 0 exited")
    assert str(missing) in last_line  # vLLM's own complaint about the path, not a timeout
    assert time.monotonic() - started < 120
