"""The fleet's embeddings through the gateway against the same engine directly, in one run.

    .venv/bin/python bench/fleet.py [--requests 300] [--concurrency 16] [--batch 32] [--rounds 4]

One demo-embed engine (started as `up` starts it) and a gateway over it (AUTH=off, telemetry
off); the same embedding requests (``--batch`` texts each, fresh text every request) to the
engine directly and through the gateway, in turns, rounds alternating. Reported: requests/s
(the best round of each), their ratio, and the gateway's CPU per request. The adapter half of
issue 23's benchmark (loads per 1000 requests over 4 adapters with 2 resident slots) waits for
runtime adapters. Not a test: the table goes to docs/fleet.md with this command.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import aiohttp
from harness import cpu_time, demo_engine_spec, start_engine, start_gateway, stop_all, wait_ok

WORDS = "harbour ship weather lantern keeper tide rope anchor gull storm".split()


async def load(
    url: str, requests: int, concurrency: int, batch: int, salt: str
) -> tuple[float, int]:
    """``requests`` embedding requests of ``batch`` texts; wall time and failures."""
    failed = 0
    pending = iter(range(requests))

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal failed
        for index in pending:
            texts = [
                f"{salt} {index} {n} "
                + " ".join(WORDS[(index + n + k) % len(WORDS)] for k in range(24))
                for n in range(batch)
            ]
            body = {"model": "demo-embed", "input": texts}
            async with session.post(url + "/v1/embeddings", json=body) as response:
                answer = await response.json()
                if response.status != 200 or len(answer["data"]) != batch:
                    failed += 1

    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return time.perf_counter() - started, failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mistral-serve-fleet-"))
    spec = demo_engine_spec(work, "demo-embed")
    engine = start_engine(spec, work / "engine.log")
    gateway_url, gateway = start_gateway(
        work, [spec.url], "gateway", AUTH="off", OTEL_SDK_DISABLED="true"
    )
    try:
        wait_ok(spec.url + "/health")
        wait_ok(gateway_url + "/ready", 120)
        time.sleep(2)
        doors = {"engine directly": spec.url, "gateway": gateway_url}
        for url in doors.values():  # warm both paths
            asyncio.run(load(url, 2 * args.concurrency, args.concurrency, args.batch, "warm"))
        rates: dict[str, list[float]] = {name: [] for name in doors}
        cpu: list[float] = []
        failed = 0
        for round_index in range(args.rounds):
            order = list(doors.items())
            for name, url in order if round_index % 2 == 0 else order[::-1]:
                before = cpu_time(gateway.pid)
                wall, lost = asyncio.run(
                    load(url, args.requests, args.concurrency, args.batch, f"r{round_index}")
                )
                if name == "gateway":
                    cpu.append((cpu_time(gateway.pid) - before) / args.requests)
                rates[name].append(args.requests / wall)
                failed += lost
        direct, through = max(rates["engine directly"]), max(rates["gateway"])
        print(f"\n{args.requests} embedding requests of {args.batch} texts per round, "
              f"{args.concurrency} at a time, {args.rounds} rounds; {failed} failed\n")  # fmt: skip
        print("| path | requests/s (best round) | texts/s | gateway CPU per request |")
        print("|---|---|---|---|")
        print(f"| engine directly | {direct:.1f} | {direct * args.batch:.0f} | – |")
        print(f"| gateway | {through:.1f} | {through * args.batch:.0f} | "
              f"{min(cpu) * 1e3:.2f} ms |")  # fmt: skip
        print(f"\nratio gateway / direct: {through / direct:.3f}")
    finally:
        stop_all([gateway, engine])
    print(f"\nlogs: {work}")


if __name__ == "__main__":
    main()
