"""Traffic control against real engines: conversations stay where their prefix is cached, two
gateways agree without talking, and an engine's concurrency target holds under a burst.

Two engines serve "demo" here: the session's, and a second one started for this module. Which
engine served a request is read from the engines' own `/metrics` (prefix-cache queries rise on
the engine that saw the prompt; hits show its cache was used), never from the gateway. The
gateways started here send no canaries, so the only traffic on the second engine is the tests'.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp
import httpx
import openai
import pytest

from mistral_serve.engines.stats import parse_stats
from mistral_serve.engines.supervisor import free_port
from tests.support import engine_stats, stop_process, until, wait_for, wait_until_ok

from .conftest import ENGINE_START_TIMEOUT_S, Stack, demo_engine, start_gateway

pytestmark = pytest.mark.integration

QUIET = {"ENGINE_CANARY_INTERVAL_S": "3600"}  # no canaries: the engines' counters are ours


@dataclass
class Pair:
    engines: list[str]  # two engine URLs serving "demo"
    gateways: list[str]  # two gateways over both


@pytest.fixture(scope="module")
def pair(stack: Stack, otlp, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    log_dir = tmp_path_factory.mktemp("routing")
    processes = []
    try:
        url, engine, log_path = demo_engine(
            "demo", "127.0.0.1", free_port(), stack.cache_dir, log_dir, otlp.endpoint
        )
        processes.append(engine)
        wait_until_ok(url + "/health", engine, log_path, ENGINE_START_TIMEOUT_S)
        engines = [stack.engine_urls["demo"], url]
        gateways = []
        for index in range(2):
            gateway_url, gateway = start_gateway(
                ",".join(engines), otlp.endpoint, log_dir / f"gateway-{index}.log", **QUIET
            )
            processes.append(gateway)
            gateways.append(gateway_url)
        for gateway_url in gateways:  # both engines ready in both gateways
            wait_for_ready_engines(gateway_url, 2)
        yield Pair(engines, gateways)
    finally:
        for process in reversed(processes):
            stop_process(process)


def wait_for_ready_engines(gateway_url: str, count: int, timeout_s: float = 60) -> None:
    def ready() -> bool:
        engines = httpx.get(gateway_url + "/ready", timeout=10).json()["engines"]
        return sum(engine["ready"] for engine in engines) >= count

    wait_for(ready, timeout_s, f"{gateway_url}: {count} engines ready")


def client(gateway_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway_url + "/v1", api_key="unused", max_retries=0, timeout=120)


def opening(index: int) -> str:
    """A long first turn (about 1,500 tokens: a dozen of the CPU engine's 128-token blocks)."""
    return f"Conversation {index}. " + " ".join(
        f"Paragraph {p} of conversation {index} describes the harbour, the ships and the weather."
        for p in range(90)
    )


def converse(gateway_for_turn, conversations: range, turns: int, engines: list[str]) -> dict:
    """Run conversations turn by turn (turn ``t`` through ``gateway_for_turn(t)``); returns, per
    conversation, the engine each turn's prefix-cache queries rose on, and the hits it got."""
    served: dict[int, list[tuple[int, float]]] = {}
    for index in conversations:  # each test its own: none is cached before it starts
        messages = [{"role": "user", "content": opening(index)}]
        for turn in range(turns):
            before = [engine_stats(url) for url in engines]
            answer = client(gateway_for_turn(turn)).chat.completions.create(
                model="demo", messages=messages, max_tokens=8, temperature=0
            )
            after = [engine_stats(url) for url in engines]
            queried = [
                a.prefix_cache_queries - b.prefix_cache_queries
                for a, b in zip(after, before, strict=True)
            ]
            engine = max(range(len(engines)), key=lambda i: queried[i])
            hits = after[engine].prefix_cache_hits - before[engine].prefix_cache_hits
            served.setdefault(index, []).append((engine, hits / max(1, queried[engine])))
            messages += [
                {"role": "assistant", "content": answer.choices[0].message.content or "…"},
                {"role": "user", "content": f"Tell me more about turn {turn}."},
            ]
    return served


def assert_conversations_kept_their_engine(served: dict) -> None:
    for index, turns in served.items():
        engines = {engine for engine, _ in turns}
        assert len(engines) == 1, f"conversation {index} moved: {turns}"
        for _, hit_rate in turns[1:]:
            # Every earlier turn's full 128-token blocks were cached: most of the prompt.
            assert hit_rate > 0.8, f"conversation {index}: later turn missed its cache: {turns}"


def test_each_conversation_stays_on_the_engine_holding_its_prefix(pair: Pair):
    served = converse(
        lambda turn: pair.gateways[0], conversations=range(4), turns=3, engines=pair.engines
    )
    assert_conversations_kept_their_engine(served)


def test_two_gateways_agree_on_each_conversations_engine(pair: Pair):
    """Turns alternate between gateways; neither has seen the conversation's other turns."""
    served = converse(
        lambda turn: pair.gateways[turn % 2],
        conversations=range(100, 104),
        turns=3,
        engines=pair.engines,
    )
    assert_conversations_kept_their_engine(served)
    [ready] = {httpx.get(g + "/ready", timeout=10).json()["routing_policy"] for g in pair.gateways}
    assert ready == "prefix-load"


def served_by(engines: list[str], ask) -> int:
    """Which engine served the chat ``ask()`` sends: the one whose prompt-token counter rose by
    at least the answer's prompt (the session's gateway also sends short canaries to the first
    engine; they add a few tokens, never a whole prompt)."""
    before = [engine_stats(url) for url in engines]
    answer = ask()
    after = [engine_stats(url) for url in engines]
    rose = [a.prompt_tokens - b.prompt_tokens for a, b in zip(after, before, strict=True)]
    [engine] = [i for i, tokens in enumerate(rose) if tokens >= answer.usage.prompt_tokens]
    return engine


def test_a_named_session_keeps_its_engine_whatever_names_it(pair: Pair):
    """A session named by the x-session-id header, the ``user`` field or ``prompt_cache_key``
    is one session, kept on one engine, although each of its requests opens with other text
    (without the session, each would go to its own opening's engine: nine on one engine by
    chance is 1 in 256)."""
    chat = client(pair.gateways[0]).chat.completions.create
    names_it = [
        {"extra_headers": {"x-session-id": "affinity"}},
        {"user": "affinity"},
        {"prompt_cache_key": "affinity"},
    ]
    engines = set()
    for way, session in enumerate(names_it):
        for n in range(3):
            text = f"Request {way}.{n} of the session. " + opening(200 + 3 * way + n)[:1200]
            engines.add(
                served_by(
                    pair.engines,
                    lambda text=text, session=session: chat(
                        model="demo",
                        messages=[{"role": "user", "content": text}],
                        max_tokens=1,
                        **session,
                    ),
                )
            )
    assert len(engines) == 1, engines


# -- admission ------------------------------------------------------------------------------------
TARGET = 2
QUEUE_MAX = 4
#: A streamed completion that takes a while (ignore_eos: always all its tokens).
LONG_STREAM = {
    "model": "demo",
    "prompt": "Count slowly.",
    "max_tokens": 160,
    "stream": True,
    "ignore_eos": True,
}


async def burst(url: str, requests: int, on_sent=None) -> list[tuple[int, float, dict, bytes]]:
    """``requests`` streamed completions at once: (status, seconds to the answer's headers,
    headers, body) for each."""

    async def one(session: aiohttp.ClientSession) -> tuple[int, float, dict, bytes]:
        started = time.monotonic()
        async with session.post(url + "/v1/completions", json=LONG_STREAM) as response:
            answered = time.monotonic() - started
            return response.status, answered, dict(response.headers), await response.read()

    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(
        timeout=timeout, connector=aiohttp.TCPConnector(limit=0)
    ) as session:
        tasks = [asyncio.create_task(one(session)) for _ in range(requests)]
        if on_sent is not None:
            await on_sent()
        return await asyncio.gather(*tasks)


async def until_queued(url: str, waiting: int, timeout_s: float = 30) -> None:
    """Until the gateway's queue for "demo" holds ``waiting`` requests (a sleep would race the
    burst's connections on a loaded machine)."""
    async with httpx.AsyncClient(timeout=10) as http:

        async def queued() -> bool:
            return (await http.get(url + "/ready")).json()["waiting"].get("demo", 0) >= waiting

        await until(queued, timeout_s, f"{url}: {waiting} requests queued")


@pytest.fixture
def admitting_gateway(pair: Pair, otlp, tmp_path) -> Iterator[tuple[str, object]]:
    """A gateway over the second engine alone, with a concurrency target of 2."""
    url, process = start_gateway(
        pair.engines[1],
        otlp.endpoint,
        tmp_path / "gateway.log",
        ENGINE_MAX_INFLIGHT=str(TARGET),
        ADMISSION_QUEUE_MAX=str(QUEUE_MAX),
        ADMISSION_QUEUE_TIMEOUT_S="120",
        **QUIET,
    )
    try:
        wait_for_ready_engines(url, 1)
        yield url, process
    finally:
        stop_process(process)


def test_a_burst_past_the_target_is_queued_or_answered_429_at_once(pair: Pair, admitting_gateway):
    url, _ = admitting_gateway
    engine = pair.engines[1]
    peak = {"running": 0.0, "waiting": 0.0}

    async def watch_engine() -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            for _ in range(40):
                stats = parse_stats((await http.get(engine + "/metrics")).text)
                peak["running"] = max(peak["running"], stats.running)
                peak["waiting"] = max(peak["waiting"], stats.waiting)
                await asyncio.sleep(0.1)

    results = asyncio.run(burst(url, 20, on_sent=watch_engine))
    statuses = Counter(status for status, *_ in results)
    assert statuses == Counter({200: TARGET + QUEUE_MAX, 429: 20 - TARGET - QUEUE_MAX}), statuses
    for status, answered_s, headers, body in results:
        if status == 429:
            assert answered_s < 3, answered_s  # at once, not after a wait
            assert int(headers["Retry-After"]) >= 1
            assert int(headers["retry-after-ms"]) > 0
            assert b'"code":"server_overloaded"' in body.replace(b" ", b"")
        else:
            assert body.rstrip().endswith(b"data: [DONE]")  # the queued ones ran to the end
    # The engine never had more than the target: the rest waited in the gateway.
    assert peak["running"] + peak["waiting"] <= TARGET, peak

    # The official client sees a RateLimitError it could retry.
    async def ask_once_full() -> None:
        await until_queued(url, QUEUE_MAX)
        with pytest.raises(openai.RateLimitError) as refused:
            await asyncio.to_thread(
                client(url).completions.create, model="demo", prompt="hi", max_tokens=2
            )
        assert refused.value.body["code"] == "server_overloaded"

    asyncio.run(burst(url, TARGET + QUEUE_MAX, on_sent=ask_once_full))


def test_draining_answers_the_queued_requests_503_and_finishes_the_running_ones(
    pair: Pair, admitting_gateway
):
    url, process = admitting_gateway

    async def terminate_once_queued() -> None:
        await until_queued(url, QUEUE_MAX)
        os.kill(process.pid, signal.SIGTERM)

    results = asyncio.run(burst(url, TARGET + QUEUE_MAX, on_sent=terminate_once_queued))
    statuses = Counter(status for status, *_ in results)
    assert statuses == Counter({200: TARGET, 503: QUEUE_MAX}), statuses
    for status, _, _, body in results:
        if status == 503:
            assert b'"code":"shutting_down"' in body.replace(b" ", b"")
        else:
            assert body.rstrip().endswith(b"data: [DONE]")


def test_a_request_priority_reaches_an_engine_that_honours_it(stack: Stack):
    """Engines run `--scheduling-policy priority`; with vLLM's default a priority is refused."""
    answer = stack.client(max_retries=0).chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=2,
        extra_body={"priority": -5},
    )
    assert answer.usage.completion_tokens == 2
