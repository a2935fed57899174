"""Streams that survive their engine, against real engines: two demo engines of one model behind
a gateway; the engine serving 8 streams is stopped (``kill -STOP`` of its engine core: a hung
engine) and later SIGKILLed (a dead one) mid-way. Every stream must end whole on the other
engine, with exactly its 200 tokens, no error event, and greedy text equal to a run without
faults (the continuation is token-exact, not re-tokenized text).

Its own two engines: the session's stack serves two different models, and killing one of them
would take it from every other test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from mistral_serve.engines.supervisor import free_port
from tests.support import stop_process, vllm_process, wait_for, wait_until_ok

from .conftest import ENGINE_START_TIMEOUT_S, demo_engine, start_gateway

pytestmark = pytest.mark.integration

ADDRESSES = ("127.0.0.3", "127.0.0.4")
STALL_TIMEOUT_S = 4
STREAMS = 8
TOKENS = 200
SESSION = "one-session"  # every stream on one engine: the one that fails


@dataclass
class Pair:
    gateway_url: str
    engines: dict[str, subprocess.Popen]  # engine URL → its guard
    gateway_log: Path

    def moves(self) -> int:
        """Streams the gateway has moved to another engine so far (its log says each)."""
        return self.gateway_log.read_text().count("stream moved off")

    def engine_serving(self, http: httpx.Client, streams: int) -> str:
        """The URL of the engine holding ``streams`` requests now."""
        engines = http.get(self.gateway_url + "/ready").json()["engines"]
        [url] = [engine["url"] for engine in engines if engine["outstanding"] >= streams]
        return url

    def both_ready(self, http: httpx.Client) -> bool:
        engines = http.get(self.gateway_url + "/ready").json()["engines"]
        return len(engines) == 2 and all(engine["ready"] for engine in engines)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, demo_cache: Path, otlp) -> Iterator[Pair]:
    log_dir = tmp_path_factory.mktemp("migration")
    port = free_port()
    processes = []
    try:
        started = []
        for address in ADDRESSES:  # each its own log folder: both are "demo"
            (log_dir / address).mkdir()
            logs = log_dir / address
            started.append(demo_engine("demo", address, port, demo_cache, logs, otlp.endpoint))
        processes += [process for _, process, _ in started]
        for url, process, log_path in started:
            wait_until_ok(url + "/health", process, log_path, ENGINE_START_TIMEOUT_S)
        gateway_url, gateway = start_gateway(
            ",".join(url for url, _, _ in started),
            otlp.endpoint,
            log_dir / "gateway.log",
            ENGINE_STALL_TIMEOUT_S=str(STALL_TIMEOUT_S),
            ENGINE_MAX_INFLIGHT="16",
            ROUTING_BALANCE_ABS="1000",  # the session's engine takes all 8, however busy
        )
        processes.append(gateway)
        engines = {url: process for url, process, _ in started}
        yield Pair(gateway_url, engines, log_dir / "gateway.log")
    finally:
        for process in reversed(processes):
            stop_process(process)


PROMPTS = [f"Story {i}: the lighthouse keeper counted the ships." for i in range(STREAMS)]


@dataclass
class Streamed:
    text: str
    completion_tokens: int
    chunks: int


def stream(
    client: openai.OpenAI, prompt: str, on_chunk: Callable[[int], None] = lambda n: None
) -> Streamed:
    """One greedy stream of exactly TOKENS tokens; the openai client raises on an error event."""
    chunks = 0
    text: list[str] = []
    usage = None
    for chunk in client.chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": prompt}],
        max_tokens=TOKENS,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
        extra_headers={"x-session-id": SESSION},
    ):
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.choices and chunk.choices[0].delta.content:
            text.append(chunk.choices[0].delta.content)
            chunks += 1
            on_chunk(chunks)
    assert usage is not None
    return Streamed("".join(text), usage.completion_tokens, chunks)


def run_streams(pair: Pair, fault: Callable[[str], None] | None = None) -> list[Streamed]:
    """STREAMS concurrent streams; ``fault(url)`` runs once, on the engine serving them, when
    the first stream is a quarter of the way."""
    client = openai.OpenAI(base_url=pair.gateway_url + "/v1", api_key="unused", max_retries=0)
    struck = threading.Event()

    def watch(chunks: int) -> None:
        if fault is not None and chunks == TOKENS // 4 and not struck.is_set():
            struck.set()
            with httpx.Client(timeout=10) as http:
                fault(pair.engine_serving(http, STREAMS))

    with ThreadPoolExecutor(STREAMS) as pool:
        results = list(pool.map(lambda prompt: stream(client, prompt, watch), PROMPTS))
    assert fault is None or struck.is_set(), "the streams ended before the fault"
    return results


def test_streams_go_on_from_the_other_engine_when_theirs_hangs_then_dies(pair: Pair):
    reference = run_streams(pair)
    assert all(result.completion_tokens == TOKENS for result in reference)

    # kill -STOP of the serving engine's core: a hung engine, found after the stall timeout.
    stopped: list[psutil.Process] = []

    def hang(url: str) -> None:
        core = vllm_process(pair.engines[url].pid, "VLLM::EngineCore")
        core.suspend()
        stopped.append(core)

    try:
        hung = run_streams(pair, hang)
    finally:
        for core in stopped:
            core.resume()
    assert_whole_and_exact(hung, reference)
    assert pair.moves() == STREAMS
    with httpx.Client(timeout=10) as http:  # a canary brings the resumed engine back
        wait_for(lambda: pair.both_ready(http), 60, "the resumed engine back in rotation")

    # SIGKILL of the serving engine: its API server and core die at once.
    def kill(url: str) -> None:
        root = pair.engines[url].pid
        doomed = [vllm_process(root, marker) for marker in ("vllm.entrypoints", "EngineCore")]
        for process in doomed:
            os.kill(process.pid, signal.SIGKILL)

    killed = run_streams(pair, kill)
    assert_whole_and_exact(killed, reference)
    assert pair.moves() == 2 * STREAMS


def assert_whole_and_exact(results: list[Streamed], reference: list[Streamed]) -> None:
    for result, expected in zip(results, reference, strict=True):
        assert result.completion_tokens == TOKENS
        assert result.text == expected.text
