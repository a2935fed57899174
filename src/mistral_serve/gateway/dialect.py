"""Mistral's chat dialect, spoken to engines that know OpenAI's (vLLM).

The official ``mistralai`` SDK posts to /v1/chat/completions as the ``openai`` SDK does, with
fields and habits of its own. :func:`translate` returns the body an engine understands (and
how to reshape its answer), or None when there is nothing to translate (then the client's bytes
go as they are):

- ``random_seed`` is vLLM's ``seed`` (both at once is a 400: which one was meant?);
- ``safe_prompt: true`` puts Mistral's guardrail prompt (:data:`SAFE_PROMPT`) before the
  system prompt, joined as the model's own format joins system messages (a blank line), or
  as the system prompt when there is none;
- ``tool_choice: "any"`` is ``"required"``;
- a last assistant message with ``prefix: true`` is continued, not answered
  (``continue_final_message``), and the answer starts with that prefix, as Mistral's does
  (:class:`~mistral_serve.gateway.reshape.Prefixed`); ``prefix: false``, which the SDK puts on
  every assistant message, is dropped, and ``prefix: true`` anywhere else is a 400;
- the SDK's tool calls: ``function.arguments`` given as a JSON object becomes JSON text, and
  an id of ``"null"`` (its default) becomes a real one, given in order to the tool answers
  that say ``"null"`` too (Mistral's tokenizers accept only 9 letters or digits);
- fields with no meaning to an engine (``prompt_mode``, ``guardrails``, ``prediction``) are
  dropped; ``metadata`` and ``parallel_tool_calls`` go on (vLLM reads or ignores them);
- a stream ends as Mistral's do, its usage on the last chunk
  (:class:`~mistral_serve.gateway.reshape.MistralAnswer`), so the engine is asked for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from mistral_serve.errors import InvalidRequestError
from mistral_serve.gateway.reshape import MistralAnswer, Prefixed, Reshape
from mistral_serve.protocol.mistral import SAFE_PROMPT
from mistral_serve.protocol.openai import with_usage_requested

#: Accepted and not sent: they mean nothing to a self-hosted engine.
IGNORED_FIELDS = ("prompt_mode", "guardrails", "prediction")
_TOP_LEVEL = ("random_seed", "safe_prompt", *IGNORED_FIELDS)


@dataclass(frozen=True)
class Translation:
    document: dict[str, Any]  # the request as the engine takes it
    #: How its answer becomes Mistral's; None: the engine's answer goes as it is.
    answer: MistralAnswer | None

    @classmethod
    def of(cls, engine: dict[str, Any], shape: Reshape | None = None) -> Translation:
        """The engine's request, asking for a stream's usage (Mistral's streams end with it),
        and the answer with ``shape``'s changes."""
        if engine.get("stream"):
            engine = with_usage_requested(engine)
        return cls(engine, MistralAnswer(shape))


def translate(document: dict[str, Any]) -> Translation | None:
    """The request ``document`` as an engine takes it; None when it already is."""
    if not _needs_translation(document):
        return None
    engine = {key: value for key, value in document.items() if key not in _TOP_LEVEL}
    seed_from_random_seed(document, engine)
    if engine.get("tool_choice") == "any":
        engine["tool_choice"] = "required"
    messages, continued = _messages(document["messages"], engine)
    prefix = _text(messages[-1].get("content")) if continued else None
    if document.get("safe_prompt"):
        messages = _with_safe_prompt(messages)
    engine["messages"] = messages
    return Translation.of(engine, Prefixed(prefix) if prefix else None)


def seed_from_random_seed(document: dict[str, Any], engine: dict[str, Any]) -> None:
    """Mistral's ``random_seed`` as the engine's ``seed`` (both at once is a 400)."""
    if document.get("random_seed") is None:
        return
    if document.get("seed") is not None:
        raise InvalidRequestError(
            "Set `random_seed` (Mistral) or `seed` (OpenAI), not both.", param="random_seed"
        )
    engine["seed"] = document["random_seed"]


def _text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def _needs_translation(document: dict[str, Any]) -> bool:
    if any(key in document for key in _TOP_LEVEL) or document.get("tool_choice") == "any":
        return True
    for message in document["messages"]:
        if "prefix" in message:
            return True
        for call in message.get("tool_calls") or ():
            if isinstance(call, dict) and _odd_tool_call(call):
                return True
    return False


def _odd_tool_call(call: dict[str, Any]) -> bool:
    function = call.get("function")
    arguments = function.get("arguments") if isinstance(function, dict) else None
    return call.get("id") == "null" or isinstance(arguments, dict)


def _messages(
    messages: list[dict[str, Any]], engine: dict[str, Any]
) -> tuple[list[dict[str, Any]], bool]:
    """The messages without the SDK's habits, and whether the last one is continued (it had
    ``prefix: true``)."""
    translated = []
    continued = False
    null_ids = _NullIds()
    last = len(messages) - 1
    for index, message in enumerate(messages):
        message = dict(message)
        if message.pop("prefix", False):
            if index != last or message.get("role") != "assistant":
                raise InvalidRequestError(
                    "`prefix: true` is allowed only on the last message, from the assistant.",
                    param=f"messages.{index}.prefix",
                )
            engine["continue_final_message"] = True
            engine["add_generation_prompt"] = False
            continued = True
        if message.get("tool_calls"):
            message["tool_calls"] = [null_ids.call(call) for call in message["tool_calls"]]
        if message.get("role") == "tool" and message.get("tool_call_id") == "null":
            message["tool_call_id"] = null_ids.answer()
        translated.append(message)
    return translated, continued


class _NullIds:
    """Real ids for the tool calls the SDK sent with id "null", handed in the same order to
    the tool answers that refer to "null"."""

    def __init__(self) -> None:
        self._made = 0
        self._unanswered: list[str] = []

    def call(self, call: Any) -> Any:
        if not isinstance(call, dict):
            return call  # the engine judges what is not a tool call
        call = dict(call)
        if call.get("id") == "null":
            self._made += 1
            call["id"] = f"{self._made:09d}"
            self._unanswered.append(call["id"])
        function = call.get("function")
        if isinstance(function, dict) and isinstance(function.get("arguments"), dict):
            call["function"] = {
                **function,
                "arguments": orjson.dumps(function["arguments"]).decode(),
            }
        return call

    def answer(self) -> str:
        return self._unanswered.pop(0) if self._unanswered else "null"


def _with_safe_prompt(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    first = messages[0] if messages else {}
    if first.get("role") != "system":
        return [{"role": "system", "content": SAFE_PROMPT}, *messages]
    content = first.get("content")
    if isinstance(content, list):  # content parts: the guardrail is the first text part
        merged: Any = [{"type": "text", "text": SAFE_PROMPT + "\n\n"}, *content]
    else:
        merged = f"{SAFE_PROMPT}\n\n{content}" if content else SAFE_PROMPT
    return [{**first, "content": merged}, *messages[1:]]
