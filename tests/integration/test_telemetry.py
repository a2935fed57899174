"""Telemetry end to end: the gateway and a real vLLM engine export over OTLP/HTTP to a real
receiver; one request with a traceparent becomes one trace from the client through the engine."""

from __future__ import annotations

import json
import secrets

import httpx
import pytest

from mistral_serve.telemetry import semconv

from .otlp_receiver import OtlpReceiver, ReceivedSpan

pytestmark = pytest.mark.integration

SERVER, CLIENT = 2, 3  # Span.SpanKind values in the OTLP proto
MESSAGES = [{"role": "user", "content": "Tell me a story."}]


def traceparent() -> tuple[str, str, str]:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{parent_id}-01", trace_id, parent_id


def spans_of(otlp: OtlpReceiver, trace_id: str, count: int) -> list[ReceivedSpan]:
    def find() -> list[ReceivedSpan] | None:
        spans = [span for span in otlp.spans if span.trace_id == trace_id]
        return spans if len(spans) >= count else None

    return otlp.wait_for(find)


def gateway_span(spans: list[ReceivedSpan]) -> ReceivedSpan:
    """The gateway's SERVER span (vLLM's llm_request is a SERVER span too)."""
    [span] = [s for s in spans if s.kind == SERVER and s.service == "mistral-serve"]
    return span


def test_one_trace_from_client_through_gateway_to_vllm(stack, otlp):
    header, trace_id, client_span_id = traceparent()
    raw = stack.client().chat.completions.with_raw_response.create(
        model="demo",
        messages=MESSAGES,
        max_tokens=8,
        temperature=0.5,
        top_p=0.9,
        seed=7,
        extra_headers={"traceparent": header},
    )
    completion = raw.parse()

    spans = spans_of(otlp, trace_id, 3)
    server = gateway_span(spans)
    [upstream] = [s for s in spans if s.kind == CLIENT and s.service == "mistral-serve"]
    [engine] = [s for s in spans if s.name == "llm_request"]
    # client → gateway SERVER span → upstream CLIENT span → vLLM's own span
    assert server.parent_span_id == client_span_id
    assert upstream.parent_span_id == server.span_id
    assert engine.parent_span_id == upstream.span_id
    assert engine.service == "mistral-serve-engine"

    assert server.name == "chat demo"
    attributes = server.attributes
    assert attributes[semconv.OPERATION_NAME] == "chat"
    assert attributes[semconv.PROVIDER_NAME] == "mistral_ai"
    assert attributes[semconv.REQUEST_MODEL] == "demo"
    assert attributes[semconv.REQUEST_MAX_TOKENS] == 8
    assert attributes[semconv.REQUEST_TEMPERATURE] == 0.5
    assert attributes[semconv.REQUEST_TOP_P] == 0.9
    assert attributes[semconv.REQUEST_SEED] == 7
    assert attributes[semconv.REQUEST_STREAM] is False
    assert attributes[semconv.RESPONSE_ID] == completion.id
    assert attributes[semconv.RESPONSE_MODEL] == "demo"
    assert attributes[semconv.RESPONSE_FINISH_REASONS] == [completion.choices[0].finish_reason]
    assert attributes[semconv.USAGE_INPUT_TOKENS] == completion.usage.prompt_tokens
    assert attributes[semconv.USAGE_OUTPUT_TOKENS] == completion.usage.completion_tokens
    assert attributes[semconv.HTTP_REQUEST_METHOD] == "POST"
    assert attributes[semconv.HTTP_ROUTE] == "/v1/chat/completions"
    assert attributes[semconv.HTTP_RESPONSE_STATUS_CODE] == 200
    assert attributes[semconv.SERVER_ADDRESS] == "127.0.0.1"
    assert semconv.INPUT_MESSAGES not in attributes  # content capture is off by default
    assert semconv.OUTPUT_MESSAGES not in attributes
    assert upstream.attributes[semconv.ENGINE_NAME]
    # the routing decision: one engine serves "demo" in this stack
    assert attributes[semconv.ROUTING_POLICY] == "prefix-load"
    assert attributes[semconv.ROUTING_REASON] == "only-choice"
    assert attributes[semconv.ENGINE_NAME] == upstream.attributes[semconv.ENGINE_NAME]

    # the timing headers of a whole answer
    headers = raw.headers
    assert headers["x-prompt-tokens"] == str(completion.usage.prompt_tokens)
    assert headers["x-generated-tokens"] == str(completion.usage.completion_tokens)
    assert headers["x-queue-time"].isdigit() and headers["x-inference-time"].isdigit()


