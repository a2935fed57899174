from __future__ import annotations

from mistral_serve.protocol.mistral import Capabilities


def test_a_card_names_every_capability_the_sdk_knows_true_only_where_given():
    card = Capabilities(completion_chat=True, completion_fim=True).to_card()
    assert {name for name, value in card.items() if value} == {"completion_chat", "completion_fim"}
    assert {"function_calling", "vision", "fine_tuning", "ocr", "audio"} <= card.keys()
