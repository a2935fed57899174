"""Answers reshaped into Mistral's: FIM's chat completion, a prefix in front of a continued
message, and a stream's usage on its last chunk. The results are checked with the mistralai
SDK's own models, and streams with the loop Mistral documents for them."""

from __future__ import annotations

import orjson
from mistralai.client.models import CompletionChunk, FIMCompletionResponse

from mistral_serve.gateway.reshape import (
    ChatFromCompletion,
    MistralAnswer,
    Prefixed,
    reshaped,
)

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
    payload = reshaped(MistralAnswer(ChatFromCompletion()), orjson.dumps(COMPLETION))
    answer = FIMCompletionResponse.model_validate(orjson.loads(payload))
    assert answer.object == "chat.completion" and answer.usage.completion_tokens == 3
    choice = answer.choices[0]
    assert choice.message.content == "x + 1" and choice.finish_reason == "length"
    assert reshaped(MistralAnswer(ChatFromCompletion()), b"not json") == b"not json"
    assert reshaped(MistralAnswer(), b'{"a": 1}') == b'{"a": 1}'  # nothing to change: as sent


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


def usage_chunk() -> dict:
    """vLLM's last chunk when asked for usage: no choices, only the usage."""
    return {**chunk(""), "choices": [], "usage": COMPLETION["usage"]}


def streamed(answer: MistralAnswer, chunks: list[dict]) -> list[dict]:
    """What the client is sent for the engine's ``chunks``, then the stream's end."""
    sent = [each for engine_chunk in chunks for each in answer.events(engine_chunk)]
    return sent + answer.flush()


def test_a_mistral_stream_carries_its_usage_on_the_last_chunk_with_choices():
    sent = streamed(
        MistralAnswer(ChatFromCompletion()),
        [chunk("x"), chunk(" +"), chunk("1", "length"), usage_chunk()],
    )
    parsed = [CompletionChunk.model_validate(event) for event in sent]
    # Mistral's documented loop reads choices[0] on every chunk.
    assert "".join(chunk.choices[0].delta.content for chunk in parsed) == "x +1"
    assert parsed[-1].choices[0].finish_reason == "length"
    assert parsed[-1].usage.completion_tokens == 3
    assert all(p.usage is None for p in parsed[:-1])


def test_every_choice_finishes_and_the_usage_rides_on_the_last_to():
    engine_chunks = [chunk("a"), chunk("b", "stop"), chunk("c", "length", 1), usage_chunk()]
    sent = streamed(MistralAnswer(), engine_chunks)
    assert [(c["choices"][0]["index"], "usage" in c) for c in sent] == [
        (0, False),
        (0, False),
        (1, True),
    ]


def test_a_stream_without_usage_loses_nothing():
    """The held finishing chunk leaves at the stream's end (or before [DONE])."""
    sent = streamed(MistralAnswer(Prefixed("Once")), [chunk("x"), chunk("y", "stop")])
    assert [c["choices"][0].get("finish_reason") for c in sent] == [None, "stop"]
