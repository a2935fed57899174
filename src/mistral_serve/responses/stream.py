"""A response streamed to its client: the engine's chat stream, read event by event, as the
Responses API's events (:class:`~mistral_serve.responses.events.ResponseEvents`).

The response's end is written to the store (when it is stored) before its last event goes
out: a client that saw ``response.completed`` can retrieve the response from any gateway.
Closing it (the client left) closes the engine's stream, which aborts the generation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson

from mistral_serve.gateway.responses import ByteStream
from mistral_serve.responses.events import Event, ResponseEvents, sse

_EVENT_END = b"\n\n"
_DATA = b"data: "


def chat_chunks(data: bytes) -> list[dict[str, Any] | None]:
    """The chat chunks in whole SSE events (None for ``[DONE]``)."""
    chunks: list[dict[str, Any] | None] = []
    for event in data.split(_EVENT_END):
        for line in event.split(b"\n"):
            if not line.startswith(_DATA):
                continue
            payload = line[len(_DATA) :]
            if payload.strip() == b"[DONE]":
                chunks.append(None)
                continue
            try:
                document = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            if isinstance(document, dict):
                chunks.append(document)
    return chunks


class ChatEvents:
    """Reads a chat stream (the gateway's, whole events) and yields response events:
    ``ResponseEvents``' for each chunk; at the end, the finished (or failed) response, after
    ``ended`` (the store's write) returns."""

    def __init__(
        self,
        chat: ByteStream,
        events: ResponseEvents,
        *,
        ended: Callable[[ResponseEvents], Awaitable[None]],
        clock: Callable[[], int],
    ) -> None:
        self._chat = chat
        self.events = events
        self._ended = ended
        self._clock = clock

    async def __aiter__(self) -> AsyncIterator[list[Event]]:
        failure: dict[str, Any] | None = None
        async for data in self._chat:
            for chunk in chat_chunks(data):
                if chunk is None:
                    continue
                if isinstance(chunk.get("error"), dict):  # the engine failed mid-stream
                    error = chunk["error"]
                    failure = {
                        "code": error.get("code") or "server_error",
                        "message": error.get("message") or "The engine failed.",
                    }
                    continue
                made = self.events.chunk(chunk)
                if made:
                    yield made
        if failure is not None:
            last = self.events.failed(failure)
        else:
            last = self.events.finished(self._clock())
        await self._ended(self.events)
        yield last

    async def aclose(self) -> None:
        await self._chat.aclose()


class ResponseStream:
    """The client's byte stream: ``opening`` events, then each batch ``source`` makes, framed
    as SSE. Closing it (the client left) closes ``source`` and calls ``close`` (a response
    streamed as it is made aborts its engine request; a stream following a background run
    leaves the run alone)."""

    def __init__(
        self,
        source: AsyncIterator[list[Event]],
        *,
        opening: list[Event] | None = None,
        close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._opening = opening or []
        self._source = source
        self._close = close
        self._closed = False

    def __aiter__(self) -> ResponseStream:
        return self

    async def __anext__(self) -> bytes:
        if self._opening:
            opening, self._opening = self._opening, []
            return b"".join(sse(event) for event in opening)
        try:
            events = await self._source.__anext__()
        except BaseException:
            await self.aclose()
            raise
        return b"".join(sse(event) for event in events)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        aclose = getattr(self._source, "aclose", None)
        if aclose is not None:
            await aclose()
        if self._close is not None:
            await self._close()
