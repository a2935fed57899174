"""Streams that survive their engine: a stream whose engine dies, stalls or is taken back goes
on from another engine of its model, token for token.

While a stream runs, the engine is asked for its token ids (vLLM's ``return_token_ids``): the
first event carries the prompt's, every later one the ids it adds. :class:`TokenTrail` reads
them off the events as they pass (and takes them out again, unless the client asked for them).
When the engine fails, :class:`Continuation` asks another engine for a text completion whose
prompt is the original prompt's ids plus exactly the ids already sent: no text is tokenized
again, so with the same weights and greedy sampling the continuation is the token sequence the
first engine would have produced. Its events are reshaped into the original stream's (its id,
``created``, model, chat deltas for a chat stream), its usage counts every token once, and the
client sees one unbroken stream.

Tokens whose text the engine held back (an incomplete UTF-8 character at the end, which vLLM
sends as an event with ids and no text) are not carried: the next engine makes them again, so
their text is not lost.

What cannot be continued exactly ends as before, with an error event (:func:`why_not`): several
choices, log probabilities, structured output and tool calls (the grammar's and the tool
parser's state live in the failed engine), stop strings (vLLM holds back text that may begin
one, so the ids run ahead of the text), presence and frequency penalties (they count output
tokens, which a continuation sees as prompt), and ``echo``/``best_of``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from mistral_serve.engines.client import UpstreamResponse
from mistral_serve.engines.registry import Lease
from mistral_serve.protocol import sse
from mistral_serve.protocol.openai import ChatCompletionRequest, GenerationRequest

_EVENT_END = b"\n\n"
_DATA = b"data: "
_TOKEN_IDS = b',"token_ids":['
_PROMPT_TOKEN_IDS = b'"prompt_token_ids":['
#: Events whose delta added no text (their ids' text is held back by the engine).
_NO_TEXT = (b'"delta":{}', b'"content":""', b'"text":""', b'"delta":{"role":"assistant"}')

#: Sampling fields a continuation keeps as the client sent them (what vLLM's completions take).
_SAMPLING = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "repetition_penalty",
    "stop_token_ids",
    "ignore_eos",
    "skip_special_tokens",
    "spaces_between_special_tokens",
    "logit_bias",
    "bad_words",
    "allowed_token_ids",
    "priority",
    "user",
)


def why_not(request: GenerationRequest, document: dict[str, Any]) -> str | None:
    """Why a stream of this request cannot be continued exactly on another engine; None when
    it can."""
    prompt = document.get("prompt")
    several_prompts = isinstance(prompt, list) and prompt and not isinstance(prompt[0], int)
    if (request.n or 1) > 1 or (document.get("best_of") or 1) > 1 or several_prompts:
        return "several choices"
    if document.get("logprobs") or document.get("top_logprobs") or document.get("echo"):
        return "log probabilities or echo"
    if request.stop:
        return "stop strings"
    if request.presence_penalty or request.frequency_penalty:
        return "presence or frequency penalty"
    format_type = (document.get("response_format") or {}).get("type")
    if format_type in ("json_schema", "json_object", "structural_tag") or any(
        document.get(name) is not None
        for name in ("structured_outputs", "guided_json", "guided_regex", "guided_choice")
    ):
        return "structured output"
    if document.get("tools") and document.get("tool_choice") != "none":
        return "tool calls"
    return None


def with_token_ids(body: bytes) -> bytes:
    """``body`` (a JSON object) asking the engine for token ids, appended to the client's
    own bytes: one copy, never a serialisation of a long conversation."""
    head = body.rstrip()
    head = head[:-1].rstrip()  # the closing brace (the body was decoded as an object)
    return head + (b"" if head.endswith(b"{") else b",") + b'"return_token_ids":true}'


class TokenTrail:
    """The token ids of one stream, read off its whole events as they pass."""

    def __init__(self, *, shown: bool) -> None:
        self._shown = shown  # the client asked for token ids itself: they stay in the events
        self.prompt: list[int] | None = None
        self._added: list[bytes] = []  # each event's ids, as the engine wrote them
        self._through = 0  # how many of them end with text sent (the rest is held back)
        #: The first event's id, ``created`` and model: a continuation answers as them.
        self.first: dict[str, Any] | None = None

    def read(self, events: bytes) -> bytes:
        """Note the ids in ``events`` (whole SSE events); the events the client gets."""
        if self.first is None:
            events = self._read_first(events)
        kept: list[bytes] = []  # the events without their ids
        position = 0
        while (found := events.find(_TOKEN_IDS, position)) >= 0:
            end = events.index(b"]", found)
            self._added.append(events[found + len(_TOKEN_IDS) : end])
            start = events.rfind(_DATA, 0, found)
            if not any(marker in events[start:found] for marker in _NO_TEXT):
                self._through = len(self._added)
            kept.append(events[position:found])
            position = end + 1
        if self._shown or not kept:
            return events
        kept.append(events[position:])
        return b"".join(kept)

    def _read_first(self, events: bytes) -> bytes:
        """The first event: its identity and the prompt's ids (taken out of it unless shown)."""
        end = events.find(_EVENT_END)
        first, rest = events[: end + len(_EVENT_END)], events[end + len(_EVENT_END) :]
        if not first.startswith(_DATA + b"{"):
            return events
        document = orjson.loads(first[len(_DATA) :])
        self.first = {name: document.get(name) for name in ("id", "created", "model", "object")}
        prompt = document.pop("prompt_token_ids", None)
        for choice in document.get("choices") or ():  # completions put them in the choice
            prompt = choice.pop("prompt_token_ids", None) or prompt
        self.prompt = prompt if isinstance(prompt, list) else None
        if self._shown or _PROMPT_TOKEN_IDS not in first:
            return events
        return sse.event(orjson.dumps(document)) + rest

    @property
    def carried(self) -> list[int]:
        """The ids whose text has reached the client, in order."""
        if not self._through:
            return []
        return orjson.loads(b"[" + b",".join(self._added[: self._through]) + b"]")

    @property
    def ready(self) -> bool:
        """Whether enough is known to continue: the prompt's ids and the stream's identity."""
        return self.prompt is not None and self.first is not None


