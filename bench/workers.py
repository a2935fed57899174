"""Throughput of one gateway against several workers (GATEWAY_WORKERS), over FAKE engines.

    .venv/bin/python bench/workers.py [--workers 1 2] [--concurrency 64] [--tokens 16]
        [--requests 4000] [--rounds 4] [--clients 4]

Two fake streaming engines (bench/fake_engine.py, no pacing: a chunk as soon as the last is
written) so that the front door, not the engines, is what limits; one gateway per ``--workers``
value (AUTH=off), each given the same streamed chats in turns, rounds alternating. The load
comes from ``--clients`` processes (one Python client tops out near one core), ``concurrency``
streams in all. Reported: requests per second, the best of the rounds, and each against the
first. It shows a gain only where there are cores to spare beyond the clients and the fake
engines: on a two-core machine the clients alone take one. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from harness import start_fake_engines, start_gateway, stop_all, wait_ok
from stream_cost import load


def client(url: str, concurrency: int, requests: int, tokens: int) -> int:
    """One client process's share of a round: how many requests failed."""
    return asyncio.run(load(url, concurrency, requests, tokens))


def round_of(pool: ProcessPoolExecutor, url: str, args: argparse.Namespace) -> tuple[float, int]:
    """Requests per second through ``url`` over one round, and how many failed."""
    share = (args.concurrency // args.clients, args.requests // args.clients, args.tokens)
    started = time.perf_counter()
    columns = ([value] * args.clients for value in share)
    failed = sum(pool.map(client, [url] * args.clients, *columns))
    return args.requests / (time.perf_counter() - started), failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mistral-serve-workers-"))
    processes, engines = start_fake_engines(work, 2, 0)
    gateways = []
    for workers in args.workers:
        folder = work / f"workers-{workers}"
        folder.mkdir()
        url, process = start_gateway(
            folder,
            engines,
            "gateway",
            AUTH="off",
            GATEWAY_WORKERS=str(workers),
            ENGINE_CANARY_INTERVAL_S="3600",
            ENGINE_MAX_INFLIGHT=str(4 * args.concurrency),  # admission out of the way
        )
        processes.append(process)
        gateways.append((workers, url))
    try:
        for url in engines:
            wait_ok(url + "/health", 60)
        for _, url in gateways:
            wait_ok(url + "/ready", 120)
        time.sleep(2)
        rates: dict[int, list[float]] = {workers: [] for workers, _ in gateways}
        failed = 0
        with ProcessPoolExecutor(args.clients) as pool:
            for _, url in gateways:  # warm every worker's connection pool
                round_of(pool, url, argparse.Namespace(**{**vars(args), "requests": 512}))
            for round_index in range(args.rounds):
                for workers, url in gateways if round_index % 2 == 0 else gateways[::-1]:
                    rate, lost = round_of(pool, url, args)
                    rates[workers].append(rate)
                    failed += lost
        first = max(rates[args.workers[0]])
        print(f"\n{args.requests} streamed chats of {args.tokens} chunks per round, "
              f"{args.concurrency} at a time from {args.clients} client processes, "
              f"{args.rounds} rounds; {failed} failed\n")  # fmt: skip
        print("| GATEWAY_WORKERS | requests/s (best round) | against the first |")
        print("|---|---|---|")
        for workers, _ in gateways:
            best = max(rates[workers])
            print(f"| {workers} | {best:.0f} | {best / first:.2f}× |")
    finally:
        stop_all(processes)
    print(f"\nlogs: {work}")


if __name__ == "__main__":
    main()
