"""Model cards as both SDKs read them (checked with the SDKs' own models)."""

from __future__ import annotations

from mistralai.client.models import BaseModelCard, ModelCapabilities, ModelList
from openai.types import Model

from mistral_serve.gateway.cards import CardMaker
from mistral_serve.protocol.mistral import Capabilities

# What vLLM 0.32 answers on /v1/models for one checkpoint served under two names.
VLLM_CARDS = [
    {
        "id": name,
        "object": "model",
        "created": 1764115200,
        "owned_by": "vllm",
        "root": "/models/Codestral-22B-v0.1",
        "parent": None,
        "max_model_len": 32768,
        "permission": [],
    }
    for name in ("codestral", "codestral-latest")
] + [{"id": "other", "object": "model", "root": "org/other", "max_model_len": 4096}]


def fake_capabilities(root: str) -> Capabilities:
    if "Codestral" in root:
        return Capabilities(completion_chat=True, completion_fim=True)
    return Capabilities(completion_chat=True)


def test_cards_keep_the_engines_fields_and_add_mistrals():
    cards = CardMaker(fake_capabilities).cards(VLLM_CARDS)
    first, second, other = cards
    assert first["root"] == "/models/Codestral-22B-v0.1" and first["owned_by"] == "vllm"
    assert first["type"] == "base" and first["max_context_length"] == 32768
    assert first["aliases"] == ["codestral-latest"] and second["aliases"] == ["codestral"]
    assert first["capabilities"]["completion_fim"] and not other["capabilities"]["completion_fim"]
    assert other["aliases"] == []


def test_both_sdks_accept_the_cards():
    cards = CardMaker(fake_capabilities).cards(VLLM_CARDS)
    listed = ModelList.model_validate({"object": "list", "data": cards})
    assert [card.id for card in listed.data] == ["codestral", "codestral-latest", "other"]
    card = BaseModelCard.model_validate(cards[0])
    assert card.capabilities == ModelCapabilities(completion_chat=True, completion_fim=True)
    assert card.aliases == ["codestral-latest"] and card.max_context_length == 32768
    assert set(cards[0]["capabilities"]) == set(ModelCapabilities.model_fields)
    assert Model.model_validate(cards[0]).id == "codestral"


def test_capabilities_are_read_once_per_root():
    seen: list[str] = []

    def counting(root: str) -> Capabilities:
        seen.append(root)
        return Capabilities()

    maker = CardMaker(counting)
    maker.cards(VLLM_CARDS)
    maker.cards(VLLM_CARDS)
    assert sorted(seen) == ["/models/Codestral-22B-v0.1", "org/other"]


def test_an_adapters_card_names_its_base_and_has_its_capabilities():
    adapter = {
        "id": "codestral-sql",
        "object": "model",
        "owned_by": "vllm",
        "root": "/adapters/sql",  # vLLM's: the adapter's folder, which the card does not show
        "parent": "codestral",
        "max_model_len": None,
    }
    cards = {
        card["id"]: card for card in CardMaker(fake_capabilities).cards([*VLLM_CARDS, adapter])
    }
    sql = cards["codestral-sql"]
    assert (sql["parent"], sql["root"]) == ("codestral", "codestral")
    assert sql["capabilities"] == cards["codestral"]["capabilities"]
    assert sql["max_context_length"] == 32768 and sql["aliases"] == []
    assert "codestral-sql" not in cards["codestral"]["aliases"]
    assert BaseModelCard.model_validate(sql).capabilities.completion_fim
