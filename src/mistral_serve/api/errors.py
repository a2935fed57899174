"""Every failure leaves as an OpenAI-shaped error body; bad input is never a bare 500. The
framework's own failures (a body it cannot decode, an unknown route, a method a route does not
take) become the errors.py class that says so, and leave through the same one mapping."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from mistral_serve.api.responses import json_response
from mistral_serve.errors import (
    HttpStatusError,
    InvalidRequestError,
    MistralServeError,
    NotFoundError,
)


def error_response(error: MistralServeError) -> Response:
    """The one mapping of an error to an HTTP answer."""
    return json_response(error.to_dict(), error.status, error.headers())


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(MistralServeError)
    async def _ours(request: Request, exc: MistralServeError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        return error_response(InvalidRequestError.from_validation(exc.errors()))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            return error_response(NotFoundError(f"No route for {request.url.path}"))
        return error_response(
            HttpStatusError(exc.status_code, str(exc.detail), headers=exc.headers)
        )
