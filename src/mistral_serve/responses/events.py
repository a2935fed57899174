"""A chat stream as the Responses API's events.

:class:`ResponseEvents` reads an engine's chat chunks one at a time and says what happened in
OpenAI's words: the response was created and is in progress; an output item (reasoning, a
message, a function call) was added; text or arguments arrived; each part and item is done;
and last, ``response.completed`` (or ``response.incomplete``, or ``response.failed`` with the
error). Every event carries its ``sequence_number``, counted from 0. It keeps the output as it
grows, so the finished response (and a background response's progress) is always at hand.
"""

from __future__ import annotations

from typing import Any

import orjson

from mistral_serve.responses.items import Item, new_id
from mistral_serve.responses.output import (
    INCOMPLETE,
    Frame,
    function_call,
    output_message,
    reasoning,
    reasoning_text,
    text_part,
    usage_of,
)

Event = dict[str, Any]


def sse(event: Event) -> bytes:
    """One event as OpenAI frames it: its type as the SSE event name, then its data."""
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


class ResponseEvents:
    """The events of one response, made from its chat stream."""

    def __init__(self, frame: Frame, *, status: str = "in_progress", sequence: int = 0) -> None:
        self.frame = frame
        self.output: list[Item] = []
        self.usage: dict[str, Any] | None = None
        self.finish_reason: str | None = None
        self.status = status
        self._sequence = sequence
        self._open: Item | None = None  # the item text or arguments are arriving for
        self._calls: dict[int, Item] = {}  # function calls by their chat index
        self._logprobs: list[Any] = []
        self._completed_at: int | None = None
        self._error: dict[str, Any] | None = None

    @property
    def sequence(self) -> int:
        """The next event's sequence number."""
        return self._sequence

    def _event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def snapshot(self, **extra: Any) -> dict[str, Any]:
        """The response as it stands."""
        return self.frame.response(
            self.status, [dict(item) for item in self.output], self.usage, **extra
        )

    # -- the start -----------------------------------------------------------------------------
    def created(self) -> Event:
        return self._event("response.created", response=self.snapshot())

    def queued(self) -> Event:
        return self._event("response.queued", response=self.snapshot())

    def in_progress(self) -> list[Event]:
        self.status = "in_progress"
        return [self._event("response.in_progress", response=self.snapshot())]

    # -- the chat stream -----------------------------------------------------------------------
    def chunk(self, chunk: dict[str, Any]) -> list[Event]:
        """The events one chat chunk makes (none for most of a usage-only chunk)."""
        events: list[Event] = []
        if isinstance(chunk.get("usage"), dict):
            self.usage = usage_of(chunk["usage"])
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # a response has one answer
            delta = choice.get("delta") or {}
            thought = reasoning_text(delta)
            if thought:
                events += self._reasoning(thought)
            content = delta.get("content")
            if content:
                logprobs = (choice.get("logprobs") or {}).get("content") or []
                events += self._text(content, logprobs)
            for call in delta.get("tool_calls") or ():
                events += self._call(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def _reasoning(self, text: str) -> list[Event]:
        events: list[Event] = []
        item = self._open
        if item is None or item["type"] != "reasoning":
            events += self._close()
            item = self._add(reasoning("", new_id("rs")), events)
            events.append(
                self._event(
                    "response.content_part.added",
                    **self._at(item),
                    part={"type": "reasoning_text", "text": ""},
                )
            )
        item["content"][0]["text"] += text
        events.append(self._event("response.reasoning_text.delta", **self._at(item), delta=text))
        return events

    def _text(self, text: str, logprobs: list[Any]) -> list[Event]:
        events: list[Event] = []
        item = self._open
        if item is None or item["type"] != "message":
            events += self._close()
            item = self._add(output_message("", "in_progress", new_id("msg")), events)
            item["content"] = []
            events.append(
                self._event("response.content_part.added", **self._at(item), part=text_part(""))
            )
            item["content"].append(text_part(""))
        item["content"][0]["text"] += text
        self._logprobs += logprobs
        events.append(
            self._event(
                "response.output_text.delta", **self._at(item), delta=text, logprobs=logprobs
            )
        )
        return events

    def _call(self, call: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        index = call.get("index", 0)
        function = call.get("function") or {}
        item = self._calls.get(index)
        if item is None:
            events += self._close()
            item = function_call(
                call.get("id") or new_id("call"), function.get("name") or "", "", "in_progress"
            )
            self._calls[index] = self._add(item, events)
        arguments = function.get("arguments")
        if arguments:
            item["arguments"] += arguments
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=self.output.index(item),
                    delta=arguments,
                )
            )
        return events

    def _add(self, item: Item, events: list[Event]) -> Item:
        self.output.append(item)
        self._open = item
        events.append(
            self._event(
                "response.output_item.added", output_index=len(self.output) - 1, item=dict(item)
            )
        )
        return item

    def _at(self, item: Item) -> dict[str, Any]:
        return {"item_id": item["id"], "output_index": self.output.index(item), "content_index": 0}

    def _close(self) -> list[Event]:
        """The open item is done: its text (or arguments), its part, then the item."""
        item, self._open = self._open, None
        if item is None:
            return []
        events: list[Event] = []
        at = self._at(item)
        if item["type"] == "message":
            part = item["content"][0]
            part["logprobs"] = self._logprobs
            item["status"] = "incomplete" if self.finish_reason in INCOMPLETE else "completed"
            events.append(
                self._event(
                    "response.output_text.done", **at, text=part["text"], logprobs=self._logprobs
                )
            )
            events.append(self._event("response.content_part.done", **at, part=dict(part)))
        elif item["type"] == "reasoning":
            part = item["content"][0]
            events.append(self._event("response.reasoning_text.done", **at, text=part["text"]))
            events.append(self._event("response.content_part.done", **at, part=dict(part)))
        else:
            item["status"] = "completed"
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=at["output_index"],
                    name=item["name"],
                    arguments=item["arguments"],
                )
            )
        events.append(
            self._event(
                "response.output_item.done", output_index=at["output_index"], item=dict(item)
            )
        )
        return events

    # -- the end -------------------------------------------------------------------------------
    def finished(self, completed_at: int) -> list[Event]:
        """The chat stream ended: every open item is done, then the response."""
        events = self._close_all()
        incomplete = INCOMPLETE.get(self.finish_reason or "")
        self.status = "incomplete" if incomplete else "completed"
        self._completed_at = completed_at
        kind = f"response.{self.status}"
        events.append(
            self._event(
                kind,
                response=self.snapshot(incomplete_reason=incomplete, completed_at=completed_at),
            )
        )
        return events

    def failed(self, error: dict[str, Any]) -> list[Event]:
        """The engine failed (or the response was cancelled) before the end: the response
        ends with ``error`` (``code``, ``message``)."""
        self._open = None
        self.status = "failed"
        self._error = error
        return [self._event("response.failed", response=self.snapshot(error=error))]

    def cancelled(self) -> list[Event]:
        self._open = None
        self.status = "cancelled"
        return [self._event("response.cancelled", response=self.snapshot())]

    def _close_all(self) -> list[Event]:
        events = self._close()
        for item in self._calls.values():  # calls stay open until the stream ends
            if item["status"] == "in_progress":
                self._open = item
                events += self._close()
        return events

    def final(self) -> dict[str, Any]:
        """The response as it ended (after :meth:`finished`, :meth:`failed` or
        :meth:`cancelled`)."""
        incomplete = INCOMPLETE.get(self.finish_reason or "")
        if self.status != "incomplete":
            incomplete = None
        return self.snapshot(
            incomplete_reason=incomplete, completed_at=self._completed_at, error=self._error
        )
