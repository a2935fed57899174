"""Batch jobs on idle capacity: interactive traffic at half the engines' capacity, alone and
with a 2,000-request batch running beside it; and the prefix cache of a batch whose requests
share long system prompts.

**Part 1, the line** (two FAKE engines shaped like GPU engines, bench/fake_engine.py: a
request's first chunk after FIRST_S, then CHUNKS tokens PACE_S apart, streamed or not; the
gateway holds SLOTS requests per engine). What is measured is the gateway's admission and the
batch runner, not an engine's arithmetic: a CPU engine on this 2-core machine slows down for
everyone as its batch grows, which says nothing about who gets the slots. Capacity is
2 × SLOTS / (FIRST_S + CHUNKS × PACE_S) requests a second.

- *engines only*: the batch's requests sent straight to the engines, every slot busy: the
  engines' capacity in tokens/s (C).
- *interactive alone*: streamed chat at half of capacity, open loop, for ``--seconds``: its
  time to first token (p50, p95) and its tokens/s.
- *batch alone*: the batch through the gateway, nothing else: its tokens/s (BATCH_MAX_SHARE
  of the slots at most).
- *with the batch*: the same interactive traffic while the batch runs: interactive TTFT, and
  the batch's tokens/s over the same window (read from its job's usage), against what the
  interactive traffic leaves of C.

Goals: interactive TTFT p95 with the batch ≤ 1.15× without it; the batch uses ≥ 80 % of the
capacity the interactive traffic leaves.

**Part 2, the prefix cache** (two real demo engines, CPU): a batch of requests behind four long
system prompts (interleaved in the file) through a gateway over both engines, and the same
batch (new prompts, so no cache is warm) through a gateway over one of them: the engines'
prefix-cache hit rate (vLLM's counters) of each. Goal: ≥ 0.9 of one engine's.

    .venv/bin/python bench/batch.py [--seconds 30] [--requests 2000] [--skip-engines]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx
import orjson
from harness import (
    create_key,
    demo_engine_spec,
    start_engine,
    start_fake_engines,
    start_gateway,
    stop_all,
    wait_ok,
)

from mistral_serve.engines.stats import parse_stats

FIRST_S = 0.05
PACE_S = 0.02
CHUNKS = 20
SLOTS = 16
REQUEST_S = FIRST_S + CHUNKS * PACE_S
CAPACITY = 2 * SLOTS / REQUEST_S  # requests a second
INTERACTIVE = {
    "model": "demo",
    "messages": [{"role": "user", "content": "Where is my parcel?"}],
    "max_tokens": CHUNKS,
    "stream": True,
}
DOCS = Path(__file__).parents[1] / "docs"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[int(share * (len(ordered) - 1))]


# -- traffic ---------------------------------------------------------------------------------
async def stream(session: aiohttp.ClientSession, url: str, key: str) -> tuple[float, int]:
    """One interactive stream: its time to first token and its tokens (from usage)."""
    started = time.perf_counter()
    body = {**INTERACTIVE, "stream_options": {"include_usage": True}}
    async with session.post(url, json=body, headers={"authorization": f"Bearer {key}"}) as answer:
        assert answer.status == 200, await answer.text()
        first = None
        tokens = 0
        async for line in answer.content:
            if first is None and line.startswith(b"data: "):
                first = time.perf_counter() - started
            if line.startswith(b"data: {") and b'"usage":{' in line:
                usage = orjson.loads(line[6:]).get("usage") or {}
                tokens = usage.get("completion_tokens", tokens)
    return first or 0.0, tokens


async def interactive(gateway: str, key: str, seconds: float) -> dict:
    """Streams at half the capacity, open loop, for ``seconds``."""
    rate = 0.5 * CAPACITY
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=120)
    ) as session:
        tasks = []
        began = time.perf_counter()
        for n in range(int(rate * seconds)):
            delay = began + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            url = gateway + "/v1/chat/completions"
            tasks.append(asyncio.create_task(stream(session, url, key)))
        results = await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - began
    firsts = [first for first, _ in results]
    return {
        "ttft50": statistics.median(firsts) * 1000,
        "ttft95": percentile(firsts, 0.95) * 1000,
        "tokens_per_s": sum(tokens for _, tokens in results) / elapsed,
        "sent": len(results),
    }


#: Each batch request's body (the same sent to the engines directly, and through the gateway).
BATCH_BODY = {
    "model": "demo",
    "messages": [{"role": "user", "content": "Label this."}],
    "max_tokens": CHUNKS,
}


def batch_lines(count: int) -> bytes:
    return b"".join(
        orjson.dumps(
            {
                "custom_id": f"b{n}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": BATCH_BODY,
            }
        )
        + b"\n"
        for n in range(count)
    )


async def engines_only(engines: list[str], count: int) -> float:
    """The batch's requests straight to the engines, every slot busy (the concurrency target
    the operator chose, ENGINE_MAX_INFLIGHT; the engines' few sequences beyond it are the
    fair headroom, kept for interactive bursts): tokens/s."""
    queue = list(range(count))
    tokens = 0

    async def worker(session: aiohttp.ClientSession, engine: str) -> None:
        nonlocal tokens
        while queue:
            queue.pop()
            async with session.post(engine + "/v1/chat/completions", json=BATCH_BODY) as answer:
                tokens += (await answer.json())["usage"]["completion_tokens"]

    began = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(worker(session, engine) for engine in engines for _ in range(SLOTS)))
    return tokens / (time.perf_counter() - began)


def create_batch(http: httpx.Client, lines: bytes) -> str:
    upload = http.post("/v1/files", files={"file": ("b.jsonl", lines)}, data={"purpose": "batch"})
    upload.raise_for_status()
    made = http.post(
        "/v1/batches",
        json={
            "input_file_id": upload.json()["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
    )
    made.raise_for_status()
    return made.json()["id"]


def batch_state(http: httpx.Client, batch_id: str) -> dict:
    return http.get(f"/v1/batches/{batch_id}").raise_for_status().json()


def wait_batch(http: httpx.Client, batch_id: str, until: str = "completed") -> dict:
    while (state := batch_state(http, batch_id))["status"] != until:
        assert state["status"] in ("validating", "in_progress", "finalizing", "cancelling"), state
        time.sleep(0.2)
    return state


def part_one(work: Path, seconds: float, requests: int) -> dict:
    processes, engines = start_fake_engines(work, 2, PACE_S, FIRST_S, paced=True)
    try:
        for engine in engines:
            wait_ok(engine + "/health", 30)
        key = create_key(work)
        gateway, process = start_gateway(
            work, engines, "gateway", ENGINE_MAX_INFLIGHT=str(SLOTS), ADMISSION_QUEUE_MAX="4096"
        )
        processes.append(process)
        wait_ok(gateway + "/ready")
        headers = {"authorization": f"Bearer {key}"}
        results: dict = {"capacity_rps": CAPACITY}
        results["engines_only"] = asyncio.run(engines_only(engines, requests))
        results["alone"] = asyncio.run(interactive(gateway, key, seconds))
        with httpx.Client(base_url=gateway, headers=headers, timeout=60) as http:
            alone_id = create_batch(http, batch_lines(requests))
            began = time.perf_counter()
            done = wait_batch(http, alone_id)
            results["batch_alone"] = done["usage"]["output_tokens"] / (time.perf_counter() - began)
            beside_id = create_batch(http, batch_lines(requests))
            while batch_state(http, beside_id)["request_counts"]["completed"] < 2 * SLOTS:
                time.sleep(0.1)
            before = batch_state(http, beside_id)["usage"]["output_tokens"]
            began = time.perf_counter()
            results["with_batch"] = asyncio.run(interactive(gateway, key, seconds))
            window = time.perf_counter() - began
            after = batch_state(http, beside_id)
            assert after["status"] == "in_progress", "the batch ended before the window did"
            results["batch_beside"] = (after["usage"]["output_tokens"] - before) / window
            http.post(f"/v1/batches/{beside_id}/cancel").raise_for_status()
            wait_batch(http, beside_id, "cancelled")
        return results
    finally:
        stop_all(processes)


# -- part 2: the prefix cache ------------------------------------------------------------------
def prefix_lines(seed: int, prompts: int = 4, each: int = 40) -> bytes:
    """``prompts`` long system prompts (new words per ``seed``, so no cache is warm), ``each``
    questions behind each, interleaved (the file's order mixes them)."""
    words = random.Random(seed)
    systems = [" ".join(f"w{words.randint(0, 10**6)}" for _ in range(500)) for _ in range(prompts)]
    lines = []
    for n in range(prompts * each):
        messages = [
            {"role": "system", "content": systems[n % prompts]},
            {"role": "user", "content": f"Question {n}: {words.randint(0, 10**6)}"},
        ]
        body = {"model": "demo", "messages": messages, "max_tokens": 1}
        lines.append(
            orjson.dumps(
                {
                    "custom_id": f"p{n}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": body,
                }
            )
        )
    return b"\n".join(lines) + b"\n"


def cache_counts(engines: list[str]) -> tuple[float, float]:
    hits = queries = 0.0
    for engine in engines:
        stats = parse_stats(httpx.get(engine + "/metrics", timeout=30).text)
        hits += stats.prefix_cache_hits or 0.0
        queries += stats.prefix_cache_queries or 0.0
    return hits, queries


def hit_rate(work: Path, engines: list[str], name: str, seed: int) -> float:
    key = create_key(work)
    gateway, process = start_gateway(work, engines, name)
    try:
        wait_ok(gateway + "/ready")
        before = cache_counts(engines)
        with httpx.Client(
            base_url=gateway, headers={"authorization": f"Bearer {key}"}, timeout=60
        ) as http:
            wait_batch(http, create_batch(http, prefix_lines(seed)))
        after = cache_counts(engines)
    finally:
        stop_all([process])
    return (after[0] - before[0]) / max(1.0, after[1] - before[1])


def part_two(work: Path) -> dict:
    specs = [demo_engine_spec(work) for _ in range(2)]  # each on a free port
    processes = []
    try:
        for n, spec in enumerate(specs):
            processes.append(start_engine(spec, work / f"demo-engine-{n}.log"))
        engines = [spec.url for spec in specs]
        for engine in engines:
            wait_ok(engine + "/health")
        return {
            "two engines": hit_rate(work, engines, "gateway-two", seed=1),
            "one engine": hit_rate(work, engines[:1], "gateway-one", seed=2),
        }
    finally:
        stop_all(processes)


# -- report ----------------------------------------------------------------------------------
def report(one: dict, two: dict | None, command: str) -> str:
    alone, beside = one["alone"], one["with_batch"]
    left = one["engines_only"] - beside["tokens_per_s"]
    lines = [
        f"Capacity {one['capacity_rps']:.1f} requests/s, {one['capacity_rps'] * CHUNKS:.0f} "
        f"tokens/s (2 engines × {SLOTS} slots, {REQUEST_S:.2f} s a request); measured with "
        f"the engines only, every slot busy: {one['engines_only']:.0f} tokens/s.",
        "",
        "| run | interactive TTFT p50 | p95 | interactive tokens/s | batch tokens/s |",
        "|---|---|---|---|---|",
        f"| interactive alone | {alone['ttft50']:.1f} ms | {alone['ttft95']:.1f} ms | "
        f"{alone['tokens_per_s']:.0f} | - |",
        f"| batch alone (through the gateway) | - | - | - | {one['batch_alone']:.0f} |",
        f"| interactive with the batch | {beside['ttft50']:.1f} ms | {beside['ttft95']:.1f} ms | "
        f"{beside['tokens_per_s']:.0f} | {one['batch_beside']:.0f} |",
        "",
        f"- TTFT p95 with the batch / without: **{beside['ttft95'] / alone['ttft95']:.2f}×** "
        "(goal ≤ 1.15)",
        f"- the batch's share of what interactive traffic leaves: {one['batch_beside']:.0f} of "
        f"{left:.0f} tokens/s = **{one['batch_beside'] / left:.2f}** (goal ≥ 0.80)",
        f"- the batch alone: {one['batch_alone'] / one['engines_only']:.2f} of the engines' "
        "capacity (BATCH_MAX_SHARE 0.8)",
    ]
    if two is not None:
        ratio = two["two engines"] / two["one engine"]
        lines += [
            "",
            "| prefix cache | hit rate |",
            "|---|---|",
            f"| one engine | {two['one engine']:.3f} |",
            f"| two engines through the gateway | {two['two engines']:.3f} |",
            "",
            f"- of one engine's: **{ratio:.2f}** (goal ≥ 0.90)",
        ]
    lines += ["", f"`{command}`"]
    return "\n".join(lines)


def plot(one: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    runs = ["alone", "with the batch"]
    for share, name in ((0.5, "p50"), (0.95, "p95")):
        key = "ttft50" if share == 0.5 else "ttft95"
        left.bar(
            [f"{run}\n{name}" for run in runs],
            [one["alone"][key], one["with_batch"][key]],
        )
    left.set_ylabel("interactive TTFT (ms)")
    capacity = one["engines_only"]
    right.bar(
        ["interactive", "batch", "left idle"],
        [
            one["with_batch"]["tokens_per_s"],
            one["batch_beside"],
            max(0.0, capacity - one["with_batch"]["tokens_per_s"] - one["batch_beside"]),
        ],
        color=["tab:blue", "tab:orange", "tab:gray"],
    )
    right.set_ylabel(f"tokens/s (engines' capacity {capacity:.0f})")
    figure.tight_layout()
    figure.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--skip-engines", action="store_true", help="part 1 only")
    args = parser.parse_args()
    command = "cd bench && ../.venv/bin/python batch.py " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        one = part_one(work, args.seconds, args.requests)
        two = None if args.skip_engines else part_two(work)
    print(report(one, two, command.strip()))
    plot(one, DOCS / "batch-benchmark.png")


if __name__ == "__main__":
    main()
