"""Answers in the shape the client's API promises, where the engine's differs.

The gateway forwards the engine's answer unchanged, with two exceptions from Mistral's API:

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
    def whole(self, answer: Document) -> Document:
        """A whole (non-streamed) answer."""
        ...

    def event(self, chunk: Document) -> Document:
        """One streamed chunk, in order."""
        ...


def reshaped(reshape: Reshape, payload: bytes) -> bytes:
    """A whole answer's bytes reshaped (unchanged if they are not a JSON object)."""
    try:
        answer = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload
    return orjson.dumps(reshape.whole(answer)) if isinstance(answer, dict) else payload


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
