"""The demo model: deterministic, small, real tokenizers, and the v0.1 chat template."""

from __future__ import annotations

import hashlib
import json
from importlib import resources

import jinja2
import pytest

from mistral_serve.models import demo


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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


def demo_network(folder, variant):
    """The demo checkpoint in ``folder`` as transformers' own Mistral."""
    from safetensors.torch import load_file
    from transformers import MistralConfig, MistralForCausalLM

    shape = demo.SHAPES[variant]
    config = MistralConfig(
        vocab_size=shape.vocab_size,
        hidden_size=shape.dim,
        intermediate_size=shape.hidden_dim,
        num_hidden_layers=shape.n_layers,
        num_attention_heads=shape.n_heads,
        num_key_value_heads=shape.n_kv_heads,
        head_dim=shape.head_dim,
        rms_norm_eps=shape.norm_eps,
        rope_theta=shape.rope_theta,
        tie_word_embeddings=False,
    )
    model = MistralForCausalLM(config)
    weights_file = "consolidated.safetensors" if variant == "v3" else "model.safetensors"
    weights = load_file(str(folder / weights_file))
    if variant == "v3":
        weights = {demo._hf_name(name): tensor for name, tensor in weights.items()}
    model.load_state_dict({name: t.float() for name, t in weights.items()}, strict=True)
    return model


def run_demo(folder, variant, token_ids):
    """The demo network's logits for ``token_ids``, computed by transformers' own Mistral."""
    import torch

    with torch.no_grad():
        return demo_network(folder, variant)(torch.tensor(token_ids)).logits


@pytest.mark.parametrize("variant", ["v1", "v3"])  # the generative ones
def test_no_input_makes_a_control_token_likely(built, variant):
    """Whatever the input (control tokens included, as every chat prompt has), every control
    token's logit sits far below every other token's: free sampling never picks one."""
    import torch

    tokenizer = resources.files("mistral_common") / "data" / demo.TOKENIZER_FILES[variant]
    control = demo.control_token_ids(tokenizer)
    assert {0, 1, 2} <= set(control)  # <unk>, <s>, </s>
    if variant == "v3":
        assert len(control) > 700  # [INST], [TOOL_CALLS], [control_N] …
    generator = torch.Generator().manual_seed(0)
    vocab = demo.SHAPES[variant].vocab_size
    ids = torch.randint(0, vocab, (8, 96), generator=generator)
    ids[:, ::5] = torch.tensor(control)[
        torch.randint(0, len(control), (8, 20), generator=generator)
    ]
    logits = run_demo(built[variant], variant, ids.tolist())
    is_control = torch.zeros(vocab, dtype=torch.bool)
    is_control[control] = True
    highest_control = logits[..., is_control].max().item()
    lowest_other = logits[..., ~is_control].min().item()
    assert highest_control < lowest_other - 100, (highest_control, lowest_other)


def test_the_demo_adapter_is_a_peft_lora_that_changes_the_demo_but_not_its_rules(built, tmp_path):
    """PEFT itself loads the adapter onto the demo network: the logits change (greedy text
    differs from the base's) and control tokens stay suppressed."""
    import torch
    from peft import PeftModel

    adapter = demo.ensure_demo_adapter(tmp_path / "demo-lora")
    assert demo.ensure_demo_adapter(tmp_path / "demo-lora") == adapter  # built once
    ids = list(range(1000, 1040))
    base_logits = run_demo(built["v3"], "v3", [ids])
    shape = demo.SHAPES["v3"]
    model = demo_network(built["v3"], "v3")
    adapted = PeftModel.from_pretrained(model, str(adapter))
    with torch.no_grad():
        logits = adapted(torch.tensor([ids])).logits
    assert not torch.allclose(logits, base_logits, atol=1e-3)
    assert (logits.argmax(-1) != base_logits.argmax(-1)).float().mean() > 0.5
    tokenizer = resources.files("mistral_common") / "data" / demo.TOKENIZER_FILES["v3"]
    control = demo.control_token_ids(tokenizer)
    is_control = torch.zeros(shape.vocab_size, dtype=torch.bool)
    is_control[control] = True
    assert logits[..., is_control].max() < logits[..., ~is_control].min() - 50
