"""The answers the gateway documents (``/openapi.json``): OpenAI's shapes as vLLM writes them,
Mistral's model cards and FIM answer, and the one error shape.

The gateway forwards the engine's answers rather than re-encoding them through these models;
they say what a client can rely on. Each allows more fields than it names, because vLLM adds
its own (``stop_reason``, ``prompt_logprobs``, ``kv_transfer_params`` …).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | int | None = None


class ErrorResponse(BaseModel):
    """Every error, the gateway's or an engine's 4xx passed through: OpenAI's shape."""

    error: ErrorDetail


class Usage(_Open):
    prompt_tokens: int
    completion_tokens: int | None = None
    total_tokens: int


class AssistantMessage(_Open):
    role: str
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChatChoice(_Open):
    index: int
    message: AssistantMessage
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None


class ChatCompletion(_Open):
    """A chat completion; also Mistral's fill-in-the-middle answer."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None


class CompletionChoice(_Open):
    index: int
    text: str
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None


class Completion(_Open):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class Embedding(_Open):
    index: int
    object: Literal["embedding"]
    #: Floats; Mistral's integer types as integers; base64 text with encoding_format base64.
    embedding: list[float] | list[int] | str


class EmbeddingList(_Open):
    object: Literal["list"]
    model: str
    data: list[Embedding]
    usage: Usage


class Tokens(_Open):
    """``/tokenize``'s answer, as vLLM writes it."""

    count: int
    tokens: list[int]
    max_model_len: int | None = None


class Text(_Open):
    """``/detokenize``'s answer, as vLLM writes it."""

    prompt: str


class ModelCapabilities(_Open):
    completion_chat: bool
    function_calling: bool
    completion_fim: bool
    vision: bool


class ModelCard(_Open):
    """The engine's OpenAI card plus Mistral's fields."""

    id: str
    object: Literal["model"]
    owned_by: str | None = None
    created: int | None = None
    root: str | None = None
    max_model_len: int | None = None
    type: Literal["base"]
    capabilities: ModelCapabilities
    max_context_length: int | None = None
    aliases: list[str]


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(_Open):
    """GET /ready: each engine's state; 503 when none is ready."""

    status: Literal["ready", "not ready"]
    routing_policy: str
    engines: list[dict[str, Any]]
    waiting: dict[str, int]
    #: Who waits in each model's line: tenant (a key's id, or a hash), priority, waiting,
    #: tokens, weight, share.
    queues: dict[str, list[dict[str, Any]]] = {}


# -- the Responses API and conversations -------------------------------------------------------
class ResponseObject(_Open):
    """A response (``/v1/responses``): OpenAI's ``response`` object."""

    id: str
    object: Literal["response"]
    created_at: int
    status: Literal["queued", "in_progress", "completed", "incomplete", "failed", "cancelled"]
    model: str
    output: list[dict[str, Any]]
    usage: dict[str, Any] | None = None


class ResponseDeleted(_Open):
    id: str
    object: Literal["response"]
    deleted: bool


class InputTokens(_Open):
    object: Literal["response.input_tokens"]
    input_tokens: int


class ItemList(_Open):
    """A page of items (a response's input, a conversation's), OpenAI's cursor list."""

    object: Literal["list"]
    data: list[dict[str, Any]]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool


class Conversation(_Open):
    """A conversation: OpenAI's shape (``created_at`` a number), or Mistral's for one Mistral's
    API made (``created_at`` a date, with its model and settings)."""

    id: str
    object: Literal["conversation"]
    created_at: int | str


class ConversationDeleted(_Open):
    id: str
    object: Literal["conversation.deleted"]
    deleted: bool


class ConversationItem(_Open):
    type: str
    id: str | None = None


class MistralConversationResponse(_Open):
    """A turn of Mistral's conversation (start, append, restart)."""

    object: Literal["conversation.response"]
    conversation_id: str
    outputs: list[dict[str, Any]]
    usage: dict[str, Any]


class ConversationHistory(_Open):
    object: Literal["conversation.history"]
    conversation_id: str
    entries: list[dict[str, Any]]


class ConversationMessages(_Open):
    object: Literal["conversation.messages"]
    conversation_id: str
    messages: list[dict[str, Any]]


# -- files -------------------------------------------------------------------------------------
class FileObject(_Open):
    """An uploaded file (``/v1/files``), as OpenAI's SDK and Mistral's read it."""

    id: str
    object: Literal["file"]
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str
    sample_type: str
    source: str
    num_lines: int


class FileList(_Open):
    """A page of the key's files: OpenAI's cursor fields and Mistral's total."""

    object: Literal["list"]
    data: list[FileObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool
    total: int


class FileDeleted(_Open):
    id: str
    object: Literal["file"]
    deleted: bool


# -- batch jobs ------------------------------------------------------------------------------
class RequestCounts(_Open):
    total: int
    completed: int
    failed: int


class Batch(_Open):
    """A batch (``/v1/batches``), as OpenAI's SDK reads it."""

    id: str
    object: Literal["batch"]
    endpoint: str
    input_file_id: str | None = None
    completion_window: str
    status: str
    created_at: int
    output_file_id: str | None = None
    error_file_id: str | None = None
    request_counts: RequestCounts


class BatchList(_Open):
    object: Literal["list"]
    data: list[Batch]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool


class BatchJob(_Open):
    """A batch job (``/v1/batch/jobs``), as Mistral's SDK reads it."""

    id: str
    object: Literal["batch"]
    input_files: list[str]
    endpoint: str
    status: str
    created_at: int
    total_requests: int
    completed_requests: int
    succeeded_requests: int
    failed_requests: int
    output_file: str | None = None
    error_file: str | None = None


class BatchJobList(_Open):
    object: Literal["list"]
    data: list[BatchJob]
    total: int
