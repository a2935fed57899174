"""The gateway beside its peers, over the same engines in one run: CPU per streamed token,
time to first token, and what routing keeps of the prefix cache.

    .venv/bin/python bench/peers.py [--rounds 2] [--concurrency 1 8 64] [--profile]
    (vllm-router and py-spy: scripts/install.sh bench)

Starts two demo engines (HF-format demo-v1: cheap chat templating, so the two cores go to the
engines and the front doors) and, over both, every front door at once:

- **engines directly**: the client pins each conversation to one engine (conversation i to
  engine i mod 2): the ideal router, with no process between, the reference for TTFT and for
  the prefix-cache hit rate;
- **gateway, AUTH=off**; **gateway, a key** (a stored key, no limits, the usage ledger on
  SQLite, as `up` keeps it); **gateway, a key with every limit** (rpm, tpm, concurrency, daily
  and monthly tokens, none binding, counted in the process);
- **vllm-router** (vLLM's Rust router, pinned in the `bench` extra) with its `cache_aware`
  policy.

Traffic: two-turn conversations (a fresh first turn of ~260 words, then the history with the
reply and a short follow-up), streamed chat completions of exactly ``--tokens`` tokens
(`ignore_eos`), `stream_options.include_usage`. For each concurrency the front doors take
turns, ``--rounds`` rounds each, fresh text every round (no round is served from another's
cache). Reported per front door and concurrency:

- CPU per streamed token: the front door's CPU (its process tree, every thread, from the
  scheduler's nanosecond account) over the round, divided by the completion tokens the engines
  reported in `usage` (never stream chunks: a busy engine merges several tokens into one);
  median of the rounds, with their range;
- TTFT p50 / p95 (request sent → first content), and p50 added over the engines directly;
- the prefix-cache hit rate of the round (the engines' own /metrics counters), and its share
  of the direct one's.

``--profile`` also records an on-CPU profile of the AUTH=off gateway at concurrency 8 and prints
where its CPU goes, by library and by frame: py-spy with ``--native`` (C frames too: uvloop,
the HTTP parsers, system calls), idle samples left out (py-spy's default: a thread waiting in
``epoll_wait`` is not sampled), so it is on-CPU time, not wall-clock time. ``--gil`` was tried
first and kept 81 samples of a 20 s round: it misses uvloop's own work. Not a test: the
numbers go to docs/gateway-cost.md with the command.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import psutil
from harness import cpu_time, start, start_gateway, stop_all, wait_ok
from routing import engine_counters, prose, start_engines, stream_chat, wait_engines_ready
from tenancy_cost import LIMITS, create_key

from mistral_serve.engines.supervisor import free_port

ROUTER = [str(Path(sys.executable).with_name("vllm-router"))]


# -- the front doors -------------------------------------------------------------------------------
@dataclass
class FrontDoor:
    name: str
    urls: list[str]  # conversation i goes to urls[i % len(urls)]
    process: subprocess.Popen | None = None  # None: nothing between client and engines
    key: str | None = None
    cpu: list[float] = field(default_factory=list)  # µs per token, per round
    ttft: list[float] = field(default_factory=list)
    hit_rates: list[float] = field(default_factory=list)
    tokens: int = 0
    failed: int = 0

    def cpu_seconds(self) -> float:
        if self.process is None:
            return 0.0
        try:
            tree = [psutil.Process(self.process.pid)]
            tree += tree[0].children(recursive=True)
        except psutil.NoSuchProcess:
            return 0.0
        return sum(cpu_time(process.pid) for process in tree)


def start_router(work: Path, engines: list[str]) -> tuple[str, subprocess.Popen]:
    port = free_port()
    command = [*ROUTER, "--host", "127.0.0.1", "--port", str(port), "--policy", "cache_aware"]
    command += ["--worker-urls", *engines, "--log-level", "warning"]
    return f"http://127.0.0.1:{port}", start(command, dict(os.environ), work / "router.log")


def start_front_doors(work: Path, engines: list[str]) -> list[FrontDoor]:
    """Every front door over ``engines``, ready."""
    quiet = {"ENGINE_CANARY_INTERVAL_S": "3600"}  # the engines' counters are the workload's
    doors = [FrontDoor("engines directly", engines)]
    url, process = start_gateway(work, engines, "gateway-off", AUTH="off", **quiet)
    doors.append(FrontDoor("gateway, AUTH=off", [url], process))
    for name, limits in (("a key", []), ("a key, every limit", LIMITS)):
        data = work / f"data-{len(doors)}"
        key = create_key({"MISTRAL_SERVE_DATA_DIR": str(data)}, limits)
        url, process = start_gateway(
            work, engines, f"gateway-{len(doors)}", AUTH="required",
            MISTRAL_SERVE_DATA_DIR=str(data), **quiet,
        )  # fmt: skip
        doors.append(FrontDoor(f"gateway, {name}", [url], process, key))
    url, process = start_router(work, engines)
    doors.append(FrontDoor("vllm-router cache_aware", [url], process))
    for door in doors[1:-1]:
        wait_ok(door.urls[0] + "/ready", 120)
        wait_engines_ready(door.urls[0], len(engines))
    wait_ok(doors[-1].urls[0] + "/health", 120)
    return doors


# -- traffic ---------------------------------------------------------------------------------------
def conversations(nonce: str, count: int) -> list[list[str]]:
    rng = random.Random(nonce)
    return [[f"{nonce} conversation {i}. {prose(rng, 260)}", prose(rng, 15)] for i in range(count)]


async def one_round(
    door: FrontDoor, talks: list[list[str]], concurrency: int, tokens: int
) -> tuple[list[float], int, int]:
    """Every conversation through ``door``, ``concurrency`` at a time."""
    ttfts: list[float] = []
    totals = Counter()
    pending = iter(enumerate(talks))

    async def worker(session: aiohttp.ClientSession) -> None:
        for index, turns in pending:
            url = door.urls[index % len(door.urls)]
            messages: list[dict] = []
            for text in turns:
                messages.append({"role": "user", "content": text})
                ttft, reply, used = await stream_chat(
                    session, url, messages, max_tokens=tokens, key=door.key, ignore_eos=True
                )
                if ttft is None:
                    totals["failed"] += 1
                    break
                ttfts.append(ttft)
                totals["tokens"] += used
                messages.append({"role": "assistant", "content": reply})

    timeout = aiohttp.ClientTimeout(total=900)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return ttfts, totals["tokens"], totals["failed"]


def hit_rate(before: list[Counter], after: list[Counter]) -> float:
    hits = sum(a["hits"] - b["hits"] for a, b in zip(after, before, strict=True))
    queries = sum(a["queries"] - b["queries"] for a, b in zip(after, before, strict=True))
    return hits / queries if queries else 0.0


def measure(
    doors: list[FrontDoor], engines: list[str], concurrency: int, args: argparse.Namespace
) -> None:
    """``args.rounds`` rounds of each front door at ``concurrency``, the doors taking turns."""
    count = max(4, concurrency * args.conversations_per_slot)
    for round_index in range(args.rounds):
        order = doors if round_index % 2 == 0 else list(reversed(doors))
        for door in order:
            nonce = f"{time.time_ns()} {door.name}"
            counters = [engine_counters(url) for url in engines]
            cpu = door.cpu_seconds()
            ttfts, tokens, failed = asyncio.run(
                one_round(door, conversations(nonce, count), concurrency, args.tokens)
            )
            used = door.cpu_seconds() - cpu
            door.hit_rates.append(hit_rate(counters, [engine_counters(url) for url in engines]))
            door.cpu.append(used / tokens * 1e6 if tokens else float("nan"))
            door.ttft += ttfts
            door.tokens += tokens
            door.failed += failed


# -- report ----------------------------------------------------------------------------------------
def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def report(doors: list[FrontDoor], concurrency: int) -> None:
    direct = doors[0]
    direct_p50 = percentile(direct.ttft, 0.5)
    direct_hits = statistics.fmean(direct.hit_rates)
    print(f"\n### concurrency {concurrency}\n")
    print("| front door | CPU per streamed token | TTFT p50 | p95 | added p50 | prefix-cache hit "
          "rate (share of direct) | tokens | failed |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for door in doors:
        if door.process is None:
            cpu = "–"
        else:
            cpu = f"{statistics.median(door.cpu):.1f} µs ({min(door.cpu):.1f}–{max(door.cpu):.1f})"
        p50 = percentile(door.ttft, 0.5)
        hits = statistics.fmean(door.hit_rates)
        added = "–" if door is direct else f"{(p50 - direct_p50) * 1e3:+.0f} ms"
        print(
            f"| {door.name} | {cpu} | {p50 * 1e3:.0f} ms | {percentile(door.ttft, 0.95) * 1e3:.0f}"
            f" ms | {added} | {hits:.3f} ({hits / direct_hits:.2f}) | {door.tokens} |"
            f" {door.failed} |"
        )
    gateway, router = doors[1], doors[-1]
    ratio = statistics.median(gateway.cpu) / statistics.median(router.cpu)
    limited = statistics.median(doors[3].cpu) / statistics.median(router.cpu)
    print(f"\nCPU per token against vllm-router: AUTH=off {ratio:.2f}×, every limit {limited:.2f}×")


def profile(door: FrontDoor, engines: list[str], work: Path, args: argparse.Namespace) -> None:
    """An on-CPU profile of ``door`` under concurrency 8; its top frames by own samples."""
    out = work / "gateway-profile.txt"
    spy = [str(Path(sys.executable).with_name("py-spy")), "record", "--native"]
    spy += ["-r", "1000", "-f", "raw", "-o", str(out), "-p", str(door.process.pid), "-d", "900"]
    recorder = subprocess.Popen(spy, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1)
        talks = conversations(f"{time.time_ns()} profile", 8 * args.conversations_per_slot * 8)
        asyncio.run(one_round(door, talks, 8, args.tokens))
    finally:
        recorder.send_signal(2)  # SIGINT: py-spy writes what it has
        recorder.wait(60)
    summarize(out, args.top)


def summarize(out: Path, top: int) -> None:
    """The profile's on-CPU samples by library and by frame. A sample whose innermost frame is
    ``epoll_wait`` is the event loop waiting for work: left out (py-spy's own idle filter does
    not apply to ``--native`` samples)."""
    own: Counter = Counter()
    inclusive: Counter = Counter()
    where: Counter = Counter()
    total = idle = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if frames[-1].startswith(("epoll_pwait ", "epoll_wait ")):
            idle += int(count)
            continue
        total += int(count)
        own[frames[-1]] += int(count)
        where[_library(frames)] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    print(f"\n### on-CPU profile ({total} samples on the CPU, {idle} waiting left out; {out})\n")
    print("| share | where (the innermost Python frame's library; C below it included) |")
    print("|---|---|")
    for library, count in where.most_common(top):
        print(f"| {count / total:.1%} | {library} |")
    print("\n| own share | frame |\n|---|---|")
    for frame, count in own.most_common(top):
        print(f"| {count / total:.1%} | `{frame}` |")
    print("\n| inclusive share | frame |\n|---|---|")
    for frame, count in inclusive.most_common(top * 2):
        print(f"| {count / total:.1%} | `{frame}` |")


_SYSCALL = re.compile(r"^(read|write|writev|recv\w*|send\w*|getpid)\b.*libc")
_PYTHON_FILE = re.compile(r"\(([\w/.<>-]+)\.py:\d+\)")


def _library(frames: list[str]) -> str:
    """Where a sample was: a system call (named), else the library of its innermost Python
    frame (mistral_serve by package; the event loop itself when no frame is Python's)."""
    if _SYSCALL.match(frames[-1]):
        return "system call: " + frames[-1].split(" ")[0]
    if any("gc_collect" in frame for frame in frames):
        return "garbage collector"
    files = [match.group(1) for frame in frames if (match := _PYTHON_FILE.search(frame))]
    if not files or files[-1].startswith("asyncio/runners"):
        return "event loop (uvloop's C code)"
    parts = files[-1].split("/")
    return "/".join(parts[:2]) if parts[0] == "mistral_serve" else parts[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--concurrency", type=int, nargs="*", default=[1, 8, 64], help="none: --profile only"
    )
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--conversations-per-slot", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mistral-serve-peers-"))
    engines, processes = start_engines(work, 2, False, "peers")
    try:
        doors = start_front_doors(work, engines)
        processes += [door.process for door in doors if door.process is not None]
        asyncio.run(one_round(doors[1], conversations(f"{time.time_ns()} warm", 8), 4, 8))
        for concurrency in args.concurrency:
            for door in doors:
                door.cpu, door.ttft, door.hit_rates, door.tokens, door.failed = [], [], [], 0, 0
            measure(doors, engines, concurrency, args)
            report(doors, concurrency)
        if args.profile:
            profile(doors[1], engines, work, args)
    finally:
        stop_all(processes)
    print(f"\nlogs: {work}")


if __name__ == "__main__":
    main()
