"""``/openapi.json``: every endpoint's request and response bodies, from the protocol models.

The generation routes read their bodies themselves (parsed once with orjson, the client's bytes
forwarded), so FastAPI cannot see their schemas; this module puts them in: the request models of
both dialects (OpenAI's and Mistral's, documented ranges included), the answers, the error
shape with the statuses each route can answer, and the fields the gateway does not read, which
pass to vLLM unchanged (``x-passed-through``). ``/docs`` serves it, as vLLM's server does.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from mistral_serve.protocol import responses
from mistral_serve.protocol.embeddings import EmbeddingRequest
from mistral_serve.protocol.fim import FIMCompletionRequest
from mistral_serve.protocol.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    TokenizeRequest,
)

#: vLLM's own sampling and output fields: not read by the gateway, sent to the engine as they are.
PASSED_THROUGH = tuple(
    """top_k min_p repetition_penalty length_penalty ignore_eos stop_token_ids
    include_stop_str_in_output skip_special_tokens spaces_between_special_tokens
    structured_outputs response_format tools tool_choice echo add_generation_prompt
    continue_final_message chat_template_kwargs truncate_prompt_tokens prompt_logprobs
    return_tokens_as_token_ids bad_words logits_processors kv_transfer_params cache_salt""".split()
)

_STREAM = {
    "text/event-stream": {
        "schema": {  # one event
            "type": "object",
            "required": ["data"],
            "properties": {
                "data": {"type": "string", "description": "a JSON chunk, or [DONE]"},
                "event": {"type": "string"},
            },
        },
        "description": "With `stream: true`: `data: {chunk}` events, then `data: [DONE]`; an "
        'error after the first event is an `data: {"error": …}` event before `[DONE]`.',
    }
}

#: The error statuses each kind of route can answer, with what they mean.
_GENERATION_ERRORS = {
    "400": "malformed JSON, a field of the wrong type or out of its documented range",
    "401": "no API key, or a wrong, revoked or expired one (when keys are required)",
    "403": "a model the key may not use",
    "404": "a model no engine serves",
    "429": "over the key's limits or budget, or the admission line is full (Retry-After)",
    "502": "the engine failed, broke or stalled before the first byte",
    "503": "no engine ready, limits unreachable with LIMITS_ON_STORE_ERROR=closed, or draining",
    "4XX": "the engine's own 4xx (e.g. a prompt longer than the context), passed through",
}
#: An embedding request's: a generation's, and a model of the other kind.
_EMBEDDING_ERRORS = {
    **_GENERATION_ERRORS,
    "400": _GENERATION_ERRORS["400"] + "; a chat model asked for embeddings; an input longer "
    "than the model's context",
}
_TOKEN_ERRORS = {
    key: _GENERATION_ERRORS[key] for key in ("400", "401", "403", "404", "502", "503", "4XX")
}
_ADMIN_ERRORS = {
    "400": "a field of the wrong type or value",
    "401": "not the admin key",
    "403": "the admin API is off (ADMIN_API_KEY unset, or AUTH=off)",
    "404": "no such key",
}
_MODEL_ERRORS = {
    "401": _GENERATION_ERRORS["401"],
    "404": "no ready engine serves this model for this caller",
}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _errors(statuses: dict[str, str]) -> dict[str, Any]:
    return {
        status: {
            "description": meaning,
            "content": {"application/json": {"schema": _ref(responses.ErrorResponse)}},
        }
        for status, meaning in statuses.items()
    }


def _generation(
    request: type[BaseModel],
    answer: type[BaseModel],
    summary: str,
    *,
    streamed: bool = True,
    errors: dict[str, str] = _GENERATION_ERRORS,
) -> dict[str, Any]:
    content = {"application/json": {"schema": _ref(answer)}, **(_STREAM if streamed else {})}
    return {
        "summary": summary,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref(request)}},
        },
        "responses": {
            "200": {
                "description": "The answer, whole or streamed" if streamed else "The answer",
                "content": content,
            },
            **_errors(errors),
        },
    }


#: path → method → what FastAPI cannot see.
_OPERATIONS: dict[str, dict[str, dict[str, Any]]] = {
    "/v1/chat/completions": {
        "post": _generation(
            ChatCompletionRequest,
            responses.ChatCompletion,
            "Chat completion (OpenAI's or Mistral's dialect)",
        )
    },
    "/v1/completions": {
        "post": _generation(CompletionRequest, responses.Completion, "Text completion")
    },
    "/v1/fim/completions": {
        "post": _generation(
            FIMCompletionRequest,
            responses.ChatCompletion,
            "Mistral's fill-in-the-middle, answered as a chat completion",
        )
    },
    "/v1/embeddings": {
        "post": _generation(
            EmbeddingRequest,
            responses.EmbeddingList,
            "Embeddings (OpenAI's shape, or Mistral's output_dimension and output_dtype)",
            streamed=False,
            errors=_EMBEDDING_ERRORS,
        )
    },
    "/tokenize": {
        "post": _generation(
            TokenizeRequest,
            responses.Tokens,
            "A text or a conversation as the model's token ids",
            streamed=False,
            errors=_TOKEN_ERRORS,
        )
    },
    "/detokenize": {
        "post": _generation(
            DetokenizeRequest,
            responses.Text,
            "Token ids of a model back to text",
            streamed=False,
            errors=_TOKEN_ERRORS,
        )
    },
}
_ANSWERS: dict[tuple[str, str], tuple[type[BaseModel], dict[str, str]]] = {
    ("/v1/models", "get"): (responses.ModelList, {"401": _MODEL_ERRORS["401"]}),
    ("/v1/models/{model_id}", "get"): (responses.ModelCard, _MODEL_ERRORS),
    ("/health", "get"): (responses.Health, {}),
    ("/ready", "get"): (responses.Readiness, {"503": "no engine is ready (same body)"}),
}
_MODELS: tuple[type[BaseModel], ...] = (
    ChatCompletionRequest,
    CompletionRequest,
    FIMCompletionRequest,
    EmbeddingRequest,
    TokenizeRequest,
    DetokenizeRequest,
    responses.EmbeddingList,
    responses.Tokens,
    responses.Text,
    responses.ChatCompletion,
    responses.Completion,
    responses.ModelList,
    responses.ModelCard,
    responses.Health,
    responses.Readiness,
    responses.ErrorResponse,
)


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` (served at /openapi.json) document the bodies."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def build_openapi(app: FastAPI) -> dict[str, Any]:
    document = get_openapi(
        title=app.title, version=app.version, description=_DESCRIPTION, routes=app.routes
    )
    _, definitions = models_json_schema(
        [(model, "validation") for model in _MODELS],
        ref_template="#/components/schemas/{model}",
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(definitions.get("$defs", {}))
    for name in (
        "ChatCompletionRequest",
        "CompletionRequest",
        "FIMCompletionRequest",
        "EmbeddingRequest",
    ):
        schemas[name]["x-passed-through"] = list(PASSED_THROUGH)
        schemas[name]["description"] = (
            schemas[name].get("description", "")
            + " Fields not listed here (vLLM's: top_k, min_p, repetition_penalty, ignore_eos, "
            "structured_outputs, …; see x-passed-through) are sent to the engine unchanged."
        ).strip()
    paths = document["paths"]
    for path, methods in _OPERATIONS.items():
        for method, operation in methods.items():
            paths.setdefault(path, {}).setdefault(method, {}).update(operation)
    for path, methods in paths.items():  # the admin API: FastAPI sees its bodies, not its errors
        if path.startswith("/admin/"):
            for operation in methods.values():
                operation["responses"].pop("422", None)  # validation failures are 400s here
                operation["responses"].update(_errors(_ADMIN_ERRORS))
    for (path, method), (answer, errors) in _ANSWERS.items():
        operation = paths[path][method]
        operation["responses"] = {
            "200": {
                "description": "OK",
                "content": {"application/json": {"schema": _ref(answer)}},
            },
            **_errors(errors),
        }
    return document


_DESCRIPTION = (
    "An OpenAI- and Mistral-compatible gateway over vLLM engines. Both SDKs (`openai`, "
    "`mistralai`) work unchanged. Errors use OpenAI's shape. See docs/mistral-api.md for "
    "Mistral's fields and what is mapped, accepted or not applicable."
)
