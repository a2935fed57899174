"""The project's vLLM plugin in the engines the stack starts as `up` starts them: loaded once
per engine, tool calls of every tool_choice still right with it (streamed too; the other tool
and json_schema tests run on the same engines), and the API server's memory bounded under
streamed chat traffic (docs/architecture.md, "Engine patches"; the benchmark with and without
the plugin is bench/demo_engine_cost.py)."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

from .conftest import Stack
from .test_chat_completions import WEATHER  # city is an enum: random weights never end a string

pytestmark = pytest.mark.integration

CITIES = ("Paris", "Lyon")
MESSAGES = [{"role": "user", "content": "Weather in Paris?"}]
#: Measured on this stack: 3-5 MB over 300 streamed requests with the plugin; 2.7 MB per
#: request (about 800 MB) without it. A regression guard, not the benchmark.
RSS_GROWTH_BOUND_MB = 64


@pytest.mark.parametrize("model", ["demo", "demo-v1"])
def test_each_engine_says_once_that_the_patches_are_applied(stack: Stack, model: str):
    log = (stack.log_dir / f"engine-{model}.log").read_text(errors="replace")
    assert log.count("mistral-serve engine patches applied on vLLM") == 1, log[-2000:]
    assert "parser-drop-info-cache, mistral-parser-cycle, tool-arguments-start" in log
    assert "engine patch" not in log.replace("engine patches applied", "")  # no warning


def test_streamed_named_tool_calls_arrive_whole(stack: Stack):
    """Sampled, so each stream is cut differently. Without the plugin 9 of 400 such streams
    brought arguments beginning with the colon (docs/architecture.md, "Streamed arguments"):
    16 of them would find that bug about one run in three."""

    async def one_call(client: openai.AsyncOpenAI, index: int) -> tuple[set[str], str]:
        stream = await client.chat.completions.create(
            model="demo",
            messages=[{"role": "user", "content": f"Weather in Paris? ({index})"}],
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            max_tokens=60,
            stream=True,
        )
        names, arguments = set(), ""
        async for chunk in stream:
            for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                if call.function.name:
                    names.add(call.function.name)
                arguments += call.function.arguments or ""
        return names, arguments

    async def calls() -> list[tuple[set[str], str]]:
        client = openai.AsyncOpenAI(base_url=stack.gateway_url + "/v1", api_key="unused")
        try:
            return await asyncio.gather(*(one_call(client, index) for index in range(16)))
        finally:
            await client.close()

    for names, arguments in asyncio.run(calls()):
        assert names == {"get_weather"}
        assert json.loads(arguments)["city"] in CITIES, arguments


def test_tool_choice_required_calls_a_tool_and_none_calls_none(stack: Stack):
    client = stack.client()
    required = client.chat.completions.create(
        model="demo",
        messages=MESSAGES,
        tools=[WEATHER],
        tool_choice="required",
        max_tokens=80,
        temperature=0.0,  # sampled, the random weights may add calls to the array until the end
    )
    call = required.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] in CITIES
    none = client.chat.completions.create(
        model="demo", messages=MESSAGES, tools=[WEATHER], tool_choice="none", max_tokens=8
    )
    assert not none.choices[0].message.tool_calls
    assert none.choices[0].message.content


def test_streamed_chat_requests_leave_the_api_server_memory_bounded(stack: Stack):
    api_server = stack.api_server("demo")

    async def stream_many(count: int, concurrency: int = 16) -> int:
        client = openai.AsyncOpenAI(base_url=stack.gateway_url + "/v1", api_key="unused")
        requests = iter(range(count))
        tokens = 0

        async def worker() -> None:
            nonlocal tokens
            for index in requests:
                stream = await client.chat.completions.create(
                    model="demo",
                    messages=[{"role": "user", "content": f"Tell me a story ({index})"}],
                    max_tokens=16,
                    stream=True,
                    stream_options={"include_usage": True},
                )
                async for chunk in stream:
                    if chunk.usage is not None:
                        tokens += chunk.usage.completion_tokens

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        await client.close()
        return tokens

    asyncio.run(stream_many(50))  # warm-up: the first requests fill caches for good
    before = api_server.memory_info().rss
    tokens = asyncio.run(stream_many(300))
    growth_mb = (api_server.memory_info().rss - before) / 2**20
    print(f"API-server RSS growth over 300 streamed chat requests ({tokens} tokens): "
          f"{growth_mb:.1f} MB")  # fmt: skip
    assert tokens >= 300
    assert growth_mb < RSS_GROWTH_BOUND_MB

    # The gateway watches the same number: /ready shows each engine's API-server memory.
    [engine] = [
        engine
        for engine in httpx.get(stack.gateway_url + "/ready").json()["engines"]
        if "demo" in engine["models"]
    ]
    assert engine["stats"]["api_server_resident_bytes"] > 100 * 2**20
