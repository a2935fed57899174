"""The gateway's request pipeline: parse once → validate → route → proxy.

The client's original bytes are what the engine receives: the gateway reads the few fields it
needs (model, stream) and checks types, but never re-encodes the body, so every vLLM extension
field passes through unchanged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson
from pydantic import ValidationError

from mistral_serve.engines.client import EngineClient, EngineConnectError
from mistral_serve.engines.registry import Engine, EngineRegistry
from mistral_serve.errors import (
    EngineError,
    InvalidRequestError,
    ModelNotFoundError,
    NoReadyEngineError,
)
from mistral_serve.gateway.responses import GatewayResponse
from mistral_serve.gateway.streaming import ProxyStream
from mistral_serve.protocol import sse
from mistral_serve.protocol.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    GenerationRequest,
)
from mistral_serve.routing import RoutingPolicy

log = logging.getLogger(__name__)

JSON = "application/json"
_STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class Endpoint(Enum):
    CHAT = ("/v1/chat/completions", ChatCompletionRequest)
    COMPLETIONS = ("/v1/completions", CompletionRequest)

    def __init__(self, path: str, schema: type[GenerationRequest]) -> None:
        self.path = path
        self.schema = schema


def parse_request(endpoint: Endpoint, body: bytes) -> GenerationRequest:
    """Decode and type-check a request body; any problem is a 400 naming the field."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    try:
        return endpoint.schema.model_validate(document)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        message = f"{param}: {first['msg']}" if param else first["msg"]
        raise InvalidRequestError(message, param=param) from None


@dataclass(frozen=True)
class RetryAdvice:
    """How long clients are told to wait when no engine is ready."""

    seconds: int = 5


class Gateway:
    def __init__(
        self,
        registry: EngineRegistry,
        client: EngineClient,
        policy: RoutingPolicy,
        *,
        retry: RetryAdvice = RetryAdvice(),
    ) -> None:
        self._registry = registry
        self._client = client
        self._policy = policy
        self._retry = retry

    # -- generation --------------------------------------------------------------------------
    async def generate(self, endpoint: Endpoint, body: bytes, request_id: str) -> GatewayResponse:
        request = parse_request(endpoint, body)
        headers = {"content-type": JSON, "x-request-id": request_id}
        tried: set[Engine] = set()  # engines hash by identity
        while True:
            engine = self._route(request.model, exclude=tried)
            tried.add(engine)
            engine.outstanding += 1
            try:
                upstream = await self._client.post(engine.url + endpoint.path, body, headers)
            except EngineConnectError as exc:
                engine.outstanding -= 1
                self._registry.mark_down(engine, exc.message)
                if self._registry.candidates(request.model):
                    continue  # nothing was sent anywhere: another engine may take it
                raise
            except BaseException:
                engine.outstanding -= 1
                raise
            break

        def finish() -> None:
            engine.outstanding -= 1

        if upstream.status != 200:
            try:
                return await self._engine_refusal(upstream.status, await upstream.read())
            finally:
                finish()
        if request.is_stream and upstream.content_type.startswith(sse.MEDIA_TYPE):
            stream = ProxyStream(upstream, on_finish=finish, request_id=request_id)
            return GatewayResponse(200, sse.MEDIA_TYPE, dict(_STREAM_HEADERS), stream=stream)
        try:
            payload = await upstream.read()
        finally:
            finish()
        return GatewayResponse(200, upstream.content_type, body=payload)

    def _route(self, model: str, *, exclude: set[Engine]) -> Engine:
        candidates = [e for e in self._registry.candidates(model) if e not in exclude]
        if candidates:
            return self._policy(candidates)
        if not self._registry.ready_engines() or self._registry.is_known(model):
            raise NoReadyEngineError(
                f"No engine serving `{model}` is ready; try again shortly.",
                retry_after_s=self._retry.seconds,
            )
        raise ModelNotFoundError(model)

    async def _engine_refusal(self, status: int, body: bytes) -> GatewayResponse:
        """An engine's own error: its 4xx reaches the client intact; a 5xx becomes a 502."""
        if 400 <= status < 500:
            return GatewayResponse(status, JSON, body=body)
        raise EngineError(f"The engine failed ({status}): {_engine_message(body)}")

    # -- models and readiness ----------------------------------------------------------------
    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": self._registry.model_cards()}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        engines = [
            {
                "name": engine.name,
                "url": engine.url,
                "ready": engine.ready,
                "models": sorted(engine.model_ids),
                "outstanding": engine.outstanding,
                **({"error": engine.last_error} if engine.last_error else {}),
            }
            for engine in self._registry.engines
        ]
        ready = any(engine["ready"] for engine in engines)
        return ready, {"status": "ready" if ready else "not ready", "engines": engines}

    @property
    def retry_after_s(self) -> int:
        return self._retry.seconds


def _engine_message(body: bytes) -> str:
    try:
        return str(orjson.loads(body)["error"]["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return body[:200].decode("utf-8", "replace") or "no details"
