"""Mistral's conversations API (the ``mistralai`` SDK's ``beta.conversations``): the requests
the gateway checks. Agents, libraries and connectors are Mistral's hosted products: an
``agent_id`` is refused (docs/responses.md)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from mistral_serve.protocol.mistral import MAX_SEED


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class CompletionArgs(_Open):
    """What a conversation's completions are made with (Mistral's ``completion_args``)."""

    stop: StrictStr | list[StrictStr] | None = None
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    max_tokens: StrictInt | None = Field(None, ge=1)
    random_seed: StrictInt | None = Field(None, ge=0, le=MAX_SEED)
    prediction: dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    tool_choice: StrictStr | dict[str, Any] | None = None


class Turn(_Open):
    """What every turn of a conversation (start, append, restart) may say."""

    inputs: StrictStr | list[dict[str, Any]] | None = None
    stream: StrictBool | None = False
    store: StrictBool | None = True
    #: Who runs hand-offs between agents: meaningless without agents (accepted, unused).
    handoff_execution: StrictStr | None = None
    completion_args: CompletionArgs | None = None


class StartConversation(Turn):
    inputs: StrictStr | list[dict[str, Any]]
    model: StrictStr | None = None
    agent_id: StrictStr | None = None
    agent_version: Any = None
    instructions: StrictStr | None = None
    tools: list[dict[str, Any]] | None = None
    guardrails: Any = None
    name: StrictStr | None = None
    description: StrictStr | None = None
    metadata: dict[str, Any] | None = None


class AppendConversation(Turn):
    tool_confirmations: Any = None


class RestartConversation(Turn):
    from_entry_id: StrictStr
    metadata: dict[str, Any] | None = None
    agent_version: Any = None
