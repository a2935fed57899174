"""The HTTP routes: thin adapters from Starlette requests to the gateway and back.

The generation routes are also plain ASGI apps (:data:`GENERATION_APPS`), which
:class:`~mistral_serve.api.responses.GatewayApp` calls before Starlette's routing: they are the
requests that count, and Starlette's router, its two exception layers and FastAPI's endpoint
plumbing cost each of them more than the rest of the API layer together (py-spy, on-CPU, short
streamed chats: 16 % of the gateway's CPU). FastAPI keeps them too, for /openapi.json.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from mistral_serve.api.errors import error_response
from mistral_serve.api.responses import (
    ClientGone,
    ClientWatch,
    StreamResponse,
    json_response,
    unless_client_leaves,
)
from mistral_serve.errors import CLIENT_CLOSED_STATUS, MistralServeError
from mistral_serve.gateway.pipeline import Endpoint, Gateway
from mistral_serve.gateway.responses import GatewayResponse

router = APIRouter()


def _gateway(request: Request) -> Gateway:
    return request.app.state.services.gateway


def _to_http(result: GatewayResponse, watch: ClientWatch) -> Response:
    response: Response
    if result.stream is not None:
        response = StreamResponse(
            result.stream, result.status, result.media_type, result.headers, watch
        )
    else:
        watch.stop()
        response = Response(result.body, result.status, result.headers, result.media_type)
    if result.raw_headers:
        response.raw_headers.extend(result.raw_headers)
    return response


@router.get("/health")
async def health() -> Response:
    """The process is alive (engines may still be loading)."""
    return json_response({"status": "ok"})


@router.get("/ready")
async def ready(request: Request) -> Response:
    """At least one engine is ready to serve; 503 with Retry-After otherwise."""
    gateway = _gateway(request)
    is_ready, detail = gateway.readiness()
    if is_ready:
        return json_response(detail)
    return json_response(detail, 503, {"retry-after": str(gateway.retry_after_s)})


@router.get("/v1/models")
async def models(request: Request) -> Response:
    return json_response(await _gateway(request).models(request.headers.get("authorization")))


@router.get("/v1/models/{model_id:path}")
async def model(request: Request, model_id: str) -> Response:
    """One model's card (both SDKs' ``models.retrieve``); 404 in the error shape if unknown."""
    gateway = _gateway(request)
    return json_response(await gateway.model(model_id, request.headers.get("authorization")))


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(request: Request) -> Response:
    return await _generate(request, Endpoint.CHAT)


@router.post("/v1/completions", response_model=None)
async def completions(request: Request) -> Response:
    return await _generate(request, Endpoint.COMPLETIONS)


@router.post("/v1/fim/completions", response_model=None)
async def fim_completions(request: Request) -> Response:
    """Mistral's fill-in-the-middle (``prompt`` + ``suffix``), answered as a chat completion."""
    return await _generate(request, Endpoint.FIM)


@router.post("/v1/embeddings", response_model=None)
async def embeddings(request: Request) -> Response:
    """OpenAI's embeddings, and Mistral's (``output_dimension``, ``output_dtype``), on an
    embedding model."""
    return await _generate(request, Endpoint.EMBEDDINGS)


@router.post("/tokenize", response_model=None)
async def tokenize(request: Request) -> Response:
    """A text (``prompt``) or a conversation (``messages``) as the model's token ids (vLLM's
    ``/tokenize``, on an engine of the model)."""
    return await _tokens(request)


@router.post("/detokenize", response_model=None)
async def detokenize(request: Request) -> Response:
    """Token ids of a model back to its text (vLLM's ``/detokenize``)."""
    return await _tokens(request)


async def _tokens(request: Request) -> Response:
    result = await _gateway(request).tokens(
        request.url.path,
        await request.body(),
        request.state.request_id,
        authorization=request.headers.get("authorization"),
    )
    return Response(result.body, result.status, media_type=result.media_type)


async def _generate(request: Request, endpoint: Endpoint) -> Response:
    body = await request.body()
    work = _gateway(request).generate(
        endpoint,
        body,
        request.state.request_id,
        session=request.headers.get("x-session-id"),
        authorization=request.headers.get("authorization"),
        client=client_address(request),
    )
    return await answered(request, work)


def client_address(request: Request) -> str | None:
    """The client's address, as uvicorn reports it (anonymous traffic's tenant in admission)."""
    return request.client.host if request.client else None


async def answered(request: Request, work: Awaitable[GatewayResponse]) -> Response:
    """``work``'s answer (its body read already), or nothing if the client leaves first:
    then ``work`` is cancelled, wherever it is."""
    watch = ClientWatch(request.receive)  # the body is read: the next message is a disconnect
    try:
        result = await unless_client_leaves(work, watch)
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED_STATUS)  # nobody reads it; for the logs
    except BaseException:
        watch.stop()
        raise
    return _to_http(result, watch)


def direct_app(route: Callable[[Request], Awaitable[Response]]) -> ASGIApp:
    """A POST route as a plain ASGI app, its errors mapped as the app's handlers do."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            response = await route(Request(scope, receive))
        except MistralServeError as error:
            response = error_response(error)
        await response(scope, receive, send)

    return app


#: The generation routes by path, for POST (see the module's note); the Responses API's
#: and the conversations' are api/responses_api.py's.
GENERATION_APPS: dict[str, ASGIApp] = {
    endpoint.route: direct_app(partial(_generate, endpoint=endpoint))
    for endpoint in Endpoint
    if endpoint not in (Endpoint.RESPONSES, Endpoint.CONVERSATIONS)
}
