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
from mistral_serve.protocol.batch import CreateBatch, CreateBatchJob
from mistral_serve.protocol.embeddings import EmbeddingRequest
from mistral_serve.protocol.fim import FIMCompletionRequest
from mistral_serve.protocol.mistral_conversations import (
    AppendConversation,
    RestartConversation,
    StartConversation,
)
from mistral_serve.protocol.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    TokenizeRequest,
)
from mistral_serve.protocol.openai_responses import (
    AddItems,
    CreateConversation,
    InputTokensRequest,
    ResponseRequest,
    UpdateConversation,
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
_STORED_ERRORS = {
    "400": "a bad query (limit, order, after, starting_after), or not a background response",
    "401": _GENERATION_ERRORS["401"],
    "404": "no such response, conversation or item for this key (another key's is not found)",
}
_RESPONSE_ERRORS = {
    **_GENERATION_ERRORS,
    "400": _GENERATION_ERRORS["400"] + "; a field with no meaning here (built-in tools, "
    "reasoning on a model without it, an unknown field), named; store with RESPONSES_STORE=off",
    "404": "a model no engine serves; no such previous_response_id or conversation for this key",
}
_EVENTS = {
    "text/event-stream": {
        "schema": {
            "type": "object",
            "required": ["event", "data"],
            "properties": {
                "event": {"type": "string", "description": "the event's type"},
                "data": {"type": "string", "description": "the event, as JSON"},
            },
        },
        "description": "With `stream: true`: the API's events (`event: response.created` … "
        "`response.completed`; Mistral's `conversation.response.started` … `.done`).",
    }
}


def _body(*models: type[BaseModel]) -> dict[str, Any]:
    schema = _ref(models[0]) if len(models) == 1 else {"oneOf": [_ref(m) for m in models]}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _answer(
    summary: str,
    answers: tuple[type[BaseModel], ...],
    errors: dict[str, str],
    *,
    body: tuple[type[BaseModel], ...] = (),
    streamed: bool = False,
    no_content: bool = False,
) -> dict[str, Any]:
    """An operation of the Responses API or the conversations: its body, answers, errors."""
    schema = _ref(answers[0]) if len(answers) == 1 else {"oneOf": [_ref(a) for a in answers]}
    content: dict[str, Any] = {"application/json": {"schema": schema}}
    if streamed:
        content.update(_EVENTS)
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {"200": {"description": "OK", "content": content}, **_errors(errors)},
    }
    if no_content:
        operation["responses"]["204"] = {"description": "Deleted (a Mistral conversation)"}
    if body:
        operation["requestBody"] = _body(*body)
    return operation


