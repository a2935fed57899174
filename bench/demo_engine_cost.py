"""What the demo model costs the engine per streamed token, and whether it behaves like a model.

    .venv/bin/python bench/demo_engine_cost.py [--requests 64] [--concurrency 16] [--tokens 64]

Starts one vLLM engine on the Mistral-format demo model exactly as `mistral-serve up` does
(Mistral tokenizer, auto tool choice with Mistral's tool parser), streams chat completions at it
directly (no gateway) with `tools` in every request, and reports:

- CPU per streamed token of the engine's API server and of its engine core (user + system time
  from /proc, divided by the completion tokens the engine reported), and the API server's CPU
  per chat request, so the per-token figure can be given net of it;
- tool-parser errors in the engine's log (vLLM logs one traceback per failed streamed token when
  the model emits a stray [TOOL_CALLS]);
- greedy (temperature 0) chat completions whose content came back empty.

A demo model that samples control tokens on its own shows up in all three. Not a test: the
numbers go to docs/architecture.md with the command that produced them.
"""

from __future__ import annotations

import argparse
import asyncio
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


def chat_request_cpu(url: str, api_server: psutil.Process, count: int = 20) -> float:
    """API-server CPU of one chat request that generates a single token: the per-request part
    of the cost (with a Mistral tokenizer, vLLM 0.32 builds its tool parser per request)."""
    body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    with httpx.Client(timeout=120) as http:
        before = cpu_seconds(api_server)
        for _ in range(count):
            http.post(url + "/v1/chat/completions", json=body).raise_for_status()
        return (cpu_seconds(api_server) - before) / count


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--no-tools", action="store_true", help="streams without `tools`")
    parser.add_argument("--greedy", type=int, default=10, help="greedy completions to check")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mistral-serve-bench-"))
    spec = demo_engine_spec(work)
    log_path = work / "engine.log"
    engine = start_engine(spec, log_path)
    try:
        wait_ok(spec.url + "/health")
        api_server = api_server_of(engine)
        [core] = [p for p in api_server.children() if "EngineCore" in " ".join(p.cmdline())]
        load = {"tools": not args.no_tools, "temperature": args.temperature}
        asyncio.run(stream_load(spec.url, 8, 4, 16, **load))  # warm up
        per_request = chat_request_cpu(spec.url, api_server)
        errors_before = log_path.read_text(errors="replace").count(TOOL_PARSER_ERROR)
        api_before, core_before = cpu_seconds(api_server), cpu_seconds(core)
        started = time.perf_counter()
        tokens = asyncio.run(
            stream_load(spec.url, args.requests, args.concurrency, args.tokens, **load)
        )
        wall = time.perf_counter() - started
        api_cpu = cpu_seconds(api_server) - api_before
        core_cpu = cpu_seconds(core) - core_before
        errors = log_path.read_text(errors="replace").count(TOOL_PARSER_ERROR) - errors_before
        empty = greedy_empty(spec.url, args.greedy)
    finally:
        stop_all([engine])
    print(f"streamed tokens: {tokens} in {wall:.1f} s ({tokens / wall:.0f} tok/s)")
    print(f"API server CPU per chat request (1 token): {per_request * 1e3:.1f} ms")
    print(f"API server CPU per streamed token: {api_cpu / tokens * 1e3:.3f} ms")
    net = (api_cpu - per_request * args.requests) / tokens
    print(f"API server CPU per streamed token, net of the per-request part: {net * 1e3:.3f} ms")
    print(f"engine core CPU per streamed token: {core_cpu / tokens * 1e3:.3f} ms")
    print(f"tool-parser errors in the engine log: {errors}")
    print(f"greedy chat completions with empty content: {empty} of {args.greedy}")
    print(f"engine log: {log_path}")


if __name__ == "__main__":
    main()
