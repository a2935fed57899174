"""The demo model behaves like a trained one where it matters to everything built on it: it
never produces a control token by itself, so vLLM's Mistral tool parser never trips on a stray
[TOOL_CALLS] and every plain reply carries text (tests/unit/models/test_demo.py checks the
weights; this checks the engine serving them)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from .conftest import Stack

pytestmark = pytest.mark.integration

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
    "What is the weather like in Paris?",
]


def engine_log_problems(stack: Stack) -> tuple[int, int]:
    text = (stack.log_dir / "engine-demo.log").read_text(errors="replace")
    return text.count(TOOL_PARSER_ERROR), text.count("Traceback")


def test_thousands_of_streamed_tokens_with_tools_offered_trip_no_parser(stack: Stack):
    client = stack.client(max_retries=0, timeout=300)
    before = engine_log_problems(stack)

    def stream(index: int) -> tuple[int, str]:
        chunks = client.chat.completions.create(
            model="demo",
            messages=[{"role": "user", "content": PROMPTS[index % len(PROMPTS)]}],
            tools=TOOLS,
            max_tokens=128,
            temperature=1.0,
            seed=index,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, tokens = "", 0
        for chunk in chunks:
            if chunk.choices:
                assert not chunk.choices[0].delta.tool_calls  # nothing asked for a tool call
                text += chunk.choices[0].delta.content or ""
            if chunk.usage:
                tokens = chunk.usage.completion_tokens
        return tokens, text

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(stream, range(24)))
    assert sum(tokens for tokens, _ in results) == 24 * 128  # no stop token cut one short
    assert all(text for _, text in results)
    assert engine_log_problems(stack) == before


def test_every_greedy_chat_completion_carries_text(stack: Stack):
    client = stack.client()
    for model in ("demo", "demo-v1"):
        for prompt in PROMPTS:
            reply = client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": prompt}],
                max_tokens=30,
                temperature=0,
            )
            choice = reply.choices[0]
            assert choice.message.content, (model, prompt)
            assert choice.finish_reason == "length"
