"""Model cards both SDKs accept: the engine's OpenAI card plus Mistral's fields.

vLLM's card (``id``, ``object``, ``created``, ``owned_by``, ``root``, ``max_model_len`` …)
satisfies the ``openai`` SDK. The ``mistralai`` SDK also needs ``type`` (``"base"``: a served
model, not a fine-tuning job's) and ``capabilities``, and reads ``max_context_length`` and
``aliases``. Capabilities come from the model the engine serves
(:func:`~mistral_serve.models.catalog.capabilities_of`, once per root); aliases are the other
names the same checkpoint is served under.

A LoRA adapter's card (vLLM lists it with its base as ``parent``) names its base as
``parent`` and ``root`` (not the adapter's folder), and has the base's capabilities and
context length: an adapter changes what a model says, not what it can do.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from mistral_serve.models.catalog import capabilities_of
from mistral_serve.protocol.mistral import Capabilities

Card = dict[str, Any]


class CardMaker:
    def __init__(self, capabilities: Callable[[str], Capabilities] = capabilities_of) -> None:
        # Reading a root's files happens once per root, not per /v1/models call.
        self._capabilities = functools.lru_cache(maxsize=256)(capabilities)

    def cards(self, engine_cards: list[Card]) -> list[Card]:
        """The engines' cards, each with Mistral's fields."""
        names: dict[str, list[str]] = defaultdict(list)
        by_id = {card["id"]: card for card in engine_cards}
        for card in engine_cards:
            names[_root(card)].append(card["id"])
        made = []
        for card in engine_cards:
            base = by_id.get(card.get("parent") or "")
            if base is not None:  # an adapter: its base's root, context and capabilities
                card = {**card, "root": base["id"], "max_model_len": base.get("max_model_len")}
                made.append(self._card(card, [card["id"]], _root(base)))
            else:
                made.append(self._card(card, names[_root(card)], _root(card)))
        return made

    def _card(self, card: Card, names: list[str], served_from: str) -> Card:
        capabilities = self._capabilities(served_from)
        context = card.get("max_model_len")
        mistral: Card = {
            "type": "base",
            "capabilities": capabilities.to_card(),
            "aliases": [name for name in names if name != card["id"]],
        }
        if isinstance(context, int):
            mistral["max_context_length"] = context
        return {**card, **mistral}


def _root(card: Card) -> str:
    return str(card.get("root") or card["id"])
