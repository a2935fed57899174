"""GenAI spans and metrics of one request, recorded into the SDK's in-memory exporter/reader."""

from __future__ import annotations

import orjson
import pytest
from opentelemetry.trace import SpanKind, StatusCode

from mistral_serve.errors import (
    EngineError,
    EngineTimeoutError,
    EngineUnreachableError,
    InvalidRequestError,
    ModelNotFoundError,
    NoReadyEngineError,
    ServerOverloadedError,
)
from mistral_serve.protocol.embeddings import EmbeddingRequest
from mistral_serve.protocol.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    GenerationRequest,
)
from mistral_serve.telemetry import semconv
from mistral_serve.telemetry.genai import GenAIObserver

from ..conftest import Captured, capture_telemetry

CHAT = ChatCompletionRequest.model_validate(
    {
        "model": "mistral-7b",
        "messages": [{"role": "user", "content": "secret prompt"}],
        "max_tokens": 16,
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 3,
        "n": 2,
        "stream": True,
        "stop": "END",
    }
)


def run_request(captured: Captured, outcome=None, *, request=CHAT, started=True):
    """One request through a SERVER span, as the middleware and gateway drive it."""
    observer = GenAIObserver(captured.telemetry)
    tracer = captured.telemetry.tracer
    with tracer.start_as_current_span("POST", kind=SpanKind.SERVER):
        generation = observer.start("chat", "rid-1")
        generation.request(request)
        if started:
            generation.upstream_started("engine 0", "http://127.0.0.1:9000/v1/chat/completions")
            generation.upstream_answered(200)
        if outcome is None:
            generation.first_chunk()
            generation.response("chatcmpl-1", "mistral-7b")
            generation.finish_reason(1, "length")
            generation.finish_reason(0, "stop")
            generation.output_text(0, "secret answer")
            generation.usage(11, 7)
            generation.succeeded()
        else:
            outcome(generation)
    return captured.finished_spans()


def server_span(spans):
    [span] = [s for s in spans if s.kind == SpanKind.SERVER]
    return span


def test_a_successful_request_has_the_conventions_attributes(captured):
    spans = run_request(captured)
    span = server_span(spans)
    assert span.name == "chat mistral-7b"
    assert dict(span.attributes) | {} == {
        **dict(span.attributes),
        semconv.OPERATION_NAME: "chat",
        semconv.PROVIDER_NAME: "mistral_ai",
        semconv.REQUEST_MODEL: "mistral-7b",
        semconv.REQUEST_MAX_TOKENS: 16,
        semconv.REQUEST_TEMPERATURE: 0.2,
        semconv.REQUEST_TOP_P: 0.9,
        semconv.REQUEST_SEED: 3,
        semconv.REQUEST_STREAM: True,
        semconv.REQUEST_CHOICE_COUNT: 2,
        semconv.REQUEST_STOP_SEQUENCES: ("END",),
        semconv.RESPONSE_ID: "chatcmpl-1",
        semconv.RESPONSE_MODEL: "mistral-7b",
        semconv.RESPONSE_FINISH_REASONS: ("stop", "length"),  # by choice index
        semconv.USAGE_INPUT_TOKENS: 11,
        semconv.USAGE_OUTPUT_TOKENS: 7,
        semconv.REQUEST_ID: "rid-1",
    }
    assert span.attributes[semconv.RESPONSE_TIME_TO_FIRST_CHUNK] >= 0
    assert semconv.ERROR_TYPE not in span.attributes
    assert span.status.status_code == StatusCode.UNSET


def test_the_upstream_call_is_a_client_span_under_the_server_span(captured):
    spans = run_request(captured)
    [upstream] = [s for s in spans if s.kind == SpanKind.CLIENT]
    assert upstream.parent.span_id == server_span(spans).context.span_id
    assert upstream.name == "POST /v1/chat/completions"
    assert upstream.attributes[semconv.SERVER_ADDRESS] == "127.0.0.1"
    assert upstream.attributes[semconv.SERVER_PORT] == 9000
    assert upstream.attributes[semconv.HTTP_RESPONSE_STATUS_CODE] == 200
    assert upstream.attributes[semconv.ENGINE_NAME] == "engine 0"


