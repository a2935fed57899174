"""Routing policies compared on real engines: prefix-cache hits, prefill, TTFT, engine shares,
and admission under 10× overload.

    .venv/bin/python bench/routing.py [--out docs] [--scale 1.0]
    (matplotlib: scripts/install.sh bench)

Starts two demo engines (HF-format demo-v1: cheap chat templating, so the two cores go to the
engines) and, for every workload, runs the same conversations through:

- one engine alone (the hit rate routing should keep),
- round-robin, least-outstanding and prefix-load gateways over both engines,
- prefix-load with two gateways, each conversation's turns alternating between them.

Workloads (every run gets fresh text, so no run is served from an earlier run's cache):

- **short**: conversations of a long first turn and one or two follow-ups, with the 1–4 s
  pauses people make between turns.
- **long, capped KV**: longer conversations on engines whose KV cache is capped (160 blocks
  of 128 tokens) so that holding every history on both engines evicts, as on a GPU.
- **shared prefix**: many sessions whose first turn starts with one long shared document.

What is reported comes from the engines' own /metrics (prefix-cache hits and queries, requests
completed per engine) and from the client (TTFT, wall time). Then **overload**: 80 concurrent
requests at a gateway whose engines admit 4 each (10× their targets): every answer is a 200 or
an immediate 429, and the official `openai` client with retries gets every one through.

Writes docs/routing-benchmark.md (the table) and docs/routing-benchmark.png. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp
import httpx
import openai
import orjson
from harness import demo_engine_spec, start_engine, start_gateway, stop_all, wait_ok
from prometheus_client.parser import text_string_to_metric_families

MODEL = "demo-v1"
KV_CAP_BLOCKS = 160  # 160 × 128 tokens: about 20k tokens per engine
WORDS = (
    "harbour ship weather lantern keeper tide rope anchor gull storm island rock signal wave "
    "captain cargo sail mast compass chart wind fog coast cliff beacon night morning river "
    "bridge market bread lamp stone garden letter window winter summer forest valley road"
).split()


# -- workloads -----------------------------------------------------------------------------------
@dataclass
class Conversation:
    turns: list[str]  # the user's messages, in order
    pauses: list[float]  # seconds before each turn after the first


@dataclass
class Workload:
    key: str
    title: str
    conversations: list[Conversation]
    concurrency: int
    capped_kv: bool = False


def prose(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)) + "."


def workloads(nonce: str, scale: float) -> list[Workload]:
    rng = random.Random(nonce)

    def n(count: int) -> int:
        return max(2, round(count * scale))

    short = [
        Conversation(
            [f"{nonce} conversation {i}. {prose(rng, 900)}"]
            + [prose(rng, 20) for _ in range(rng.choice((1, 2)))],
            [rng.uniform(1, 4) for _ in range(2)],
        )
        for i in range(n(32))
    ]
    long = [
        Conversation(
            [f"{nonce} long {i}. {prose(rng, 400)}"] + [prose(rng, 180) for _ in range(5)],
            [rng.uniform(0.5, 2) for _ in range(5)],
        )
        for i in range(n(12))
    ]
    document = f"{nonce} handbook. {prose(rng, 1200)}"
    shared = [
        Conversation([f"{document}\n\nQuestion {i}: {prose(rng, 12)}"], []) for i in range(n(48))
    ]
    return [
        Workload("short", "short conversations (1–2 follow-ups, 1–4 s pauses)", short, 8),
        Workload("long", "long conversations, KV cache capped", long, 6, capped_kv=True),
        Workload("shared", "sessions sharing one long prefix", shared, 8),
    ]


# -- engines and gateways ------------------------------------------------------------------------
def engine_counters(url: str) -> Counter:
    """The prefix-cache and request counters of one engine, summed over its label sets."""
    wanted = {
        "vllm:prefix_cache_hits": "hits",
        "vllm:prefix_cache_queries": "queries",
        "vllm:request_success": "requests",
    }
    counters: Counter = Counter()
    text = httpx.get(url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        if family.name in wanted:
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counters[wanted[family.name]] += sample.value
    return counters


@dataclass
class Stack:
    work: Path
    processes: list = field(default_factory=list)
    gateways_made: int = 0  # names each gateway's log

    @contextmanager
    def gateways(self, engines: list[str], count: int, **settings: str) -> Iterator[list[str]]:
        """``count`` gateways over ``engines``, ready, stopped afterwards."""
        started = []
        urls = []
        for _ in range(count):
            self.gateways_made += 1
            url, process = start_gateway(
                self.work,
                engines,
                f"gateway-{self.gateways_made}",
                ENGINE_CANARY_INTERVAL_S="3600",  # the engines' counters are the workload's
                ENGINE_STATS_INTERVAL_S="0.5",
                **settings,
            )
            started.append(process)
            urls.append(url)
        try:
            for url in urls:
                wait_ok(url + "/ready", 120)
                wait_engines_ready(url, len(engines))
            yield urls
        finally:
            stop_all(started)


def wait_engines_ready(gateway: str, count: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        engines = httpx.get(gateway + "/ready", timeout=10).json()["engines"]
        if sum(engine["ready"] for engine in engines) >= count:
            return
        time.sleep(0.2)
    raise SystemExit(f"{gateway}: engines not ready")


def start_engines(work: Path, count: int, capped: bool, tag: str) -> tuple[list[str], list]:
    extra = ["--num-gpu-blocks-override", str(KV_CAP_BLOCKS)] if capped else []
    specs = [demo_engine_spec(work, MODEL) for _ in range(count)]  # each on a free port
    specs = [replace(spec, command=[*spec.command, *extra]) for spec in specs]
    processes = [start_engine(spec, work / f"engine-{tag}-{i}.log") for i, spec in enumerate(specs)]
    for spec in specs:
        wait_ok(spec.url + "/health")
    return [spec.url for spec in specs], processes


# -- one run -------------------------------------------------------------------------------------
@dataclass
class RunResult:
    variant: str
    workload: str
    hit_rate: float
    prefill_tokens: float
    ttft: list[float]
    wall_s: float
    output_tokens: int
    requests: int
    shares: list[float]
    failed: int


async def stream_chat(
    session: aiohttp.ClientSession,
    url: str,
    messages: list[dict],
    *,
    max_tokens: int = 16,
    key: str | None = None,
    **extra: object,
) -> tuple[float | None, str, int]:
    """One streamed chat completion: (TTFT, text, output tokens from usage). ``key``: sent as
    a bearer token; ``extra``: more body fields (vLLM's ``ignore_eos``)."""
    body = {
        "model": MODEL,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        **extra,
    }
    headers = {"authorization": f"Bearer {key}"} if key else {}
    started = time.perf_counter()
    ttft, parts, tokens = None, [], 0
    async with session.post(url + "/v1/chat/completions", json=body, headers=headers) as response:
        if response.status != 200:
            await response.read()
            return None, "", 0
        async for line in response.content:
            if not line.startswith(b"data: {"):
                continue
            event = orjson.loads(line[6:])
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            for choice in event.get("choices", []):
                content = choice.get("delta", {}).get("content")
                if content:
                    if ttft is None:
                        ttft = time.perf_counter() - started
                    parts.append(content)
    return ttft, "".join(parts), tokens


async def run_conversations(workload: Workload, gateways: list[str]) -> tuple[list, int, int]:
    ttfts: list[float] = []
    totals = {"tokens": 0, "failed": 0}
    pending = iter(workload.conversations)

    async def talk(session: aiohttp.ClientSession, conversation: Conversation) -> None:
        messages: list[dict] = []
        for turn, text in enumerate(conversation.turns):
            if turn:
                await asyncio.sleep(conversation.pauses[turn - 1])
            messages.append({"role": "user", "content": text})
            ttft, reply, tokens = await stream_chat(
                session, gateways[turn % len(gateways)], messages
            )
            if ttft is None:
                totals["failed"] += 1
                return
            ttfts.append(ttft)
            totals["tokens"] += tokens
            messages.append({"role": "assistant", "content": reply or "…"})

    async def worker(session: aiohttp.ClientSession) -> None:
        for conversation in pending:
            await talk(session, conversation)

    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(
        timeout=timeout, connector=aiohttp.TCPConnector(limit=0)
    ) as session:
        await asyncio.gather(*(worker(session) for _ in range(workload.concurrency)))
    return ttfts, totals["tokens"], totals["failed"]


def run(variant: str, workload: Workload, gateways: list[str], engines: list[str]) -> RunResult:
    before = [engine_counters(url) for url in engines]
    started = time.perf_counter()
    ttfts, tokens, failed = asyncio.run(run_conversations(workload, gateways))
    wall = time.perf_counter() - started
    after = [engine_counters(url) for url in engines]
    delta = [a - b for a, b in zip(after, before, strict=True)]  # Counter subtraction
    hits = sum(d["hits"] for d in delta)
    queries = sum(d["queries"] for d in delta)
    requests = [d["requests"] for d in delta]
    total = sum(requests) or 1
    return RunResult(
        variant,
        workload.key,
        hit_rate=hits / queries if queries else 0.0,
        prefill_tokens=queries - hits,
        ttft=ttfts,
        wall_s=wall,
        output_tokens=tokens,
        requests=int(sum(requests)),
        shares=[r / total for r in requests],
        failed=failed,
    )


# -- overload ------------------------------------------------------------------------------------
async def overload(gateway: str, concurrency: int, timeout_s: float) -> dict:
    """``concurrency`` streamed completions at once: statuses, the slowest 429, the longest
    wait of an admitted one; then the same through the official client with retries."""
    body = {
        "model": MODEL,
        "prompt": "Count the ships in the harbour.",
        "max_tokens": 64,
        "stream": True,
        "ignore_eos": True,
    }
    answers: list[tuple[int, float]] = []

    async def one(session: aiohttp.ClientSession) -> None:
        started = time.perf_counter()
        async with session.post(gateway + "/v1/completions", json=body) as response:
            answered = time.perf_counter() - started
            await response.read()
            answers.append((response.status, answered))

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(one(session) for _ in range(concurrency)))
    client = openai.AsyncOpenAI(
        base_url=gateway + "/v1", api_key="unused", max_retries=10, timeout=120
    )
    started = time.perf_counter()

    async def with_retries() -> bool:
        try:
            await client.completions.create(
                model=MODEL,
                prompt="Count the ships.",
                max_tokens=64,
                extra_body={"ignore_eos": True},
            )
            return True
        except openai.APIError:
            return False

    succeeded = await asyncio.gather(*(with_retries() for _ in range(concurrency)))
    return {
        "statuses": Counter(status for status, _ in answers),
        "slowest_429_s": max((s for status, s in answers if status == 429), default=0.0),
        "longest_admitted_wait_s": max((s for status, s in answers if status == 200), default=0),
        "retried_ok": sum(succeeded),
        "retried_wall_s": time.perf_counter() - started,
        "timeout_s": timeout_s,
    }


