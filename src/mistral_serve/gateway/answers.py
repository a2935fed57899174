"""Reading an engine's answer for what telemetry and the timing headers need.

OpenAI's shapes: a chat or text completion (``choices[].message`` / ``choices[].text``), its
stream chunks (``choices[].delta`` / ``choices[].text``), and ``usage``. Anything missing or
oddly typed is skipped: the answer goes to the client unchanged whatever these find.
"""

from __future__ import annotations

from typing import Any

import orjson

from mistral_serve.telemetry.genai import Generation


def report_answer(generation: Generation, payload: bytes) -> None:
    """A whole (non-streamed) answer."""
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return
    if not isinstance(document, dict):
        return
    generation.response(document.get("id"), document.get("model"))
    report_choices(generation, document.get("choices"), delta=False)
    if isinstance(document.get("usage"), dict):
        report_usage(generation, document["usage"])


def report_choices(generation: Generation, choices: Any, *, delta: bool) -> None:
    if not isinstance(choices, list):
        return
    wants_text = generation.wants_output_text
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        index = choice.get("index", 0)
        if not isinstance(index, int):
            continue
        reason = choice.get("finish_reason")
        if isinstance(reason, str):
            generation.finish_reason(index, reason)
        if wants_text:
            text = _choice_text(choice, "delta" if delta else "message")
            if text:
                generation.output_text(index, text)


def report_usage(generation: Generation, usage: dict[str, Any]) -> None:
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    generation.usage(usage.get("prompt_tokens"), usage.get("completion_tokens"), cached)


def _choice_text(choice: dict[str, Any], key: str) -> str | None:
    if isinstance(choice.get("text"), str):  # text completions
        return choice["text"]
    message = choice.get(key)
    if isinstance(message, dict) and isinstance(message.get("content"), str):
        return message["content"]
    return None


def engine_message(body: bytes) -> str:
    """What an engine's error answer says: OpenAI's ``error.message``, vLLM's older top-level
    ``message``, or else the start of the body."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        document = None
    if isinstance(document, dict):
        error = document.get("error", document)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
    return body[:200].decode("utf-8", "replace") or "no details"
