"""Answers in the shape the client's API promises, where the engine's differs.

The gateway forwards the engine's answer unchanged, except to a request in Mistral's dialect
(:class:`MistralAnswer`), whose answer is Mistral's:

- its stream carries its ``usage`` on the last chunk, the one with the finish reason, as
  Mistral's API does, never on a chunk of its own without choices (Mistral's own SDK loop reads
  ``chunk.data.choices[0]`` on every chunk);
- fill-in-the-middle (:class:`ChatFromCompletion`): the engine answers a text completion;
  Mistral's API answers a chat completion whose ``message.content`` (streamed:
  ``delta.content``) is the text, with an explicit ``finish_reason`` on every chunk;
- a continued assistant message (``prefix: true``, :class:`Prefixed`): vLLM answers with what
  the model added; Mistral's API puts the prefix in front of it (its documentation reads the
  continuation as ``content[len(prefix):]``).

Only these requests pay for parsing and re-encoding their answer.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

Document = dict[str, Any]


class Reshape(Protocol):
    """One change to an answer's shape, chunk by chunk."""

    def whole(self, answer: Document) -> Document:
        """A whole (non-streamed) answer."""
        ...

    def event(self, chunk: Document) -> Document:
        """One streamed chunk, in order."""
        ...


class MistralAnswer:
    """The answer to a request in Mistral's dialect: ``shape``'s changes (if any) to each
    chunk, and the stream's usage on its last finishing chunk.

    A chunk with a finish reason is held back until the next event says whether the usage
    follows it (vLLM sends the usage alone, right after the last finish reason): then the two
    leave as one chunk. Anything else lets the held chunk go first, unchanged."""

    def __init__(self, shape: Reshape | None = None) -> None:
        self._shape = shape
        self._held: Document | None = None

    @property
    def reshapes_whole(self) -> bool:
        """Whether a whole answer changes at all (else its bytes go as the engine sent them)."""
        return self._shape is not None

    def whole(self, answer: Document) -> Document:
        return self._shape.whole(answer) if self._shape is not None else answer

    def events(self, chunk: Document) -> list[Document]:
        """The chunks to send for one streamed chunk of the engine's, in order."""
        usage = chunk.get("usage")
        if isinstance(usage, dict) and not _choices(chunk) and self._held is not None:
            held, self._held = self._held, None
            return [{**held, "usage": usage}]
        shaped = self._shape.event(chunk) if self._shape is not None else chunk
        sent = self.flush()
        if any(choice.get("finish_reason") is not None for choice in _choices(shaped)):
            self._held = shaped
        else:
            sent.append(shaped)
        return sent

    def flush(self) -> list[Document]:
        """What is held back, at the stream's end (or before an event that is not a chunk)."""
        held, self._held = self._held, None
        return [held] if held is not None else []


def reshaped(answer: MistralAnswer, payload: bytes) -> bytes:
    """A whole answer's bytes reshaped (unchanged if they are not a JSON object)."""
    if not answer.reshapes_whole:
        return payload
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload
    return orjson.dumps(answer.whole(document)) if isinstance(document, dict) else payload


def _choices(document: Document) -> list[Document]:
    choices = document.get("choices")
    return (
        [choice for choice in choices if isinstance(choice, dict)]
        if isinstance(choices, list)
        else []
    )


class ChatFromCompletion:
    """A text completion as a chat completion (the first chunk of each choice says the role)."""

    def __init__(self) -> None:
        self._started: set[int] = set()

    def whole(self, answer: Document) -> Document:
        choices = [
            {
                "index": choice.get("index", 0),
                "message": {"role": "assistant", "content": choice.get("text"), "tool_calls": None},
                "finish_reason": choice.get("finish_reason"),
            }
            for choice in _choices(answer)
        ]
        return {**answer, "object": "chat.completion", "choices": choices}

    def event(self, chunk: Document) -> Document:
        choices = []
        for choice in _choices(chunk):
            index = choice.get("index", 0)
            delta: Document = {"content": choice.get("text") or ""}
            if index not in self._started:
                self._started.add(index)
                delta = {"role": "assistant", **delta}
            choices.append(
                {"index": index, "delta": delta, "finish_reason": choice.get("finish_reason")}
            )
        return {**chunk, "object": "chat.completion.chunk", "choices": choices}


class Prefixed:
    """A continued assistant message, answered with the prefix in front."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._started: set[int] = set()

    def whole(self, answer: Document) -> Document:
        for choice in _choices(answer):
            message = choice.get("message")
            if isinstance(message, dict):
                message["content"] = self._prefix + (message.get("content") or "")
        return answer

    def event(self, chunk: Document) -> Document:
        for choice in _choices(chunk):
            index, delta = choice.get("index", 0), choice.get("delta")
            if index in self._started or not isinstance(delta, dict):
                continue
            self._started.add(index)
            delta["content"] = self._prefix + (delta.get("content") or "")
        return chunk
