"""What tenancy costs the gateway, and whether the usage ledger keeps up.

    .venv/bin/python bench/tenancy_cost.py [--requests 3000] [--concurrency 32] [--rounds 10]
        [--rate 500] [--slice 1] [--paced-rounds 60] [--seconds 60] [--gateways 2] [--keys 4]

Both parts run over a FAKE engine (bench/fake_engine.py: a fixed answer at once), because no
CPU engine reaches these rates and the point is the gateway's own cost.

1. Cost: five gateways over the fake engine: AUTH=off; API_KEY with the ledger on
   PostgreSQL; a stored key without limits, ledger on PostgreSQL; a stored key with every
   limit (none binding) counted in the process, ledger on PostgreSQL; the same counted in
   Redis. Each gateway process's CPU per request (user +
   system, from /proc), two ways:
   - paced: ``--rate`` requests/s, open loop (the issue's goal: its ledger benchmark's rate),
     in ``--slice``-second slices, ``--paced-rounds`` of them per gateway;
   - saturated: ``--requests`` non-streamed requests at ``--concurrency``, ``--rounds`` times.
   The gateways take turns, one slice or round each, the order rotating every round, and each
   round's CPU is compared with AUTH=off's in the same round: the median of those ratios is
   the result (this machine's speed drifts by tens of percent within minutes; a ratio of
   neighbouring slices does not).
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
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import aiohttp
import asyncpg
from harness import start, start_gateway, stop_all, wait_ok
from telemetry_overhead import cpu_seconds

from mistral_serve.engines.supervisor import free_port

POSTGRES = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
BODY = {"model": "demo", "messages": [{"role": "user", "content": "Hello there."}], "max_tokens": 8}
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


async def closed_loop(url: str, key: str | None, requests: int, concurrency: int) -> None:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    queue = iter(range(requests))

    async def worker(session: aiohttp.ClientSession) -> None:
        for _ in queue:
            async with session.post(url + "/v1/chat/completions", json=BODY) as response:
                assert response.status == 200, await response.text()
                await response.read()

    async with aiohttp.ClientSession(headers=headers) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))


async def open_loop(
    urls: list[str], keys: list[str | None], rate: float, seconds: float
) -> tuple[Counter[int], list[float]]:
    """``rate`` requests a second for ``seconds``, whatever the answers' pace; statuses and
    latencies."""
    statuses: Counter[int] = Counter()
    latencies: list[float] = []

    async def one(session: aiohttp.ClientSession, n: int) -> None:
        started = time.perf_counter()
        key = keys[n % len(keys)]
        headers = {"authorization": f"Bearer {key}"} if key else {}
        try:
            async with session.post(
                urls[n % len(urls)] + "/v1/chat/completions", json=BODY, headers=headers
            ) as response:
                await response.read()
                statuses[response.status] += 1
        except aiohttp.ClientError:
            statuses[0] += 1  # no answer
        latencies.append(time.perf_counter() - started)

    tasks = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        began = time.perf_counter()
        for n in range(int(rate * seconds)):
            delay = began + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(session, n)))
        await asyncio.gather(*tasks)
    return statuses, latencies


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


async def make_database() -> tuple[str, str]:
    name = f"mistral_serve_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(POSTGRES)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    return name, POSTGRES.rsplit("/", 1)[0] + f"/{name}"


async def drop_database(name: str) -> None:
    admin = await asyncpg.connect(POSTGRES)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


def paced(url: str, key: str | None, args: argparse.Namespace) -> int:
    """One slice of the open-loop rate; how many requests it sent (all must be answered 200)."""
    statuses, _ = asyncio.run(open_loop([url], [key], args.rate, args.slice))
    assert set(statuses) == {200}, statuses
    return sum(statuses.values())


def saturated(url: str, key: str | None, args: argparse.Namespace) -> int:
    asyncio.run(closed_loop(url, key, args.requests, args.concurrency))
    return args.requests


def turns(
    gateways: dict[str, tuple[str, subprocess.Popen, str | None]],
    load: Callable[[str, str | None], int],
    rounds: int,
) -> dict[str, list[float]]:
    """Each gateway's CPU per request (µs) in each round; the gateways take turns, in an order
    that rotates every round."""
    names = list(gateways)
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            url, process, key = gateways[name]
            before = cpu_seconds(process.pid)
            requests = load(url, key)
            cpu[name].append((cpu_seconds(process.pid) - before) / requests * 1e6)
    return cpu


def report(title: str, cpu: dict[str, list[float]]) -> None:
    base = cpu["AUTH=off"]
    print(f"\n{title}\n")
    print("| gateway | CPU per request (median) | vs AUTH=off (median of rounds) | range |")
    print("|---|---|---|---|")
    for name, values in cpu.items():
        ratios = [value / off for value, off in zip(values, base, strict=True)]
        print(
            f"| {name} | {statistics.median(values):.0f} µs | "
            f"{statistics.median(ratios):.2f} | {min(ratios):.2f}–{max(ratios):.2f} |"
        )
    print(flush=True)


def cost(args: argparse.Namespace, work: Path, engine: str, store: dict[str, str]) -> None:
    database = {k: v for k, v in store.items() if k != "REDIS_URL"}
    in_process, in_redis = {"AUTH": "required", **database}, {"AUTH": "required", **store}
    variants: dict[str, tuple[dict[str, str], str | None]] = {
        "AUTH=off": ({"AUTH": "off"}, None),
        "API_KEY + ledger": ({**in_process, "API_KEY": STATIC_KEY}, STATIC_KEY),
        "stored key, no limits + ledger": (in_process, create_key(in_process, [])),
        "stored key, every limit in the process + ledger": (in_process, create_key(in_process)),
        "stored key, every limit in Redis + ledger": (in_redis, create_key(in_redis)),
    }
    gateways = {}
    for n, (name, (env, key)) in enumerate(variants.items()):
        url, process = start_gateway(work, [engine], f"cost-{n}", **env)
        gateways[name] = (url, process, key)
    try:
        for url, _, key in gateways.values():
            wait_ok(url + "/ready", 60)
            asyncio.run(closed_loop(url, key, 300, 8))  # warm up
        report(
            f"paced: {args.rate:.0f} requests/s, {args.paced_rounds} slices of {args.slice:.0f} s "
            "per gateway",
            turns(gateways, lambda url, key: paced(url, key, args), args.paced_rounds),
        )
        report(
            f"saturated: {args.rounds} rounds of {args.requests} requests at concurrency "
            f"{args.concurrency} per gateway",
            turns(gateways, lambda url, key: saturated(url, key, args), args.rounds),
        )
    finally:
        stop_all(process for _, process, _ in gateways.values())


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
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--slice", type=float, default=1)
    parser.add_argument("--paced-rounds", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--gateways", type=int, default=2)
    parser.add_argument("--keys", type=int, default=4)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mistral-serve-bench-"))
    port = free_port()
    fake = start(
        [sys.executable, str(Path(__file__).with_name("fake_engine.py")), str(port)],
        dict(os.environ),
        work / "fake-engine.log",
    )
    engine = f"http://127.0.0.1:{port}"
    name, url = asyncio.run(make_database())
    try:
        wait_ok(engine + "/health", 30)
        store = {"DATABASE_URL": url, "REDIS_URL": REDIS, "MISTRAL_SERVE_DATA_DIR": str(work)}
        cost(args, work, engine, store)
        ledger(args, work, engine, store)
    finally:
        stop_all([fake])
        asyncio.run(drop_database(name))


if __name__ == "__main__":
    main()