_RESPONSES_API: dict[tuple[str, str], dict[str, Any]] = {
    ("/v1/responses", "post"): _answer(
        "Create a response (OpenAI's Responses API, answered by a chat completion)",
        (responses.ResponseObject,),
        _RESPONSE_ERRORS,
        body=(ResponseRequest,),
        streamed=True,
    ),
    ("/v1/responses/input_tokens", "post"): _answer(
        "How many tokens a response with this input would read",
        (responses.InputTokens,),
        _TOKEN_ERRORS,
        body=(InputTokensRequest,),
    ),
    ("/v1/responses/{response_id}", "get"): _answer(
        "A stored response; `?stream=true&starting_after=N`: a background response's events",
        (responses.ResponseObject,),
        _STORED_ERRORS,
        streamed=True,
    ),
    ("/v1/responses/{response_id}", "delete"): _answer(
        "Delete a stored response", (responses.ResponseDeleted,), _STORED_ERRORS
    ),
    ("/v1/responses/{response_id}/input_items", "get"): _answer(
        "A response's input items (`after`, `limit`, `order`)",
        (responses.ItemList,),
        _STORED_ERRORS,
    ),
    ("/v1/responses/{response_id}/cancel", "post"): _answer(
        "Cancel a background response", (responses.ResponseObject,), _STORED_ERRORS
    ),
    ("/v1/conversations", "post"): _answer(
        "OpenAI's create (items, metadata) or Mistral's start (inputs, model…)",
        (responses.Conversation, responses.MistralConversationResponse),
        _RESPONSE_ERRORS,
        body=(CreateConversation, StartConversation),
        streamed=True,
    ),
    ("/v1/conversations", "get"): _answer(
        "Mistral's conversations of this key (`page`, `page_size`)", (), _STORED_ERRORS
    ),
    ("/v1/conversations/{conversation_id}", "get"): _answer(
        "A conversation, in the shapes of the API that made it",
        (responses.Conversation,),
        _STORED_ERRORS,
    ),
    ("/v1/conversations/{conversation_id}", "post"): _answer(
        "OpenAI's update (metadata) or Mistral's append (inputs)",
        (responses.Conversation, responses.MistralConversationResponse),
        _RESPONSE_ERRORS,
        body=(UpdateConversation, AppendConversation),
        streamed=True,
    ),
    ("/v1/conversations/{conversation_id}", "delete"): _answer(
        "Delete a conversation and its items",
        (responses.ConversationDeleted,),
        _STORED_ERRORS,
        no_content=True,
    ),
    ("/v1/conversations/{conversation_id}/restart", "post"): _answer(
        "Mistral's restart: a new conversation from one of this one's entries",
        (responses.MistralConversationResponse,),
        _RESPONSE_ERRORS,
        body=(RestartConversation,),
        streamed=True,
    ),
    ("/v1/conversations/{conversation_id}/history", "get"): _answer(
        "Mistral's history: every entry", (responses.ConversationHistory,), _STORED_ERRORS
    ),
    ("/v1/conversations/{conversation_id}/messages", "get"): _answer(
        "Mistral's messages", (responses.ConversationMessages,), _STORED_ERRORS
    ),
    ("/v1/conversations/{conversation_id}/items", "get"): _answer(
        "A conversation's items (`after`, `limit`, `order`)", (responses.ItemList,), _STORED_ERRORS
    ),
    ("/v1/conversations/{conversation_id}/items", "post"): _answer(
        "Add items to a conversation", (responses.ItemList,), _STORED_ERRORS, body=(AddItems,)
    ),
    ("/v1/conversations/{conversation_id}/items/{item_id}", "get"): _answer(
        "One item", (responses.ConversationItem,), _STORED_ERRORS
    ),
    ("/v1/conversations/{conversation_id}/items/{item_id}", "delete"): _answer(
        "Delete one item; the conversation", (responses.Conversation,), _STORED_ERRORS
    ),
}
# Mistral's list is a JSON array of conversations.
_RESPONSES_API[("/v1/conversations", "get")]["responses"]["200"]["content"] = {
    "application/json": {"schema": {"type": "array", "items": _ref(responses.Conversation)}}
}

_FILE_ERRORS = {
    "400": "not multipart, no `file` part, an empty file, a purpose other than `batch`, a bad "
    "query",
    "401": _GENERATION_ERRORS["401"],
    "404": "no such file for this key (another key's is not found)",
    "413": "larger than FILES_MAX_BYTES: refused before it is read, nothing kept",
}
_UPLOAD = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file", "purpose"],
                "properties": {
                    "file": {"type": "string", "format": "binary"},
                    "purpose": {"type": "string", "enum": ["batch"]},
                },
            }
        }
    },
}