def test_a_stream_is_measured_without_changing_what_the_client_sees(stack, otlp):
    header, trace_id, _ = traceparent()
    with stack.client().chat.completions.with_streaming_response.create(
        model="demo",
        messages=MESSAGES,
        max_tokens=12,
        stream=True,
        extra_headers={"traceparent": header},
    ) as response:
        assert response.headers["x-time-to-first-token"].isdigit()
        chunks = list(response.parse())
    assert all(chunk.usage is None for chunk in chunks)  # the client did not ask for usage
    assert all(chunk.choices for chunk in chunks)

    server = gateway_span(spans_of(otlp, trace_id, 3))
    assert server.attributes[semconv.REQUEST_STREAM] is True
    assert server.attributes[semconv.USAGE_OUTPUT_TOKENS] == 12
    assert server.attributes[semconv.USAGE_INPUT_TOKENS] > 0
    assert server.attributes[semconv.RESPONSE_FINISH_REASONS] == ["length"]
    assert server.attributes[semconv.RESPONSE_TIME_TO_FIRST_CHUNK] > 0


def test_an_error_is_marked_on_the_span(stack, otlp):
    header, trace_id, _ = traceparent()
    with pytest.raises(Exception):  # noqa: B017 - openai.NotFoundError; the span is the point
        stack.client().chat.completions.create(
            model="no-such-model", messages=MESSAGES, extra_headers={"traceparent": header}
        )
    server = gateway_span(spans_of(otlp, trace_id, 1))
    assert server.name == "chat no-such-model"
    assert server.attributes[semconv.ERROR_TYPE] == "model_not_found"
    assert server.attributes[semconv.HTTP_RESPONSE_STATUS_CODE] == 404


def test_metrics_arrive_with_their_names_units_and_buckets(stack, otlp):
    stack.client().completions.create(model="demo", prompt="Once upon", max_tokens=4)

    def histogram(name: str):
        return otlp.wait_for(lambda: otlp.metrics.get(name))

    for name, unit in (
        (semconv.REQUEST_DURATION, "s"),
        (semconv.TOKEN_USAGE, "{token}"),
        (semconv.QUEUE_DURATION, "s"),
    ):
        metric = histogram(name)
        assert metric.unit == unit
        points = metric.histogram.data_points
        assert list(points[0].explicit_bounds) == list(semconv.HISTOGRAM_BUCKETS[name])
    token_types = {
        attribute.value.string_value
        for point in histogram(semconv.TOKEN_USAGE).histogram.data_points
        for attribute in point.attributes
        if attribute.key == semconv.TOKEN_TYPE
    }
    assert token_types == {"input", "output"}
    ready = otlp.wait_for(lambda: otlp.metrics.get(semconv.READY_ENGINES))
    assert ready.gauge.data_points[0].as_int == 2 or ready.gauge.data_points[0].as_double == 2
    assert otlp.wait_for(lambda: otlp.metrics.get(semconv.ACTIVE_REQUESTS))
    depth = otlp.wait_for(lambda: otlp.metrics.get(semconv.QUEUE_DEPTH))
    assert depth.unit == "{request}"


def test_logs_are_exported_with_the_trace_id(stack, otlp):
    header, trace_id, _ = traceparent()
    stack.client().chat.completions.create(
        model="demo", messages=MESSAGES, max_tokens=2, extra_headers={"traceparent": header}
    )
    record = otlp.wait_for(
        lambda: next((log for log in otlp.logs if log.trace_id == trace_id), None)
    )
    assert record.service == "mistral-serve"
    assert record.span_id != "0" * 16


def test_the_dashboards_engine_metrics_exist_on_a_real_engine(stack):
    from ..unit.deploy.test_dashboard import HISTOGRAM_SERIES, SIGNOZ, dashboard_metrics

    exposition = httpx.get(stack.engine_urls["demo"] + "/metrics", timeout=10).text
    dashboard = json.loads((SIGNOZ / "mistral-serve-dashboard.json").read_text())
    for metric in dashboard_metrics(dashboard):
        if not metric.startswith("vllm:"):
            continue
        name = metric
        for suffix in HISTOGRAM_SERIES:
            name = name.removesuffix(suffix)
        assert f"\n# TYPE {name} " in exposition, f"{metric} is not on vLLM's /metrics"


def test_fill_in_the_middle_is_a_text_completion_operation(stack, otlp):
    header, trace_id, _ = traceparent()
    answer = httpx.post(
        stack.gateway_url + "/v1/fim/completions",
        json={
            "model": "demo",
            "prompt": "def f(",
            "suffix": "return x",
            "max_tokens": 3,
            "random_seed": 11,
        },
        headers={"traceparent": header},
        timeout=60,
    ).json()
    server = gateway_span(spans_of(otlp, trace_id, 3))
    assert server.name == "text_completion demo"
    assert server.attributes[semconv.OPERATION_NAME] == "text_completion"
    assert server.attributes[semconv.HTTP_ROUTE] == "/v1/fim/completions"
    assert server.attributes[semconv.REQUEST_SEED] == 11  # random_seed, as the engine's seed
    assert server.attributes[semconv.USAGE_OUTPUT_TOKENS] == answer["usage"]["completion_tokens"]
