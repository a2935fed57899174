"""The SSE passthrough: bytes unchanged as they arrive; a break after the first byte becomes an
SSE error event and [DONE]. The upstream here is a fake (FakeEngine): a real engine cannot be
made to drop a stream on cue."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiohttp import web

from mistral_serve.engines.client import EngineClient
from mistral_serve.engines.registry import EngineRegistry
from mistral_serve.errors import EngineUnreachableError
from mistral_serve.gateway.pipeline import Endpoint, Gateway
from mistral_serve.gateway.streaming import stream_error_event
from mistral_serve.routing import LeastOutstanding

CHUNK_1 = b'data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n'
CHUNK_2 = b'data: {"choices":[{"delta":{"content":"lo"}}]}\n\n'
BODY = orjson.dumps(
    {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "stream": True}
)


@pytest.fixture
async def gateway(fake_engine):
    client = EngineClient(read_timeout_s=5)
    await client.start()
    registry = EngineRegistry([fake_engine.url], client)
    await registry.refresh()
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
    # the client's own bytes and its request id reached the engine
    _, body, headers = fake_engine.requests[0]
    assert body == BODY
    assert headers["x-request-id"] == "rid-1"


async def test_chunks_are_forwarded_as_they_arrive(fake_engine, gateway):
    gw, _ = gateway
    fake_engine.handlers["/v1/chat/completions"] = sse_handler(CHUNK_1, CHUNK_2, pause_s=0.5)
    result = await gw.generate(Endpoint.CHAT, BODY, "rid")
    iterator = result.stream.__aiter__()
    first = await asyncio.wait_for(iterator.__anext__(), timeout=0.4)  # before the pause ends
    assert first == CHUNK_1
    await result.stream.aclose()


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


async def test_drop_inside_an_event_terminates_it_before_the_error(fake_engine, gateway):
    gw, _ = gateway
    half_event = b'data: {"choices":[{"delta":{"cont'
    fake_engine.handlers["/v1/chat/completions"] = sse_handler(half_event, drop_after=True)
    result = await gw.generate(Endpoint.CHAT, BODY, "rid-3")
    received = b"".join(await collect(result.stream))
    assert received.startswith(half_event + b"\n\n" + b'data: {"error":')
    assert received.endswith(b"data: [DONE]\n\n")


async def test_closing_early_releases_the_engine(fake_engine, gateway):
    gw, registry = gateway
    fake_engine.handlers["/v1/chat/completions"] = sse_handler(CHUNK_1, CHUNK_2, pause_s=1.0)
    result = await gw.generate(Endpoint.CHAT, BODY, "rid-4")
    assert registry.engines[0].outstanding == 1
    await result.stream.aclose()  # the client went away before reading anything
    assert registry.engines[0].outstanding == 0
    await result.stream.aclose()  # idempotent
    assert registry.engines[0].outstanding == 0


def test_error_event_shape():
    event = stream_error_event(EngineUnreachableError("engine at x broke off its answer"))
    first, done, rest = event.split(b"\n\n")
    assert orjson.loads(first.removeprefix(b"data: "))["error"]["message"].startswith("engine at")
    assert done == b"data: [DONE]"
    assert rest == b""
