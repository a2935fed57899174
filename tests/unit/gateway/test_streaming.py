"""The SSE passthrough: events unchanged as they arrive; a break after the first byte becomes an
SSE error event and [DONE]; usage the gateway asked for is removed. The upstream here is a fake
(FakeEngine): a real engine cannot be made to drop a stream on cue."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiohttp import web

from mistral_serve.engines.client import EngineClient
from mistral_serve.engines.health import HealthPolicy
from mistral_serve.errors import EngineUnreachableError
from mistral_serve.gateway.migration import with_token_ids
from mistral_serve.gateway.pipeline import Endpoint, Gateway
from mistral_serve.gateway.streaming import stream_error_event
from mistral_serve.routing import LeastOutstanding
from mistral_serve.telemetry import semconv
from mistral_serve.telemetry.genai import GenAIObserver

from ..conftest import probed

CHUNK_1 = b'data: {"id":"c1","model":"fake-model","choices":[{"delta":{"content":"Hel"}}]}\n\n'
CHUNK_2 = b'data: {"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}\n\n'
USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}\n\n'
CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "stream": True}
BODY = orjson.dumps({**CHAT, "stream_options": {"include_usage": True}})
BODY_WITHOUT_USAGE = orjson.dumps(CHAT)


@pytest.fixture
async def gateway(fake_engine):
    client = EngineClient()
    await client.start()
    registry, _ = await probed(client, fake_engine.url)
    yield Gateway(registry, client, LeastOutstanding()), registry
    await client.close()


async def collect(stream) -> list[bytes]:
    return [chunk async for chunk in stream]


def sse_handler(*chunks: bytes, drop_after: bool = False, pause_s: float = 0.0):
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for chunk in chunks:
            await response.write(chunk)
            await asyncio.sleep(pause_s)
        if drop_after:  # the engine dies: the connection goes without the final chunk
            request.transport.close()
            return response
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    return handler


async def test_stream_is_forwarded_unchanged(fake_engine, gateway):
    gw, registry = gateway
    fake_engine.handlers["/v1/chat/completions"] = sse_handler(CHUNK_1, CHUNK_2)
    result = await gw.generate(Endpoint.CHAT, BODY, "rid-1")
    assert result.status == 200
    assert result.media_type == "text/event-stream"
    assert b"".join(await collect(result.stream)) == CHUNK_1 + CHUNK_2 + b"data: [DONE]\n\n"
    assert registry.engines[0].outstanding == 0
    # the client's own bytes (asking for token ids, which a move would carry) and its request
    # id reached the engine
    _, body, headers = fake_engine.requests[0]
    assert body == with_token_ids(BODY)
    assert headers["x-request-id"] == "rid-1"


async def test_usage_the_client_did_not_ask_for_is_asked_for_then_removed(fake_engine, gateway):
    gw, _ = gateway
    fake_engine.handlers["/v1/chat/completions"] = sse_handler(CHUNK_1, CHUNK_2, USAGE)
    result = await gw.generate(Endpoint.CHAT, BODY_WITHOUT_USAGE, "rid")
    assert b"".join(await collect(result.stream)) == CHUNK_1 + CHUNK_2 + b"data: [DONE]\n\n"
    sent = orjson.loads(fake_engine.requests[0][1])
    assert sent == {**CHAT, "stream_options": {"include_usage": True}, "return_token_ids": True}


async def test_usage_the_client_asked_for_stays(fake_engine, gateway):
    gw, _ = gateway
    fake_engine.handlers["/v1/chat/completions"] = sse_handler(CHUNK_1 + CHUNK_2 + USAGE)
    result = await gw.generate(Endpoint.CHAT, BODY, "rid")
    assert b"".join(await collect(result.stream)) == CHUNK_1 + CHUNK_2 + USAGE + b"data: [DONE]\n\n"


async def test_events_are_forwarded_as_they_arrive_and_whole(fake_engine, gateway):
    gw, _ = gateway
    split = len(CHUNK_2) // 2
    fake_engine.handlers["/v1/chat/completions"] = sse_handler(
        CHUNK_1, CHUNK_2[:split], CHUNK_2[split:], pause_s=0.5
    )
    # the answer (headers and first event) is ready before the engine's first pause ends
    result = await asyncio.wait_for(gw.generate(Endpoint.CHAT, BODY, "rid"), timeout=0.4)
    assert result.headers["x-time-to-first-token"].isdigit()
    chunks = await collect(result.stream)
    assert chunks[:2] == [CHUNK_1, CHUNK_2]  # the half event was held back until whole


async def test_events_that_arrive_together_leave_together_and_none_waits(fake_engine, gateway):
    """Three events the engine sends at once are one write to the client (one item of the
    stream, one ASGI send); an event alone leaves at once, not with a later one."""
    gw, _ = gateway
    together = CHUNK_2 + USAGE + b"data: [DONE]\n\n"

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(CHUNK_1)
        await asyncio.sleep(0.5)
        await response.write(together)  # one write: the events arrive together
        await response.write_eof()
        return response

    fake_engine.handlers["/v1/chat/completions"] = handler
    result = await gw.generate(Endpoint.CHAT, BODY, "rid-together")
    started = asyncio.get_running_loop().time()
    items = []
    async for item in result.stream:
        items.append((item, asyncio.get_running_loop().time() - started))
    assert [item for item, _ in items] == [CHUNK_1, together]
    assert items[0][1] < 0.2  # the first did not wait for the next
    assert items[1][1] >= 0.45


async def test_drop_mid_stream_becomes_an_sse_error_then_done(fake_engine, gateway):
    gw, registry = gateway
    fake_engine.handlers["/v1/chat/completions"] = sse_handler(CHUNK_1, drop_after=True)
    result = await gw.generate(Endpoint.CHAT, BODY, "rid-2")
    chunks = await collect(result.stream)
    assert chunks[0] == CHUNK_1
    tail = b"".join(chunks[1:])
    assert tail.endswith(b"data: [DONE]\n\n")
    event = orjson.loads(tail.split(b"\n\n")[0].removeprefix(b"data: "))
    assert event["error"]["type"] == "server_error"
    assert event["error"]["code"] == "engine_unreachable"
    assert registry.engines[0].outstanding == 0


async def test_drop_inside_an_event_never_splices_the_error_into_it(fake_engine, gateway):
    gw, _ = gateway
    half_event = b'data: {"choices":[{"delta":{"cont'
    fake_engine.handlers["/v1/chat/completions"] = sse_handler(CHUNK_1, half_event, drop_after=True)
    result = await gw.generate(Endpoint.CHAT, BODY, "rid-3")
    received = b"".join(await collect(result.stream))
    assert received.startswith(CHUNK_1 + b'data: {"error":')
    assert received.endswith(b"data: [DONE]\n\n")


async def test_drop_before_the_first_event_is_a_plain_502(fake_engine, gateway):
    gw, registry = gateway
    fake_engine.handlers["/v1/chat/completions"] = sse_handler(b"data: {", drop_after=True)
    with pytest.raises(EngineUnreachableError):
        await gw.generate(Endpoint.CHAT, BODY, "rid-5")
    assert registry.engines[0].outstanding == 0


async def test_closing_early_releases_the_engine(fake_engine, gateway):
    gw, registry = gateway
    fake_engine.handlers["/v1/chat/completions"] = sse_handler(CHUNK_1, CHUNK_2, pause_s=1.0)
    result = await gw.generate(Endpoint.CHAT, BODY, "rid-4")  # returns with the first event
    assert registry.engines[0].outstanding == 1
    await result.stream.aclose()  # the client went away before reading anything
    assert registry.engines[0].outstanding == 0
    await result.stream.aclose()  # idempotent
    assert registry.engines[0].outstanding == 0


async def test_a_stream_its_engine_leaves_silent_is_taken_back_after_the_read_timeout(
    fake_engine, client
):
    """ENGINE_READ_TIMEOUT_S without a timer per chunk: the monitor's clock takes back a request
    whose engine has sent it nothing for that long, while the engine itself stays in rotation
    (it may be progressing on everything else)."""
    policy = HealthPolicy(read_timeout_s=0.4, stall_timeout_s=60)
    registry, monitor = await probed(client, fake_engine.url, policy=policy)
    fake_engine.handlers["/v1/chat/completions"] = sse_handler(CHUNK_1, CHUNK_2, pause_s=30)
    await monitor.start()
    try:
        result = await Gateway(registry, client, LeastOutstanding()).generate(
            Endpoint.CHAT, BODY, "rid-silent"
        )
        started = asyncio.get_running_loop().time()
        chunks = await collect(result.stream)
        waited = asyncio.get_running_loop().time() - started
    finally:
        await monitor.stop()
    assert chunks[0] == CHUNK_1
    event = orjson.loads(chunks[-1].split(b"\n\n")[0].removeprefix(b"data: "))
    assert event["error"]["code"] == "engine_timeout"
    assert 0.3 < waited < 2.0
    assert registry.engines[0].outstanding == 0
    for _ in range(100):  # the engine's request was cut off, as vLLM aborts it
        if fake_engine.aborted:
            break
        await asyncio.sleep(0.01)
    assert fake_engine.aborted == 1


def test_error_event_shape():
    event = stream_error_event(EngineUnreachableError("engine at x broke off its answer"))
    first, done, rest = event.split(b"\n\n")
    assert orjson.loads(first.removeprefix(b"data: "))["error"]["message"].startswith("engine at")
    assert done == b"data: [DONE]"
    assert rest == b""


async def test_the_tap_reports_usage_even_when_it_removes_it(fake_engine, client, captured):
    registry, _ = await probed(client, fake_engine.url)
    observed = Gateway(
        registry, client, LeastOutstanding(), observer=GenAIObserver(captured.telemetry)
    )
    fake_engine.handlers["/v1/chat/completions"] = sse_handler(CHUNK_1, CHUNK_2 + USAGE)
    result = await observed.generate(Endpoint.CHAT, BODY_WITHOUT_USAGE, "rid")
    await collect(result.stream)
    metrics = captured.metrics()
    usage = {
        point.attributes[semconv.TOKEN_TYPE]: point.sum
        for point in metrics[semconv.TOKEN_USAGE].data.data_points
    }
    assert usage == {"input": 5, "output": 2}
    [duration] = metrics[semconv.REQUEST_DURATION].data.data_points
    assert duration.attributes[semconv.RESPONSE_MODEL] == "fake-model"
    assert semconv.TIME_TO_FIRST_TOKEN in metrics


# -- Mistral's dialect: the usage on the last chunk --------------------------------------------
MISTRAL_CHAT = orjson.dumps({**CHAT, "random_seed": 7})  # a Mistral field: translated


def events_of(received: bytes) -> list[bytes]:
    return [event for event in received.split(b"\n\n") if event]


async def test_a_mistral_stream_ends_with_its_usage_on_the_finishing_chunk(fake_engine, gateway):
    gw, _ = gateway
    fake_engine.handlers["/v1/chat/completions"] = sse_handler(CHUNK_1, CHUNK_2, USAGE)
    result = await gw.generate(Endpoint.CHAT, MISTRAL_CHAT, "rid")
    events = events_of(b"".join(await collect(result.stream)))
    assert events[-1] == b"data: [DONE]"
    chunks = [orjson.loads(event.removeprefix(b"data: ")) for event in events[:-1]]
    assert all(chunk["choices"] for chunk in chunks)  # choices[0] is there on every chunk
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 2}
    sent = orjson.loads(fake_engine.requests[0][1])
    assert sent["stream_options"] == {"include_usage": True} and sent["seed"] == 7


async def test_a_mistral_stream_that_breaks_after_finishing_still_sends_that_chunk(
    fake_engine, gateway
):
    gw, _ = gateway
    fake_engine.handlers["/v1/chat/completions"] = sse_handler(CHUNK_1, CHUNK_2, drop_after=True)
    result = await gw.generate(Endpoint.CHAT, MISTRAL_CHAT, "rid")
    events = events_of(b"".join(await collect(result.stream)))
    assert b'"finish_reason":"stop"' in events[1]  # held for the usage, sent before the error
    assert events[2].startswith(b'data: {"error"') and events[3] == b"data: [DONE]"
