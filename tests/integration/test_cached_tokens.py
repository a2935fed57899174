"""What the engine's prefix cache did reaches the client: a conversation's second turn says how
many of its prompt tokens were cached (``usage.prompt_tokens_details.cached_tokens``), in
OpenAI's answers and streams, Mistral's, and the Responses API's ``input_tokens_details``.
Real engine (started with ``--enable-prompt-tokens-details``, as `up` starts them)."""

from __future__ import annotations

import pytest
from mistralai.client import Mistral

from .conftest import Stack

pytestmark = pytest.mark.integration


def opening(name: str) -> list[dict]:
    """A first turn long enough to fill several of the engine's KV blocks."""
    text = " ".join(f"Line {n} of the {name} log: the keeper lit the lamp." for n in range(60))
    return [{"role": "user", "content": text}]


def second_turn(name: str, first_answer: str) -> list[dict]:
    return [
        *opening(name),
        {"role": "assistant", "content": first_answer or "…"},
        {"role": "user", "content": "And then?"},
    ]


def test_openai_answers_and_streams_say_what_was_cached(stack: Stack):
    client = stack.client(max_retries=0)
    first = client.chat.completions.create(
        model="demo", messages=opening("openai"), max_tokens=4, temperature=0
    )
    assert first.usage.prompt_tokens_details is not None  # present, even when nothing hit
    messages = second_turn("openai", first.choices[0].message.content)
    again = client.chat.completions.create(
        model="demo", messages=messages, max_tokens=4, temperature=0
    )
    assert again.usage.prompt_tokens_details.cached_tokens > 0
    streamed = client.chat.completions.create(
        model="demo",
        messages=messages,
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    [usage] = [chunk.usage for chunk in streamed if chunk.usage is not None]
    assert usage.prompt_tokens_details.cached_tokens > 0


def test_mistral_answers_say_what_was_cached(stack: Stack):
    mistral = Mistral(api_key="unused", server_url=stack.gateway_url)
    first = mistral.chat.complete(model="demo", messages=opening("mistral"), max_tokens=4)
    messages = second_turn("mistral", first.choices[0].message.content)
    again = mistral.chat.complete(model="demo", messages=messages, max_tokens=4)
    details = again.usage.model_dump().get("prompt_tokens_details") or {}
    assert details.get("cached_tokens", 0) > 0


def test_responses_say_what_was_cached(stack: Stack):
    client = stack.client(max_retries=0)
    text = opening("responses")[0]["content"]
    first = client.responses.create(model="demo", input=text, max_output_tokens=4)
    again = client.responses.create(
        model="demo", input="And then?", previous_response_id=first.id, max_output_tokens=4
    )
    assert again.usage.input_tokens_details.cached_tokens > 0
