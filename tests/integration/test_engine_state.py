"""Engine state against real engines: busy is not dead, and stuck is not alive.

A paused API server (``kill -STOP``) is what a long GC pause or a blocked event loop looks like
from outside; a stopped engine core is vLLM's hung engine (its /health stays 200). Both are made
for real here, on the session's engines, and always resumed.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import aiohttp
import httpx
import openai
import pytest

from tests.support import paused, wait_for

from .conftest import STALL_TIMEOUT_S, Stack

pytestmark = pytest.mark.integration


async def stream_load(url: str, requests: int, concurrency: int, body: dict) -> Counter:
    """Streamed requests; counts each outcome: an HTTP status, or "ok" / "broken" for a 200
    whose stream ended with [DONE] / with an error event or not at all."""
    outcomes: Counter = Counter()
    queue = iter(range(requests))

    async def worker(session: aiohttp.ClientSession) -> None:
        for _ in queue:
            async with session.post(url, json=body) as response:
                if response.status != 200:
                    outcomes[response.status] += 1
                    await response.read()
                    continue
                events = (await response.read()).split(b"\n\n")
                whole = events[-2:] == [b"data: [DONE]", b""] and not any(
                    event.startswith(b'data: {"error"') for event in events
                )
                if not whole:
                    print("broken stream:", events[:2], events[-3:])
                outcomes["ok" if whole else "broken"] += 1

    timeout = aiohttp.ClientTimeout(total=300)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return outcomes


STORY = {
    "model": "demo",
    "prompt": "Tell me a story about a lighthouse keeper.",
    "max_tokens": 32,
    "stream": True,
}


def test_64_streams_on_one_engine_get_no_503_even_while_its_api_server_pauses(stack: Stack):
    """The failure that started this: a saturated engine answers probes late. Then the same
    load while its API server is stopped for 5 s (below the stall timeout): late, not dead."""
    url = stack.gateway_url + "/v1/completions"
    saturated = asyncio.run(stream_load(url, 256, 64, STORY))
    assert saturated == Counter(ok=256)

    assert STALL_TIMEOUT_S > 5 + 2
    with paused(stack.api_server("demo"), after_s=1.0, for_s=5.0):
        through_pause = asyncio.run(stream_load(url, 256, 64, STORY))
    assert through_pause == Counter(ok=256)
    [engine] = [e for e in readiness(stack)["engines"] if "demo" in e["models"]]
    assert engine["state"] == "ready"


def readiness(stack: Stack) -> dict:
    return httpx.get(stack.gateway_url + "/ready", timeout=10).json()


def engine_state(stack: Stack, model: str) -> dict:
    [engine] = [e for e in readiness(stack)["engines"] if model in e["models"]]
    return engine


def test_a_stuck_engine_is_found_out_and_back_after_a_canary(stack: Stack):
    """Gateway mode (engines elsewhere): the stuck engine's requests are taken back within the
    stall timeout, /ready says why, and once it moves again a canary brings it back."""
    client = stack.client(max_retries=0, timeout=120)
    chat = {"model": "demo-v1", "messages": [{"role": "user", "content": "Talk on."}]}
    stream = client.chat.completions.create(
        **chat, max_tokens=4000, stream=True, extra_body={"ignore_eos": True}
    )
    assert next(iter(stream)).choices  # a stream under way
    with paused(stack.engine_core("demo-v1")):
        stopped = time.monotonic()
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(**chat, max_tokens=4)  # no other engine serves it
        waited = time.monotonic() - stopped
        assert refused.value.status_code == 502
        assert refused.value.body["code"] == "engine_stalled"
        assert waited < STALL_TIMEOUT_S + 5, waited
        with pytest.raises(openai.APIError, match="stalled"):  # the SSE error event
            for _ in stream:
                pass
        state = engine_state(stack, "demo-v1")
        assert state["state"] == "stalled"
        assert "no progress" in state["reason"]
        assert engine_state(stack, "demo")["state"] == "ready"  # the other engine is untouched
    wait_for(  # a canary got its token
        lambda: engine_state(stack, "demo-v1")["state"] == "ready", 30, "back after a canary"
    )
    answer = client.chat.completions.create(**chat, max_tokens=3)
    assert answer.usage.completion_tokens == 3


def test_ready_shows_each_engines_load_from_its_metrics(stack: Stack):
    stack.client().completions.create(model="demo", prompt="hi", max_tokens=2)
    time.sleep(1.5)  # a scrape or two (ENGINE_STATS_INTERVAL_S=0.5)
    stats = engine_state(stack, "demo")["stats"]
    assert stats["generation_tokens"] >= 2
    assert {"running", "waiting", "kv_cache_usage"} <= set(stats)
