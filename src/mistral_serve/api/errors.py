"""Every failure leaves as an OpenAI-shaped error body; bad input is never a bare 500."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from mistral_serve.api.responses import json_response
from mistral_serve.errors import InvalidRequestError, MistralServeError, NotFoundError


def error_response(error: MistralServeError) -> Response:
    return json_response(error.to_dict(), error.status, error.headers())


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(MistralServeError)
    async def _ours(request: Request, exc: MistralServeError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"msg": "invalid request", "loc": ()}
        if first.get("type") == "json_invalid":  # its loc is a character position, not a field
            message = f"The request body is not valid JSON: {first.get('ctx', {}).get('error')}"
            return error_response(InvalidRequestError(message))
        param = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
        return error_response(InvalidRequestError(str(first["msg"]), param=param))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            return error_response(NotFoundError(f"No route for {request.url.path}"))
        body = {
            "error": {
                "message": str(exc.detail),
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        }
        return json_response(body, exc.status_code, dict(exc.headers or {}))
