"""The parts of OpenAI's request bodies the gateway checks before it spends an engine on them.

Only types are checked here (strictly: a string where a number belongs is a 400, as OpenAI
does); value ranges and everything vLLM adds (``top_k``, ``min_p``, ``ignore_eos``,
``structured_outputs``…) are the engine's to judge, and unknown fields pass through untouched:
the gateway forwards the client's original bytes, never a re-encoding of these models.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr


class _Open(BaseModel):
    """Strict about the fields it names, silent about the ones it doesn't."""

    model_config = ConfigDict(extra="allow", strict=True)


class StreamOptions(_Open):
    include_usage: StrictBool | None = None


class ChatMessage(_Open):
    role: StrictStr
    content: StrictStr | list[dict[str, Any]] | None = None


class GenerationRequest(_Open):
    model: StrictStr = Field(min_length=1)
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    n: StrictInt | None = None
    max_tokens: StrictInt | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: StrictInt | None = None
    stop: StrictStr | list[StrictStr] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    user: StrictStr | None = None
    #: vLLM's request priority (lower first): the admission queue's order, and the engine's.
    priority: StrictInt | None = None
    #: OpenAI's cache hint: a session name for routing affinity.
    prompt_cache_key: StrictStr | None = None

    @property
    def is_stream(self) -> bool:
        return bool(self.stream)

    @property
    def output_limit(self) -> int | None:
        """The most tokens it may generate per choice, if it says."""
        return self.max_tokens


class ChatCompletionRequest(GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = None

    @property
    def output_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(GenerationRequest):
    prompt: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]