def _file_answer(summary: str, answer: type[BaseModel] | None, **extra: Any) -> dict[str, Any]:
    content = (
        {"application/json": {"schema": _ref(answer)}}
        if answer is not None
        else {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    )
    return {
        "summary": summary,
        "responses": {"200": {"description": "OK", "content": content}, **_errors(_FILE_ERRORS)},
        **extra,
    }


_FILES: dict[tuple[str, str], dict[str, Any]] = {
    ("/v1/files", "post"): _file_answer(
        "Upload a file (OpenAI's files.create, Mistral's files.upload)",
        responses.FileObject,
        requestBody=_UPLOAD,
    ),
    ("/v1/files", "get"): _file_answer(
        "The key's files (`after`, `limit`, `order`; or `page`, `page_size`; `purpose`)",
        responses.FileList,
    ),
    ("/v1/files/{file_id}", "get"): _file_answer("One file", responses.FileObject),
    ("/v1/files/{file_id}", "delete"): _file_answer("Delete a file", responses.FileDeleted),
    ("/v1/files/{file_id}/content", "get"): _file_answer("The file's bytes", None),
}

_BATCH_ERRORS = {
    "400": "a field of the wrong type, an endpoint not served, a bad line of the input (its "
    "number and why), a model of the wrong kind",
    "401": _GENERATION_ERRORS["401"],
    "403": "the key may not use the batch's model",
    "404": "no such batch (or input file) for this key; no engine serves the model",
    "503": "no engine serving the model is ready",
}


def _batch_answer(
    summary: str, answer: type[BaseModel], body: type[BaseModel] | None = None
) -> dict[str, Any]:
    operation = {
        "summary": summary,
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": _ref(answer)}}},
            **_errors(_BATCH_ERRORS),
        },
    }
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(body)}},
        }
    return operation


_BATCHES: dict[tuple[str, str], dict[str, Any]] = {
    ("/v1/batches", "post"): _batch_answer(
        "Create a batch from an uploaded file (OpenAI's batches.create)",
        responses.Batch,
        CreateBatch,
    ),
    ("/v1/batches", "get"): _batch_answer(
        "The key's batches, newest first (`after`, `limit`)", responses.BatchList
    ),
    ("/v1/batches/{batch_id}", "get"): _batch_answer("One batch", responses.Batch),
    ("/v1/batches/{batch_id}/cancel", "post"): _batch_answer(
        "Cancel a batch (running requests finish)", responses.Batch
    ),
    ("/v1/batch/jobs", "post"): _batch_answer(
        "Create a batch job from files or inline requests (Mistral's batch.jobs.create)",
        responses.BatchJob,
        CreateBatchJob,
    ),
    ("/v1/batch/jobs", "get"): _batch_answer(
        "The key's batch jobs (`page`, `page_size`, `model`, `status`, `created_after`)",
        responses.BatchJobList,
    ),
    ("/v1/batch/jobs/{job_id}", "get"): _batch_answer(
        "One batch job (`inline=true`: with its output lines)", responses.BatchJob
    ),
    ("/v1/batch/jobs/{job_id}/cancel", "post"): _batch_answer(
        "Cancel a batch job (running requests finish)", responses.BatchJob
    ),
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
    ResponseRequest,
    InputTokensRequest,
    CreateConversation,
    UpdateConversation,
    AddItems,
    StartConversation,
    AppendConversation,
    RestartConversation,
    responses.ResponseObject,
    responses.ResponseDeleted,
    responses.InputTokens,
    responses.ItemList,
    responses.Conversation,
    responses.ConversationDeleted,
    responses.ConversationItem,
    responses.MistralConversationResponse,
    responses.ConversationHistory,
    responses.ConversationMessages,
    responses.FileObject,
    responses.FileList,
    responses.FileDeleted,
    CreateBatch,
    CreateBatchJob,
    responses.Batch,
    responses.BatchList,
    responses.BatchJob,
    responses.BatchJobList,
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
    for (path, method), operation in _RESPONSES_API.items():
        paths.setdefault(path, {})[method] = {
            **operation,
            "parameters": paths.get(path, {}).get(method, {}).get("parameters", []),
        }
    for (path, method), operation in (*_FILES.items(), *_BATCHES.items()):
        paths.setdefault(path, {})[method] = {
            **operation,
            "parameters": paths.get(path, {}).get(method, {}).get("parameters", []),
        }
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