@dataclass
class Continuation:
    """One stream's move to another engine: the completion request that goes on from where it
    stopped, and its events in the original stream's shape."""

    request: GenerationRequest
    document: dict[str, Any]
    trail: TokenTrail
    #: The model's context length (the output limit of a request that set none).
    max_model_len: int | None
    carried: list[int] = field(default_factory=list)
    _pending: bytes = b""

    def __post_init__(self) -> None:
        self.carried = self.trail.carried

    @property
    def prompt_tokens(self) -> int:
        return len(self.trail.prompt or ())

    @property
    def remaining(self) -> int:
        """Output tokens still allowed."""
        limit = self.request.output_limit
        if limit is None:
            limit = (self.max_model_len or 0) - self.prompt_tokens
        return max(0, limit - len(self.carried))

    def body(self) -> bytes:
        """The continuation as a completion of the prompt's ids plus the ids already sent."""
        assert self.trail.prompt is not None
        continued: dict[str, Any] = {
            name: self.document[name] for name in _SAMPLING if name in self.document
        }
        min_tokens = self.document.get("min_tokens")
        if isinstance(min_tokens, int) and min_tokens > len(self.carried):
            continued["min_tokens"] = min_tokens - len(self.carried)
        continued |= {
            "model": self.request.model,
            "prompt": [*self.trail.prompt, *self.carried],
            "max_tokens": self.remaining,
            "stream": True,
            "stream_options": {"include_usage": True},
            "return_token_ids": True,
        }
        return orjson.dumps(continued)

    def feed(self, chunk: bytes) -> bytes:
        """The continuation's bytes as whole events of the original stream."""
        data = self._pending + chunk
        end = data.rfind(_EVENT_END)
        if end < 0:
            self._pending = data
            return b""
        end += len(_EVENT_END)
        ready, self._pending = data[:end], data[end:]
        return b"".join(self._event(event) for event in ready.split(_EVENT_END)[:-1])

    def flush(self) -> bytes:
        rest, self._pending = self._pending, b""
        return self._event(rest.rstrip()) if rest.strip() else b""

    def _event(self, event: bytes) -> bytes:
        if not event.startswith(_DATA + b"{"):
            return event + _EVENT_END  # [DONE]
        document = orjson.loads(event[len(_DATA) :])
        shaped: dict[str, Any] = {**(self.trail.first or {})}
        chat = isinstance(self.request, ChatCompletionRequest)
        shaped["choices"] = [
            self._choice(choice, chat) for choice in document.get("choices") or () if choice
        ]
        usage = document.get("usage")
        if isinstance(usage, dict):
            shaped["usage"] = self._usage(usage)
        return sse.event(orjson.dumps(shaped))

    @staticmethod
    def _choice(choice: dict[str, Any], chat: bool) -> dict[str, Any]:
        text = choice.get("text") or ""
        shaped: dict[str, Any] = {"index": choice.get("index", 0)}
        if chat:
            shaped["delta"] = {"content": text} if text else {}
            shaped["logprobs"] = None
        else:
            shaped["text"] = text
            shaped["logprobs"] = None
        shaped["finish_reason"] = choice.get("finish_reason")
        if choice.get("stop_reason") is not None:
            shaped["stop_reason"] = choice["stop_reason"]
        if choice.get("token_ids") is not None:
            shaped["token_ids"] = choice["token_ids"]  # last: TokenTrail finds them there
        return shaped

    def _usage(self, usage: dict[str, Any]) -> dict[str, Any]:
        """The continuation's usage as the whole stream's: its prompt held the carried tokens,
        which are output, so each token counts once."""
        prompt = self.prompt_tokens
        completion = len(self.carried) + int(usage.get("completion_tokens") or 0)
        shaped: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        details = usage.get("prompt_tokens_details")
        if isinstance(details, dict) and details.get("cached_tokens") is not None:
            shaped["prompt_tokens_details"] = {
                "cached_tokens": min(prompt, int(details["cached_tokens"]))
            }
        return shaped


@dataclass(frozen=True)
class Moved:
    """Where a stream goes on: the new engine's answer, its lease, and the reshaping."""

    upstream: UpstreamResponse
    lease: Lease
    continuation: Continuation
