"""``truncation: auto``: a context longer than the model's is cut at its oldest items.

The check is cheap when it can be: a text's token count is at most its byte count (every
token of Mistral's tokenizers stands for at least one byte), plus a few control tokens per
message, so a context whose bytes fit needs no counting. Otherwise the engine counts it (its
``/tokenize``, the model's own chat format and tools included), and the oldest messages after
the instructions go, a function call with the answers to it, until it fits with room for the
answer (``max_tokens``, or one token).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from mistral_serve.errors import InvalidRequestError

#: A bound on the control tokens the chat format adds around one message.
_PER_MESSAGE = 8
#: How many times the context is counted before giving up on fitting it.
_ROUNDS = 8

Counter = Callable[[dict[str, Any]], Awaitable[int]]


def surely_fits(document: dict[str, Any], budget: int) -> bool:
    """Whether the request's prompt is surely within ``budget`` tokens, without counting."""
    size = len(orjson.dumps(document["messages"])) + len(orjson.dumps(document.get("tools") or []))
    return size + _PER_MESSAGE * len(document["messages"]) <= budget


def budget_of(document: dict[str, Any], context: int) -> int:
    return context - (document.get("max_tokens") or 1)


async def fitted(
    document: dict[str, Any], context: int, count: Counter, *, keep_first: bool
) -> list[dict[str, Any]]:
    """The request's messages, cut at the oldest (after the first when ``keep_first``: the
    instructions) until they fit the model's ``context`` with room for the answer."""
    budget = budget_of(document, context)
    messages = document["messages"]
    if surely_fits(document, budget):
        return messages
    head, body = (messages[:1], messages[1:]) if keep_first else ([], messages)
    for _ in range(_ROUNDS):
        tokens = await count({**document, "messages": head + body})
        if tokens <= budget:
            return head + body
        if len(body) <= 1:
            break
        # Drop about the share of the messages that is over, at least one turn.
        over = (tokens - budget) / tokens
        body = _without_oldest(body, max(1, round(len(body) * over)))
    raise InvalidRequestError(
        f"input: longer than the model's context ({context} tokens, {budget} for the input) "
        "even after dropping every earlier item.",
        param="input",
    )


def _without_oldest(messages: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """``messages`` without the oldest ``count`` (and without tool answers whose call went,
    which no chat format takes alone), keeping the last one."""
    rest = messages[min(count, len(messages) - 1) :]
    while len(rest) > 1 and rest[0].get("role") == "tool":
        rest = rest[1:]
    return rest
