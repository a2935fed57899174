"""The front door's own cost per streamed chunk and per request, over FAKE streaming engines.

    .venv/bin/python bench/stream_cost.py [--gateway SRC[|K=V,...]] ... [--router]
        [--tokens 8 128] [--concurrency 8] [--requests 300] [--rounds 4] [--pace 0.005]

Real engines on two cores make the gateway's cost hard to see: they take both cores, and a busy
engine merges tokens into chunks. Here two fake engines (bench/fake_engine.py) stream one token
per chunk at a fixed pace, and each front door gets the same streamed chat completions in
turns, rounds alternating: one gateway per ``--gateway`` (a source folder, so a worktree of
another commit can run beside this one, with its own settings after ``|``), and vllm-router
with ``--router``. Reported per front door: its CPU (every thread of its process tree, from the
scheduler's nanosecond account) per request, and per chunk from two lengths: with ``--tokens
8 128``, per chunk = (cost at 128 − cost at 8) / 120, per request = the rest. The least of the
rounds is the figure (noise here only ever adds). Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil
from harness import cpu_time, start, start_fake_engines, stop_all, wait_ok
from peers import start_router

from mistral_serve.engines.supervisor import free_port

PROMPT = "harbour ship weather lantern keeper tide rope anchor gull storm " * 30


def front_door_cpu(process: subprocess.Popen) -> float:
    try:
        tree = [psutil.Process(process.pid)]
        tree += tree[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0
    return sum(cpu_time(member.pid) for member in tree)


async def load(url: str, concurrency: int, requests: int, tokens: int) -> int:
    """``requests`` streamed chats, ``concurrency`` at a time; how many failed."""
    failed = 0
    pending = iter(range(requests))

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal failed
        for index in pending:
            body = {
                "model": "demo",
                "messages": [{"role": "user", "content": f"{index} {time.time_ns()} {PROMPT}"}],
                "max_tokens": tokens,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            async with session.post(url + "/v1/chat/completions", json=body) as response:
                if response.status != 200:
                    failed += 1
                async for _ in response.content.iter_any():
                    pass

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateway", action="append", default=[])
    parser.add_argument("--router", action="store_true")
    parser.add_argument("--tokens", type=int, nargs=2, default=[8, 128])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--pace", type=float, default=0.005)
    args = parser.parse_args()
    here = Path(__file__).parent
    work = Path(tempfile.mkdtemp(prefix="mistral-serve-stream-cost-"))
    processes, engines = start_fake_engines(work, 2, args.pace)
    doors = []
    for index, given in enumerate(args.gateway or [str(here.parent / "src")]):
        source, _, extra = given.partition("|")
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
            "ENGINE_URLS": ",".join(engines),
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "MISTRAL_SERVE_DATA_DIR": str(work / f"data-{index}"),
            "LOG_LEVEL": "WARNING",
            "AUTH": "off",
            "ENGINE_CANARY_INTERVAL_S": "3600",
            "PYTHONPATH": source,
            **dict(pair.split("=", 1) for pair in extra.split(",") if pair),
        }
        command = [sys.executable, "-m", "mistral_serve.cli", "gateway"]
        process = start(command, env, work / f"gateway-{index}.log")
        processes.append(process)
        doors.append((f"gateway {given}", f"http://127.0.0.1:{port}", process, "/ready"))
    if args.router:
        url, process = start_router(work, engines)
        processes.append(process)
        doors.append(("vllm-router cache_aware", url, process, "/health"))
    try:
        for url in engines:
            wait_ok(url + "/health", 60)
        for _, url, _, probe in doors:
            wait_ok(url + probe, 120)
        time.sleep(2)
        for _, url, _, _ in doors:  # warm every connection pool and cache
            asyncio.run(load(url, args.concurrency, 4 * args.concurrency, 4))
        cost: dict[tuple[str, int], list[float]] = {}
        failed = 0
        for round_index in range(args.rounds):
            for tokens in args.tokens:
                order = doors if round_index % 2 == 0 else doors[::-1]
                for name, url, process, _ in order:
                    before = front_door_cpu(process)
                    failed += asyncio.run(load(url, args.concurrency, args.requests, tokens))
                    used = front_door_cpu(process) - before
                    cost.setdefault((name, tokens), []).append(used / args.requests)
        short, long = args.tokens
        print(f"\n{args.requests} streamed chats per round, {args.concurrency} at a time, "
              f"{args.rounds} rounds, fake engines pacing {args.pace * 1e3:.0f} ms a chunk; "
              f"{failed} failed\n")  # fmt: skip
        print(f"| front door | CPU per request ({short} chunks) | per request ({long} chunks) "
              "| per chunk | per request besides its chunks |")  # fmt: skip
        print("|---|---|---|---|---|")
        for name, *_ in doors:
            low, high = min(cost[(name, short)]), min(cost[(name, long)])
            per_chunk = (high - low) / (long - short)
            besides = low - short * per_chunk
            print(f"| {name} | {low * 1e3:.2f} ms | {high * 1e3:.2f} ms | "
                  f"{per_chunk * 1e6:.1f} µs | {besides * 1e3:.2f} ms |")  # fmt: skip
    finally:
        stop_all(processes)
    print(f"\nlogs: {work}")


if __name__ == "__main__":
    main()
