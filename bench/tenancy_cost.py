"""What tenancy costs the gateway, and whether the usage ledger keeps up.

    .venv/bin/python bench/tenancy_cost.py [--rate 500] [--window 5] [--paced-rounds 8]
        [--requests 3000] [--concurrency 32] [--rounds 4] [--seconds 60] [--gateways 2]
        [--keys 4]

Both parts run over a FAKE engine (bench/fake_engine.py: a fixed answer at once), because no
CPU engine reaches these rates and the point is the gateway's own cost.

1. Cost: four gateways with tenancy, each measured BESIDE an AUTH=off gateway: API_KEY with
   the ledger on PostgreSQL; a stored key without limits, ledger on PostgreSQL; a stored key
   with every limit (none binding) counted in the process, ledger on PostgreSQL; the same
   counted in Redis. Each pair gets the same load at the same moments, and each gateway's CPU
   per request (every thread, from the scheduler's nanosecond account) is compared with its
   partner's in the same window, so the machine's drift (tens of percent within minutes
   here) is the same on both sides of every ratio. Two loads:
   - paced: ``--rate`` requests/s to each gateway of the pair, open loop (the issue's goal:
     its ledger benchmark's rate), in windows of ``--window`` s; the pairs take turns,
     ``--paced-rounds`` windows each;
   - saturated: ``--requests`` non-streamed requests at ``--concurrency`` to each gateway of
     the pair at once, ``--rounds`` times.
   The result is the median of the windows' ratios, with their range.
2. Ledger under load: ``--gateways`` gateways sharing one PostgreSQL store and Redis, ``--keys``
   keys, an open-loop ``--rate`` requests/s for ``--seconds``; then SIGTERM. Counts the answers,
   the ledger's rows and totals, and PostgreSQL's deadlock counter for the database.

PostgreSQL: BENCH_POSTGRES_URL (default postgres@127.0.0.1:5432; a throwaway database is made
and dropped). Redis: BENCH_REDIS_URL (default 127.0.0.1:6379/0). Not a test: the numbers go to
docs/tenancy.md with the command that produced them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import asyncpg
from harness import cpu_time, fake_engine_and_database, start_gateway, stop_all, wait_ok
from load import closed_loop, open_loop

REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
STATIC_KEY = "bench-static-key-0123456789"
#: Limits on every key: all of them checked, none binding at these rates.
LIMITS = ["--rpm", "1000000", "--tpm", "1000000000", "--max-concurrent", "100000",
          "--tokens-per-day", "1000000000000", "--tokens-per-month", "1000000000000"]  # fmt: skip


def create_key(env: dict[str, str], limits: list[str] = LIMITS) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "mistral_serve.cli", "keys", "create", "--name", "bench", *limits],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(line.split(":", 1) for line in done.stdout.splitlines())["key"].strip()


async def ledger_counts(url: str, database: str) -> tuple[int, int, int]:
    """Rows, total requests in the totals, and the database's deadlocks so far."""
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetchval("SELECT count(*) FROM usage")
        totals = await connection.fetchval("SELECT coalesce(sum(requests), 0) FROM usage_totals")
        deadlocks = await connection.fetchval(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = $1", database
        )
        return rows, int(totals), deadlocks
    finally:
        await connection.close()


Gateway = tuple[str, subprocess.Popen, str | None]  # its URL, its process, the key it takes


def paced(pair: list[Gateway], args: argparse.Namespace) -> list[int]:
    """One window of the open-loop rate to both gateways; how many each answered (all 200)."""
    urls, keys = [url for url, _, _ in pair], [key for _, _, key in pair]
    statuses, _ = asyncio.run(open_loop(urls, keys, args.rate, args.window, each=True))
    assert set(statuses) == {200}, statuses
    sent = int(args.rate * args.window)
    return [sent, sent]


def saturated(pair: list[Gateway], args: argparse.Namespace) -> list[int]:
    async def both() -> None:
        await asyncio.gather(
            *(closed_loop(url, key, args.requests, args.concurrency) for url, _, key in pair)
        )

    asyncio.run(both())
    return [args.requests, args.requests]


def beside(
    reference: Gateway,
    gateways: dict[str, Gateway],
    load: Callable[[list[Gateway]], list[int]],
    rounds: int,
) -> dict[str, list[tuple[float, float]]]:
    """Each gateway's CPU per request (µs) beside the reference's in the same window, for
    every round; the gateways take turns."""
    cpu: dict[str, list[tuple[float, float]]] = {name: [] for name in gateways}
    for _ in range(rounds):
        for name, gateway in gateways.items():
            pair = [reference, gateway]
            before = [cpu_time(process.pid) for _, process, _ in pair]
            answered = load(pair)
            used = [
                (cpu_time(process.pid) - start) / count * 1e6
                for (_, process, _), start, count in zip(pair, before, answered, strict=True)
            ]
            cpu[name].append((used[1], used[0]))
    return cpu


