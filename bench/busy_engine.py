"""Is a busy engine declared dead? 64 concurrent streams through the gateway onto one engine.

    .venv/bin/python bench/busy_engine.py [--requests 960] [--concurrency 64]
        [--baseline-src /path/to/an/older/checkout/src]

Starts one demo engine (Mistral format, as `up` does) and a gateway over it, then streams chat
completions at the gateway: once as they come, once while the engine's API server is stopped
(`kill -STOP`) for 5 s, which is how a long GC pause or a blocked event loop looks from outside.
Counts every answer by status (and streams that ended in an error event). With
``--baseline-src`` a second gateway runs that code (e.g. a `git worktree` of an older commit)
over the same engine, rounds alternating, so the two are compared in one run. Not a test: the
numbers go to docs/architecture.md with the command that produced them.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import aiohttp
import psutil
from harness import (
    api_server,
    demo_engine_spec,
    start_engine,
    start_gateway,
    stop_all,
    wait_ok,
)

BODY = {
    "model": "demo",
    "messages": [{"role": "user", "content": "Tell me a story about a lighthouse keeper."}],
    "max_tokens": 32,
    "stream": True,
}


async def load(url: str, requests: int, concurrency: int) -> Counter:
    outcomes: Counter = Counter()
    queue = iter(range(requests))

    async def worker(session: aiohttp.ClientSession) -> None:
        for _ in queue:
            async with session.post(url + "/v1/chat/completions", json=BODY) as response:
                body = await response.read()
                if response.status != 200:
                    outcomes[str(response.status)] += 1
                elif body.endswith(b"data: [DONE]\n\n") and b'data: {"error"' not in body:
                    outcomes["200"] += 1
                else:
                    outcomes["200, stream broken"] += 1

    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return outcomes


def paused_for(process: psutil.Process, after_s: float, for_s: float) -> threading.Thread:
    def pause() -> None:
        time.sleep(after_s)
        process.suspend()
        time.sleep(for_s)
        process.resume()

    thread = threading.Thread(target=pause, daemon=True)
    thread.start()
    return thread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=960)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--baseline-src", type=Path, help="src/ of the code to compare against")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mistral-serve-bench-"))
    spec = demo_engine_spec(work)
    engine = start_engine(spec, work / "engine.log")
    processes = [engine]
    try:
        wait_ok(spec.url + "/health")
        paused_process = api_server(engine)
        gateways: dict[str, str] = {}
        variants: dict[str, Path | None] = {"this": None}
        if args.baseline_src:
            variants["baseline"] = args.baseline_src
        for name, source in variants.items():
            baseline = {"PYTHONPATH": str(source)} if source is not None else {}
            url, gateway = start_gateway(work, [spec.url], f"gateway-{name}", **baseline)
            processes.append(gateway)
            gateways[name] = url
        for url in gateways.values():
            wait_ok(url + "/ready", 120)
            asyncio.run(load(url, 16, 4))  # warm up
        for scenario in ("saturated", "API server paused 5 s"):
            for name, url in gateways.items():
                time.sleep(6)  # let every gateway see the engine ready again
                pause = paused_for(paused_process, 2.0, 5.0) if "paused" in scenario else None
                started = time.perf_counter()
                outcomes = asyncio.run(load(url, args.requests, args.concurrency))
                wall = time.perf_counter() - started
                if pause is not None:
                    pause.join()
                shown = ", ".join(f"{n} × {status}" for status, n in sorted(outcomes.items()))
                print(f"{scenario:>22} | {name:>8} gateway | {wall:5.1f} s | {shown}", flush=True)
    finally:
        stop_all(processes)


if __name__ == "__main__":
    main()
