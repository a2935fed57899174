"""What the Responses API costs the gateway, and what storing responses costs.

    .venv/bin/python bench/responses_cost.py [--requests 2000] [--concurrency 16]
        [--rounds 6] [--rate 200] [--seconds 20] [--paced-rate 300] [--window 5]

Both parts run over a FAKE engine (bench/fake_engine.py: a fixed chat answer at once), because
no CPU engine reaches these rates and the point is the gateway's own cost.

1. CPU per request: two identical gateways (AUTH off, the store on SQLite) side by side; in
   each round one gets ``--requests`` chat completions and the other the same request as
   ``responses.create`` (``store: false``, then ``store: true``), ``--concurrency`` at a
   time, at the same moments; the next round swaps them, so neither gateway's own drift
   decides. The ratio is each round's responses CPU per request over chat's in the same
   window (every thread, from the scheduler's nanosecond account).
2. The store on PostgreSQL: two gateways sharing one database, an open loop of ``--rate``
   responses a second in all for ``--seconds``, with ``store: true``, then the same with
   ``store: false``: every response answered 200 must be in the database (0 lost), and the
   client's latency with and without the write says what the write adds (it is on the
   request path by design: a response the client saw completed is in the store).

PostgreSQL: BENCH_POSTGRES_URL (default postgres@127.0.0.1:5432; a throwaway database). Not a
test: the numbers go to docs/responses.md with the command that produced them.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import asyncpg
from harness import cpu_time, fake_engine_and_database, start_gateway, stop_all, wait_ok
from load import BODY, closed_loop, open_loop

RESPONSE = {"model": "demo", "input": "Hello there.", "max_output_tokens": 8}
#: No admission line: a pause of this machine would fill it, and the point is the cost.
UNLIMITED = {"ENGINE_MAX_INFLIGHT": "100000", "AUTH": "off"}


#: One round's load on the pair: (chat gateway's URL, responses gateway's URL, the response
#: body) → its coroutine; the requests it sends to each.
Load = Callable[[str, str, dict[str, Any]], Coroutine[Any, Any, None]]


def beside(
    args: argparse.Namespace, work: Path, engine: str, title: str, load: Load, count: int
) -> None:
    """Two identical gateways, one given chat and the other responses.create with ``load`` at
    the same moments, swapped each round; each round's CPU per request (``count`` each) side
    by side, with ``store`` false then true."""
    gateways = [
        start_gateway(
            work, [engine], f"cost-{n}", MISTRAL_SERVE_DATA_DIR=str(work / f"d{n}"), **UNLIMITED
        )
        for n in range(2)
    ]
    try:
        for url, _ in gateways:
            wait_ok(url + "/ready", 60)
            asyncio.run(closed_loop(url, None, 300, 8))  # warm up both paths
            asyncio.run(closed_loop(url, None, 300, 8, path="/v1/responses", body=RESPONSE))
        print(f"\n{title}\n")
        print(
            "| responses.create | chat CPU per request | responses CPU per request | "
            "ratio (median) | range |"
        )
        print("|---|---|---|---|---|")
        for store in (False, True):
            body = {**RESPONSE, "store": store}
            chat_cpu, responses_cpu = [], []
            for round_ in range(args.rounds):
                chat_gateway, responses_gateway = gateways[round_ % 2], gateways[1 - round_ % 2]
                pids = [chat_gateway[1].pid, responses_gateway[1].pid]
                before = [cpu_time(pid) for pid in pids]
                asyncio.run(load(chat_gateway[0], responses_gateway[0], body))
                used = [
                    (cpu_time(pid) - b) / count * 1e6 for pid, b in zip(pids, before, strict=True)
                ]
                chat_cpu.append(used[0])
                responses_cpu.append(used[1])
            ratios = [r / c for r, c in zip(responses_cpu, chat_cpu, strict=True)]
            print(
                f"| store: {str(store).lower()} | {statistics.median(chat_cpu):.0f} µs | "
                f"{statistics.median(responses_cpu):.0f} µs | {statistics.median(ratios):.3f} | "
                f"{min(ratios):.2f}–{max(ratios):.2f} |",
                flush=True,
            )
    finally:
        stop_all(process for _, process in gateways)


def cpu_per_request(args: argparse.Namespace, work: Path, engine: str) -> None:
    """Closed loop: ``--requests`` to each side, ``--concurrency`` at a time."""

    async def load(chat_url: str, responses_url: str, body: dict[str, Any]) -> None:
        await asyncio.gather(
            closed_loop(chat_url, None, args.requests, args.concurrency, body=BODY),
            closed_loop(
                responses_url,
                None,
                args.requests,
                args.concurrency,
                path="/v1/responses",
                body=body,
            ),
        )

    title = (
        f"{args.rounds} rounds of {args.requests} requests at concurrency "
        f"{args.concurrency}, chat beside responses, gateways swapped each round"
    )
    beside(args, work, engine, title, load, args.requests)


def paced_cpu_per_request(args: argparse.Namespace, work: Path, engine: str) -> None:
    """The same comparison at the same pace: ``--paced-rate`` requests a second to each of the
    two gateways at once, open loop, in windows of ``--window`` s. A closed loop lets the two
    sides run at different rates, and a gateway's CPU per request depends on its rate (fewer
    requests per wake-up when it is slower); here both get the same."""

    async def load(chat_url: str, responses_url: str, body: dict[str, Any]) -> None:
        answers = await asyncio.gather(
            open_loop([chat_url], [None], args.paced_rate, args.window, body=BODY),
            open_loop(
                [responses_url],
                [None],
                args.paced_rate,
                args.window,
                path="/v1/responses",
                body=body,
            ),
        )
        assert all(set(statuses) == {200} for statuses, _ in answers), answers

    title = (
        f"paced: {args.paced_rate:.0f} requests/s to each of the pair, {args.rounds} "
        f"windows of {args.window:.0f} s, gateways swapped each window"
    )
    beside(args, work, engine, title, load, int(args.paced_rate * args.window))


async def stored_count(url: str) -> int:
    connection = await asyncpg.connect(url)
    try:
        return await connection.fetchval("SELECT count(*) FROM responses")
    finally:
        await connection.close()


def store_under_load(args: argparse.Namespace, work: Path, engine: str, database: str) -> None:
    gateways = [
        start_gateway(work, [engine], f"store-{n}", DATABASE_URL=database, **UNLIMITED)
        for n in range(2)
    ]
    try:
        for url, _ in gateways:
            wait_ok(url + "/ready", 60)
            asyncio.run(closed_loop(url, None, 200, 8, path="/v1/responses", body=RESPONSE))
        urls = [url for url, _ in gateways]
        print(
            f"\n{args.rate:.0f} responses/s over 2 gateways for {args.seconds:.0f} s, "
            "PostgreSQL store\n"
        )
        print("| store | answers | stored | lost | latency p50 | p99 |")
        print("|---|---|---|---|---|---|")
        for store in (True, False):
            before = asyncio.run(stored_count(database))
            statuses, latencies = asyncio.run(
                open_loop(
                    urls,
                    [None],
                    args.rate,
                    args.seconds,
                    path="/v1/responses",
                    body={**RESPONSE, "store": store},
                )
            )
            stored = asyncio.run(stored_count(database)) - before
            answered = statuses.get(200, 0)
            lost = answered - stored if store else 0
            latencies.sort()
            p50 = latencies[len(latencies) // 2] * 1e3
            p99 = latencies[int(len(latencies) * 0.99)] * 1e3
            print(
                f"| {str(store).lower()} | {dict(sorted(statuses.items()))} | {stored} | "
                f"{lost} | {p50:.1f} ms | {p99:.1f} ms |",
                flush=True,
            )
    finally:
        stop_all(process for _, process in gateways)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--paced-rate", type=float, default=300)
    parser.add_argument("--window", type=float, default=5)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mistral-serve-bench-"))
    with fake_engine_and_database(work) as (engine, url):
        cpu_per_request(args, work, engine)
        paced_cpu_per_request(args, work, engine)
        store_under_load(args, work, engine, url)


if __name__ == "__main__":
    main()
