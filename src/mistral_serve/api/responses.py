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


class ClientGone(Exception):
    """The client disconnected before the answer was complete."""


async def unless_client_leaves(work: Awaitable[T], receive: Receive) -> T:
    """Await ``work``, cancelling it if the client disconnects first (then: ClientGone).

    Cancelling a proxied request closes its upstream connection, so the engine aborts a
    generation nobody will read. Call it only after the request body has been read: then the
    next ASGI message is the disconnect.
    """
    task = asyncio.ensure_future(work)
    watch = asyncio.create_task(_wait_for_disconnect(receive))
    try:
        await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        task.cancel()  # a no-op once it is done
        # A task is only cancelled once it has run again: let both settle before asking.
        await asyncio.gather(task, watch, return_exceptions=True)
    if task.cancelled():
        raise ClientGone
    return task.result()


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


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
        try:
            await unless_client_leaves(self._pump(send), receive)
        except (ClientGone, OSError):  # the client left between chunks, or mid-send
            pass
        except Exception:
            log.exception("stream failed")
        finally:
            await self._stream.aclose()

    async def _pump(self, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        async for chunk in self._stream:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
