"""The HTTP/1.1 protocol the gateway serves with: uvicorn's (httptools), capping request headers.

uvicorn reads any number of headers of any size: 2,000 headers or a 1 MB ``Authorization``
header were read whole and passed to the app. A public front door refuses them before they cost
anything, as nginx and Envoy do: past MAX_REQUEST_HEADERS headers, or MAX_REQUEST_HEADER_BYTES
of request line and headers together, the answer is 431 in the OpenAI error shape and the
connection is closed.

The count and the size of complete headers are checked as httptools hands each one over. A
header still arriving is not handed over until it is whole, so the bytes of every read that
ended still inside the headers are counted too: a 1 MB header is refused once the cap's worth
of it has arrived, not after all of it.

**Lingering close.** A refusal (this 431, or a 413 of the body limit) closes the connection
while the client may still be sending. Closing a socket with unread bytes makes the kernel
reset the connection, and a reset discards the answer the client has not read yet: it would
see "connection reset", not why. So, as nginx does, a connection closed in the middle of a
request is first half-closed (our side done writing) and what still arrives is read and thrown
away, unparsed, for up to :data:`LINGER_S` seconds or :data:`LINGER_BYTES` bytes, then closed.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from mistral_serve.errors import HeadersTooLargeError

#: What a header line adds to its name and value: ": " and CRLF.
_LINE_OVERHEAD = 4
#: How long, and how much, a refused request's remaining bytes are read and dropped.
LINGER_S = 5.0
LINGER_BYTES = 64 * 1024 * 1024


class _LingeringTransport:
    """The connection's transport as uvicorn sees it: the same, except that ``close`` asks the
    protocol, which lingers when a request is unfinished. Every other method is the
    transport's own (bound once: nothing is added to a write)."""

    def __init__(self, transport: asyncio.Transport, protocol: LimitedHttpToolsProtocol) -> None:
        self.raw = transport
        self._protocol = protocol
        self.write = transport.write
        self.is_closing = transport.is_closing
        self.get_extra_info = transport.get_extra_info
        self.pause_reading = transport.pause_reading
        self.resume_reading = transport.resume_reading
        self.set_protocol = transport.set_protocol

    def close(self) -> None:
        self._protocol.close_lingering()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header caps; make one with :func:`limited_protocol`."""

    max_headers = 100
    max_header_bytes = 65536

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def, override]
        self._raw = transport
        self._in_message = False  # a request has begun and not all of it has been read
        self._lingering: asyncio.TimerHandle | None = None
        self._dropped = 0
        super().connection_made(_LingeringTransport(transport, self))
        self._start_counting()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lingering is not None:
            self._lingering.cancel()
        super().connection_lost(exc)

    def close_lingering(self) -> None:
        """Close now if no request is half read; else half-close, drop what still arrives
        for a while, then close (see the module's note)."""
        raw = self._raw
        if raw.is_closing() or self._lingering is not None:
            return
        if not (self._in_message or (self._in_head and self._head_reads)):
            raw.close()
            return
        self._lingering = self.loop.call_later(LINGER_S, raw.close)
        raw.resume_reading()  # uvicorn may have paused it: a full buffer would stall the client
        if raw.can_write_eof():
            raw.write_eof()

    def _start_counting(self) -> None:
        self._in_head = True  # the next bytes are a request line and headers
        self._head_bytes = 0  # of complete header lines (and the request line)
        self._head_reads = 0  # of reads that ended inside the head
        self._head_count = 0
        self._refusal: HeadersTooLargeError | None = None

    def data_received(self, data: bytes) -> None:
        if self._lingering is not None:
            self._dropped += len(data)
            if self._dropped > LINGER_BYTES:
                self._raw.close()
            return
        super().data_received(data)
        if self._in_head and self._refusal is None and not self.transport.is_closing():
            self._head_reads += len(data)  # all of it was head: it did not end in this read
            if self._head_reads > self.max_header_bytes:
                self._refuse(HeadersTooLargeError(_too_many_bytes(self.max_header_bytes)))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start_counting()
        self._in_message = True

    def on_message_complete(self) -> None:
        self._in_message = False
        super().on_message_complete()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_count += 1
        if self._head_count > self.max_headers:
            self._fail(
                HeadersTooLargeError(
                    f"The request has more than {self.max_headers} headers (MAX_REQUEST_HEADERS)."
                )
            )
        self._count(len(name) + len(value) + _LINE_OVERHEAD)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.max_header_bytes:
            self._fail(HeadersTooLargeError(_too_many_bytes(self.max_header_bytes)))

    def _fail(self, error: HeadersTooLargeError) -> None:
        """Stop the parser from inside its callback: httptools raises a parser error from
        ``feed_data``, which uvicorn answers through :meth:`send_400_response`."""
        self._refusal = error
        raise error

    def send_400_response(self, msg: str) -> None:
        if self._refusal is None:
            super().send_400_response(msg)
        else:
            self._refuse(self._refusal)

    def _refuse(self, error: HeadersTooLargeError) -> None:
        self._refusal = error
        body = orjson.dumps(error.to_dict())
        head = [
            STATUS_LINE[error.status],
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"x-request-id: %s\r\n" % uuid.uuid4().hex.encode(),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.close_lingering()


def _too_many_bytes(limit: int) -> str:
    return f"The request's headers are larger than {limit} bytes (MAX_REQUEST_HEADER_BYTES)."


def limited_protocol(max_headers: int, max_header_bytes: int) -> type[LimitedHttpToolsProtocol]:
    """The protocol class uvicorn is given (it makes one per connection)."""
    return type(
        "LimitedHttpToolsProtocol",
        (LimitedHttpToolsProtocol,),
        {"max_headers": max_headers, "max_header_bytes": max_header_bytes},
    )
