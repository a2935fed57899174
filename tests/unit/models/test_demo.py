"""The demo model: deterministic, small, real tokenizers, and the v0.1 chat template."""

from __future__ import annotations

import hashlib
import json

import jinja2
import pytest

from mistral_serve.models import demo


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    return {variant: demo.ensure_demo_model(root / variant, variant) for variant in demo.VARIANTS}


def test_v3_is_a_small_mistral_format_checkpoint(built):
    folder = built["v3"]
    params = json.loads((folder / "params.json").read_text())
    assert params["vocab_size"] == 32768
    assert (folder / "tokenizer.model.v3").exists()
    size = sum(f.stat().st_size for f in folder.iterdir())
    assert size < 10 * 1024 * 1024, size


def test_v1_is_a_small_hf_checkpoint_with_the_v01_tokenizer(built):
    folder = built["v1"]
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["MistralForCausalLM"]
    assert config["vocab_size"] == 32000
    assert (folder / "tokenizer.json").stat().st_size > 1_000_000  # a real, non-empty tokenizer
    size = sum(f.stat().st_size for f in folder.iterdir())
    assert size < 12 * 1024 * 1024, size


def test_builds_are_deterministic(built, tmp_path):
    again = demo.ensure_demo_model(tmp_path / "again", "v3")
    assert digest(again / "consolidated.safetensors") == digest(
        built["v3"] / "consolidated.safetensors"
    )


def test_an_existing_build_is_reused(built):
    weights = built["v3"] / "consolidated.safetensors"
    before = weights.stat().st_mtime_ns
    demo.ensure_demo_model(built["v3"], "v3")
    assert weights.stat().st_mtime_ns == before


def test_a_stale_or_partial_build_is_replaced(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "junk").write_text("half-written")
    demo.ensure_demo_model(folder, "v3")
    assert not (folder / "junk").exists()
    assert demo.is_built(folder, "v3")


def test_v1_tokenizer_is_mistral_7b_v01s(built):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(built["v1"]))
    assert len(tokenizer) == 32000
    assert tokenizer("Hello world").input_ids == [1, 22557, 1526]


def render(messages) -> str:
    env = jinja2.Environment()

    def raise_exception(message):
        raise jinja2.TemplateError(message)

    env.globals["raise_exception"] = raise_exception
    template = env.from_string(demo.V1_CHAT_TEMPLATE)
    return template.render(messages=messages, bos_token="<s>", eos_token="</s>")


def test_v1_template_folds_the_system_message_into_the_first_user_turn():
    prompt = render(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Bye"},
        ]
    )
    assert prompt == "<s> [INST] Be brief.\n\nHi [/INST] Hello</s> [INST] Bye [/INST]"


def test_v1_template_requires_alternating_roles():
    with pytest.raises(jinja2.TemplateError, match="roles must alternate"):
        render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    with pytest.raises(jinja2.TemplateError, match="Only user and assistant roles"):
        render([{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}])


def test_unknown_variant_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown demo variant"):
        demo.write_demo_model(tmp_path, "v9")  # type: ignore[arg-type]
