"""`up` with two gateway workers on one port (GATEWAY_WORKERS=2): both serve, a conversation
keeps its engine whichever worker takes each turn, and a burst through both never puts more
than an engine's concurrency target on it (their in-flight counts are shared, not scraped)."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import pytest

from mistral_serve.engines.stats import parse_stats
from tests.support import alive, family, stop_process, wait_for, wait_until_ok

from .conftest import ENGINE_START_TIMEOUT_S
from .test_routing import assert_conversations_kept_their_engine, burst, converse
from .test_up import finish, run_up

pytestmark = pytest.mark.integration

TARGET = 2  # per engine
SETTINGS = {
    "MODEL_ID": "demo",
    "ENGINE_REPLICAS": "2",
    "GATEWAY_WORKERS": "2",
    "AUTH": "off",
    "ENGINE_MAX_INFLIGHT": str(TARGET),
    "ENGINE_CANARY_INTERVAL_S": "3600",  # the engines' counters are the tests' traffic
}


def test_two_workers_under_up_keep_the_targets_and_agree_on_routing(demo_cache, tmp_path):
    log_path = tmp_path / "up.log"
    process, port = run_up(SETTINGS, demo_cache, log_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ok(url + "/ready", process, log_path, ENGINE_START_TIMEOUT_S)
        seen: dict[int, list[str]] = {}

        def both_workers_see_both_engines() -> bool:
            detail = httpx.get(url + "/ready", timeout=10).json()  # a new connection each time
            ready = sorted(engine["url"] for engine in detail["engines"] if engine["ready"])
            if len(ready) == 2:
                seen[detail["workers"]["this"]] = ready
            return set(seen) == {0, 1}

        wait_for(both_workers_see_both_engines, 120, "both workers answer, both engines ready")
        engines = seen[0]

        # A client per turn: each turn on a new connection, taken by either worker.
        served = converse(lambda turn: url, range(300, 306), turns=3, engines=engines)
        assert_conversations_kept_their_engine(served)

        peak = dict.fromkeys(engines, 0.0)

        async def watch_engines() -> None:
            async with httpx.AsyncClient(timeout=10) as http:
                for _ in range(60):
                    for engine in engines:
                        stats = parse_stats((await http.get(engine + "/metrics")).text)
                        peak[engine] = max(peak[engine], stats.running + stats.waiting)
                    await asyncio.sleep(0.05)

        results = asyncio.run(burst(url, 16, on_sent=watch_engines))
        assert [status for status, *_ in results] == [200] * 16
        assert all(body.rstrip().endswith(b"data: [DONE]") for *_, body in results)
        # Both workers took requests (16 connections), yet no engine ever had more than its
        # target: the rest waited in the workers' lines.
        assert max(peak.values()) <= TARGET, peak
        assert min(peak.values()) >= 1, peak  # both engines were used

        started = family(process.pid)
        process.send_signal(signal.SIGTERM)
        output = finish(process, log_path, 180)
        assert process.returncode == 0, output
        assert "with 2 workers" in output
        time.sleep(0.5)
        assert not alive(started), f"still running after up exited: {alive(started)}"
    finally:
        stop_process(process)
