"""Pooled HTTP client for vLLM engines: the one place transport errors become errors.py errors.

Keep-alive matters: vLLM's server (uvicorn) closes an idle connection after 5 s, and reusing one
it has just closed fails with ``ServerDisconnectedError``. The pool therefore drops idle
connections sooner (``keepalive_s`` < 5 s), and a request that fails that way before any answer
is retried once on a fresh connection: nothing has reached the client yet, so it is safe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from mistral_serve.errors import (
    EngineError,
    EngineTimeoutError,
    EngineUnreachableError,
    MistralServeError,
)


class EngineConnectError(EngineUnreachableError):
    """Nothing listens at the engine's address (refused, no route): try another engine."""


def _map_transport_error(exc: BaseException, url: str) -> MistralServeError:
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = exc.os_error.strerror or str(exc.os_error)
        return EngineConnectError(f"cannot connect to engine at {url}: {reason}")
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return EngineTimeoutError(f"engine at {url} sent nothing for too long")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return EngineUnreachableError(f"engine at {url} closed the connection")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return EngineUnreachableError(f"engine at {url} broke off its answer")
    return EngineUnreachableError(f"engine at {url} failed: {type(exc).__name__}")


_TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)
_STALE_CONNECTION_ERRORS = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


class UpstreamResponse:
    """An engine's answer whose body has not been read yet.

    Always end it with :meth:`close` (or read it fully): closing an unfinished answer closes
    the connection, which is how vLLM learns to abort the generation.
    """

    def __init__(self, response: aiohttp.ClientResponse, url: str) -> None:
        self._response = response
        self._url = url
        self.status = response.status
        self.content_type = response.headers.get("content-type", "application/json")

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except _TRANSPORT_ERRORS as exc:
            raise _map_transport_error(exc, self._url) from exc
        finally:
            self.close()

    async def read_any(self) -> bytes:
        """Every byte of the body that has arrived, waiting for some if none has; ``b""`` at
        its end. Bytes that arrived together come back together: one read per wake-up, so a
        stream's per-chunk cost does not grow with how far the reader lags behind."""
        try:
            return await self._response.content.readany()
        except _TRANSPORT_ERRORS as exc:
            self.close()
            raise _map_transport_error(exc, self._url) from exc

    def abort(self, error: MistralServeError) -> None:
        """Make the pending and every later read raise ``error`` (the engine stalled or went
        out of rotation): whoever is reading the body wakes up at once, with no timer in the
        read path."""
        self._response.content.set_exception(error)

    def close(self) -> None:
        # release() keeps a fully read connection in the pool; close() drops an unfinished one.
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


class EngineClient:
    """One aiohttp session shared by every request to every engine.

    Its requests have no read timeout of their own: aiohttp would re-arm a timer on every chunk
    of every stream. The registry takes back a request its engine has been silent on for
    ENGINE_READ_TIMEOUT_S instead (:meth:`EngineRegistry.time_out_silent_requests`).
    """

    def __init__(self, *, connect_timeout_s: float = 5.0, keepalive_s: float = 4.0) -> None:
        self._connect_timeout_s = connect_timeout_s
        self._keepalive_s = keepalive_s
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=self._keepalive_s)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout_s)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("EngineClient.start() was not awaited")
        return self._session

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> UpstreamResponse:
        """Send ``body`` and return once the engine's status line and headers are in."""
        for attempt in (1, 2):
            try:
                response = await self.session.post(url, data=body, headers=headers)
                return UpstreamResponse(response, url)
            except aiohttp.ClientConnectorError as exc:
                raise _map_transport_error(exc, url) from exc
            except _STALE_CONNECTION_ERRORS as exc:
                if attempt == 2:
                    raise _map_transport_error(exc, url) from exc
            except _TRANSPORT_ERRORS as exc:
                raise _map_transport_error(exc, url) from exc
        raise AssertionError("unreachable")

    async def get(self, url: str, *, timeout_s: float) -> tuple[int, bytes]:
        """GET a small document (health, model list, metrics): its status and body. Transport
        failures are EngineErrors (a refused connection is an EngineConnectError)."""
        try:
            async with self.session.get(
                url, timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as response:
                return response.status, await response.read()
        except _TRANSPORT_ERRORS as exc:
            raise _map_transport_error(exc, url) from exc

    async def get_json(self, url: str, *, timeout_s: float) -> Any:
        """GET a small JSON document; any failure, a status other than 200 included, is an
        EngineError."""
        status, body = await self.get(url, timeout_s=timeout_s)
        if status != 200:
            raise EngineError(f"engine at {url} answered {status}")
        if not body:
            return None
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise EngineError(f"engine at {url} sent malformed JSON") from exc
