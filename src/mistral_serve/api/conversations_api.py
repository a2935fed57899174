"""``/v1/conversations…``: OpenAI's conversations and Mistral's, on one set of paths.

A body with ``inputs`` is Mistral's (``start``, ``append``); OpenAI's ``create`` and
``update`` carry ``items`` and ``metadata`` only (:func:`~mistral_serve.responses.mistral.
is_mistral`). Reads of a conversation are answered in the shapes of the API that made it.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from mistral_serve.api.responses import json_response
from mistral_serve.api.routes import answered, client_address
from mistral_serve.errors import InvalidRequestError
from mistral_serve.gateway.pipeline import decode_body
from mistral_serve.responses.conversations import MISTRAL, Conversations, openai_conversation
from mistral_serve.responses.mistral import MistralConversations, is_mistral, mistral_conversation
from mistral_serve.responses.pages import Page
from mistral_serve.tenancy.auth import Caller

router = APIRouter()


def _openai(request: Request) -> Conversations:
    return request.app.state.services.conversations


def _mistral(request: Request) -> MistralConversations:
    return request.app.state.services.mistral_conversations


async def _caller(request: Request) -> Caller:
    gateway = request.app.state.services.gateway
    return await gateway.authenticate(request.headers.get("authorization"))


@router.post("/v1/conversations", response_model=None)
async def create_conversation(request: Request) -> Response:
    """OpenAI's create (``items``, ``metadata``) or Mistral's start (``inputs``, ``model``…)."""
    document = decode_body(await request.body())
    caller = await _caller(request)
    if is_mistral(document):
        work = _mistral(request).start(
            document, caller, request.state.request_id, client=client_address(request)
        )
        return await answered(request, work)
    return json_response(await _openai(request).create(document, caller))


@router.get("/v1/conversations")
async def list_conversations(request: Request) -> Response:
    """Mistral's list (OpenAI's API has none)."""
    query = request.query_params
    try:
        page, size = int(query.get("page", "0")), int(query.get("page_size", "100"))
    except ValueError:
        raise InvalidRequestError("page and page_size: integers.", param="page") from None
    listed = await _mistral(request).list(page, size, await _caller(request))
    return json_response(listed)


@router.get("/v1/conversations/{conversation_id}")
async def get_conversation(request: Request, conversation_id: str) -> Response:
    record = await _openai(request).owned(conversation_id, await _caller(request))
    if record.dialect == MISTRAL:
        return json_response(mistral_conversation(record))
    return json_response(openai_conversation(record))


@router.post("/v1/conversations/{conversation_id}", response_model=None)
async def continue_conversation(request: Request, conversation_id: str) -> Response:
    """OpenAI's update (``metadata``) or Mistral's append (``inputs``)."""
    document = decode_body(await request.body())
    caller = await _caller(request)
    if is_mistral(document):
        work = _mistral(request).append(
            conversation_id,
            document,
            caller,
            request.state.request_id,
            client=client_address(request),
        )
        return await answered(request, work)
    return json_response(await _openai(request).update(conversation_id, document, caller))


@router.delete("/v1/conversations/{conversation_id}", response_model=None)
async def delete_conversation(request: Request, conversation_id: str) -> Response:
    """OpenAI's answer says it is deleted; Mistral's is 204 No Content."""
    conversations, caller = _openai(request), await _caller(request)
    record = await conversations.owned(conversation_id, caller)
    deleted = await conversations.delete(conversation_id, caller)
    if record.dialect == MISTRAL:
        return Response(status_code=204)
    return json_response(deleted)


@router.post("/v1/conversations/{conversation_id}/restart", response_model=None)
async def restart_conversation(request: Request, conversation_id: str) -> Response:
    document = decode_body(await request.body())
    work = _mistral(request).restart(
        conversation_id,
        document,
        await _caller(request),
        request.state.request_id,
        client=client_address(request),
    )
    return await answered(request, work)


@router.get("/v1/conversations/{conversation_id}/history")
async def conversation_history(request: Request, conversation_id: str) -> Response:
    return json_response(await _mistral(request).history(conversation_id, await _caller(request)))


@router.get("/v1/conversations/{conversation_id}/messages")
async def conversation_messages(request: Request, conversation_id: str) -> Response:
    return json_response(await _mistral(request).messages(conversation_id, await _caller(request)))


@router.get("/v1/conversations/{conversation_id}/items")
async def list_items(request: Request, conversation_id: str) -> Response:
    page = Page.of(request.query_params)
    listed = await _openai(request).list_items(conversation_id, page, await _caller(request))
    return json_response(listed)


@router.post("/v1/conversations/{conversation_id}/items")
async def add_items(request: Request, conversation_id: str) -> Response:
    body = await request.body()
    added = await _openai(request).add_items(conversation_id, body, await _caller(request))
    return json_response(added)


@router.get("/v1/conversations/{conversation_id}/items/{item_id}")
async def get_item(request: Request, conversation_id: str, item_id: str) -> Response:
    item = await _openai(request).item(conversation_id, item_id, await _caller(request))
    return json_response(item)


@router.delete("/v1/conversations/{conversation_id}/items/{item_id}")
async def delete_item(request: Request, conversation_id: str, item_id: str) -> Response:
    conversation = await _openai(request).delete_item(
        conversation_id, item_id, await _caller(request)
    )
    return json_response(conversation)
