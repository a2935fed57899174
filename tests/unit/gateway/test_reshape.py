"""Answers reshaped into Mistral's: FIM's chat completion, and a prefix in front of a
continued message. The results are checked with the mistralai SDK's own models."""

from __future__ import annotations

import orjson
from mistralai.client.models import CompletionChunk, FIMCompletionResponse

from mistral_serve.gateway.reshape import ChatFromCompletion, Prefixed, reshaped

# vLLM 0.32's text completion and its stream chunks, as the engine answers them.
COMPLETION = {
    "id": "cmpl-1",
    "object": "text_completion",
    "created": 1764115200,
    "model": "demo",
    "choices": [
        {
            "index": 0,
            "text": "x + 1",
            "logprobs": None,
            "finish_reason": "length",
            "stop_reason": None,
        }
    ],
    "usage": {"prompt_tokens": 8, "total_tokens": 11, "completion_tokens": 3},
}


def chunk(text: str, finish: str | None = None, index: int = 0) -> dict:
    choice = {"index": index, "text": text, "logprobs": None, "finish_reason": finish}
    return {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 1,
        "model": "demo",
        "choices": [choice],
    }


def test_a_fim_answer_is_a_chat_completion():
    payload = reshaped(ChatFromCompletion(), orjson.dumps(COMPLETION))
    answer = FIMCompletionResponse.model_validate(orjson.loads(payload))
    assert answer.object == "chat.completion" and answer.usage.completion_tokens == 3
    choice = answer.choices[0]
    assert choice.message.content == "x + 1" and choice.finish_reason == "length"
    assert reshaped(ChatFromCompletion(), b"not json") == b"not json"


def test_a_fim_stream_is_chat_chunks_with_explicit_finish_reasons():
    reshape = ChatFromCompletion()
    events = [
        reshape.event(chunk("x")),
        reshape.event(chunk(" +")),
        reshape.event(chunk("1", "stop")),
    ]
    parsed = [CompletionChunk.model_validate(event) for event in events]
    assert [p.choices[0].delta.content for p in parsed] == ["x", " +", "1"]
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "role" not in events[1]["choices"][0]["delta"]
    assert all("finish_reason" in event["choices"][0] for event in events)
    assert parsed[-1].choices[0].finish_reason == "stop"
    usage = {**chunk(""), "choices": [], "usage": COMPLETION["usage"]}
    assert CompletionChunk.model_validate(reshape.event(usage)).usage.total_tokens == 11


def test_a_continued_message_starts_with_its_prefix_in_each_choice():
    reshape = Prefixed("Once upon")
    first = {
        "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": ""}},
            {"index": 1, "delta": {"role": "assistant", "content": ""}},
        ]
    }
    assert [c["delta"]["content"] for c in reshape.event(first)["choices"]] == ["Once upon"] * 2
    later = {"choices": [{"index": 0, "delta": {"content": " a time"}}]}
    assert reshape.event(later)["choices"][0]["delta"]["content"] == " a time"
    whole = {"choices": [{"index": 0, "message": {"role": "assistant", "content": " a time"}}]}
    assert Prefixed("Once upon").whole(whole)["choices"][0]["message"]["content"] == (
        "Once upon a time"
    )
