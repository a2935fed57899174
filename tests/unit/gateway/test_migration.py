"""Streams that go on from another engine: the token bookkeeping, the continuation request, its
events in the original stream's shape, what cannot move. The engines are fakes (FakeEngine):
a real engine's death on cue, with its events known, is the integration test's job
(tests/integration/test_migration.py)."""

from __future__ import annotations

import orjson
import pytest

from mistral_serve.engines.client import EngineClient
from mistral_serve.gateway.migration import Continuation, TokenTrail, why_not, with_token_ids
from mistral_serve.gateway.pipeline import Endpoint, Gateway
from mistral_serve.protocol.openai import ChatCompletionRequest, CompletionRequest
from mistral_serve.routing import LeastOutstanding
from mistral_serve.telemetry import semconv
from mistral_serve.telemetry.genai import GenAIObserver

from ..conftest import probed
from .test_streaming import collect, sse_handler


def event(document: dict) -> bytes:
    return b"data: " + orjson.dumps(document) + b"\n\n"


FIRST = event(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 7,
        "model": "fake-model",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}],
        "prompt_token_ids": [1, 2, 3],
    }
)


def delta(text: str, ids: list[int], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}
    return event({"id": "chatcmpl-1", "choices": [{**choice, "token_ids": ids}]})


CHAT = {
    "model": "fake-model",
    "messages": [{"role": "user", "content": "hi"}],
    "stream": True,
    "max_tokens": 10,
    "temperature": 0,
    "seed": 3,
    "min_tokens": 4,
    "ignore_eos": True,
}


def test_the_trail_reads_the_ids_and_takes_them_out_of_the_events():
    trail = TokenTrail(shown=False)
    seen = trail.read(FIRST + delta("Hel", [10, 11]))
    seen += trail.read(delta("lo", [12]))
    assert trail.prompt == [1, 2, 3] and trail.carried == [10, 11, 12]
    assert b"token_ids" not in seen
    assert trail.first == {
        "id": "chatcmpl-1",
        "created": 7,
        "model": "fake-model",
        "object": "chat.completion.chunk",
    }


def test_ids_whose_text_is_held_back_are_not_carried():
    trail = TokenTrail(shown=False)
    trail.read(FIRST + delta("Hel", [10]) + delta("", [11]))
    assert trail.carried == [10]  # 11's text never reached the client: made again


def test_a_client_that_asked_for_ids_keeps_them():
    trail = TokenTrail(shown=True)
    events = FIRST + delta("Hel", [10])
    assert trail.read(events) == events
    assert trail.carried == [10]


def test_the_trail_reads_a_completions_prompt_from_its_choice():
    trail = TokenTrail(shown=False)
    first = event(
        {
            "id": "cmpl-1",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "text": "a", "prompt_token_ids": [5, 6], "token_ids": [7]}],
        }
    )
    seen = trail.read(first)
    assert trail.prompt == [5, 6] and trail.carried == [7]
    assert b"token_ids" not in seen


def continuation(document: dict = CHAT, max_model_len: int | None = None) -> Continuation:
    trail = TokenTrail(shown=False)
    trail.read(FIRST + delta("Hel", [10, 11]) + delta("lo", [12]))
    request = ChatCompletionRequest.model_validate(document)
    return Continuation(request, document, trail, max_model_len)


def test_the_continuation_asks_for_the_rest_from_the_prompt_and_the_tokens_sent():
    body = orjson.loads(continuation().body())
    assert body == {
        "model": "fake-model",
        "prompt": [1, 2, 3, 10, 11, 12],
        "max_tokens": 7,
        "min_tokens": 1,
        "temperature": 0,
        "seed": 3,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
        "return_token_ids": True,
    }


def test_without_max_tokens_the_rest_of_the_context_is_allowed():
    document = {key: value for key, value in CHAT.items() if key != "max_tokens"}
    assert continuation(document, max_model_len=100).remaining == 100 - 3 - 3


