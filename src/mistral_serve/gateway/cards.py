"""Model cards both SDKs accept: the engine's OpenAI card plus Mistral's fields.

vLLM's card (``id``, ``object``, ``created``, ``owned_by``, ``root``, ``max_model_len`` …)
satisfies the ``openai`` SDK. The ``mistralai`` SDK also needs ``type`` (``"base"``: a served
model, not a fine-tuning job's) and ``capabilities``, and reads ``max_context_length`` and
``aliases``. Capabilities come from the model the engine serves
(:func:`~mistral_serve.models.catalog.capabilities_of`, once per root); aliases are the other
names the same checkpoint is served under.
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
        for card in engine_cards:
            names[_root(card)].append(card["id"])
        return [self._card(card, names[_root(card)]) for card in engine_cards]

    def _card(self, card: Card, names: list[str]) -> Card:
        capabilities = self._capabilities(_root(card))
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
