"""What a long prompt costs in the gateway: time to first token added (gateway against the
engine directly) and the gateway's CPU per request, at 1 KB, 50 KB and 220 KB prompts.

The engine is a FAKE one (bench/fake_engine.py): a CPU engine would take minutes to prefill
16 prompts of 55,000 tokens, and what is measured here is the gateway's own work on a long
body (reading, parsing, hashing for routing, forwarding). It sends its first chunk after
``--first`` seconds (0.05 by default: an engine's time to first token, short for a GPU; with
0 it answers at once, and 16 requests at a time then keep the gateway's one core busy, so
the added time is mostly the line for that core: that run measures capacity). Streamed chat
requests, each a different opening line before the same long document, CONCURRENCY at a
time; the same requests straight to the engine, then through the gateway, one run after the
other. With ``--baseline-src`` a gateway of that code too (e.g. a worktree of an older commit).

    .venv/bin/python bench/long_prompts.py [--requests 400] [--first 0.05] [--baseline-src PATH/src]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from harness import cpu_time, start_fake_engines, start_gateway, stop_all, variants, wait_ok

CONCURRENCY = 16
SIZES = {"1 KB": 1024, "50 KB": 50 * 1024, "220 KB": 220 * 1024}
DOCUMENT = "The keeper wrote down every ship that passed the light, and the weather. "


def body(size: int, n: int) -> dict:
    text = f"Request {n}: summarise the log below.\n" + DOCUMENT * (size // len(DOCUMENT) + 1)
    return {
        "model": "demo",
        "messages": [
            {"role": "system", "content": "You are a careful archivist."},
            {"role": "user", "content": text[:size]},
        ],
        "max_tokens": 4,
        "stream": True,
    }


async def run(url: str, size: int, requests: int) -> list[float]:
    """Times to first event of ``requests`` streams, CONCURRENCY at a time."""
    firsts: list[float] = []
    bodies = iter(range(requests))
    payloads = {}

    async def worker(session: aiohttp.ClientSession) -> None:
        for n in bodies:
            payload = payloads.setdefault(n % 64, body(size, n % 64))
            started = time.perf_counter()
            async with session.post(url + "/v1/chat/completions", json=payload) as response:
                assert response.status == 200, await response.text()
                await response.content.readany()
                firsts.append(time.perf_counter() - started)
                await response.read()

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(CONCURRENCY)))
    return firsts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--baseline-src", type=Path, help="src/ of the code to compare against")
    parser.add_argument("--sizes", nargs="*", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--first", type=float, default=0.05, help="the engine's TTFT, seconds")
    args = parser.parse_args()
    compared = variants(args.baseline_src)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        processes, [engine] = start_fake_engines(work, 1, 0, args.first)
        try:
            wait_ok(engine + "/health", 30)
            gateways = {}
            for name, source in compared.items():
                settings = {"PYTHONPATH": str(source)} if source is not None else {}
                (work / name).mkdir()
                url, gateway = start_gateway(work / name, [engine], "gateway", **settings)
                processes.append(gateway)
                wait_ok(url + "/ready", 60)
                gateways[name] = (url, gateway)
            for label, size in ((label, SIZES[label]) for label in args.sizes):
                asyncio.run(run(engine, size, 32))  # warm-up
                direct = statistics.median(asyncio.run(run(engine, size, args.requests)))
                for name, (url, gateway) in gateways.items():
                    asyncio.run(run(url, size, 32))
                    before = cpu_time(gateway.pid)
                    through = statistics.median(asyncio.run(run(url, size, args.requests)))
                    cpu = (cpu_time(gateway.pid) - before) / args.requests
                    rows.append((label, name, direct, through, cpu))
        finally:
            stop_all(processes)
    print(
        f"fake engine, first chunk after {args.first * 1000:.0f} ms; streamed chat, "
        f"{args.requests} requests per size, {CONCURRENCY} at a time\n"
    )
    print(
        "| prompt | gateway | TTFT p50 direct | through the gateway | added "
        "| gateway CPU per request |"
    )
    print("|---|---|---|---|---|---|")
    for label, name, direct, through, cpu in rows:
        print(
            f"| {label} | {name} | {direct * 1000:.1f} ms | {through * 1000:.1f} ms "
            f"| {(through - direct) * 1000:+.1f} ms | {cpu * 1000:.2f} ms |"
        )


if __name__ == "__main__":
    main()
