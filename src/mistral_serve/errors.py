"""The one exception tree of mistral-serve.

Every error a request can meet is one of these classes. Each class knows the HTTP status it
answers with, the OpenAI error ``type`` and ``code`` it puts in the body, and a short,
low-cardinality ``label`` for metrics and logs. The api layer has one handler that turns any of
them into ``{"error": {"message", "type", "param", "code"}}``; after the first streamed byte the
gateway turns them into an SSE error event instead.

A request whose client left before its answer has no error class (nobody reads the answer):
it is logged, traced and counted with :data:`CLIENT_CLOSED_STATUS`.

    MistralServeError                      500 server_error      internal
    ├── ConfigError                        (start-up only: a bad setting; never an HTTP answer)
    ├── EngineStartError                   (start-up only: an engine died before it was ready)
    ├── InvalidRequestError                400 invalid_request_error
    │   ├── ModelNotFoundError             404 invalid_request_error / model_not_found
    │   ├── RequestTooLargeError           413 invalid_request_error / request_too_large
    │   └── HeadersTooLargeError           431 invalid_request_error / request_headers_too_large
    ├── NotFoundError                      404 invalid_request_error / not_found (unknown route)
    ├── HttpStatusError                    4xx invalid_request_error (the web framework's own:
    │                                      405 method_not_allowed, …)
    ├── InvalidApiKeyError                 401 invalid_request_error / invalid_api_key
    ├── ModelNotAllowedError               403 invalid_request_error / model_not_allowed
    ├── AdminDisabledError                 403 invalid_request_error / admin_disabled
    ├── ServerOverloadedError              429 server_error / server_overloaded (+ Retry-After)
    ├── RateLimitExceededError             429 requests|tokens / rate_limit_exceeded (+ Retry-After)
    ├── InsufficientQuotaError             429 insufficient_quota / insufficient_quota (no retry)
    ├── NoReadyEngineError                 503 server_error / no_ready_engine  (+ Retry-After)
    │   ├── DrainingError                  503 server_error / shutting_down
    │   ├── LimitsUnavailableError         503 server_error / limits_unavailable
    │   ├── AdapterUnavailableError        503 server_error / adapter_unavailable
    │   └── KeyStoreUnavailableError       503 server_error / key_store_unavailable
    └── EngineError                        502 server_error / engine_error
        ├── EngineUnreachableError         502 engine_unreachable (refused, reset, dropped)
        ├── EngineStalledError             502 engine_stalled (in flight, no progress)
        └── EngineTimeoutError             504 engine_timeout
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

#: nginx's status for "the client closed the connection before the answer", and its label.
CLIENT_CLOSED_STATUS = 499
CLIENT_CLOSED = "client_closed"


class MistralServeError(Exception):
    """Base class: an unexpected failure inside the server."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    code: ClassVar[str | None] = "internal_error"
    label: ClassVar[str] = "internal"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        #: Headers the answer carries whatever the error (a limited key's x-ratelimit-*).
        self.extra_headers: dict[str, str] = {}

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI error body."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def headers(self) -> dict[str, str]:
        """The response headers this error's answer carries."""
        return {**self._own_headers(), **self.extra_headers}

    def _own_headers(self) -> dict[str, str]:
        """Headers this kind of error calls for (Retry-After on 503)."""
        return {}


class ConfigError(MistralServeError):
    """A setting is invalid. Raised at start-up; the CLI prints it as one line and exits."""

    label = "config"


class EngineStartError(MistralServeError):
    """An engine exited (or timed out) before it ever became ready. Raised by `up` at start-up."""

    label = "engine_start"


class InvalidRequestError(MistralServeError):
    """The request body is malformed or a field has the wrong type or value."""

    status = 400
    type = "invalid_request_error"
    code = None
    label = "invalid_request"

    @classmethod
    def not_json(cls, reason: object) -> InvalidRequestError:
        return cls(f"The request body is not valid JSON: {reason}")

    @classmethod
    def from_validation(cls, errors: Sequence[Mapping[str, Any]]) -> InvalidRequestError:
        """The 400 for a validation failure (pydantic's, or FastAPI's list of them): the first
        problem, naming its field."""
        if not errors:
            return cls("The request is not valid.")
        first = errors[0]
        if first.get("type") == "json_invalid":  # its loc is a character position, not a field
            return cls.not_json(first.get("ctx", {}).get("error"))
        param = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or None
        message = str(first.get("msg", "invalid value"))
        return cls(f"{param}: {message}" if param else message, param=param)


class ModelNotFoundError(InvalidRequestError):
    """No ready engine serves the requested model."""

    status = 404
    code = "model_not_found"
    label = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(f"The model `{model}` does not exist.", param="model")


class RequestTooLargeError(InvalidRequestError):
    """The body is larger than MAX_REQUEST_BYTES: refused before it is read (or as soon as a
    chunked one passes the bound), and the connection closed, so nothing more of it is read."""

    status = 413
    code = "request_too_large"
    label = "request_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"The request body is larger than this server takes ({limit} bytes, MAX_REQUEST_BYTES)."
        )

    def _own_headers(self) -> dict[str, str]:
        return {"connection": "close"}


