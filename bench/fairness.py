"""Fair queuing by key: a quiet key's time to first token alone, then beside a loud key that
sends ten times what the engines can take.

The engines are two FAKE engines shaped like GPU engines (bench/fake_engine.py): a stream's
first chunk after FIRST_S (the prefill), then a chunk every PACE_S, CHUNKS of them, with
SLOTS requests at a time each (ENGINE_MAX_INFLIGHT). What is measured is the gateway's line,
not an engine: a CPU engine on this 2-core machine slows down for everyone when the loud key
fills its batch, which says nothing about whose turn it is. Capacity is
2 × SLOTS / (FIRST_S + CHUNKS × PACE_S) requests a second.

The quiet key sends 20 % of that capacity, open loop (its pace whatever the answers). The loud
key keeps ten times the engines' slots busy: that many requests at once (of 2 to 2 × CHUNKS
chunks: real requests differ in length, so slots free one by one), each sent again as soon as
it ends, after its Retry-After when refused (as the official SDKs do), into a line of
QUEUE_MAX. Each window runs alone first (quiet only), then with both. With
``--baseline-src`` the same runs go through a gateway of that code too (e.g. a worktree of the
commit before fair queuing, where the line was priority then arrival), one after the other.

    .venv/bin/python bench/fairness.py [--seconds 20] [--baseline-src PATH/src]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp
from harness import create_key, start_fake_engines, start_gateway, stop_all, variants, wait_ok

FIRST_S = 0.08
PACE_S = 0.1
CHUNKS = 10
SLOTS = 32
CAPACITY = 2 * SLOTS / (FIRST_S + CHUNKS * PACE_S)
LOUD = 10 * 2 * SLOTS  # requests the loud key keeps in flight
QUEUE_MAX = 256
BODY = {
    "model": "demo",
    "messages": [{"role": "user", "content": "Hello there."}],
    "max_tokens": CHUNKS,
    "stream": True,
}


async def send(
    session: aiohttp.ClientSession, url: str, key: str, chunks: int = CHUNKS
) -> tuple[int, float | None, float]:
    """One stream of ``chunks``: its status, its time to first event (None when refused) and
    the Retry-After it was told."""
    started = time.perf_counter()
    headers = {"authorization": f"Bearer {key}"}
    body = {**BODY, "max_tokens": chunks}
    try:
        async with session.post(url, json=body, headers=headers) as response:
            if response.status != 200:
                await response.read()
                return response.status, None, float(response.headers.get("retry-after", 1))
            await response.content.readany()
            first = time.perf_counter() - started
            await response.read()
            return 200, first, 0.0
    except aiohttp.ClientError:
        return 0, None, 1.0


async def flood(
    session: aiohttp.ClientSession, url: str, key: str, seconds: float
) -> list[tuple[int, float | None, float]]:
    """LOUD requests in flight for ``seconds``: each sent again when it ends."""
    results: list[tuple[int, float | None, float]] = []
    deadline = time.perf_counter() + seconds

    lengths = random.Random(7)

    async def worker() -> None:
        while time.perf_counter() < deadline:
            result = await send(session, url, key, lengths.randint(2, 2 * CHUNKS))
            results.append(result)
            if result[0] != 200:
                await asyncio.sleep(result[2])

    await asyncio.gather(*(worker() for _ in range(LOUD)))
    return results


async def paced(
    session: aiohttp.ClientSession, url: str, key: str, rate: float, seconds: float
) -> list[tuple[int, float | None, float]]:
    tasks = []
    began = time.perf_counter()
    for n in range(int(rate * seconds)):
        delay = began + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(session, url, key)))
    return await asyncio.gather(*tasks)


async def window(url: str, quiet: str, loud: str | None, seconds: float) -> dict:
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        target = url + "/v1/chat/completions"
        runs = [paced(session, target, quiet, 0.2 * CAPACITY, seconds)]
        if loud is not None:
            runs.append(flood(session, target, loud, seconds))
        results = await asyncio.gather(*runs)
    quiet_results = results[0]
    firsts = sorted(first for _, first, _ in quiet_results if first is not None)
    return {
        "quiet_p50": statistics.median(firsts) * 1000,
        "quiet_p95": firsts[int(0.95 * (len(firsts) - 1))] * 1000,
        "quiet_refused": sum(status != 200 for status, _, _ in quiet_results),
        "quiet_sent": len(quiet_results),
        "loud": Counter(status for status, _, _ in results[1]) if loud is not None else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--baseline-src", type=Path, help="src/ of the code to compare against")
    args = parser.parse_args()
    compared = variants(args.baseline_src)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        processes, engines = start_fake_engines(work, 2, PACE_S, FIRST_S)
        try:
            for engine in engines:
                wait_ok(engine + "/health", 30)
            for name, source in compared.items():
                (work / name).mkdir()
                quiet, loud = create_key(work / name, source), create_key(work / name, source)
                settings = {
                    "ENGINE_MAX_INFLIGHT": str(SLOTS),
                    "ADMISSION_QUEUE_MAX": str(QUEUE_MAX),
                    "MISTRAL_SERVE_DATA_DIR": str(work / name / "data"),
                }
                if source is not None:
                    settings["PYTHONPATH"] = str(source)
                url, gateway = start_gateway(work / name, engines, "gateway", **settings)
                processes.append(gateway)
                wait_ok(url + "/ready", 60)
                asyncio.run(window(url, quiet, None, 3))  # warm-up
                alone = asyncio.run(window(url, quiet, None, args.seconds))
                beside = asyncio.run(window(url, quiet, loud, args.seconds))
                rows.append((name, alone, beside))
                stop_all([gateway])
                processes.remove(gateway)
        finally:
            stop_all(processes)
    print(
        f"capacity {CAPACITY:.0f} requests/s (2 engines × {SLOTS} slots, first chunk "
        f"{FIRST_S * 1000:.0f} ms, {CHUNKS} chunks {PACE_S * 1000:.0f} ms apart, line of "
        f"{QUEUE_MAX}); quiet key {0.2 * CAPACITY:.1f}/s, loud key {LOUD} at once, "
        f"{args.seconds:g} s each\n"
    )
    print(
        "| gateway | quiet alone: TTFT p50 / p95 | beside the loud key: p50 / p95 "
        "| p95 ratio | quiet refused | loud: answered / refused |"
    )
    print("|---|---|---|---|---|---|")
    for name, alone, beside in rows:
        loud = beside["loud"]
        print(
            f"| {name} | {alone['quiet_p50']:.0f} / {alone['quiet_p95']:.0f} ms "
            f"| {beside['quiet_p50']:.0f} / {beside['quiet_p95']:.0f} ms "
            f"| {beside['quiet_p95'] / alone['quiet_p95']:.2f} "
            f"| {beside['quiet_refused']} of {beside['quiet_sent']} "
            f"| {loud[200]} / {sum(loud.values()) - loud[200]} |"
        )


if __name__ == "__main__":
    main()
