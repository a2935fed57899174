"""What a checkpoint's files say (its shape, format and kind), and what the catalog says of
a model known only by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mistral_serve.models.catalog import UnknownModelError, architecture_of, kind_of
from mistral_serve.models.checkpoint import read_checkpoint

#: Mistral-7B-Instruct-v0.3's config.json (the fields the planner reads).
MISTRAL_7B_CONFIG = {
    "architectures": ["MistralForCausalLM"],
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "max_position_embeddings": 32768,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "tie_word_embeddings": False,
    "vocab_size": 32768,
}


def test_a_hugging_face_folder_is_sized_from_its_config(tmp_path: Path):
    folder = tmp_path / "Mistral-7B-Instruct-v0.3"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(MISTRAL_7B_CONFIG))
    architecture = architecture_of(str(folder))
    assert architecture.parameters == pytest.approx(7.248e9, rel=0.001)  # published: 7.25 B
    assert architecture.kv_bytes_per_token() == 131072


def test_a_mixture_counts_every_expert(tmp_path: Path):
    folder = tmp_path / "mixtral"
    folder.mkdir()
    config = {**MISTRAL_7B_CONFIG, "num_local_experts": 8, "vocab_size": 32000}
    (folder / "config.json").write_text(json.dumps(config))
    assert architecture_of(str(folder)).parameters == pytest.approx(46.70e9, rel=0.001)


def test_a_mistral_format_folder_is_sized_from_params_json(built):
    demo = architecture_of(str(built["v3"]))  # the demo checkpoint writes params.json
    params = json.loads((built["v3"] / "params.json").read_text())
    assert (demo.layers, demo.kv_heads, demo.head_dim) == (
        params["n_layers"],
        params["n_kv_heads"],
        params["head_dim"],
    )


def test_a_model_in_the_hugging_face_cache(tmp_path: Path):
    snapshot = tmp_path / "models--acme--tiny" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({**MISTRAL_7B_CONFIG, "num_hidden_layers": 2}))
    assert architecture_of("acme/tiny", hf_cache=tmp_path).layers == 2


def test_published_models_are_known_by_name_and_others_are_refused(tmp_path: Path):
    assert architecture_of("mixtral-8x22b", hf_cache=tmp_path).experts == 8
    assert architecture_of("mistralai/Pixtral-Large-Instruct-2411", hf_cache=tmp_path).layers == 88
    with pytest.raises(UnknownModelError, match="not one of Mistral's published models"):
        architecture_of("acme/unknown", hf_cache=tmp_path)


def test_an_embedding_checkpoint_says_so(tmp_path: Path):
    headless = tmp_path / "my-retriever"  # a name no family knows: its files decide
    headless.mkdir()
    (headless / "config.json").write_text(
        json.dumps({**MISTRAL_7B_CONFIG, "architectures": ["MistralModel"]})
    )
    checkpoint = read_checkpoint(headless)
    assert checkpoint.kind == "embed"
    # no language-model head: one vocabulary matrix fewer than the chat model's
    assert checkpoint.architecture.parameters == pytest.approx(7.11e9, rel=0.001)
    pooled = tmp_path / "pooled"
    pooled.mkdir()
    (pooled / "config.json").write_text(json.dumps(MISTRAL_7B_CONFIG))
    (pooled / "modules.json").write_text("[]")  # sentence-transformers' pipeline
    assert read_checkpoint(pooled).kind == "embed"


def test_a_generative_checkpoint_and_the_demo_say_so(tmp_path: Path, built):
    folder = tmp_path / "chat"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(MISTRAL_7B_CONFIG))
    assert read_checkpoint(folder).kind == "generate"
    for variant, demo in built.items():
        checkpoint = read_checkpoint(demo)
        kind = "embed" if variant == "embed" else "generate"
        assert (checkpoint.kind, checkpoint.demo_variant) == (kind, variant)
        assert checkpoint.mistral_format == (variant == "v3")


def test_a_model_known_only_by_name_has_its_familys_kind(tmp_path: Path):
    assert kind_of("intfloat/e5-mistral-7b-instruct", tmp_path) == "embed"
    assert kind_of("Salesforce/SFR-Embedding-Mistral", tmp_path) == "embed"
    assert kind_of("mistralai/Mistral-7B-Instruct-v0.3", tmp_path) == "generate"
    assert kind_of("acme/unknown", tmp_path) == "generate"
