"""What a hostile client gets read: header caps at the HTTP protocol and the body limit, on a
real uvicorn server with the gateway's protocol class and middleware on a socket, and raw bytes
from a client, so what is read before the refusal is what such a client would get read."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import orjson
import pytest
import uvicorn

from mistral_serve.api.http_protocol import limited_protocol
from mistral_serve.api.middleware import BodyLimitMiddleware
from mistral_serve.engines.supervisor import free_port
from tests.support import until

MAX_HEADERS = 20
MAX_HEADER_BYTES = 4096
MAX_BODY_BYTES = 64 * 1024


async def echo_app(scope, receive, send) -> None:
    """Answers 200 with the number of headers and body bytes it got."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    answer = orjson.dumps({"headers": len(scope["headers"]), "body": len(body)})
    length = (b"content-length", str(len(answer)).encode())
    await send({"type": "http.response.start", "status": 200, "headers": [length]})
    await send({"type": "http.response.body", "body": answer})


@pytest.fixture
async def port() -> AsyncIterator[int]:
    chosen = free_port()
    config = uvicorn.Config(
        BodyLimitMiddleware(echo_app, lambda scope: MAX_BODY_BYTES),
        host="127.0.0.1",
        port=chosen,
        loop="none",
        http=limited_protocol(MAX_HEADERS, MAX_HEADER_BYTES),
        lifespan="off",
        log_config=None,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    await until(lambda: server.started, what="the server is listening")
    yield chosen
    server.should_exit = True
    await serving


def request(headers: list[tuple[str, str]], body: bytes = b"", last: bool = False) -> bytes:
    """A request; the ``last`` of a connection asks the server to close after its answer, so a
    test reads every answer without waiting for the connection to go quiet."""
    lines = ["POST /echo HTTP/1.1", "host: test", f"content-length: {len(body)}"]
    lines += ["connection: close"] if last else []
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def exchange(port: int, *messages: bytes, pause_s: float = 0.0) -> tuple[bytes, int]:
    """Send ``messages`` one after another on one connection; everything the server answered
    until it closed (or went quiet), and how many bytes were sent before it closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0
    try:
        for message in messages:
            writer.write(message)
            await writer.drain()
            sent += len(message)
            if pause_s:
                await asyncio.sleep(pause_s)
    except ConnectionError:  # the server closed while we were still sending
        pass
    answer = b""
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(2):
            while chunk := await reader.read(65536):
                answer += chunk
    writer.close()
    return answer, sent


def refusal(answer: bytes) -> dict:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 ")
    assert b"x-request-id: " in head
    assert b"connection: close" in head
    return orjson.loads(body)["error"]


async def test_headers_within_the_caps_pass(port):
    # host, length and connection: 3 more
    headers = [(f"x-h{i}", "v" * 100) for i in range(MAX_HEADERS - 3)]
    answer, _ = await exchange(port, request(headers, b"x" * 60_000, last=True))
    assert answer.startswith(b"HTTP/1.1 200 ")
    # the body is no header: 60 kB after a head within the cap is read whole
    assert orjson.loads(answer.partition(b"\r\n\r\n")[2]) == {"headers": 20, "body": 60_000}


async def test_one_header_too_many_is_a_431(port):
    headers = [(f"x-h{i}", "v") for i in range(MAX_HEADERS - 1)]
    error = refusal((await exchange(port, request(headers)))[0])
    assert error["code"] == "request_headers_too_large"
    assert error["type"] == "invalid_request_error"
    assert "MAX_REQUEST_HEADERS" in error["message"]


async def test_headers_larger_than_the_cap_together_are_a_431(port):
    headers = [(f"x-h{i}", "v" * 500) for i in range(10)]  # 10 of them, 5 kB together
    error = refusal((await exchange(port, request(headers)))[0])
    assert "MAX_REQUEST_HEADER_BYTES" in error["message"]


async def test_a_huge_header_is_refused_before_it_has_all_arrived(port):
    """A 1 MB header: the 431 is there once a little more than the cap has arrived, and the
    rest the client insists on sending is dropped unread, so it still reads the 431 rather than
    a reset connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /echo HTTP/1.1\r\nhost: test\r\nauthorization: Bearer ")
    for _ in range(2 * MAX_HEADER_BYTES // 1024):
        writer.write(b"a" * 1024)
        await writer.drain()
        await asyncio.sleep(0.001)
    async with asyncio.timeout(2):  # the answer comes now, without the rest of the header
        head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 ")
    for _ in range(1024):  # the client goes on sending its megabyte: not a reset
        writer.write(b"a" * 1024)
        await writer.drain()
    writer.write_eof()
    rest = await reader.read()
    assert b"MAX_REQUEST_HEADER_BYTES" in rest
    writer.close()


async def test_every_request_of_a_kept_alive_connection_has_its_own_count(port):
    headers = [(f"x-h{i}", "v" * 100) for i in range(MAX_HEADERS - 3)]
    last = request(headers, last=True)
    answer, _ = await exchange(port, request(headers), request(headers), last)
    assert answer.count(b"HTTP/1.1 200 ") == 3


def answer_of(head_and_body: bytes) -> tuple[bytes, dict]:
    head, _, body = head_and_body.partition(b"\r\n\r\n")
    return head, orjson.loads(body)


async def test_a_body_over_the_limit_by_its_length_is_a_413_before_it_is_read(port):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /echo HTTP/1.1\r\nhost: test\r\ncontent-length: 67108864\r\n\r\n")
    async with asyncio.timeout(2):  # no byte of the body was needed
        head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ") and b"connection: close" in head
    for _ in range(256):  # the client sends 16 MiB of it anyway: it still reads its 413
        writer.write(b"x" * 65536)
        await writer.drain()
    writer.write_eof()
    error = orjson.loads(await reader.read())["error"]
    assert error["code"] == "request_too_large" and "MAX_REQUEST_BYTES" in error["message"]
    writer.close()


async def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit(port):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /echo HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\n\r\n")
    piece = b"%x\r\n%s\r\n" % (16384, b"x" * 16384)
    for _ in range(MAX_BODY_BYTES // 16384 + 1):
        writer.write(piece)
        await writer.drain()
    async with asyncio.timeout(2):  # refused without the end of the body
        head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    writer.close()


async def test_bodies_within_the_limit_are_read_whole_chunked_or_not(port):
    chunked = b"POST /echo HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\n"
    chunked += b"connection: close\r\n\r\n"
    chunked += b"%x\r\n%s\r\n0\r\n\r\n" % (MAX_BODY_BYTES, b"x" * MAX_BODY_BYTES)
    answer, _ = await exchange(port, request([], b"x" * MAX_BODY_BYTES), chunked)
    first, second = answer.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"200 ") and second.startswith(b"200 ")
    assert answer_of(b"HTTP/1.1 " + second)[1]["body"] == MAX_BODY_BYTES
