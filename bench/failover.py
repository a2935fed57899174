"""Streams that survive their engine: greedy streams over two demo engines; the engine serving
most of them is stopped (``kill -STOP`` of its engine core: a hung engine) a third of the way
in, and in a second round SIGKILLed (a dead one).

For every stream: whether it ended whole (200, ``[DONE]``, no error event, ``usage`` saying
exactly its max_tokens), whether its text equals the same stream's in a first round without
faults (greedy sampling: the continuation is token-exact), and the longest gap between two of
its events: the stall a client saw. The streams that moved are the ones the gateway's log says
moved; their gaps are the largest.

    .venv/bin/python bench/failover.py [--streams 32] [--tokens 256] [--stall-timeout 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
import orjson
import psutil
from harness import demo_engine_spec, start_engine, start_gateway, stop_all, wait_ok

from mistral_serve.engines.supervisor import free_port


@dataclass
class Stream:
    whole: bool
    text: str
    longest_gap_s: float


async def one(session: aiohttp.ClientSession, url: str, prompt: str, tokens: int) -> Stream:
    body = {
        "model": "demo",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    text, usage, done, failed = [], None, False, False
    last, gap = None, 0.0
    async with session.post(url + "/v1/chat/completions", json=body) as response:
        buffer = b""
        async for chunk in response.content.iter_any():
            now = time.perf_counter()
            if last is not None:
                gap = max(gap, now - last)
            last = now
            buffer += chunk
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                data = event.removeprefix(b"data: ")
                if data == b"[DONE]":
                    done = True
                    continue
                document = orjson.loads(data)
                failed = failed or "error" in document
                if document.get("usage"):
                    usage = document["usage"]
                for choice in document.get("choices") or ():
                    text.append(choice["delta"].get("content") or "")
    whole = (
        response.status == 200
        and done
        and not failed
        and (usage or {}).get("completion_tokens") == tokens
    )
    return Stream(whole, "".join(text), gap)


async def round_of(url: str, streams: int, tokens: int, fault=None) -> list[Stream]:
    prompts = [f"Story {n}: the keeper counted the ships that passed." for n in range(streams)]
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=900)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [asyncio.create_task(one(session, url, p, tokens)) for p in prompts]
        if fault is not None:
            await fault()
        return await asyncio.gather(*tasks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--stall-timeout", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        specs = [demo_engine_spec(work, port=free_port()) for _ in range(2)]
        engines = {
            spec.url: start_engine(spec, work / f"engine-{n}.log") for n, spec in enumerate(specs)
        }
        processes = list(engines.values())
        try:
            for url in engines:
                wait_ok(url + "/health")
            settings = {
                "ENGINE_STALL_TIMEOUT_S": str(args.stall_timeout),
                "ENGINE_HEALTH_INTERVAL_S": "0.5",
                "ENGINE_CANARY_INTERVAL_S": "2",
                "ENGINE_MAX_INFLIGHT": str(args.streams),
                "LOG_LEVEL": "INFO",
            }
            gateway_url, gateway = start_gateway(work, list(engines), "gateway", **settings)
            processes.append(gateway)
            wait_ok(gateway_url + "/ready", 120)
            log = work / "gateway.log"

            def moves() -> int:
                return log.read_text().count("stream moved off")

            def serving() -> str:
                ready = httpx.get(gateway_url + "/ready", timeout=10).json()["engines"]
                return max(ready, key=lambda engine: engine["outstanding"])["url"]

            def both_ready() -> bool:
                ready = httpx.get(gateway_url + "/ready", timeout=10).json()["engines"]
                return all(engine["ready"] for engine in ready)

            def vllm(url: str, marker: str) -> psutil.Process:
                for process in psutil.Process(engines[url].pid).children(recursive=True):
                    if marker in " ".join(process.cmdline()):
                        return process
                raise LookupError(marker)

            asyncio.run(round_of(gateway_url, 4, 16))  # warm-up
            reference = asyncio.run(round_of(gateway_url, args.streams, args.tokens))
            # A third of the way: a first round's duration tells when that is.
            began = time.perf_counter()
            asyncio.run(round_of(gateway_url, args.streams, args.tokens))
            third = (time.perf_counter() - began) / 3
            rows = []
            stopped: list[psutil.Process] = []

            async def stop() -> None:
                await asyncio.sleep(third)
                core = vllm(serving(), "EngineCore")
                core.suspend()
                stopped.append(core)

            async def kill() -> None:
                await asyncio.sleep(third)
                url = serving()
                doomed = [vllm(url, "vllm.entrypoints"), vllm(url, "EngineCore")]
                for process in doomed:
                    os.kill(process.pid, signal.SIGKILL)

            for name, fault in (("kill -STOP (engine core)", stop), ("SIGKILL", kill)):
                before = moves()
                results = asyncio.run(round_of(gateway_url, args.streams, args.tokens, fault))
                for core in stopped:
                    core.resume()
                stopped.clear()
                moved = moves() - before
                gaps = sorted((stream.longest_gap_s for stream in results), reverse=True)
                rows.append(
                    (
                        name,
                        sum(stream.whole for stream in results),
                        sum(s.text == r.text for s, r in zip(results, reference, strict=True)),
                        moved,
                        gaps[max(0, moved - 1)] if moved else None,
                        gaps[0],
                        gaps[moved] if moved < len(gaps) else None,
                    )
                )
                deadline = time.monotonic() + 120
                while name.startswith("kill -STOP") and not both_ready():
                    assert time.monotonic() < deadline, "the stopped engine did not come back"
                    time.sleep(0.5)
        finally:
            stop_all(processes)
    print(
        f"2 demo engines (CPU), {args.streams} greedy streams of {args.tokens} tokens, "
        f"fault a third of the way in, ENGINE_STALL_TIMEOUT_S={args.stall_timeout:g}\n"
    )
    print(
        "| fault | streams whole | text equal to the run without faults | moved "
        "| longest gap of a moved stream: shortest / longest | longest gap of the others |"
    )
    print("|---|---|---|---|---|---|")
    for name, whole, equal, moved, least, most, others in rows:
        moved_gaps = f"{least:.2f} / {most:.2f} s" if moved else "-"
        other_gap = f"{others:.2f} s" if others is not None else "-"
        print(
            f"| {name} | {whole} / {args.streams} | {equal} / {args.streams} | {moved} "
            f"| {moved_gaps} | {other_gap} |"
        )


if __name__ == "__main__":
    main()
