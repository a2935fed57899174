"""Every documented range of a sampling field is checked at the door, naming the field."""

from __future__ import annotations

import orjson
import pytest
from pydantic import ValidationError

from mistral_serve.protocol.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    usage_requested,
)

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
COMPLETION = {"model": "m", "prompt": "hi"}

#: field → (values inside the documented range, values outside it)
RANGES = {
    "temperature": ([0, 0.7, 1.5, 2], [-0.1, 2.01]),
    "top_p": ([0, 0.5, 1], [-0.5, 1.01]),
    "n": ([1, 128], [0, 129]),
    "presence_penalty": ([-2, 0, 2], [-2.5, 2.5]),
    "frequency_penalty": ([-2, 2], [-3, 3]),
    "seed": ([-(2**63), 0, 2**63 - 1], [2**63, -(2**63) - 1]),
    "random_seed": ([0, 2**63 - 1], [-1, 2**63]),
    "max_tokens": ([0, 1, 100000], [-1]),
    "max_completion_tokens": ([1, 4096], [0, -5]),
    "min_tokens": ([0, 10], [-1]),
    "top_logprobs": ([0, 20], [-1, 21]),
    "logit_bias": ([{"15": -100}, {"7": 100}], [{"15": -101}, {"7": 100.5}]),
}


@pytest.mark.parametrize(("field", "allowed", "refused"), [(f, *v) for f, v in RANGES.items()])
def test_chat_ranges(field, allowed, refused):
    for value in allowed:
        ChatCompletionRequest.model_validate({**CHAT, field: value})
    for value in refused:
        with pytest.raises(ValidationError) as caught:
            ChatCompletionRequest.model_validate({**CHAT, field: value})
        assert caught.value.errors()[0]["loc"][0] == field, value


def test_completion_ranges():
    for field, value in (("logprobs", 21), ("logprobs", -1), ("best_of", 0), ("best_of", 21)):
        with pytest.raises(ValidationError) as caught:
            CompletionRequest.model_validate({**COMPLETION, field: value})
        assert caught.value.errors()[0]["loc"][0] == field
    CompletionRequest.model_validate({**COMPLETION, "logprobs": 5, "best_of": 2})


def test_mistral_fields_are_typed():
    for field, value in (
        ("safe_prompt", "yes"),
        ("random_seed", "42"),
        ("prompt_mode", "fast"),
        ("parallel_tool_calls", 1),
    ):
        with pytest.raises(ValidationError):
            ChatCompletionRequest.model_validate({**CHAT, field: value})
    request = ChatCompletionRequest.model_validate(
        {**CHAT, "random_seed": 7, "safe_prompt": True, "prompt_mode": "reasoning"}
    )
    assert request.random_seed == 7 and request.safe_prompt


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "m", "stream": true, "messages": [{"role": "user", "content": "}"}]}',
        b'  {"model":"m","stream":true}\n\n',
        b'{"model": "m", "stream": true, "stream_options": {"include_usage": false}}',
        b'{"model": "m", "stream": true, "stream_options": {"continuous_usage_stats": true}}',
    ],
)
def test_usage_is_asked_for_and_nothing_else_changes(body):
    document = orjson.loads(body)
    sent = orjson.loads(usage_requested(body, document))
    assert sent["stream_options"]["include_usage"] is True
    assert {k: v for k, v in sent.items() if k != "stream_options"} == {
        k: v for k, v in document.items() if k != "stream_options"
    }
    assert {**(document.get("stream_options") or {}), "include_usage": True} == sent[
        "stream_options"
    ]


def test_without_stream_options_the_clients_bytes_are_kept():
    body = b'{"model": "m",  "stream": true, "x": "\\u00e9"}'
    assert usage_requested(body, orjson.loads(body)).startswith(body[:-1])
