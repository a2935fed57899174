"""The parts of OpenAI's request bodies the gateway checks before it spends an engine on them.

Types are checked strictly (a string where a number belongs is a 400, as OpenAI does), and
every sampling field that OpenAI or Mistral documents a range for is held to it: an
out-of-range value is a 400 naming the field and never reaches an engine. Where the two APIs
document different ranges, the wider one holds (temperature: Mistral's 0–1.5 within OpenAI's
0–2). What only vLLM adds (``top_k``, ``min_p``, ``ignore_eos``, ``structured_outputs``…) is
the engine's to judge, and unknown fields pass through untouched: the gateway forwards the
client's original bytes, not a re-encoding of these models (Mistral's dialect aside).
"""

from __future__ import annotations

from typing import Annotated, Any, NotRequired

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
    with_config,
)
from typing_extensions import TypedDict

from mistral_serve.protocol.mistral import MAX_SEED, MistralChatFields

Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]
#: A token's logit bias, as OpenAI bounds it.
Bias = Annotated[float, Field(ge=-100.0, le=100.0)]


class _Open(BaseModel):
    """Strict about the fields it names, silent about the ones it doesn't."""

    model_config = ConfigDict(extra="allow", strict=True)


class StreamOptions(_Open):
    include_usage: StrictBool | None = None


@with_config(ConfigDict(extra="allow", strict=True))
class ChatMessage(TypedDict):
    """One message: checked, and kept as the dict it came as. A TypedDict, not a model: a
    conversation of 200,000 short messages took 653 ms to check as models and takes 100 ms
    this way, on the event loop, before anything else can run."""

    role: StrictStr
    content: NotRequired[StrictStr | list[dict[str, Any]] | None]


class GenerationRequest(_Open):
    model: StrictStr = Field(min_length=1)
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    n: StrictInt | None = Field(None, ge=1, le=128)
    max_tokens: StrictInt | None = Field(None, ge=0)
    min_tokens: StrictInt | None = Field(None, ge=0)  # vLLM's and Mistral's
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    seed: StrictInt | None = Field(None, ge=-MAX_SEED - 1, le=MAX_SEED)
    stop: StrictStr | list[StrictStr] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: dict[StrictStr, Bias] | None = None
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


class ChatCompletionRequest(GenerationRequest, MistralChatFields):
    """OpenAI's chat request, with Mistral's fields (both SDKs post to the same path)."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    logprobs: StrictBool | None = None
    top_logprobs: StrictInt | None = Field(None, ge=0, le=20)

    @property
    def output_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(GenerationRequest):
    prompt: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]
    #: OpenAI documents at most 5; vLLM serves up to its max_logprobs (20 by default), and
    #: clients of vLLM use that.
    logprobs: StrictInt | None = Field(None, ge=0, le=20)
    best_of: StrictInt | None = Field(None, ge=1, le=20)
    #: The text after the completion: the request is encoded as fill-in-the-middle.
    suffix: StrictStr | None = None


def with_usage_requested(document: dict[str, Any]) -> dict[str, Any]:
    """A streamed request's body that asks the engine for the stream's usage
    (``stream_options.include_usage``), its other stream options kept."""
    options = document.get("stream_options")
    options = dict(options) if isinstance(options, dict) else {}
    options["include_usage"] = True
    return {**document, "stream_options": options}


_ASK_FOR_USAGE = b'"stream_options":{"include_usage":true}}'


def usage_requested(body: bytes, document: dict[str, Any]) -> bytes:
    """``body`` (whose decoding is ``document``), asking the engine for the stream's usage.
    Without ``stream_options`` in it, the field is appended to the client's own bytes: a long
    conversation costs one copy, not a serialisation (30 ms for 8 MB of messages). Otherwise
    it is re-encoded with :func:`with_usage_requested`."""
    if "stream_options" not in document:
        head = body.rstrip()
        if head.endswith(b"}"):
            head = head[:-1].rstrip()
            return head + (b"" if head.endswith(b"{") else b",") + _ASK_FOR_USAGE
    return orjson.dumps(with_usage_requested(document))


class TokenizeRequest(_Open):
    """vLLM's ``/tokenize``: a text (``prompt``) or a conversation (``messages``, rendered
    with the model's chat template) of one model."""

    model: StrictStr = Field(min_length=1)
    prompt: StrictStr | None = None
    messages: list[ChatMessage] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_text(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give prompt or messages")
        return self


class DetokenizeRequest(_Open):
    """vLLM's ``/detokenize``: token ids of one model back to text."""

    model: StrictStr = Field(min_length=1)
    tokens: list[StrictInt]