def test_the_upstream_headers_carry_the_upstream_span(captured):
    observer = GenAIObserver(captured.telemetry)
    with captured.telemetry.tracer.start_as_current_span("POST", kind=SpanKind.SERVER):
        generation = observer.start("chat", "rid")
        headers = generation.upstream_started("engine 0", "http://127.0.0.1:9000/v1/completions")
        generation.succeeded()
    [upstream] = [s for s in captured.finished_spans() if s.kind == SpanKind.CLIENT]
    _, trace_id, span_id, _ = headers["traceparent"].split("-")
    assert int(trace_id, 16) == upstream.context.trace_id
    assert int(span_id, 16) == upstream.context.span_id


def test_content_is_not_captured_by_default(captured):
    span = server_span(run_request(captured))
    assert semconv.INPUT_MESSAGES not in span.attributes
    assert semconv.OUTPUT_MESSAGES not in span.attributes
    assert "secret" not in repr(dict(span.attributes))


def test_content_is_captured_when_opted_in():
    capture = capture_telemetry(otel_instrumentation_genai_capture_message_content=True)
    span = server_span(run_request(capture))
    assert '"content":"secret prompt"' in span.attributes[semconv.INPUT_MESSAGES]
    assert '"content":"secret answer"' in span.attributes[semconv.OUTPUT_MESSAGES]
    completion = CompletionRequest.model_validate({"model": "m", "prompt": "once upon"})
    capture.spans.clear()
    span = server_span(run_request(capture, request=completion))
    assert '"content":"once upon"' in span.attributes[semconv.INPUT_MESSAGES]


@pytest.mark.parametrize(
    ("prompt", "messages"),
    [
        ("once", [{"role": "user", "parts": [{"type": "text", "content": "once"}]}]),
        (["a", "b"], [{"role": "user", "parts": [{"type": "text", "content": t}]} for t in "ab"]),
        ([5, 6, 7], [{"role": "user", "parts": [{"type": "token_ids", "content": [5, 6, 7]}]}]),
        (
            [[5], [6, 7]],
            [
                {"role": "user", "parts": [{"type": "token_ids", "content": c}]}
                for c in ([5], [6, 7])
            ],
        ),
    ],
    ids=["text", "texts", "token-ids", "token-id-lists"],
)
def test_a_completions_prompts_are_one_message_each(prompt, messages):
    """A prompt of token ids is one message holding them, not one message per token."""
    capture = capture_telemetry(otel_instrumentation_genai_capture_message_content=True)
    request = CompletionRequest.model_validate({"model": "m", "prompt": prompt})
    span = server_span(run_request(capture, request=request))
    assert orjson.loads(span.attributes[semconv.INPUT_MESSAGES]) == messages


def test_embedding_inputs_and_a_completions_suffix_are_recorded_as_sent():
    capture = capture_telemetry(otel_instrumentation_genai_capture_message_content=True)
    request = EmbeddingRequest.model_validate({"model": "m", "input": ["a", "b"]})
    span = server_span(run_request(capture, request=request))
    assert orjson.loads(span.attributes[semconv.INPUT_MESSAGES]) == [
        {"role": "user", "parts": [{"type": "text", "content": text}]} for text in "ab"
    ]
    capture.spans.clear()
    request = CompletionRequest.model_validate({"model": "m", "prompt": ["x"], "suffix": "y"})
    span = server_span(run_request(capture, request=request))
    assert orjson.loads(span.attributes[semconv.INPUT_MESSAGES]) == [
        {
            "role": "user",
            "parts": [{"type": "text", "content": "x"}, {"type": "suffix", "content": "y"}],
        }
    ]


def test_a_request_of_a_kind_it_does_not_know_is_an_error_not_an_empty_prompt():
    capture = capture_telemetry(otel_instrumentation_genai_capture_message_content=True)
    with capture.telemetry.tracer.start_as_current_span("POST", kind=SpanKind.SERVER):
        generation = GenAIObserver(capture.telemetry).start("chat", "rid")
        with pytest.raises(TypeError, match="GenerationRequest"):
            generation.request(GenerationRequest(model="m"))


