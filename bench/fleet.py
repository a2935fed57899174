"""The fleet through the gateway, two halves, each in one run.

    .venv/bin/python bench/fleet.py [--part embeddings|adapters|both]
        [--requests 300] [--concurrency 16] [--batch 32] [--rounds 4]
        [--adapter-requests 400] [--adapter-concurrency 8] [--adapters 4] [--slots 2]

Embeddings: one demo-embed engine (started as `up` starts it) and a gateway over it (AUTH=off,
telemetry off); the same embedding requests (``--batch`` texts each, fresh text every request)
to the engine directly and through the gateway, in turns, rounds alternating. Reported:
requests/s (the best round of each), their ratio, and the gateway's CPU per request.

Adapters: two demo engines with LoRA on and ``--slots`` adapters each (``--max-loras``), a
gateway over them with ``--adapters`` copies of the demo adapter added through
/admin/adapters; streamed completions of 16 tokens, each for an adapter drawn at random, then
the same traffic for the base model, rounds alternating. Reported: the adapter loads the
gateway made per 1000 requests (its log's "loaded (request)" lines) and evictions, and time to
first token p50/p95 of adapter and base-only traffic. Not a test: the tables go to
docs/fleet.md with this command.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TypeVar

import aiohttp
import httpx
from harness import cpu_time, demo_engine_spec, start_engine, start_gateway, stop_all, wait_ok

from mistral_serve.config import Settings
from mistral_serve.launch.engines import engine_specs
from mistral_serve.models.profiles import DEMO_ADAPTER, locate_adapter, resolve_model

T = TypeVar("T")
WORDS = "harbour ship weather lantern keeper tide rope anchor gull storm".split()


async def at_once(
    items: Iterable[T],
    concurrency: int,
    send: Callable[[aiohttp.ClientSession, T], Awaitable[None]],
) -> float:
    """``send`` each of ``items``, ``concurrency`` at a time over one session; the wall time."""
    pending = iter(items)

    async def worker(session: aiohttp.ClientSession) -> None:
        for item in pending:
            await send(session, item)

    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return time.perf_counter() - started


async def load(
    url: str, requests: int, concurrency: int, batch: int, salt: str
) -> tuple[float, int]:
    """``requests`` embedding requests of ``batch`` texts; wall time and failures."""
    failed = 0

    async def send(session: aiohttp.ClientSession, index: int) -> None:
        nonlocal failed
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

    return await at_once(range(requests), concurrency, send), failed


def embeddings(args: argparse.Namespace, work: Path) -> None:
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


# -- adapters ------------------------------------------------------------------------------------
ADMIN_KEY = "bench-admin"


async def stream_ttfts(
    url: str, models: list[str], concurrency: int, salt: str
) -> tuple[list[float], int]:
    """One streamed completion of 16 tokens per entry of ``models``; each one's time to its
    first token, and how many failed."""
    ttfts: list[float] = []
    failed = 0

    async def send(session: aiohttp.ClientSession, item: tuple[int, str]) -> None:
        nonlocal failed
        index, model = item
        body = {
            "model": model,
            "prompt": f"{salt} {index}: the harbour at dawn, " + " ".join(WORDS),
            "max_tokens": 16,
            "stream": True,
        }
        started = time.perf_counter()
        first = None
        async with session.post(url + "/v1/completions", json=body) as response:
            async for line in response.content:
                if first is None and line.startswith(b"data: {"):
                    first = time.perf_counter() - started
            if response.status != 200 or first is None:
                failed += 1
            else:
                ttfts.append(first)

    await at_once(enumerate(models), concurrency, send)
    return ttfts, failed


def percentile(values: list[float], share: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(share * 100) - 1]


def adapters(args: argparse.Namespace, work: Path) -> None:
    lora = f"--enable-lora --max-loras {args.slots}"
    cache = work / "cache"
    settings = Settings(
        _env_file=None, model_id="demo", engine_extra_args=lora, MISTRAL_SERVE_CACHE_DIR=cache
    )
    specs = engine_specs(settings, resolve_model(settings, has_gpu=False), None, 2, os.environ)
    runtime = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    engines = [
        start_engine(spec, work / f"lora-engine-{index}.log", **runtime)
        for index, spec in enumerate(specs)
    ]
    built = Path(locate_adapter(settings, DEMO_ADAPTER))
    names = [f"lora-{index}" for index in range(args.adapters)]
    for name in names:  # each its own folder: the engines load each one as its own adapter
        shutil.copytree(built, work / "adapters" / name, dirs_exist_ok=True)
    log = work / "gateway-lora.log"
    gateway_url, gateway = start_gateway(
        work, [spec.url for spec in specs], "gateway-lora",
        AUTH="auto", ADMIN_API_KEY=ADMIN_KEY, LOG_LEVEL="INFO", OTEL_SDK_DISABLED="true",
    )  # fmt: skip
    try:
        for spec in specs:
            wait_ok(spec.url + "/health")
        wait_ok(gateway_url + "/ready", 120)
        for spec in specs:  # a first step on each engine makes it say its slots on /metrics
            asyncio.run(stream_ttfts(spec.url, ["demo"] * 2, 1, "warm"))
        with httpx.Client(base_url=gateway_url, timeout=60) as http:
            deadline = time.monotonic() + 30
            while not all(
                engine["adapter_slots"] == args.slots
                for engine in http.get("/ready").json()["engines"]
            ):
                if time.monotonic() > deadline:
                    raise SystemExit("the gateway did not learn the engines' adapter slots")
                time.sleep(0.5)
            admin = {"authorization": f"Bearer {ADMIN_KEY}"}
            for name in names:
                body = {"name": name, "base": "demo", "path": str(work / "adapters" / name)}
                added = http.post("/admin/adapters", json=body, headers=admin)
                added.raise_for_status()
        rng = random.Random(23)
        asyncio.run(stream_ttfts(gateway_url, [rng.choice(names) for _ in range(40)], 8, "warm"))
        loads_before = log.read_text().count("loaded (request)")
        evictions_before = log.read_text().count("evicted")
        ttft: dict[str, list[float]] = {"adapters": [], "base only": []}
        failed = 0
        per_round = args.adapter_requests // args.rounds
        for round_index in range(args.rounds):
            traffic = {
                "adapters": [rng.choice(names) for _ in range(per_round)],
                "base only": ["demo"] * per_round,
            }
            order = list(traffic.items())
            for kind, models in order if round_index % 2 == 0 else order[::-1]:
                times, lost = asyncio.run(
                    stream_ttfts(gateway_url, models, args.adapter_concurrency, f"r{round_index}")
                )
                ttft[kind] += times
                failed += lost
        text = log.read_text()
        loads = text.count("loaded (request)") - loads_before
        evictions = text.count("evicted") - evictions_before
        requests = per_round * args.rounds
        print(f"\n{requests} streamed completions of 16 tokens each way, "
              f"{args.adapter_concurrency} at a time, over {args.adapters} adapters, "
              f"2 engines of {args.slots} slots; {failed} failed\n")  # fmt: skip
        print("| traffic | adapter loads per 1000 requests | evictions per 1000 | "
              "TTFT p50 | TTFT p95 |")  # fmt: skip
        print("|---|---|---|---|---|")
        for kind, times in ttft.items():
            made = f"{loads * 1000 / requests:.1f} | {evictions * 1000 / requests:.1f}"
            counts = made if kind == "adapters" else "– | –"
            print(f"| {kind} | {counts} | {percentile(times, 0.5) * 1e3:.0f} ms | "
                  f"{percentile(times, 0.95) * 1e3:.0f} ms |")  # fmt: skip
    finally:
        stop_all([gateway, *engines])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("embeddings", "adapters", "both"), default="both")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--adapter-requests", type=int, default=400)
    parser.add_argument("--adapter-concurrency", type=int, default=8)
    parser.add_argument("--adapters", type=int, default=4)
    parser.add_argument("--slots", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mistral-serve-fleet-"))
    if args.part in ("embeddings", "both"):
        embeddings(args, work)
    if args.part in ("adapters", "both"):
        adapters(args, work)
    print(f"\nlogs: {work}")


if __name__ == "__main__":
    main()
