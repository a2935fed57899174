"""What a Mistral-format engine's API server costs per chat request, with the project's vLLM
plugin, without it, and without the tool parser; and whether the demo model behaves like one.

    .venv/bin/python bench/demo_engine_cost.py [--requests 2000] [--warmup 200] [--tokens 64]

Starts one vLLM engine on the Mistral-format demo model exactly as `mistral-serve up` does
(Mistral tokenizer, auto tool choice with Mistral's tool parser) three times, one after the
other in one run:

- `plugin`: as `up` starts it (ENGINE_PATCHES=on, the default);
- `no plugin`: ENGINE_PATCHES=off, vLLM as released;
- `no tool parser`: without `--enable-auto-tool-choice --tool-call-parser mistral`.

Each gets ``--warmup`` streamed chat completions, then ``--requests`` more (no `tools` in them,
``--tokens`` each, `stream_options.include_usage`), and reports: the API server's CPU per chat
request (user + system time over the first 400 at concurrency 16), tokens per second at
concurrency 16 and 64 (tokens counted from `usage`, never from chunks: a saturated API server
merges several tokens into one), the API server's RSS after the warm-up and after the
requests, tool-parser errors in the engine's log, greedy chat completions with empty content
(a demo model that samples control tokens shows up there), and sampled streamed named tool
calls whose arguments, put together from the stream, are not JSON (``--tool-calls`` of them).
Not a test: the numbers go to docs/architecture.md with the command that produced them.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx
import orjson
import psutil
from harness import api_server as api_server_of
from harness import demo_engine_spec, start_engine, stop_all, wait_ok

TOOL_PARSER_ERROR = "Error trying to handle streaming tool call"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
#: A closed set of values: the demo's random weights never end a free string.
WEATHER_ENUM = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Paris", "Lyon"]}},
            "required": ["city"],
        },
    },
}
PROMPTS = [
    "Tell me a story about a lighthouse.",
    "What is the capital of France?",
    "Write a haiku about autumn.",
    "Explain recursion to a child.",
    "List three uses for a paperclip.",
]


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


async def stream_load(
    url: str, requests: int, concurrency: int, tokens: int, *, tools: bool, temperature: float
) -> int:
    """Streamed chat completions (with tools offered, or not); returns the completion tokens."""
    total = 0
    queue = iter(range(requests))

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal total
        for index in queue:
            body = {
                "model": "demo",
                "messages": [{"role": "user", "content": PROMPTS[index % len(PROMPTS)]}],
                **({"tools": TOOLS} if tools else {}),
                "max_tokens": tokens,
                "temperature": temperature,
                "seed": index,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            async with session.post(url + "/v1/chat/completions", json=body) as response:
                assert response.status == 200, await response.text()
                async for line in response.content:
                    if line.startswith(b"data: {") and b'"usage":{' in line:
                        usage = orjson.loads(line[6:])["usage"]
                        total += usage["completion_tokens"]

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return total


def greedy_empty(url: str, count: int) -> int:
    """Greedy chat completions (what evaluations send) whose content is empty."""
    empty = 0
    with httpx.Client(timeout=120) as http:
        for index in range(count):
            prompt = f"{PROMPTS[index % len(PROMPTS)]} ({index})"
            body = {
                "model": "demo",
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": 30,
                "temperature": 0,
            }
            answer = http.post(url + "/v1/chat/completions", json=body).json()
            if not answer["choices"][0]["message"]["content"]:
                empty += 1
    return empty


async def broken_tool_calls(url: str, count: int, concurrency: int = 16) -> int:
    """Sampled, streamed chat completions with a named tool choice whose arguments, put
    together from the deltas as a client does, are not the call's JSON."""
    broken = 0
    queue = iter(range(count))

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal broken
        for index in queue:
            body = {
                "model": "demo",
                "messages": [{"role": "user", "content": f"Weather in Paris? ({index})"}],
                "tools": [WEATHER_ENUM],
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
                "max_tokens": 60,
                "stream": True,
            }
            arguments = ""
            async with session.post(url + "/v1/chat/completions", json=body) as response:
                async for line in response.content:
                    if not line.startswith(b"data: {"):
                        continue
                    for choice in orjson.loads(line[6:])["choices"]:
                        for call in choice["delta"].get("tool_calls") or []:
                            arguments += (call.get("function") or {}).get("arguments") or ""
            try:
                broken += orjson.loads(arguments)["city"] not in ("Paris", "Lyon")
            except (orjson.JSONDecodeError, KeyError, TypeError):
                broken += 1

    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return broken