def test_metrics_have_the_conventions_names_units_and_buckets(captured):
    run_request(captured)
    metrics = captured.metrics()
    for name, unit in (
        (semconv.REQUEST_DURATION, "s"),
        (semconv.TIME_TO_FIRST_TOKEN, "s"),
        (semconv.TIME_PER_OUTPUT_TOKEN, "s"),
        (semconv.TOKEN_USAGE, "{token}"),
    ):
        metric = metrics[name]
        assert metric.unit == unit
        for point in metric.data.data_points:
            assert tuple(point.explicit_bounds) == tuple(semconv.HISTOGRAM_BUCKETS[name])
    usage = {
        point.attributes[semconv.TOKEN_TYPE]: point.sum
        for point in metrics[semconv.TOKEN_USAGE].data.data_points
    }
    assert usage == {"input": 11, "output": 7}
    [duration] = metrics[semconv.REQUEST_DURATION].data.data_points
    assert dict(duration.attributes) == {
        semconv.OPERATION_NAME: "chat",
        semconv.PROVIDER_NAME: "mistral_ai",
        semconv.REQUEST_MODEL: "mistral-7b",
        semconv.RESPONSE_MODEL: "mistral-7b",
    }
    [active] = metrics[semconv.ACTIVE_REQUESTS].data.data_points
    assert active.value == 0  # up at the start, down at the end


REJECTED = (semconv.REJECTIONS, semconv.REJECTION_REASON)
UPSTREAM = (semconv.UPSTREAM_ERRORS, semconv.ERROR_TYPE)


@pytest.mark.parametrize(
    ("error", "error_type", "counted_as"),
    [
        (InvalidRequestError("bad"), "invalid_request", REJECTED),
        (ModelNotFoundError("m"), "model_not_found", REJECTED),
        (NoReadyEngineError("none", retry_after_s=5), "no_ready_engine", REJECTED),
        (ServerOverloadedError("busy", reason="full", retry_after_s=2), "queue_full", REJECTED),
        (EngineUnreachableError("gone"), "engine_unreachable", UPSTREAM),
        (EngineTimeoutError("slow"), "engine_timeout", UPSTREAM),
        (EngineError("500"), "engine_error", UPSTREAM),
    ],
)
def test_each_failure_class_sets_error_type(captured, error, error_type, counted_as):
    counter, label_key = counted_as
    spans = run_request(captured, lambda generation: generation.failed(error))
    span = server_span(spans)
    assert span.attributes[semconv.ERROR_TYPE] == error_type
    assert span.status.status_code == StatusCode.ERROR
    metrics = captured.metrics()
    [point] = metrics[counter].data.data_points
    assert point.attributes[label_key] == error_type and point.value == 1
    [duration] = metrics[semconv.REQUEST_DURATION].data.data_points
    assert duration.attributes[semconv.ERROR_TYPE] == error_type
    assert semconv.TIME_TO_FIRST_TOKEN not in metrics  # only successful responses


def test_an_engine_4xx_is_a_rejection_with_its_status_as_error_type(captured):
    span = server_span(run_request(captured, lambda generation: generation.engine_refused(400)))
    assert span.attributes[semconv.ERROR_TYPE] == "400"
    [point] = captured.metrics()[semconv.REJECTIONS].data.data_points
    assert point.attributes[semconv.REJECTION_REASON] == "engine_rejected"


def test_a_client_that_leaves_is_marked_but_not_an_error(captured):
    span = server_span(run_request(captured, lambda generation: generation.client_left()))
    assert span.attributes[semconv.ERROR_TYPE] == "client_closed"
    assert span.status.status_code == StatusCode.UNSET


def test_a_request_ends_once(captured):
    def twice(generation):
        generation.failed(EngineError("first"))
        generation.failed(EngineError("second"))
        generation.client_left()

    run_request(captured, twice)
    [point] = captured.metrics()[semconv.UPSTREAM_ERRORS].data.data_points
    assert point.value == 1


def test_time_per_output_token_is_the_decode_time_after_the_first_token(captured):
    observer = GenAIObserver(captured.telemetry)
    generation = observer.start("chat", "rid")
    generation.timings.started = 10.0
    generation.timings.first_chunk = 10.5
    generation.usage(3, 11)
    generation.succeeded()
    timings = generation.timings
    assert timings.time_to_first_chunk_s == 0.5
    assert timings.time_per_output_token_s == pytest.approx((timings.finished - 10.5) / 10)


def test_with_telemetry_off_nothing_is_recorded_but_timings_are_kept():
    from mistral_serve.telemetry.setup import disabled_telemetry

    observer = GenAIObserver(disabled_telemetry())
    generation = observer.start("chat", "rid")
    generation.request(CHAT)
    assert generation.upstream_started("engine 0", "http://127.0.0.1:1/v1/completions") == {}
    generation.usage(1, 2)
    generation.succeeded()
    assert generation.timings.output_tokens == 2 and generation.timings.finished is not None


