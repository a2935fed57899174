"""One real stack per test session: two vLLM engines (CPU build) on the demo models behind a
real `mistral-serve gateway` process. Tests talk to it with the official `openai` client.

- engine "demo":    the Mistral-format demo (v3 tokenizer), the production path
- engine "demo-v1": the HF-format demo with Mistral-7B-Instruct-v0.1's tokenizer and template

Both listen on the same port, "demo" on 127.0.0.1 and "demo-v1" on 127.0.0.2, so that one name
resolving to both loopback addresses stands for both engines (tests/integration/test_discovery.py).

Telemetry is on, as in production: the gateway and the engines export over OTLP/HTTP to a real
receiver started for the session (``otlp``), so every test also exercises the traced path.

Engines run under the same guard `up` uses, so they die with this session even if pytest is
SIGKILLed. The gateway judges a stall after ENGINE_STALL_TIMEOUT_S (here 8 s, above the 5 s
pause tests/integration/test_engine_state.py gives an API server) and sends canaries to idle
engines every 5 s, so the whole suite runs with canaries going.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from mistral_serve.config import Settings
from mistral_serve.engines.guard import guarded
from mistral_serve.engines.supervisor import free_port
from mistral_serve.launch.engines import engine_specs
from mistral_serve.models.profiles import resolve_model
from mistral_serve.store import Store, UsageRow
from tests.support import ledger_rows, start_process, stop_process, vllm_process, wait_until_ok

from .otlp_receiver import OtlpReceiver, running_receiver

# About 25 s on an idle 2-core machine; seen over 8 minutes on a busy one (imports alone took
# minutes). Waiting long costs nothing when the engine is quick; pytest's own timeout (900 s,
# pyproject.toml) must stay above it.
ENGINE_START_TIMEOUT_S = 600
GATEWAY_START_TIMEOUT_S = 180
#: The stack gateway's engine-state settings (see the module docstring).
STALL_TIMEOUT_S = 8
CANARY_INTERVAL_S = 5
#: How soon a fleet's gateways see a key change (KEY_CACHE_TTL_S).
FLEET_KEY_CACHE_TTL_S = 1


@dataclass
class Stack:
    gateway_url: str
    engine_urls: dict[str, str]  # served model name -> engine URL
    engine_port: int  # the one port both engines listen on
    cache_dir: Path
    log_dir: Path
    engine_processes: dict[str, subprocess.Popen]  # served model name -> its guard

    def client(self, **kwargs: object) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.gateway_url + "/v1", api_key="unused", **kwargs)

    def api_server(self, model: str) -> psutil.Process:
        """The vLLM API server of the engine serving ``model``."""
        return vllm_process(self.engine_processes[model].pid, "vllm.entrypoints")

    def engine_core(self, model: str) -> psutil.Process:
        """Its engine core (the process `kill -STOP` hangs to reproduce a stuck engine)."""
        return vllm_process(self.engine_processes[model].pid, "VLLM::EngineCore")


def demo_engine(
    model_id: str, address: str, port: int, cache_dir: Path, log_dir: Path, otlp_endpoint: str
) -> tuple[str, subprocess.Popen, Path]:
    """One engine started exactly as `mistral-serve up` would start it on this machine, but on
    ``address`` (the flag comes last, so it overrides up's 127.0.0.1)."""
    settings = Settings(
        model_id=model_id,
        MISTRAL_SERVE_CACHE_DIR=cache_dir,  # the field reads only its alias, as from the env
        otel_exporter_otlp_endpoint=otlp_endpoint,
        engine_base_port=port,
        engine_extra_args=f"--host {address}",
    )
    [spec] = engine_specs(settings, resolve_model(settings, has_gpu=False), None, 1, os.environ)
    log_path = log_dir / f"engine-{model_id}.log"
    url = f"http://{address}:{port}"
    return url, start_process(guarded(spec.command), dict(spec.env), log_path), log_path


#: Where each demo engine listens: one port, two loopback addresses.
ENGINE_ADDRESSES = {"demo": "127.0.0.1", "demo-v1": "127.0.0.2"}


def start_gateway(
    engine_urls: str,
    otlp_endpoint: str,
    log_path: Path,
    *,
    wrapper: Sequence[str] = (),
    **settings: str,
) -> tuple[str, subprocess.Popen]:
    """A real `mistral-serve gateway` process over ``engine_urls``, ready. ``wrapper`` goes
    before the command (it must exec it); ``settings`` are more environment variables."""
    port = free_port()
    env = {
        **os.environ,
        "ENGINE_URLS": engine_urls,
        "MISTRAL_SERVE_DATA_DIR": str(log_path.parent / f"data-{port}"),  # its own key store
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "ENGINE_HEALTH_INTERVAL_S": "0.5",
        "ENGINE_STATS_INTERVAL_S": "0.5",
        "ENGINE_STALL_TIMEOUT_S": str(STALL_TIMEOUT_S),
        "ENGINE_CANARY_INTERVAL_S": str(CANARY_INTERVAL_S),
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint,
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
        "LOG_FORMAT": "json",
        **settings,
    }
    command = [*wrapper, sys.executable, "-m", "mistral_serve.cli", "gateway"]
    process = start_process(command, env, log_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ok(url + "/ready", process, log_path, GATEWAY_START_TIMEOUT_S)
    except BaseException:
        stop_process(process)
        raise
    return url, process


def mistral_serve(env: dict[str, str], *args: str) -> str:
    """`mistral-serve ARGS…` (keys, usage…) with ``env`` over this environment, as an operator
    runs it; its standard output (a failure fails the test)."""
    done = subprocess.run(
        [sys.executable, "-m", "mistral_serve.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def created_key(output: str) -> tuple[str, str]:
    """(id, the key's text) from what `mistral-serve keys create` printed."""
    lines = dict(line.split(":", 1) for line in output.splitlines())
    return lines["key id"].strip(), lines["key"].strip()


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
        engine_port = free_port()
        engines = {
            name: demo_engine(name, address, engine_port, demo_cache, log_dir, otlp.endpoint)
            for name, address in ENGINE_ADDRESSES.items()
        }
        processes += [process for _, process, _ in engines.values()]
        for url, process, log_path in engines.values():
            wait_until_ok(url + "/health", process, log_path, ENGINE_START_TIMEOUT_S)

        gateway_url, gateway = start_gateway(
            ",".join(url for url, _, _ in engines.values()), otlp.endpoint, log_dir / "gateway.log"
        )
        processes.append(gateway)
        yield Stack(
            gateway_url=gateway_url,
            engine_urls={name: url for name, (url, _, _) in engines.items()},
            engine_port=engine_port,
            cache_dir=demo_cache,
            log_dir=log_dir,
            engine_processes={name: process for name, (_, process, _) in engines.items()},
        )
    finally:
        for process in reversed(processes):
            stop_process(process)


@dataclass
class Fleet:
    """Gateways over the session's engines sharing one store (and Redis, when given)."""

    urls: list[str]
    env: dict[str, str]
    processes: list[subprocess.Popen]

    def cli(self, *args: str) -> str:
        return mistral_serve(self.env, *args)

    def create_key(self, *args: str) -> tuple[str, str]:
        key_id, key = created_key(self.cli("keys", "create", "--name", "test", *args))
        for url in self.urls:  # every gateway takes it at once (a key it does not know yet
            # is looked up), and from then on refuses a wrong one (AUTH=auto: keys exist)
            assert models_status(url, key) == 200
            assert models_status(url, "msk_wrong") == 401
        return key_id, key

    def rows(self) -> list[UsageRow]:
        async def read() -> list[UsageRow]:
            store = await Store.open(self.database_url)
            try:
                return await ledger_rows(store)
            finally:
                await store.close()

        return asyncio.run(read())

    @property
    def database_url(self) -> str:
        return self.env["DATABASE_URL"]


def models_status(url: str, key: str) -> int:
    """GET /v1/models with ``key``: its status (200, or 401 for a key refused)."""
    headers = {"authorization": f"Bearer {key}"}
    return httpx.get(url + "/v1/models", headers=headers, timeout=30).status_code


def start_fleet(stack: Stack, otlp, log_dir: Path, count: int, **env: str) -> Fleet:
    """``count`` gateways over the session's engines, with ``env`` (a shared DATABASE_URL…)."""
    env = {"KEY_CACHE_TTL_S": str(FLEET_KEY_CACHE_TTL_S), "LEDGER_FLUSH_INTERVAL_S": "0.2"} | env
    processes, urls = [], []
    try:
        for n in range(count):
            url, process = start_gateway(
                ",".join(stack.engine_urls.values()),
                otlp.endpoint,
                log_dir / f"gateway-{n}.log",
                **env,
            )
            processes.append(process)
            urls.append(url)
    except BaseException:
        for process in processes:
            stop_process(process)
        raise
    return Fleet(urls, env, processes)
