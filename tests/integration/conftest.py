"""One real stack per test session: two vLLM engines (CPU build) on the demo models behind a
real `mistral-serve gateway` process. Tests talk to it with the official `openai` client.

- engine "demo":    the Mistral-format demo (v3 tokenizer), the production path
- engine "demo-v1": the HF-format demo with Mistral-7B-Instruct-v0.1's tokenizer and template

Telemetry is on, as in production: the gateway and the engines export over OTLP/HTTP to a real
receiver started for the session (``otlp``), so every test also exercises the traced path.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from mistral_serve.cli import engine_specs
from mistral_serve.config import Settings
from mistral_serve.engines.supervisor import free_port
from mistral_serve.models.profiles import resolve_model

from .otlp_receiver import OtlpReceiver, running_receiver

ENGINE_START_TIMEOUT_S = 240


@dataclass
class Stack:
    gateway_url: str
    engine_urls: dict[str, str]  # served model name -> engine URL
    cache_dir: Path

    def client(self, **kwargs: object) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.gateway_url + "/v1", api_key="unused", **kwargs)


def start_process(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    log_file = log_path.open("wb")
    return subprocess.Popen(
        command,
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        process_group=0,  # not a new session: see engines/supervisor.py
    )


def stop_process(process: subprocess.Popen, timeout_s: float = 30) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def wait_until_ok(url: str, process: subprocess.Popen, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{process.args[:4]} exited with {process.returncode}:\n{tail}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not OK after {timeout_s} s; see {log_path}")


def demo_engine(
    model_id: str, cache_dir: Path, log_dir: Path, otlp_endpoint: str
) -> tuple[str, subprocess.Popen, Path]:
    """One engine started exactly as `mistral-serve up` would start it on this machine."""
    settings = Settings(
        model_id=model_id, cache_dir=cache_dir, otel_exporter_otlp_endpoint=otlp_endpoint
    )
    [spec] = engine_specs(settings, resolve_model(settings, has_gpu=False), None, 1)
    log_path = log_dir / f"engine-{model_id}.log"
    return spec.url, start_process(spec.command, dict(spec.env), log_path), log_path


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def otlp() -> Iterator[OtlpReceiver]:
    yield from running_receiver()


@pytest.fixture(scope="session")
def stack(
    tmp_path_factory: pytest.TempPathFactory, demo_cache: Path, otlp: OtlpReceiver
) -> Iterator[Stack]:
    log_dir = tmp_path_factory.mktemp("logs")
    processes: list[subprocess.Popen] = []
    try:
        engines = {
            name: demo_engine(name, demo_cache, log_dir, otlp.endpoint)
            for name in ("demo", "demo-v1")
        }
        processes += [process for _, process, _ in engines.values()]
        for url, process, log_path in engines.values():
            wait_until_ok(url + "/health", process, log_path, ENGINE_START_TIMEOUT_S)

        port = free_port()
        env = dict(
            os.environ,
            ENGINE_URLS=",".join(url for url, _, _ in engines.values()),
            HOST="127.0.0.1",
            PORT=str(port),
            ENGINE_HEALTH_INTERVAL_S="0.5",
            OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint,
            OTEL_METRIC_EXPORT_INTERVAL="500",
            LOG_FORMAT="json",
        )
        gateway_log = log_dir / "gateway.log"
        gateway = start_process(
            [sys.executable, "-m", "mistral_serve.cli", "gateway"], env, gateway_log
        )
        processes.append(gateway)
        gateway_url = f"http://127.0.0.1:{port}"
        wait_until_ok(gateway_url + "/ready", gateway, gateway_log, 30)
        yield Stack(
            gateway_url=gateway_url,
            engine_urls={name: url for name, (url, _, _) in engines.items()},
            cache_dir=demo_cache,
        )
    finally:
        for process in reversed(processes):
            stop_process(process)
