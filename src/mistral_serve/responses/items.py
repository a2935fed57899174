"""Response items: the input a client sends, made whole (each with its id and type), and the
items as chat messages for the engine.

Items are what the store keeps and what ``input_items`` lists; messages are only ever made to
send. A chain's context is its items in order: every earlier response's input and output,
then the new input.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from typing import Any

from mistral_serve.errors import InvalidRequestError

Item = dict[str, Any]

_ROLES = ("user", "assistant", "system", "developer")
#: What Mistral's tokenizers take as a tool call's id: nine letters or digits.
_MISTRAL_CALL_ID = re.compile(r"[A-Za-z0-9]{9}")
_ALPHANUMERIC = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def new_id(prefix: str) -> str:
    """An id as OpenAI's look: ``resp_``, ``msg_``, ``fc_``… and 32 hex digits."""
    return f"{prefix}_{secrets.token_hex(16)}"


def input_items(given: str | list[dict[str, Any]] | None, *, param: str = "input") -> list[Item]:
    """The request's ``input`` as whole items (a text is one user message); each item's
    problems are a 400 naming it (``input.3.call_id``)."""
    if given is None:
        return []
    if isinstance(given, str):
        return [message_item("user", [{"type": "input_text", "text": given}])]
    return [_item(item, f"{param}.{index}") for index, item in enumerate(given)]


def message_item(role: str, content: list[dict[str, Any]], item_id: str | None = None) -> Item:
    return {
        "type": "message",
        "id": item_id or new_id("msg"),
        "status": "completed",
        "role": role,
        "content": content,
    }


def _item(item: dict[str, Any], where: str) -> Item:
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        return _message(item, where)
    if kind == "function_call":
        return {
            "type": "function_call",
            "id": _optional_str(item, "id", where) or new_id("fc"),
            "call_id": required_str(item, "call_id", where),
            "name": required_str(item, "name", where),
            "arguments": required_str(item, "arguments", where),
            "status": "completed",
        }
    if kind == "function_call_output":
        output = item.get("output")
        if not isinstance(output, str):
            output = _text_of(_parts(output, f"{where}.output", "user"))
        return {
            "type": "function_call_output",
            "id": _optional_str(item, "id", where) or new_id("fco"),
            "call_id": required_str(item, "call_id", where),
            "output": output,
            "status": "completed",
        }
    if kind == "reasoning":  # an earlier answer's, sent back: kept, not read by the model again
        return {**item, "id": _optional_str(item, "id", where) or new_id("rs")}
    if kind is None:
        raise InvalidRequestError(f"{where}: an item needs a `type` (or a `role`).", param=where)
    raise InvalidRequestError(
        f"{where}.type: `{kind}` items are not served here: messages, function calls and "
        "function call outputs are (built-in tools and item references are OpenAI's).",
        param=f"{where}.type",
    )


def _message(item: dict[str, Any], where: str) -> Item:
    role = item.get("role")
    if role not in _ROLES:
        raise InvalidRequestError(
            f"{where}.role: must be one of {', '.join(_ROLES)}.", param=f"{where}.role"
        )
    content = item.get("content")
    if isinstance(content, str):
        part = "output_text" if role == "assistant" else "input_text"
        parts = [
            {"type": part, "text": content, **({"annotations": []} if role == "assistant" else {})}
        ]
    else:
        parts = _parts(content, f"{where}.content", role)
    return message_item(role, parts, _optional_str(item, "id", where))


_PART_TYPES = {"input_text", "output_text", "refusal", "input_image"}


def _parts(content: Any, where: str, role: str) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        raise InvalidRequestError(f"{where}: must be a text or a list of parts.", param=where)
    parts = []
    for index, part in enumerate(content):
        at = f"{where}.{index}"
        if not isinstance(part, dict) or part.get("type") not in _PART_TYPES:
            kind = part.get("type") if isinstance(part, dict) else None
            raise InvalidRequestError(
                f"{at}.type: `{kind}` parts are not served here: input_text, output_text, "
                "refusal and input_image (for vision models) are.",
                param=f"{at}.type",
            )
        if part["type"] == "input_image":
            if not isinstance(part.get("image_url"), str):
                raise InvalidRequestError(
                    f"{at}.image_url: an image is given by its URL (or a data: URL) here; "
                    "file ids are OpenAI's.",
                    param=f"{at}.image_url",
                )
        elif part["type"] == "refusal":
            required_str(part, "refusal", at)
        else:
            required_str(part, "text", at)
        parts.append(part)
    return parts


def required_str(item: dict[str, Any], field: str, where: str) -> str:
    """``item[field]`` as a string; otherwise a 400 naming ``where.field``."""
    value = item.get(field)
    if not isinstance(value, str):
        raise InvalidRequestError(
            f"{where}.{field}: a string is required.", param=f"{where}.{field}"
        )
    return value


def _optional_str(item: dict[str, Any], field: str, where: str) -> str | None:
    return required_str(item, field, where) if item.get(field) is not None else None


def _text_of(parts: Iterable[dict[str, Any]]) -> str:
    return "".join(part.get("text") or part.get("refusal") or "" for part in parts)


# -- items as chat messages ---------------------------------------------------------------------
def chat_messages(items: Iterable[Item], instructions: str | None = None) -> list[dict[str, Any]]:
    """The items as the chat messages an engine reads: ``instructions`` first as the system
    message; a developer message is a system one; consecutive function calls are one assistant
    turn's tool calls; reasoning is not read again."""
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    for item in items:
        kind = item["type"]
        if kind == "message":
            role = "system" if item["role"] == "developer" else item["role"]
            messages.append({"role": role, "content": _chat_content(item["content"])})
        elif kind == "function_call":
            call = {
                "id": engine_call_id(item["call_id"]),
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and last.get("tool_calls"):
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": engine_call_id(item["call_id"]),
                    "content": item["output"],
                }
            )
    return messages


def _chat_content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Text parts as one text (every Mistral tokenizer reads it); with images, chat's parts."""
    if not any(part["type"] == "input_image" for part in parts):
        return _text_of(parts)
    return [
        {"type": "image_url", "image_url": {"url": part["image_url"]}}
        if part["type"] == "input_image"
        else {"type": "text", "text": part.get("text") or part.get("refusal") or ""}
        for part in parts
    ]


def engine_call_id(call_id: str) -> str:
    """A tool call's id as Mistral's tokenizers take it (nine letters or digits): the
    engine's own ids are, and any other (an Agents SDK's ``call_…``) is hashed to one, the same
    for the call and its output."""
    if _MISTRAL_CALL_ID.fullmatch(call_id):
        return call_id
    number = int.from_bytes(hashlib.sha256(call_id.encode()).digest()[:8])
    digits = []
    for _ in range(9):
        number, digit = divmod(number, len(_ALPHANUMERIC))
        digits.append(_ALPHANUMERIC[digit])
    return "".join(digits)