def test_its_events_are_the_original_streams_and_usage_counts_each_token_once():
    moved = continuation()
    completion = {"id": "cmpl-9", "object": "text_completion", "created": 99, "model": "x"}
    engine = (
        event({**completion, "choices": [{"index": 0, "text": " wor", "token_ids": [13]}]})
        + event(
            {
                **completion,
                "choices": [
                    {"index": 0, "text": "ld", "finish_reason": "length", "token_ids": [14]}
                ],
            }
        )
        + event(
            {
                **completion,
                "choices": [],
                "usage": {
                    "prompt_tokens": 6,
                    "completion_tokens": 2,
                    "total_tokens": 8,
                    "prompt_tokens_details": {"cached_tokens": 5},
                },
            }
        )
        + b"data: [DONE]\n\n"
    )
    split = 17  # arrives in two reads, the first mid-event
    shaped = moved.feed(engine[:split]) + moved.feed(engine[split:]) + moved.flush()
    events = [orjson.loads(e[6:]) for e in shaped.split(b"\n\n")[:-2]]
    assert shaped.endswith(b"data: [DONE]\n\n")
    head = {"id": "chatcmpl-1", "created": 7, "model": "fake-model"}
    assert all({k: e[k] for k in head} == head for e in events)
    assert [e["choices"][0]["delta"] for e in events[:2]] == [
        {"content": " wor"},
        {"content": "ld"},
    ]
    assert events[1]["choices"][0]["finish_reason"] == "length"
    assert events[2]["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 5,
        "total_tokens": 8,
        "prompt_tokens_details": {"cached_tokens": 3},
    }


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({}, None),
        ({"n": 2}, "several choices"),
        ({"logprobs": True}, "log probabilities or echo"),
        ({"stop": ["\n"]}, "stop strings"),
        ({"frequency_penalty": 0.5}, "presence or frequency penalty"),
        ({"response_format": {"type": "json_object"}}, "structured output"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tool calls"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "none"}, None),
    ],
)
def test_what_cannot_be_continued_exactly(change, reason):
    document = {**CHAT, **change}
    assert why_not(ChatCompletionRequest.model_validate(document), document) == reason


def test_several_prompts_cannot_move_but_token_ids_can():
    for prompt, reason in ((["a", "b"], "several choices"), ([1, 2], None), ("a", None)):
        document = {"model": "m", "prompt": prompt, "stream": True}
        assert why_not(CompletionRequest.model_validate(document), document) == reason


def test_token_ids_are_asked_for_in_the_clients_own_bytes():
    assert with_token_ids(b'{"a":1} ') == b'{"a":1,"return_token_ids":true}'
    assert with_token_ids(b"{}") == b'{"return_token_ids":true}'


@pytest.fixture
async def two_engines(fake_engine, second_fake_engine, captured):
    client = EngineClient()
    await client.start()
    registry, _ = await probed(client, fake_engine.url, second_fake_engine.url)
    observer = GenAIObserver(captured.telemetry)
    gateway = Gateway(registry, client, LeastOutstanding(), observer=observer)
    yield gateway, registry, (fake_engine, second_fake_engine)
    await client.close()


def completion_handler():
    chunk = {"id": "cmpl-2", "object": "text_completion", "created": 1, "model": "fake-model"}
    return sse_handler(
        event({**chunk, "choices": [{"index": 0, "text": " wor", "prompt_token_ids": [1]}]}),
        event({**chunk, "choices": [{"index": 0, "text": "ld", "finish_reason": "length"}]}),
        event({**chunk, "choices": [], "usage": {"prompt_tokens": 6, "completion_tokens": 2}}),
    )


