"""Pure-ASGI middleware (no BaseHTTPMiddleware: it would buffer streams)."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable

import orjson
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mistral_serve.api.errors import error_response
from mistral_serve.errors import MistralServeError, RequestTooLargeError
from mistral_serve.telemetry import semconv

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = b"x-request-id"
# Echo an incoming id only if it is short and plain, so it is safe in logs and headers.
_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}")


class RequestIdMiddleware:
    """Gives every request an id (a valid incoming ``x-request-id`` is kept) and returns it.

    The id is at ``scope["state"]["request_id"]``, i.e. ``request.state.request_id``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_id(scope) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        encoded = request_id.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [  # ASGI's header names are lowercase
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name != REQUEST_ID_HEADER
                ]
                headers.append((REQUEST_ID_HEADER, encoded))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == REQUEST_ID_HEADER and _VALID_REQUEST_ID.fullmatch(value):
            return value.decode()
    return None


class UnexpectedErrorMiddleware:
    """Turns an unhandled exception into an OpenAI-shaped 500 (inside the request-id layer, so
    even that answer carries its id). Known errors never get here: their handlers answer first.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            error = MistralServeError("The server hit an unexpected error.")
            await send(
                {
                    "type": "http.response.start",
                    "status": error.status,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": orjson.dumps(error.to_dict())})


#: MAX_REQUEST_BYTES unset: at least this, ...
BODY_LIMIT_FLOOR = 8 * 1024 * 1024
#: ... or this many bytes per token of the longest context an engine serves: a token is about
#: four bytes of text, and JSON's escapes (\uXXXX is six bytes) and a chat's framing add more.
BODY_BYTES_PER_TOKEN = 32
#: An upload's body is its file (FILES_MAX_BYTES) plus the multipart framing and fields.
UPLOAD_FRAMING_BYTES = 64 * 1024


def body_limit(configured: int | None, longest_context: int) -> int:
    """MAX_REQUEST_BYTES, or what the longest context the engines serve calls for."""
    if configured is not None:
        return configured
    return max(BODY_LIMIT_FLOOR, BODY_BYTES_PER_TOKEN * longest_context)


class BodyLimitMiddleware:
    """Refuses a request body larger than ``limit(scope)`` bytes before reading it: a 413 from its
    ``Content-Length``, or, for a chunked body, as soon as what was read passes the bound (the
    app's read raises :class:`RequestTooLargeError`). Either answer closes the connection, so
    the rest of the body is never read."""

    def __init__(self, app: ASGIApp, limit: Callable[[Scope], int]) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope)
        length = _content_length(scope)
        if length is not None:  # the server holds the body to its Content-Length
            if length > limit:
                await error_response(RequestTooLargeError(limit))(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        read = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal read
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > limit:
                    raise RequestTooLargeError(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except RequestTooLargeError as error:  # the app did not answer it itself
            if started:
                raise
            await error_response(error)(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class TracingMiddleware:
    """Opens the SERVER span of each API request, continuing an incoming W3C ``traceparent``.

    The span carries the HTTP server attributes; the gateway renames it and adds the GenAI ones
    (``chat mistral-7b``). It ends when the last byte of the answer is sent, so a stream's span
    covers the whole stream. Probes (/health, /ready) are not traced: they would drown the
    traces in noise. With telemetry off this layer is not installed at all.
    """

    def __init__(self, app: ASGIApp, tracer: Tracer, routes: frozenset[str]) -> None:
        self.app = app
        self.tracer = tracer
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _UNTRACED:
            await self.app(scope, receive, send)
            return
        headers = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
        }
        method = scope["method"]
        route = scope["path"] if scope["path"] in self.routes else None
        span = self.tracer.start_span(
            f"{method} {route}" if route else method,
            context=_PROPAGATOR.extract(headers),
            kind=SpanKind.SERVER,
            attributes=_http_attributes(scope, headers, route),
        )

        async def traced_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                span.set_attribute(semconv.HTTP_RESPONSE_STATUS_CODE, status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                    if semconv.ERROR_TYPE not in (getattr(span, "attributes", None) or {}):
                        span.set_attribute(semconv.ERROR_TYPE, str(status))
            await send(message)

        with trace.use_span(span, end_on_exit=True):
            await self.app(scope, receive, traced_send)


_UNTRACED = frozenset({"/health", "/ready"})
_PROPAGATOR = TraceContextTextMapPropagator()


def _http_attributes(
    scope: Scope, headers: dict[str, str], route: str | None
) -> dict[str, str | int]:
    attributes: dict[str, str | int] = {
        semconv.HTTP_REQUEST_METHOD: scope["method"],
        semconv.URL_PATH: scope["path"],
        semconv.URL_SCHEME: scope.get("scheme", "http"),
        semconv.NETWORK_PROTOCOL_VERSION: scope.get("http_version", "1.1"),
    }
    if route:
        attributes[semconv.HTTP_ROUTE] = route
    host, _, port = headers.get("host", "").rpartition(":")
    if not host:  # no port in the Host header
        host, port = headers.get("host", ""), ""
    server = scope.get("server") or (None, None)
    if host:
        attributes[semconv.SERVER_ADDRESS] = host
    if port.isdigit():
        attributes[semconv.SERVER_PORT] = int(port)
    elif server[1]:
        attributes[semconv.SERVER_PORT] = int(server[1])
    client = scope.get("client")
    if client:
        attributes[semconv.CLIENT_ADDRESS] = client[0]
    if "user-agent" in headers:
        attributes[semconv.USER_AGENT] = headers["user-agent"]
    return attributes
