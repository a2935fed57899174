"""Responses written straight to ASGI, so nothing buffers a stream."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from mistral_serve.gateway.responses import ByteStream

log = logging.getLogger(__name__)
T = TypeVar("T")


def json_response(
    content: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(content), status, headers, media_type="application/json")


class StreamResponse(Response):
    """Sends a :class:`ByteStream` chunk by chunk while watching for the client to leave.

    When the client disconnects the stream is closed at once, even if the engine is between
    tokens (a long prefill, a queue), so the engine aborts the request instead of finishing it
    for nobody. The stream is closed on every path.
    """

    def __init__(
        self, stream: ByteStream, status: int, media_type: str, headers: dict[str, str]
    ) -> None:
        self._stream = stream
        self.status_code = status
        self.media_type = media_type
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        pump = asyncio.create_task(self._pump(send))
        watch = asyncio.create_task(_wait_for_disconnect(receive))
        try:
            await asyncio.wait((pump, watch), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, watch):
                task.cancel()
            outcome, _ = await asyncio.gather(pump, watch, return_exceptions=True)
            await self._stream.aclose()
        # OSError: the client went away mid-send; CancelledError: it went away between chunks.
        if isinstance(outcome, BaseException) and not isinstance(
            outcome, (asyncio.CancelledError, OSError)
        ):
            log.error("stream failed", exc_info=outcome)

    async def _pump(self, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        async for chunk in self._stream:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class ClientGone(Exception):
    """The client disconnected before the answer was ready."""


async def unless_client_leaves(work: Awaitable[T], receive: Receive) -> T:
    """Await ``work`` (a proxied request), cancelling it if the client disconnects first.

    Cancelling closes the upstream connection, so the engine aborts a generation nobody will
    read, also for non-streamed requests, which send nothing until they are done. Call it only
    after the request body has been read: then the next ASGI message is the disconnect.
    """
    task = asyncio.ensure_future(work)
    watch = asyncio.create_task(_wait_for_disconnect(receive))
    try:
        await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
    if task.cancelled():
        raise ClientGone
    return task.result()
