"""The Responses API's routes (``/v1/responses…``): thin adapters to
:class:`~mistral_serve.responses.service.Responses`.

``POST /v1/responses`` is answered before Starlette's routing, as the other generation routes
are (:data:`RESPONSES_APPS`); FastAPI keeps it too, for /openapi.json.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.types import ASGIApp

from mistral_serve.api.responses import json_response
from mistral_serve.api.routes import answered, client_address, direct_app
from mistral_serve.errors import InvalidRequestError
from mistral_serve.responses.pages import Page
from mistral_serve.responses.service import Responses

router = APIRouter()


def _responses(request: Request) -> Responses:
    return request.app.state.services.responses


def _authorization(request: Request) -> str | None:
    return request.headers.get("authorization")


@router.post("/v1/responses", response_model=None)
async def create_response(request: Request) -> Response:
    """OpenAI's Responses API, answered by a chat completion (docs/responses.md)."""
    body = await request.body()
    work = _responses(request).create(
        body,
        request.state.request_id,
        authorization=_authorization(request),
        client=client_address(request),
    )
    return await answered(request, work)


@router.post("/v1/responses/input_tokens")
async def input_tokens(request: Request) -> Response:
    """How many tokens a response with this input would read."""
    body = await request.body()
    counted = await _responses(request).input_tokens(body, authorization=_authorization(request))
    return json_response(counted)


@router.get("/v1/responses/{response_id}", response_model=None)
async def retrieve_response(request: Request, response_id: str) -> Response:
    """A stored response; with ``stream=true``, a background response's events (after
    ``starting_after``), followed until it ends."""
    responses, authorization = _responses(request), _authorization(request)
    query = request.query_params
    if query.get("stream", "false").lower() != "true":
        return json_response(await responses.retrieve(response_id, authorization=authorization))
    after = query.get("starting_after", "-1")
    if not after.lstrip("-").isdigit():
        raise InvalidRequestError(
            "starting_after: an event's sequence number.", param="starting_after"
        )
    work = responses.resume(response_id, int(after), authorization=authorization)
    return await answered(request, work)


@router.post("/v1/responses/{response_id}/cancel")
async def cancel_response(request: Request, response_id: str) -> Response:
    """Stop a background response (its engine request is aborted)."""
    responses = _responses(request)
    cancelled = await responses.cancel(response_id, authorization=_authorization(request))
    return json_response(cancelled)


@router.delete("/v1/responses/{response_id}")
async def delete_response(request: Request, response_id: str) -> Response:
    deleted = await _responses(request).delete(response_id, authorization=_authorization(request))
    return json_response(deleted)


@router.get("/v1/responses/{response_id}/input_items")
async def list_input_items(request: Request, response_id: str) -> Response:
    page = Page.of(request.query_params)
    listed = await _responses(request).input_items(
        response_id, page, authorization=_authorization(request)
    )
    return json_response(listed)


#: ``POST /v1/responses`` by path, for :meth:`GatewayApp.serve_directly`.
RESPONSES_APPS: dict[str, ASGIApp] = {"/v1/responses": direct_app(create_response)}