# -- report --------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def table(results: list[RunResult], titles: dict[str, str]) -> str:
    lines = []
    for key, title in titles.items():
        rows = [r for r in results if r.workload == key]
        reference = next(r.hit_rate for r in rows if r.variant == "one engine")
        lines += [
            f"**{title}**",
            "",
            "| policy | prefix-cache hit rate | of one engine's | prefill tokens | TTFT p50 | "
            "TTFT p95 | output tok/s | requests per engine |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            shares = " / ".join(f"{s:.0%}" for s in r.shares)
            lines.append(
                f"| {r.variant} | {r.hit_rate:.3f} | {r.hit_rate / reference:.2f} | "
                f"{r.prefill_tokens:,.0f} | {percentile(r.ttft, 0.5) * 1000:.0f} ms | "
                f"{percentile(r.ttft, 0.95) * 1000:.0f} ms | {r.output_tokens / r.wall_s:.1f} | "
                f"{shares} |" + (f" ({r.failed} failed)" if r.failed else "")
            )
        lines.append("")
    return "\n".join(lines)


def plot(results: list[RunResult], titles: dict[str, str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(dict.fromkeys(r.variant for r in results))
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    width = 0.8 / len(variants)
    for index, variant in enumerate(variants):
        for axis, value in zip(axes, ("hit_rate", "ttft95"), strict=True):
            heights = []
            for key in titles:
                [r] = [r for r in results if r.variant == variant and r.workload == key]
                heights.append(r.hit_rate if value == "hit_rate" else percentile(r.ttft, 0.95))
            positions = [k + index * width for k in range(len(titles))]
            axis.bar(positions, heights, width, label=variant)
    for axis, label in zip(axes, ("prefix-cache hit rate", "TTFT p95 (s)"), strict=True):
        axis.set_xticks([k + 0.4 - width / 2 for k in range(len(titles))])
        axis.set_xticklabels([key for key in titles])
        axis.set_ylabel(label)
    axes[0].legend(fontsize=8)
    figure.suptitle("Routing policies over two demo engines (bench/routing.py)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--scale", type=float, default=1.0, help="conversations × this")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mistral-serve-routing-"))
    stack = Stack(work)
    nonce = f"run-{time.time_ns()}"
    plan = workloads(nonce, args.scale)
    titles = {w.key: w.title for w in plan}
    results: list[RunResult] = []
    variants = [
        ("one engine", 1, 1, "least-outstanding"),
        ("round-robin", 2, 1, "round-robin"),
        ("least-outstanding", 2, 1, "least-outstanding"),
        ("prefix-load", 2, 1, "prefix-load"),
        ("prefix-load, 2 gateways", 2, 2, "prefix-load"),
    ]
    overloaded: dict = {}
    try:
        for capped in (False, True):
            engines, processes = start_engines(work, 2, capped, "capped" if capped else "plain")
            stack.processes += processes
            for workload in (w for w in plan if w.capped_kv == capped):
                for offset, (name, engine_count, gateway_count, policy) in enumerate(variants):
                    # Every variant gets the workload's conversations with its own text.
                    fresh = reword(workload, f"{name}-{offset}")
                    with stack.gateways(
                        engines[:engine_count], gateway_count, ROUTING_POLICY=policy
                    ) as gateways:
                        result = run(name, fresh, gateways, engines)
                    results.append(result)
                    print(
                        f"{workload.key:>7} | {name:>24} | hit rate {result.hit_rate:.3f} | "
                        f"shares {[round(s, 2) for s in result.shares]} | "
                        f"TTFT p95 {percentile(result.ttft, 0.95):.2f} s | "
                        f"{result.wall_s:.0f} s",
                        flush=True,
                    )
            if not capped:
                with stack.gateways(
                    engines,
                    1,
                    ENGINE_MAX_INFLIGHT="4",
                    ADMISSION_QUEUE_MAX="16",
                    ADMISSION_QUEUE_TIMEOUT_S="10",
                ) as [gateway]:
                    overloaded = asyncio.run(overload(gateway, 80, 10.0))
                print("overload:", overloaded, flush=True)
            stop_all(processes)
    finally:
        stop_all(stack.processes)
    report = table(results, titles) + "\n" + overload_lines(overloaded)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "routing-benchmark.md").write_text(
        "<!-- written by bench/routing.py; do not edit -->\n" + report
    )
    plot(results, titles, args.out / "routing-benchmark.png")
    print(report)


def reword(workload: Workload, salt: str) -> Workload:
    """The same conversations with a salt in front of each, so no run reuses another's cache
    (the shared document stays shared within the run)."""
    return replace(
        workload,
        conversations=[
            Conversation([f"{salt} {c.turns[0]}", *c.turns[1:]], c.pauses)
            for c in workload.conversations
        ],
    )


def overload_lines(result: dict) -> str:
    if not result:
        return ""
    statuses = ", ".join(f"{n} × {status}" for status, n in sorted(result["statuses"].items()))
    return (
        "**overload** (80 concurrent requests; 2 engines × ENGINE_MAX_INFLIGHT=4, "
        "ADMISSION_QUEUE_MAX=16, ADMISSION_QUEUE_TIMEOUT_S=10)\n\n"
        f"- plain clients: {statuses}; slowest 429 answered in {result['slowest_429_s']:.2f} s; "
        f"longest admitted request took {result['longest_admitted_wait_s']:.1f} s to start "
        "its answer\n"
        f"- official `openai` client, max_retries=10: {result['retried_ok']} of 80 succeeded "
        f"in {result['retried_wall_s']:.1f} s\n"
    )


if __name__ == "__main__":
    main()
