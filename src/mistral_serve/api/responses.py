"""Responses written straight to ASGI, so nothing buffers a stream.

A streamed answer's per-chunk path is the gateway's hottest code, so it is kept to: read what the
engine sent, pass it on. Two things keep it short:

- **One watch per request.** A client may leave at any moment; one task per request waits for
  ASGI's ``http.disconnect`` and then cancels the request's own task, wherever it is (waiting
  for an engine, in line, between two chunks). The work itself runs in the request's task: no
  task per piece of work and no wait on two futures per chunk.
- **Body chunks go to the server's own ``send``.** Every middleware here (ours and Starlette's)
  acts on the response's start only (its status, its headers, whether it started), yet each
  wraps ``send`` and so costs a coroutine call per chunk. :class:`GatewayApp` keeps the
  server's ``send`` in the scope; a stream sends its start through the middleware and its body
  straight to the server. A middleware that must see body chunks would have to be told so here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Iterator, Mapping
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from mistral_serve.gateway.responses import ByteStream

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Where :class:`GatewayApp` keeps the server's own ``send`` in an HTTP scope.
SERVER_SEND = "mistral_serve.server_send"


def json_response(
    content: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(content), status, headers, media_type="application/json")


class GatewayApp(FastAPI):
    """FastAPI, keeping the server's ``send`` in every HTTP scope (see the module's note), and
    answering the POST routes given to :meth:`serve_directly` without Starlette's routing."""

    _direct: Mapping[str, ASGIApp] = {}

    def serve_directly(self, routes: Mapping[str, ASGIApp]) -> None:
        """POSTs to these paths go to their app (already wrapped in its middleware)."""
        self._direct = dict(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[SERVER_SEND] = send
            if scope["method"] == "POST" and (direct := self._direct.get(scope["path"])):
                scope["app"] = self  # as Starlette sets it: request.app
                await direct(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


class ClientGone(Exception):
    """The client disconnected before the answer was complete."""


class ClientWatch:
    """Whether one request's client is still there. Start it only once the request body has
    been read: from then on the next ASGI message is the disconnect."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._watching: asyncio.Task[None] | None = None
        self._guarded: asyncio.Task[Any] | None = None
        self.gone = False

    @contextlib.contextmanager
    def guarding(self) -> Iterator[None]:
        """While inside, the client leaving cancels the current task; leaving the block
        because of that raises :class:`ClientGone` instead of the cancellation."""
        task = asyncio.current_task()
        assert task is not None
        if self._watching is None:
            self._watching = asyncio.ensure_future(self._watch())
        self._guarded = task
        try:
            if self.gone:
                raise ClientGone
            yield
        except asyncio.CancelledError:
            # Ours only if the client left and nobody else asked for the cancellation too.
            if self.gone and task.uncancel() == 0:
                raise ClientGone from None
            raise
        finally:
            self._guarded = None

    def stop(self) -> None:
        if self._watching is not None:
            self._watching.cancel()

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        if self._guarded is not None:
            self._guarded.cancel()


async def unless_client_leaves(work: Awaitable[T], watch: ClientWatch) -> T:
    """Await ``work``, cancelling it if the client disconnects first (then: ClientGone).

    Cancelling a proxied request closes its upstream connection, so the engine aborts a
    generation nobody will read.
    """
    with watch.guarding():
        return await work
    raise AssertionError("unreachable")  # pragma: no cover (guarding raises or returns)


class StreamResponse(Response):
    """Sends a :class:`ByteStream` chunk by chunk while watching for the client to leave.

    When the client disconnects the stream is closed at once, even if the engine is between
    tokens (a long prefill, a queue), so the engine aborts the request instead of finishing it
    for nobody. The stream is closed on every path, and the watch stopped.
    """

    def __init__(
        self,
        stream: ByteStream,
        status: int,
        media_type: str,
        headers: dict[str, str],
        watch: ClientWatch,
    ) -> None:
        self._stream = stream
        self._watch = watch
        self.status_code = status
        self.media_type = media_type
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            with self._watch.guarding():
                await self._pump(send, scope.get(SERVER_SEND, send))
        except (ClientGone, OSError):  # the client left between chunks, or mid-send
            pass
        except Exception:
            log.exception("stream failed")
        finally:
            self._watch.stop()
            await self._stream.aclose()

    async def _pump(self, send: Send, send_body: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        async for chunk in self._stream:
            await send_body({"type": "http.response.body", "body": chunk, "more_body": True})
        await send_body({"type": "http.response.body", "body": b"", "more_body": False})
