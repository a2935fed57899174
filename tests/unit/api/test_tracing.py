"""The SERVER span of each API request, through the real app with in-memory telemetry."""

from __future__ import annotations

import pytest
from opentelemetry.trace import SpanKind, StatusCode
from starlette.testclient import TestClient

from mistral_serve.api.app import create_app
from mistral_serve.config import Settings
from mistral_serve.engines.supervisor import free_port
from mistral_serve.telemetry import semconv

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def http(captured):
    # An engine address nothing listens on: requests end in a clear 503, traced.
    settings = Settings(_env_file=None, engine_urls=[f"http://127.0.0.1:{free_port()}"])
    with TestClient(create_app(settings, telemetry=captured.telemetry)) as client:
        yield client


def test_an_incoming_traceparent_is_continued(http, captured):
    response = http.post(
        "/v1/chat/completions",
        json=CHAT,
        headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "user-agent": "test-agent"},
    )
    assert response.status_code == 503
    [span] = captured.finished_spans()
    assert span.kind == SpanKind.SERVER
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert format(span.parent.span_id, "016x") == PARENT_ID
    assert span.name == "chat fake-model"
    attributes = span.attributes
    assert attributes[semconv.HTTP_REQUEST_METHOD] == "POST"
    assert attributes[semconv.HTTP_ROUTE] == "/v1/chat/completions"
    assert attributes[semconv.URL_PATH] == "/v1/chat/completions"
    assert attributes[semconv.HTTP_RESPONSE_STATUS_CODE] == 503
    assert attributes[semconv.SERVER_ADDRESS] == "testserver"
    assert attributes[semconv.USER_AGENT] == "test-agent"
    assert attributes[semconv.ERROR_TYPE] == "no_ready_engine"  # the gateway's, not "503"
    assert attributes[semconv.REQUEST_ID] == response.headers["x-request-id"]
    assert span.status.status_code == StatusCode.ERROR


def test_a_bad_request_is_traced_with_its_error_type(http, captured):
    assert http.post("/v1/completions", content=b"{nope").status_code == 400
    [span] = captured.finished_spans()
    assert span.name == "text_completion"  # no model known
    assert span.attributes[semconv.ERROR_TYPE] == "invalid_request"


def test_probes_are_not_traced_and_unknown_paths_have_no_route(http, captured):
    http.get("/health")
    http.get("/ready")
    assert captured.finished_spans() == []
    http.get("/nowhere")
    [span] = captured.finished_spans()
    assert span.name == "GET"
    assert semconv.HTTP_ROUTE not in span.attributes
    assert span.attributes[semconv.HTTP_RESPONSE_STATUS_CODE] == 404


def test_without_telemetry_the_app_installs_no_tracing_layer():
    settings = Settings(_env_file=None, engine_urls=["http://127.0.0.1:1"])
    app = create_app(settings)
    assert "TracingMiddleware" not in {m.cls.__name__ for m in app.user_middleware}
