"""Forwarding an engine's SSE stream to the client as it arrives, with a light tap.

Upstream bytes are forwarded event by event, unchanged: no re-encoding, no timers. The tap
(:class:`SSETap`) holds back only the tail of a chunk that ends mid-event (the client could not
use half an event anyway), notes the first event's time, and parses just the few events that
carry a finish reason or usage. When the gateway itself asked the engine for usage (the client
did not), the tap drops that usage event, so the client sees the stream it asked for. A request
in Mistral's dialect, whose answer is Mistral's (:mod:`mistral_serve.gateway.reshape`), has
every event parsed and re-encoded.

If the engine fails after the first byte, the client gets an OpenAI-shaped SSE error event and
``data: [DONE]``, so SDKs stop cleanly instead of hanging. Closing the stream early (the client
went away) closes the upstream connection, which makes vLLM abort the generation.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson

from mistral_serve.engines.client import UpstreamResponse
from mistral_serve.engines.registry import Lease
from mistral_serve.errors import MistralServeError
from mistral_serve.gateway.answers import report_choices, report_usage
from mistral_serve.gateway.migration import Continuation, Moved, TokenTrail
from mistral_serve.gateway.reshape import MistralAnswer
from mistral_serve.protocol import sse
from mistral_serve.telemetry.genai import Generation

log = logging.getLogger(__name__)

#: Moves a stream whose engine failed (its lease, and why) to another engine: where it goes
#: on, or None when it cannot.
Mover = Callable[[Lease, MistralServeError], Awaitable[Moved | None]]

_EVENT_END = b"\n\n"
_DATA = b"data: "
_JSON_DATA = b"data: {"
_FINISHED = b'"finish_reason":"'  # a non-null finish reason
_USAGE = b'"usage":{'  # a non-null usage object


def stream_error_event(error: MistralServeError) -> bytes:
    """The one mapping of an error after the first streamed byte: an error event, then DONE."""
    return sse.event(orjson.dumps(error.to_dict())) + sse.DONE


class SSETap:
    """Reads facts off an SSE stream as it passes; returns the bytes to forward."""

    def __init__(
        self,
        generation: Generation,
        *,
        strip_usage: bool,
        reshape: MistralAnswer | None = None,
        trail: TokenTrail | None = None,
    ) -> None:
        self._generation = generation
        self._strip_usage = strip_usage
        self._reshape = reshape
        self._trail = trail  # reads the token ids a stream's move would carry
        # Content capture reads every delta; a reshaped stream rewrites every event.
        self._every_event = generation.wants_output_text or reshape is not None
        self._pending = b""
        self._seen_first = False

    def feed(self, chunk: bytes) -> bytes:
        """Complete events from ``chunk`` (plus any held-back tail before it)."""
        data = self._pending + chunk if self._pending else chunk
        end = data.rfind(_EVENT_END)
        if end < 0:
            self._pending = data
            return b""
        end += len(_EVENT_END)
        ready, self._pending = (data, b"") if end == len(data) else (data[:end], data[end:])
        if self._trail is not None:
            ready = self._trail.read(ready)
        self._generation.timings.events += ready.count(_EVENT_END)
        if not self._seen_first:
            self._seen_first = True
            self._generation.first_chunk()
            return self._inspect(ready, first=True)
        if self._worth_parsing(ready):
            return self._inspect(ready, first=False)
        return ready

    def drop_partial(self) -> None:
        """The engine failed mid-event: the half event it sent is nobody's (its stream goes on
        from another engine, from the last whole event)."""
        self._pending = b""

    def flush(self) -> bytes:
        """Whatever is left when the stream ends (normally nothing)."""
        rest, self._pending = self._pending, b""
        return self.held_back() + rest

    def held_back(self) -> bytes:
        """The chunks a reshaped stream holds back (its finishing chunk, waiting for usage)."""
        if self._reshape is None:
            return b""
        return b"".join(sse.event(orjson.dumps(held)) for held in self._reshape.flush())

    def _inspect(self, ready: bytes, *, first: bool) -> bytes:
        kept: list[bytes] = []
        changed = False
        for event in ready.split(_EVENT_END)[:-1]:
            document = _decode(event) if (first or self._worth_parsing(event)) else None
            if document is not None:
                if first:
                    self._generation.response(document.get("id"), document.get("model"))
                    first = False
                report_choices(self._generation, document.get("choices"), delta=True)
                if isinstance(document.get("usage"), dict):
                    report_usage(self._generation, document["usage"])
                    if self._strip_usage and not document.get("choices"):
                        changed = True
                        continue
                if self._reshape is not None:
                    for shaped in self._reshape.events(document):
                        kept.append(sse.event(orjson.dumps(shaped)))
                    changed = True
                    continue
            elif self._reshape is not None and (held := self.held_back()):
                kept.append(held)  # before [DONE] (or anything else that is not a chunk)
                changed = True
            kept.append(event + _EVENT_END)
        return b"".join(kept) if changed else ready

    def _worth_parsing(self, events: bytes) -> bool:
        return self._every_event or _FINISHED in events or _USAGE in events


def _decode(event: bytes) -> dict | None:
    if not event.startswith(_JSON_DATA):
        return None
    try:
        document = orjson.loads(event[len(_DATA) :])
    except orjson.JSONDecodeError:
        return None
    return document if isinstance(document, dict) else None


class ProxyStream:
    """The engine's body as an async byte stream; the request ends exactly once with it.

    :meth:`start` waits for the first event, so a failure before any byte is still a plain
    HTTP error (or a move to another engine) and the first-token time is known when the
    headers go out. Every chunk is progress on the engine's lease; the lease ends with the
    stream.

    This is the per-chunk path, so it is one plain iterator over the engine's reader (no
    generators stacked on generators): each step is one read of whatever has arrived, the
    lease's progress mark, and the tap.
    """

    def __init__(
        self,
        upstream: UpstreamResponse,
        generation: Generation,
        *,
        strip_usage: bool,
        lease: Lease,
        request_id: str,
        reshape: MistralAnswer | None = None,
        trail: TokenTrail | None = None,
        mover: Mover | None = None,
    ) -> None:
        self._upstream = upstream
        self._generation = generation
        self._tap = SSETap(generation, strip_usage=strip_usage, reshape=reshape, trail=trail)
        self._lease = lease
        self._request_id = request_id
        self._head = b""
        self._finished = False
        #: Moves the stream to another engine when this one fails (None: it cannot move).
        self._mover = mover
        self._continuation: Continuation | None = None  # the stream goes on from another engine

    async def start(self) -> None:
        """Wait for the first event. On failure the upstream is closed and the error
        propagates with the request still open: the caller may try another engine."""
        try:
            while not self._head:
                chunk = await self._upstream.read_any()
                if not chunk:
                    self._head = self._tap.flush()  # a body with no whole event in it
                    return
                self._lease.progressed()
                self._head = self._tap.feed(chunk)
        except BaseException:
            self._close()
            raise

    def __aiter__(self) -> ProxyStream:
        return self

    async def __anext__(self) -> bytes:
        if self._head:
            head, self._head = self._head, b""
            return head
        if self._finished:
            raise StopAsyncIteration
        try:
            while True:
                try:
                    chunk = await self._upstream.read_any()
                except MistralServeError as error:
                    if await self._moved(error):
                        continue
                    return self._broke(error)
                if not chunk:
                    return self._end()
                self._lease.progressed()
                if self._continuation is not None:
                    chunk = self._continuation.feed(chunk)
                ready = self._tap.feed(chunk)
                if ready:
                    return ready
        except BaseException:
            await self.aclose()
            raise

    async def _moved(self, error: MistralServeError) -> bool:
        """Go on from another engine, if the stream can (gateway/migration.py)."""
        if self._mover is None:
            return False
        failed = self._lease
        failed.finish(error)
        self._upstream.close()
        moved = await self._mover(failed, error)
        if moved is None:
            return False
        self._upstream, self._lease, self._continuation = (
            moved.upstream,
            moved.lease,
            moved.continuation,
        )
        self._tap.drop_partial()
        log.info(
            "request %s: stream moved off %s to %s after %d tokens: %s",
            self._request_id,
            failed.engine.name,
            moved.lease.engine.name,
            len(moved.continuation.carried),
            error.message,
        )
        return True

    def _broke(self, error: MistralServeError) -> bytes:
        log.warning("request %s: stream broke off: %s", self._request_id, error.message)
        self._lease.finish(error)
        self._generation.failed(error)
        self._close()
        # Events are forwarded whole, so the error event never splices into another one.
        return self._tap.held_back() + stream_error_event(error)

    def _end(self) -> bytes:
        """The engine's body ended: the request succeeded. Whatever the tap still holds (a
        last event without its blank line, forwarded as the engine sent it)."""
        rest = b""
        if self._continuation is not None:  # its last event, if it had no blank line
            rest = self._tap.feed(self._continuation.flush())
        rest += self._tap.flush()
        self._lease.finish()
        self._generation.succeeded()
        self._close()
        if not rest:
            raise StopAsyncIteration
        return rest

    async def aclose(self) -> None:
        """The client is gone (or the stream ended): close the upstream so vLLM aborts."""
        if self._finished:
            return
        self._generation.client_left()  # a no-op when the request already ended
        self._lease.release()  # likewise
        self._close()

    def _close(self) -> None:
        if not self._finished:
            self._finished = True
            self._upstream.close()