async def test_a_stream_whose_engine_dies_goes_on_from_the_other(two_engines, captured):
    gw, registry, engines = two_engines
    for engine in engines:  # whichever gets the stream dies after two deltas
        engine.handlers["/v1/chat/completions"] = sse_handler(
            FIRST, delta("Hel", [10, 11]), delta("lo", [12]), drop_after=True
        )
        engine.handlers["/v1/completions"] = completion_handler()
    tracer = captured.telemetry.tracer
    with tracer.start_as_current_span("POST /v1/chat/completions"):  # the middleware's
        result = await gw.generate(Endpoint.CHAT, orjson.dumps(CHAT), "rid-moved")
        received = b"".join(await collect(result.stream))
    assert b"error" not in received and b"token_ids" not in received
    events = [orjson.loads(e[6:]) for e in received.split(b"\n\n")[:-2]]
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    assert text == "Hello world"
    assert {e["id"] for e in events} == {"chatcmpl-1"}
    # The usage the gateway asked for is taken out; it counted each token once.
    assert received.endswith(b"data: [DONE]\n\n") and not any("usage" in e for e in events)
    [continued] = [
        orjson.loads(body)
        for engine in engines
        for path, body, _ in engine.requests
        if path == "/v1/completions"
    ]
    assert continued["prompt"] == [1, 2, 3, 10, 11, 12] and continued["max_tokens"] == 7
    assert all(engine.outstanding == 0 for engine in registry.engines)
    [span] = [s for s in captured.finished_spans() if s.name.startswith("chat")]
    [moved] = [e for e in span.events if e.name == semconv.MIGRATION_EVENT]
    assert moved.attributes[semconv.MIGRATION_KIND] == "continued"
    assert moved.attributes[semconv.MIGRATION_TOKENS_CARRIED] == 3
    assert moved.attributes[semconv.ENGINE_NAME] != moved.attributes[semconv.MIGRATION_ENGINE_LEFT]
    assert span.attributes[semconv.USAGE_OUTPUT_TOKENS] == 5
    [counted] = captured.metrics()[semconv.MIGRATIONS].data.data_points
    assert counted.value == 1 and counted.attributes[semconv.MIGRATION_KIND] == "continued"


async def test_a_stream_that_cannot_move_ends_with_the_error_event(two_engines):
    gw, _, engines = two_engines
    for engine in engines:
        engine.handlers["/v1/chat/completions"] = sse_handler(
            FIRST, delta("Hel", [10, 11]), drop_after=True
        )
        engine.handlers["/v1/completions"] = completion_handler()
    body = orjson.dumps({**CHAT, "stop": ["x"]})
    received = b"".join(await collect((await gw.generate(Endpoint.CHAT, body, "rid")).stream))
    assert b'"code":"engine_unreachable"' in received
    assert not any(path == "/v1/completions" for e in engines for path, _, _ in e.requests)


async def test_a_stream_in_mistrals_dialect_moves_and_keeps_its_shape(two_engines):
    gw, _, engines = two_engines
    for engine in engines:
        engine.handlers["/v1/chat/completions"] = sse_handler(
            FIRST, delta("Hel", [10, 11]), delta("lo", [12]), drop_after=True
        )
        engine.handlers["/v1/completions"] = completion_handler()
    body = {k: v for k, v in CHAT.items() if k != "seed"} | {"random_seed": 3}  # Mistral's
    received = b"".join(
        await collect((await gw.generate(Endpoint.CHAT, orjson.dumps(body), "r")).stream)
    )
    assert b"error" not in received and b"token_ids" not in received
    events = [orjson.loads(e[6:]) for e in received.split(b"\n\n")[:-2]]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert text == "Hello world"
    # Mistral's stream: the usage rides on the finishing chunk, every token counted once.
    [last] = [e for e in events if e.get("usage")]
    assert last["choices"][0]["finish_reason"] == "length"
    assert last["usage"]["completion_tokens"] == 5
    [continued] = [
        orjson.loads(sent)
        for engine in engines
        for path, sent, _ in engine.requests
        if path == "/v1/completions"
    ]
    assert continued["seed"] == 3  # the engine's name for Mistral's random_seed
