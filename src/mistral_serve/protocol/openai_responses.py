"""OpenAI's Responses API request (``POST /v1/responses``), as the gateway checks it.

Unlike chat, whose unknown fields pass to the engine, a response request is translated into
a chat request here, so a field this gateway does not translate would be silently lost: every
field is named below, and the ones that have no meaning on a self-hosted Mistral model
(built-in tools, reusable prompts, conversation state kept by OpenAI) are a 400 naming them.
docs/responses.md lists each field and what becomes of it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
)

from mistral_serve.protocol.mistral import MAX_SEED


class Closed(BaseModel):
    """Every field named; anything else is a 400 naming it."""

    model_config = ConfigDict(extra="forbid", strict=True)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


#: OpenAI's bounds on ``metadata``: at most 16 pairs, keys up to 64 characters, values up to 512.
METADATA_PAIRS = 16
Metadata = dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]]


def check_metadata(value: dict[str, str] | None) -> dict[str, str] | None:
    if value is not None and len(value) > METADATA_PAIRS:
        raise ValueError(f"at most {METADATA_PAIRS} pairs")
    return value


class FunctionTool(_Open):
    """A function tool (the only kind a self-hosted model can call: its caller runs it)."""

    type: StrictStr
    name: StrictStr | None = None
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None


class TextFormat(_Open):
    type: Literal["text", "json_schema", "json_object"]
    name: StrictStr | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    description: StrictStr | None = None
    strict: StrictBool | None = None


class TextOptions(Closed):
    format: TextFormat | None = None
    verbosity: StrictStr | None = None


class Reasoning(Closed):
    effort: StrictStr | None = None
    summary: StrictStr | None = None
    generate_summary: StrictStr | None = None


class StreamOptions(Closed):
    include_obfuscation: StrictBool | None = None


class ConversationRef(Closed):
    id: StrictStr


class ResponseRequest(Closed):
    model: StrictStr = Field(min_length=1)
    input: StrictStr | list[dict[str, Any]] | None = None
    instructions: StrictStr | None = None
    previous_response_id: StrictStr | None = None
    conversation: StrictStr | ConversationRef | None = None
    store: StrictBool | None = None
    background: StrictBool | None = None
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    max_output_tokens: StrictInt | None = Field(None, ge=1)
    tools: list[FunctionTool] | None = None
    tool_choice: StrictStr | dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None
    text: TextOptions | None = None
    metadata: Metadata | None = None
    user: StrictStr | None = None
    safety_identifier: StrictStr | None = None
    prompt_cache_key: StrictStr | None = None
    truncation: Literal["auto", "disabled"] | None = None
    reasoning: Reasoning | None = None
    include: list[StrictStr] | None = None
    top_logprobs: StrictInt | None = Field(None, ge=0, le=20)
    service_tier: StrictStr | None = None
    #: Not OpenAI's: vLLM's (and Mistral's ``random_seed``), for reproducible samples.
    seed: StrictInt | None = Field(None, ge=-MAX_SEED - 1, le=MAX_SEED)
    # Named so that their 400 says why (protocol/… checks them in the translation).
    max_tool_calls: Any = None
    prompt: Any = None

    _metadata = field_validator("metadata")(check_metadata)

    @property
    def conversation_id(self) -> str | None:
        if isinstance(self.conversation, ConversationRef):
            return self.conversation.id
        return self.conversation

    @property
    def stores(self) -> bool:
        return self.store is not False  # OpenAI's default: stored


class InputTokensRequest(Closed):
    """``POST /v1/responses/input_tokens``: what a response with this input would read."""

    model: StrictStr = Field(min_length=1)
    input: StrictStr | list[dict[str, Any]] | None = None
    instructions: StrictStr | None = None
    previous_response_id: StrictStr | None = None
    conversation: StrictStr | ConversationRef | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: StrictStr | dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None
    text: TextOptions | None = None
    truncation: Literal["auto", "disabled"] | None = None
    reasoning: Reasoning | None = None

    @property
    def conversation_id(self) -> str | None:
        if isinstance(self.conversation, ConversationRef):
            return self.conversation.id
        return self.conversation


# -- OpenAI's conversations ------------------------------------------------------------------------
#: OpenAI's bound on the items one create or add call takes.
MAX_ITEMS_PER_CALL = 20


class CreateConversation(Closed):
    items: list[dict[str, Any]] | None = Field(None, max_length=MAX_ITEMS_PER_CALL)
    metadata: Metadata | None = None

    _metadata = field_validator("metadata")(check_metadata)


class UpdateConversation(Closed):
    metadata: Metadata

    _metadata = field_validator("metadata")(check_metadata)


class AddItems(Closed):
    items: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_ITEMS_PER_CALL)