class HeadersTooLargeError(InvalidRequestError):
    """Too many request headers, or too many bytes of them (MAX_REQUEST_HEADERS,
    MAX_REQUEST_HEADER_BYTES). Answered by the HTTP protocol itself, before any request exists."""

    status = 431
    code = "request_headers_too_large"
    label = "headers_too_large"


class NotFoundError(MistralServeError):
    """No such route."""

    status = 404
    type = "invalid_request_error"
    code = "not_found"
    label = "not_found"


class HttpStatusError(MistralServeError):
    """A status the web framework itself answers with (405 for a method a route does not take,
    and the like), in the OpenAI error shape."""

    type = "invalid_request_error"
    code = None
    label = "http_error"

    def __init__(
        self, status: int, message: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status  # type: ignore[misc]  # per answer, as the framework says
        self.code = "method_not_allowed" if status == 405 else None  # type: ignore[misc]
        self.extra_headers.update(headers or {})


class InvalidApiKeyError(MistralServeError):
    """No API key, or one that is not (or no longer) valid. The message never repeats it."""

    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"
    label = "auth"


class ModelNotAllowedError(MistralServeError):
    """The caller's key may not use the requested model."""

    status = 403
    type = "invalid_request_error"
    code = "model_not_allowed"
    label = "model_not_allowed"

    def __init__(self, model: str) -> None:
        super().__init__(f"This API key may not use the model `{model}`.", param="model")


class AdminDisabledError(MistralServeError):
    """The admin API is off: no ADMIN_API_KEY, or no key store (AUTH=off)."""

    status = 403
    type = "invalid_request_error"
    code = "admin_disabled"
    label = "admin_disabled"


class NoReadyEngineError(MistralServeError):
    """No engine can take the request now (all starting, restarting or down)."""

    status = 503
    code = "no_ready_engine"
    label = "no_ready_engine"

    def __init__(self, message: str, *, retry_after_s: int = 5) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def _own_headers(self) -> dict[str, str]:
        return {"retry-after": str(self.retry_after_s)}


class ServerOverloadedError(MistralServeError):
    """Every engine serving the model is at its concurrency target and the admission queue is
    full, or the request waited there ADMISSION_QUEUE_TIMEOUT_S. Retry-After says when a slot
    is likely, from the queue and the rate requests complete."""

    status = 429
    code = "server_overloaded"
    label = "overloaded"

    def __init__(self, message: str, *, reason: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.label = f"queue_{reason}"  # queue_full, queue_timeout: the metrics' reason
        self.retry_after_s = retry_after_s

    def _own_headers(self) -> dict[str, str]:
        return _retry_after(self.retry_after_s)


class RateLimitExceededError(MistralServeError):
    """The caller's key is over its requests-per-minute, tokens-per-minute or concurrency
    limit. Retry-After comes from the limiter's own state: when enough will have refilled. A
    request larger than the key's whole TPM can never fit, and says so without Retry-After."""

    status = 429
    code = "rate_limit_exceeded"
    label = "rate_limit"

    def __init__(self, message: str, *, kind: str, retry_after_s: float | None) -> None:
        super().__init__(message)
        self.type = kind  # OpenAI's type names the limit: requests, tokens
        self.retry_after_s = retry_after_s

    def _own_headers(self) -> dict[str, str]:
        return {} if self.retry_after_s is None else _retry_after(self.retry_after_s)


class InsufficientQuotaError(MistralServeError):
    """The key's daily or monthly token budget cannot cover the request. No Retry-After:
    clients (the SDKs included) must not retry it."""

    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"
    label = "quota"


def _retry_after(seconds: float) -> dict[str, str]:
    return {
        "retry-after": str(max(1, math.ceil(seconds))),
        "retry-after-ms": str(max(1, round(seconds * 1000))),
    }


class DrainingError(NoReadyEngineError):
    """The gateway is shutting down: requests still waiting for an engine are let go."""

    code = "shutting_down"
    label = "draining"


class LimitsUnavailableError(NoReadyEngineError):
    """The per-key limit counters (Redis) cannot be reached and LIMITS_ON_STORE_ERROR=closed."""

    code = "limits_unavailable"
    label = "limits_unavailable"


class AdapterUnavailableError(NoReadyEngineError):
    """No engine could load the LoRA adapter a request names (the engine's reason is in the
    message); the engine itself is fine, so this is not an engine failure."""

    code = "adapter_unavailable"
    label = "adapter_unavailable"


class KeyStoreUnavailableError(NoReadyEngineError):
    """A key this gateway does not know yet cannot be looked up: the key store is unreadable
    (the keys already known are still served)."""

    code = "key_store_unavailable"
    label = "key_store_unavailable"


class EngineError(MistralServeError):
    """The engine failed to answer properly (it answered with a 5xx)."""

    status = 502
    code = "engine_error"
    label = "engine_error"


class EngineUnreachableError(EngineError):
    """The engine could not be reached, or the connection dropped before the answer ended."""

    code = "engine_unreachable"
    label = "engine_unreachable"


class EngineStalledError(EngineError):
    """The engine stopped making progress (ENGINE_STALL_TIMEOUT_S) while this request was on it,
    or went out of rotation under it; the gateway took the request back."""

    code = "engine_stalled"
    label = "engine_stalled"


class EngineTimeoutError(EngineError):
    """The engine sent nothing for longer than the configured read timeout."""

    status = 504
    code = "engine_timeout"
    label = "engine_timeout"