def report(title: str, cpu: dict[str, list[tuple[float, float]]]) -> None:
    print(f"\n{title}\n")
    print("| gateway | CPU per request | AUTH=off beside it | vs AUTH=off (median) | range |")
    print("|---|---|---|---|---|")
    for name, windows in cpu.items():
        ratios = [used / off for used, off in windows]
        print(
            f"| {name} | {statistics.median(used for used, _ in windows):.0f} µs | "
            f"{statistics.median(off for _, off in windows):.0f} µs | "
            f"{statistics.median(ratios):.3f} | {min(ratios):.2f}–{max(ratios):.2f} |"
        )
    print(flush=True)


def cost(args: argparse.Namespace, work: Path, engine: str, store: dict[str, str]) -> None:
    database = {k: v for k, v in store.items() if k != "REDIS_URL"}
    in_process, in_redis = {"AUTH": "required", **database}, {"AUTH": "required", **store}
    variants: dict[str, tuple[dict[str, str], str | None]] = {
        "API_KEY + ledger": ({**in_process, "API_KEY": STATIC_KEY}, STATIC_KEY),
        "stored key, no limits + ledger": (in_process, create_key(in_process, [])),
        "stored key, every limit in the process + ledger": (in_process, create_key(in_process)),
        "stored key, every limit in Redis + ledger": (in_redis, create_key(in_redis)),
    }
    # No admission line: a pause of this machine would fill it and answer 429s, and the
    # point is tenancy's cost.
    unlimited = {"ENGINE_MAX_INFLIGHT": "100000"}
    url, process = start_gateway(work, [engine], "cost-off", AUTH="off", **unlimited)
    reference: Gateway = (url, process, None)
    gateways: dict[str, Gateway] = {}
    for n, (name, (env, key)) in enumerate(variants.items()):
        url, process = start_gateway(work, [engine], f"cost-{n}", **env, **unlimited)
        gateways[name] = (url, process, key)
    everyone = [reference, *gateways.values()]
    try:
        for url, _, key in everyone:
            wait_ok(url + "/ready", 60)
            asyncio.run(closed_loop(url, key, 300, 8))  # warm up
        report(
            f"paced: {args.rate:.0f} requests/s to each of the pair, {args.paced_rounds} "
            f"windows of {args.window:.0f} s per gateway",
            beside(reference, gateways, lambda pair: paced(pair, args), args.paced_rounds),
        )
        report(
            f"saturated: {args.rounds} rounds of {args.requests} requests at concurrency "
            f"{args.concurrency} to each of the pair",
            beside(reference, gateways, lambda pair: saturated(pair, args), args.rounds),
        )
    finally:
        stop_all(process for _, process, _ in everyone)


def ledger(args: argparse.Namespace, work: Path, engine: str, store: dict[str, str]) -> None:
    database = store["DATABASE_URL"].rsplit("/", 1)[1]
    keys = [create_key(store) for _ in range(args.keys)]
    gateways = [
        start_gateway(work, [engine], f"ledger-{n}", AUTH="required", **store)
        for n in range(args.gateways)
    ]
    try:
        for url, _ in gateways:
            wait_ok(url + "/ready", 60)
        rows_before, totals_before, deadlocks_before = asyncio.run(
            ledger_counts(store["DATABASE_URL"], database)
        )
        statuses, latencies = asyncio.run(
            open_loop([url for url, _ in gateways], keys, args.rate, args.seconds)
        )
        for _, process in gateways:
            process.send_signal(signal.SIGTERM)
        exits = [process.wait(60) for _, process in gateways]
    finally:
        stop_all(process for _, process in gateways)
    rows, totals, deadlocks = asyncio.run(ledger_counts(store["DATABASE_URL"], database))
    rows, totals = rows - rows_before, totals - totals_before
    answered = sum(count for status, count in statuses.items() if status)
    latencies.sort()
    print(f"{args.rate:.0f} requests/s for {args.seconds:.0f} s over {args.gateways} gateways")
    print(f"answers by status: {dict(sorted(statuses.items()))}  (0: no answer)")
    print(
        f"latency p50 {latencies[len(latencies) // 2] * 1e3:.1f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99)] * 1e3:.1f} ms"
    )
    print(f"gateway exit codes after SIGTERM: {exits}")
    print(f"ledger rows {rows}, totals' requests {totals}, answers {answered} (this phase)")
    print(f"rows lost: {answered - rows}; deadlocks: {deadlocks - deadlocks_before}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--window", type=float, default=5)
    parser.add_argument("--paced-rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--gateways", type=int, default=2)
    parser.add_argument("--keys", type=int, default=4)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mistral-serve-bench-"))
    with fake_engine_and_database(work) as (engine, url):
        store = {"DATABASE_URL": url, "REDIS_URL": REDIS, "MISTRAL_SERVE_DATA_DIR": str(work)}
        cost(args, work, engine, store)
        ledger(args, work, engine, store)


if __name__ == "__main__":
    main()