CONFIGS = {
    "plugin": ({"ENGINE_PATCHES": "on"}, False),
    "no plugin": ({"ENGINE_PATCHES": "off"}, False),
    "no tool parser": ({"ENGINE_PATCHES": "on"}, True),
}
TOOL_PARSER_FLAGS = ("--enable-auto-tool-choice", "--tool-call-parser")


def without_tool_parser(command: list[str]) -> list[str]:
    kept, skip = [], False
    for word in command:
        if skip:
            skip = False
        elif word == "--tool-call-parser":
            skip = True
        elif word not in TOOL_PARSER_FLAGS:
            kept.append(word)
    return kept


def measure(name: str, work: Path, args: argparse.Namespace) -> dict[str, float]:
    env_change, drop_parser = CONFIGS[name]
    spec = demo_engine_spec(work)
    command = without_tool_parser(spec.command) if drop_parser else spec.command
    spec = dataclasses.replace(spec, command=command, env={**spec.env, **env_change})
    log_path = work / f"engine-{name.replace(' ', '-')}.log"
    engine = start_engine(spec, log_path)
    try:
        wait_ok(spec.url + "/health")
        api_server = api_server_of(engine)
        load = {"tools": False, "temperature": args.temperature}
        asyncio.run(stream_load(spec.url, args.warmup, 16, args.tokens, **load))
        rss_before = api_server.memory_info().rss
        results = {}
        measured = 400
        for concurrency in (16, 64):
            cpu_before, started = cpu_seconds(api_server), time.perf_counter()
            tokens = asyncio.run(stream_load(spec.url, measured, concurrency, args.tokens, **load))
            wall = time.perf_counter() - started
            results[f"tok/s c={concurrency}"] = tokens / wall
            if concurrency == 16:
                results["cpu ms/request"] = (cpu_seconds(api_server) - cpu_before) / measured * 1e3
        rest = max(0, args.requests - 2 * measured)
        asyncio.run(stream_load(spec.url, rest, 16, args.tokens, **load))
        results["rss MB after warm-up"] = rss_before / 2**20
        results["rss MB after requests"] = api_server.memory_info().rss / 2**20
        log = log_path.read_text(errors="replace")
        results["parser errors"] = log.count(TOOL_PARSER_ERROR)
        results["greedy empty"] = greedy_empty(spec.url, args.greedy)
        results[f"broken tool calls of {args.tool_calls}"] = asyncio.run(
            broken_tool_calls(spec.url, args.tool_calls)
        )
        results["patches applied"] = "engine patches applied" in log
    finally:
        stop_all([engine])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="after the warm-up")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--greedy", type=int, default=10, help="greedy completions to check")
    parser.add_argument("--tool-calls", type=int, default=200, help="streamed named calls")
    parser.add_argument("--only", choices=list(CONFIGS), action="append", help="configs to run")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mistral-serve-bench-"))
    names = args.only or list(CONFIGS)
    table = {name: measure(name, work, args) for name in names}
    columns = list(next(iter(table.values())))
    print("| engine | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, results in table.items():
        cells = [f"{v:.1f}" if isinstance(v, float) else str(v) for v in results.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if "plugin" in table and "no tool parser" in table:
        ratio = table["plugin"]["cpu ms/request"] / table["no tool parser"]["cpu ms/request"]
        print(f"CPU per chat request, plugin / no tool parser: {ratio:.2f}")
    for name, results in table.items():
        growth = results["rss MB after requests"] - results["rss MB after warm-up"]
        print(f"RSS growth over {args.requests} requests, {name}: {growth:.0f} MB")
    print(f"engine logs: {work}")


if __name__ == "__main__":
    main()
