"""Supervisor mechanics with stand-in engine processes (small Python scripts named fake_*):
a real vLLM cannot be made to crash on cue. `tests/integration/test_up.py` runs real engines."""

from __future__ import annotations

import logging
import os
import sys
import textwrap
import time

import pytest

from mistral_serve.engines.supervisor import (
    Backoff,
    EngineSpec,
    Supervisor,
    free_port,
    line_level,
    root_cause,
)
from mistral_serve.errors import EngineStartError
from mistral_serve.telemetry import semconv
from mistral_serve.telemetry.engines import EngineTelemetry
from tests.support import alive, family, until

VLLM_FAILURE = """\
(APIServer pid=6452) WARNING 11-24 20:15:26 [system_utils.py:255] Found ulimit of 20000 and failed to automatically increase with error current limit exceeds maximum limit. This can cause fd limit errors like `OSError: [Errno 24] Too many open files`.
(Worker pid=6483) ERROR 11-24 20:15:40 [multiproc_executor.py:1063] Traceback (most recent call last):
(Worker pid=6483) ERROR 11-24 20:15:40 [multiproc_executor.py:1063] ValueError: Available memory on node 0 (4.99/8.84 GiB) is less than requested memory for kv (100.0 GiB).
(EngineCore pid=6470) ERROR 11-24 20:15:40 [core.py:1510] RuntimeError: Worker failed with error 'Available memory ...'
RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {'EngineCore': 1}
"""  # noqa: E501


def test_root_cause_is_the_first_exception_not_the_rethrows():
    cause = root_cause(VLLM_FAILURE.splitlines())
    assert cause is not None
    assert cause.startswith("ValueError: Available memory on node 0")


def test_root_cause_of_a_plain_traceback():
    lines = ["Traceback (most recent call last):", '  File "x.py"', "OSError: no such model"]
    assert root_cause(lines) == "OSError: no such model"
    assert root_cause(["all fine"]) is None


def test_backoff_doubles_up_to_a_ceiling():
    backoff = Backoff(first_s=1, ceiling_s=8)
    assert [backoff.delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 8, 8]


# -- stand-in engines ----------------------------------------------------------------------------
FAKE_SERVER = textwrap.dedent(
    """
    import http.server, os, subprocess, sys, time
    port = int(sys.argv[1]); mode = sys.argv[2]
    print("fake engine loading", flush=True)
    if mode == "fail":
        print("Traceback (most recent call last):", flush=True)
        print("OSError: fake model folder not found", flush=True)
        sys.exit(1)
    # a grandchild, as vLLM's engine core is, to prove the whole group is stopped
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    time.sleep(0.3)
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers()
        def log_message(self, *args):
            pass
    server = http.server.HTTPServer(("127.0.0.1", port), Health)
    print("fake engine ready", flush=True)
    if mode == "crash-once" and not os.path.exists(sys.argv[3]):
        open(sys.argv[3], "w").close()
        server.timeout = 1.0
        server.handle_request(); server.handle_request()
        print("fake engine crashing", flush=True)
        os._exit(9)
    server.serve_forever()
    """
)


def fake_spec(tmp_path, mode: str, name: str = "engine 0") -> EngineSpec:
    script = tmp_path / "fake_engine.py"
    script.write_text(FAKE_SERVER)
    port = free_port()
    marker = tmp_path / f"crashed-{port}"
    return EngineSpec(
        name=name,
        command=[sys.executable, str(script), str(port), mode, str(marker)],
        env=dict(os.environ),
        url=f"http://127.0.0.1:{port}",
    )


async def test_start_waits_for_ready_then_stop_ends_the_whole_process_group(tmp_path, client):
    progress: list[str] = []
    supervisor = Supervisor(
        [fake_spec(tmp_path, "serve")],
        client,
        start_timeout_s=30,
        stop_timeout_s=5,
        on_progress=progress.append,
    )
    await supervisor.start()
    engine = supervisor.engines[0]
    assert engine.running
    assert any("ready after" in line for line in progress)
    started = family(engine.process.pid)
    assert len(started) > 2, "the stand-in starts a grandchild"
    assert "fake engine ready" in engine.tail
    await supervisor.stop()
    assert not engine.running
    await until(lambda: not alive(started), 5, "the whole group gone")


async def test_an_engine_that_dies_while_loading_fails_fast_with_its_own_line(tmp_path, client):
    supervisor = Supervisor([fake_spec(tmp_path, "fail")], client, start_timeout_s=60)
    started = time.monotonic()
    with pytest.raises(EngineStartError) as caught:
        await supervisor.start()
    assert time.monotonic() - started < 20  # not after the start timeout
    assert "engine 0 exited with code 1" in caught.value.message
    assert caught.value.message.endswith("OSError: fake model folder not found")


async def test_a_start_that_takes_too_long_is_reported(tmp_path, client):
    spec = fake_spec(tmp_path, "serve")
    spec.command[-3] = str(free_port())  # health is asked at a port the fake never opens
    supervisor = Supervisor([spec], client, start_timeout_s=1.5)
    with pytest.raises(EngineStartError, match="was not ready after 2 s"):
        await supervisor.start()
    assert not supervisor.engines[0].running


async def restarted(engine, first_pid: int) -> None:
    """Wait until ``engine`` runs again, as a new process, after its first restart."""
    await until(
        lambda: engine.restarts == 1 and engine.running and engine.process.pid != first_pid,
        20,
        "the engine restarted",
    )


async def test_a_crashed_engine_is_restarted(tmp_path, client):
    supervisor = Supervisor(
        [fake_spec(tmp_path, "crash-once")],
        client,
        start_timeout_s=30,
        stop_timeout_s=5,
        backoff=Backoff(first_s=0.2, ceiling_s=1),
    )
    await supervisor.start()
    engine = supervisor.engines[0]
    first_pid = engine.process.pid
    try:
        await restarted(engine, first_pid)
    finally:
        await supervisor.stop()
    assert not engine.running


def test_relayed_lines_keep_vllms_level():
    assert line_level("(EngineCore pid=1) ERROR 11-24 20:15:40 [core.py:1] boom") == logging.ERROR
    assert line_level("(APIServer pid=2) WARNING 11-24 20:15:26 [x.py:2] hm") == logging.WARNING
    assert line_level("INFO 11-24 20:15:26 [x.py:2] fine") == logging.INFO
    assert line_level("Traceback (most recent call last):") == logging.INFO


async def test_restart_kills_the_whole_engine_and_it_comes_back(tmp_path, client, captured):
    supervisor = Supervisor(
        [fake_spec(tmp_path, "serve")],
        client,
        start_timeout_s=30,
        stop_timeout_s=5,
        backoff=Backoff(first_s=0.2, ceiling_s=1),
        telemetry=EngineTelemetry(captured.telemetry.meter),
    )
    await supervisor.start()
    engine = supervisor.engines[0]
    first_pid = engine.process.pid
    started = family(first_pid)
    try:
        assert not supervisor.restart("engine 9", "no such engine")
        assert supervisor.restart("engine 0", "requests in flight, no progress for 30 s")
        await restarted(engine, first_pid)
        assert not alive(started)
    finally:
        await supervisor.stop()
    [point] = captured.metrics()[semconv.ENGINE_RESTARTS].data.data_points
    assert point.attributes[semconv.RESTART_REASON] == "stalled"
    assert not supervisor.restart("engine 0", "stopping: nothing to restart")
