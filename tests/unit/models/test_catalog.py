"""Capabilities are true only where the served model has them: its family, and the way it is
served (Mistral's tokenizer for tool calls; FIM tokens in the tokenizer)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mistral_serve.models.catalog import (
    DEMO,
    capabilities_of,
    family_of,
    is_mistral_format_repo,
)
from mistral_serve.protocol.mistral import Capabilities

CHAT = Capabilities(completion_chat=True)
TOOLS = Capabilities(completion_chat=True, function_calling=True)


@pytest.mark.parametrize(
    ("root", "expected"),
    [
        ("mistralai/Mistral-7B-Instruct-v0.1", CHAT),
        ("mistralai/Mistral-7B-Instruct-v0.3", TOOLS),
        ("mistralai/Mistral-7B-v0.3", Capabilities()),  # a base model has no chat format
        ("mistralai/Mistral-Nemo-Base-2407", Capabilities()),
        ("mistralai/Mistral-Nemo-Instruct-2407", TOOLS),
        ("mistralai/Mixtral-8x7B-Instruct-v0.1", CHAT),
        # Served in Hugging Face format, so without vLLM's mistral tool parser.
        ("mistralai/Mixtral-8x22B-Instruct-v0.1", CHAT),
        ("mistralai/Codestral-22B-v0.1", Capabilities(completion_chat=True, completion_fim=True)),
        ("mistralai/Mistral-Large-Instruct-2411", TOOLS),
        (
            "mistralai/Pixtral-12B-2409",
            Capabilities(completion_chat=True, function_calling=True, vision=True),
        ),
        (
            "mistralai/Mistral-Small-3.1-24B-Instruct-2503",
            Capabilities(completion_chat=True, function_calling=True, vision=True),
        ),
        ("mistralai/Mistral-Small-Instruct-2409", TOOLS),
        ("someone/finetuned-llama", CHAT),
    ],
)
def test_published_models_by_name(root, expected):
    assert capabilities_of(root) == expected


def test_the_first_matching_family_wins():
    assert family_of("Mistral-Small-3.1-24B-Instruct-2503").name == "Mistral Small 3.1+"
    assert family_of("Mistral-Small-24B-Instruct-2501").name == "Mistral Small 3"
    assert family_of("mistralai/Mistral-7B-Instruct-v0.3").name == "Mistral 7B v0.3"
    assert family_of("intfloat/e5-mistral-7b-instruct").name == "Mistral 7B embeddings"
    assert family_of("llama") is None


def test_one_table_says_what_a_family_can_do_and_how_big_it_is():
    """Every family whose weights are published can be sized by name: capabilities and
    shapes cannot drift apart (Devstral and Magistral could not be planned before)."""
    for name in ("Devstral-Small-2505", "Magistral-Small-2506", "Mistral-Small-24B-Instruct-2501"):
        family = family_of(name)
        assert family.architecture is not None and family.capabilities.function_calling
    assert family_of("Magistral-Small-2506").capabilities.reasoning
    assert family_of("Mistral-Small-24B-Instruct-2501").architecture.max_context == 32768
    assert family_of("Mistral-Medium-3").architecture is None  # not published


@pytest.mark.parametrize(
    ("repo", "mistral_format"),
    [
        ("mistralai/Mistral-7B-Instruct-v0.3", True),
        ("mistralai/Mistral-7B-v0.3", True),
        ("mistralai/Mistral-7B-Instruct-v0.1", False),
        ("mistralai/Mixtral-8x7B-Instruct-v0.1", False),
        ("mistralai/Mixtral-8x22B-Instruct-v0.1", False),
        ("mistralai/Mixtral-8x22B-Instruct-v0.3", True),
        ("mistralai/Devstral-Small-2505", True),
        ("someone/Mistral-7B-Instruct-v0.3", False),  # only official repos are known
    ],
)
def test_which_official_repos_ship_mistrals_format(repo, mistral_format):
    assert is_mistral_format_repo(repo) is mistral_format


def test_an_embedding_model_has_no_chat_capability():
    assert capabilities_of("intfloat/e5-mistral-7b-instruct") == Capabilities()


def test_the_demo_models_say_what_they_are(built):
    for variant, folder in built.items():
        assert capabilities_of(str(folder)) == DEMO[variant]
    assert DEMO["v3"].completion_fim and DEMO["v3"].function_calling
    assert not DEMO["v1"].function_calling and not DEMO["v1"].completion_fim


def mistral_folder(folder: Path, tokenizer: str) -> Path:
    folder.mkdir()
    for name in ("params.json", "consolidated.safetensors", tokenizer):
        (folder / name).write_text("{}")
    return folder


def test_a_local_codestral_has_fim_only_with_a_fim_tokenizer(tmp_path: Path):
    with_fim = mistral_folder(tmp_path / "Codestral-22B-v0.1", "tokenizer.model.v3")
    assert capabilities_of(str(with_fim)).completion_fim
    tekken = mistral_folder(tmp_path / "codestral-2501", "tekken.json")
    assert capabilities_of(str(tekken)).completion_fim
    old = mistral_folder(tmp_path / "codestral-old", "tokenizer.model.v1")
    assert not capabilities_of(str(old)).completion_fim
    hf_format = tmp_path / "Codestral-hf"
    hf_format.mkdir()
    assert not capabilities_of(str(hf_format)).completion_fim


def test_a_local_folder_gets_tool_calls_only_in_mistral_format(tmp_path: Path):
    mistral = mistral_folder(tmp_path / "Mistral-7B-Instruct-v0.3", "tokenizer.model.v3")
    assert capabilities_of(str(mistral)) == TOOLS
    hf_format = tmp_path / "hf" / "Mistral-7B-Instruct-v0.3"
    hf_format.mkdir(parents=True)
    assert capabilities_of(str(hf_format)) == CHAT