def test_the_routing_decision_is_on_the_server_span(captured):
    def routed(generation):
        generation.routed("prefix-load", "engine 1", "prefix", 0.8123)
        generation.succeeded()

    attributes = server_span(run_request(captured, routed)).attributes
    assert attributes[semconv.ROUTING_POLICY] == "prefix-load"
    assert attributes[semconv.ROUTING_REASON] == "prefix"
    assert attributes[semconv.ROUTING_PREFIX_SHARE] == 0.812
    assert attributes[semconv.ENGINE_NAME] == "engine 1"


def test_a_wait_in_the_queue_is_a_child_span_and_every_admission_a_histogram_point(captured):
    def queued(generation):
        generation.queued(0.25, "admitted")
        generation.succeeded()

    spans = run_request(captured, queued, started=False)
    [queue] = [span for span in spans if span.name == "queue"]
    assert queue.parent.span_id == server_span(spans).context.span_id
    assert (queue.end_time - queue.start_time) / 1e9 == pytest.approx(0.25, abs=0.01)
    assert queue.attributes[semconv.ADMISSION_OUTCOME] == "admitted"
    [point] = captured.metrics()[semconv.QUEUE_DURATION].data.data_points
    assert point.count == 1 and point.sum == pytest.approx(0.25)
    assert tuple(point.explicit_bounds) == semconv.QUEUE_DURATION_BUCKETS


def test_no_wait_is_no_span_but_still_a_point(captured):
    def at_once(generation):
        generation.queued(0.0, "admitted")
        generation.succeeded()

    spans = run_request(captured, at_once, started=False)
    assert not [span for span in spans if span.name == "queue"]
    [point] = captured.metrics()[semconv.QUEUE_DURATION].data.data_points
    assert point.count == 1


def test_the_callers_key_id_is_on_the_span(captured):
    def keyed(generation):
        generation.caller("jfzgivvsehhf")
        generation.succeeded()

    assert server_span(run_request(captured, keyed)).attributes[semconv.KEY_ID] == "jfzgivvsehhf"


def test_token_usage_is_counted_by_key_id(captured):
    def keyed(generation):
        generation.caller("jfzgivvsehhf")
        generation.usage(11, 7)
        generation.succeeded()

    run_request(captured, keyed)
    points = captured.metrics()[semconv.TOKEN_USAGE].data.data_points
    assert {p.attributes[semconv.KEY_ID] for p in points} == {"jfzgivvsehhf"}
    assert {p.attributes[semconv.TOKEN_TYPE]: p.sum for p in points} == {"input": 11, "output": 7}


def test_tenancy_health_is_observed(captured) -> None:
    observer = GenAIObserver(captured.telemetry)
    observer.watch_tenancy(lambda: 2, lambda: 3, lambda: {"written": 40, "spooled": 5}, lambda: 7)
    metrics = captured.metrics()
    assert metrics["mistral_serve.keys.store_errors"].data.data_points[0].value == 2
    assert metrics["mistral_serve.limits.store_errors"].data.data_points[0].value == 3
    rows = {
        point.attributes["mistral_serve.ledger.outcome"]: point.value
        for point in metrics["mistral_serve.ledger.rows"].data.data_points
    }
    assert rows == {"written": 40, "spooled": 5}
    assert metrics["mistral_serve.ledger.pending"].data.data_points[0].value == 7


def test_the_cache_share_is_beside_the_routings_guess(captured):
    with captured.telemetry.tracer.start_as_current_span("POST", kind=SpanKind.SERVER):
        generation = GenAIObserver(captured.telemetry).start("chat", "rid")
        generation.routed("prefix-load", "engine a", "prefix", prefix_share=0.9)
        generation.usage(100, 5, cached_tokens=60)
        generation.succeeded()
    [span] = [s for s in captured.finished_spans() if s.kind == SpanKind.SERVER]
    assert span.attributes[semconv.ROUTING_PREFIX_SHARE] == 0.9
    assert span.attributes[semconv.ROUTING_CACHED_SHARE] == 0.6
    assert span.attributes[semconv.USAGE_CACHE_READ_TOKENS] == 60
    [error] = captured.metrics()[semconv.ROUTING_SHARE_ERROR].data.data_points
    assert error.sum == pytest.approx(0.3) and error.count == 1
