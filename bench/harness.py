"""What every benchmark here needs: a demo engine started as `up` starts one, processes in
their own groups, waiting for a URL to answer, and stopping everything at the end."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
from load import drop_database, make_database

from mistral_serve.config import Settings
from mistral_serve.engines.guard import guarded
from mistral_serve.engines.supervisor import EngineSpec, free_port
from mistral_serve.engines.vllm_args import VLLM_SERVER_MODULE
from mistral_serve.launch.engines import engine_specs
from mistral_serve.models.profiles import resolve_model


def demo_engine_spec(work: Path, model_id: str = "demo", port: int | None = None) -> EngineSpec:
    """The engine `up` would start for ``model_id`` on this machine, its demo built in ``work``
    (on ``port``, else up's first)."""
    ports = {"engine_base_port": port} if port is not None else {}
    settings = Settings(
        _env_file=None, model_id=model_id, MISTRAL_SERVE_CACHE_DIR=work / "cache", **ports
    )
    [spec] = engine_specs(settings, resolve_model(settings, has_gpu=False), None, 1, os.environ)
    return spec


def variants(baseline_src: Path | None) -> dict[str, Path | None]:
    """The gateways a comparison runs: this code ("now"), and with ``--baseline-src`` the
    code in that src/ folder ("baseline"), each name with the src/ it runs (None: this one)."""
    return {"now": None} | ({"baseline": baseline_src} if baseline_src else {})


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """``command`` in its own process group, output to ``log``."""
    return subprocess.Popen(
        command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, process_group=0
    )


def start_fake_engines(
    work: Path, count: int, pace_s: float, first_s: float = 0.0, *, paced: bool = False
) -> tuple[list[subprocess.Popen], list[str]]:
    """``count`` fake streaming engines (bench/fake_engine.py) serving `demo`, one chunk every
    ``pace_s`` (0: as fast as they are read) after ``first_s`` (a prefill); ``paced``: answers
    that are not streamed take as long as streams do. Their processes and URLs, not yet
    waited for."""
    processes, urls = [], []
    for index in range(count):
        port = free_port()
        script = Path(__file__).with_name("fake_engine.py")
        command = [sys.executable, str(script), str(port), "demo", str(pace_s), str(first_s)]
        if paced:
            command.append("paced")
        processes.append(start(command, dict(os.environ), work / f"engine-{index}.log"))
        urls.append(f"http://127.0.0.1:{port}")
    return processes, urls


def start_engine(spec: EngineSpec, log: Path, **env: str) -> subprocess.Popen:
    """The engine under the guard `up` uses, so it dies with the benchmark whatever happens;
    ``env``: more of its environment."""
    return start(guarded(spec.command), {**spec.env, **env}, log)


def start_gateway(
    work: Path, engine_urls: Sequence[str], log_name: str, **settings: str
) -> tuple[str, subprocess.Popen]:
    """A `mistral-serve gateway` over ``engine_urls``, not yet waited for: its URL and process.
    Telemetry off and warnings only unless ``settings`` (more environment) say otherwise; its
    key store in ``work``."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
        "ENGINE_URLS": ",".join(engine_urls),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "MISTRAL_SERVE_DATA_DIR": str(work / "data"),
        "LOG_LEVEL": "WARNING",
        **settings,
    }
    command = [sys.executable, "-m", "mistral_serve.cli", "gateway"]
    return f"http://127.0.0.1:{port}", start(command, env, work / f"{log_name}.log")


def create_key(work: Path, source: Path | None = None) -> str:
    """A new API key in the store of ``work``'s gateways (``source``: the src/ whose CLI
    makes it, for a baseline's store)."""
    env = {**os.environ, "MISTRAL_SERVE_DATA_DIR": str(work / "data")}
    if source is not None:
        env["PYTHONPATH"] = str(source)
    output = subprocess.run(
        [sys.executable, "-m", "mistral_serve.cli", "keys", "create", "--name", "bench"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return re.search(r"key:\s+(\S+)", output).group(1)


def api_server(engine: subprocess.Popen) -> psutil.Process:
    """The vLLM API server below an engine started by :func:`start_engine`."""
    for process in psutil.Process(engine.pid).children(recursive=True):
        if process.cmdline()[1:3] == ["-m", VLLM_SERVER_MODULE]:
            return process
    raise LookupError("no vLLM API server below the engine's guard")


def wait_ok(url: str, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2) as http:  # one client: an SSL context per poll costs CPU
        while time.monotonic() < deadline:
            try:
                if http.get(url).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
    raise SystemExit(f"{url} not ready after {timeout_s} s")


def stop_all(processes: Iterable[subprocess.Popen]) -> None:
    """SIGTERM every group (last started first), then SIGKILL what is left after 30 s."""
    processes = list(processes)
    for process in reversed(processes):
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def cpu_time(pid: int) -> float:
    """Seconds of CPU the process's threads have run, to the nanosecond (the scheduler's own
    account, /proc/PID/task/*/schedstat): /proc/PID/stat counts in 10 ms ticks, 20 µs a
    request in a slice of 500."""
    total = 0
    for thread in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((thread / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):  # a thread that ended meanwhile
            continue
    return total / 1e9


@contextmanager
def fake_engine_and_database(work: Path) -> Iterator[tuple[str, str]]:
    """A fake engine answering at once (bench/fake_engine.py) and a throwaway PostgreSQL
    database (bench/load.py): their URLs, both gone at the end."""
    port = free_port()
    fake = start(
        [sys.executable, str(Path(__file__).with_name("fake_engine.py")), str(port)],
        dict(os.environ),
        work / "fake-engine.log",
    )
    engine = f"http://127.0.0.1:{port}"
    name, url = asyncio.run(make_database())
    try:
        wait_ok(engine + "/health", 30)
        yield engine, url
    finally:
        stop_all([fake])
        asyncio.run(drop_database(name))
