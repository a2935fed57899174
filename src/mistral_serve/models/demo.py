"""The built-in demo model: a tiny, randomly initialised Mistral with the REAL Mistral tokenizers.

No machine here can download weights, so tests and first runs serve this instead. The weights
are random (output is gibberish) but everything around them is real: the tokenizer, the chat
template, token counts, stop handling, seeds, streaming, tools and structured output.

Three variants:
- ``v3`` (MODEL_ID=demo): Mistral format (``params.json`` + ``consolidated.safetensors`` +
  ``tokenizer.model.v3``), served with vLLM's mistral tokenizer/config/load formats, which is
  the production path for Mistral checkpoints and supports tool calls.
- ``v1`` (MODEL_ID=demo-v1): Hugging Face format with Mistral-7B-Instruct-v0.1's tokenizer
  (32000 tokens) and a chat template that behaves like that model's.
- ``embed`` (demo-embed): an embedding model, as e5-mistral is one: the same network without
  its output layer (``MistralModel``), in Hugging Face format with the v1 tokenizer, and
  sentence-transformers' files saying how vLLM pools it (the last token's hidden state,
  normalized).

Random weights alone make a poor stand-in: an untrained output layer samples the tokenizer's
control tokens (``[TOOL_CALLS]``, ``[INST]``, ``</s>`` …) as often as words, so replies come back
empty and vLLM's tool parser fails on streams. The weights therefore carry one trained-in
rule, "never a control token" (see :func:`_suppress_control_tokens`); guided decoding (forced
tool calls, json_schema) still reaches them, because it masks every other token.

Weights come from numpy's PCG64 with a fixed seed, so the same variant is bit-identical on
every machine.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

Variant = Literal["v1", "v3", "embed"]
VARIANTS: tuple[Variant, ...] = ("v1", "v3", "embed")

#: Bump when the files written change, so cached copies are rebuilt.
BUILD_VERSION = 3  # 2: control tokens suppressed in the weights; 3: the embedding variant
_MARKER = ".mistral-serve-demo.json"
_SEED = 20231027

#: The residual dimension that carries the "not a control token" rule, its constant value, and
#: how strongly control tokens' output rows point against it. After the final norm the anchor
#: reads a few units (it holds about half of the residual's energy), so a control token's logit
#: sits hundreds below zero while every other logit stays within about ±1
#: (tests/unit/models/test_demo.py runs the network to check).
_ANCHOR_DIM = 0
_SUPPRESSION = 100.0

# Mistral-7B-Instruct-v0.1's chat template (the current one on its model card): an optional
# leading system message is folded into the first user turn; roles must alternate.
V1_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content'] %}"
    "{%- set loop_messages = messages[1:] %}"
    "{%- else %}"
    "{%- set loop_messages = messages %}"
    "{%- endif %}"
    "{{- bos_token }}"
    "{%- for message in loop_messages %}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{- raise_exception('After the optional system message, conversation roles must alternate "
    "user/assistant/user/assistant/...') }}"
    "{%- endif %}"
    "{%- if message['role'] == 'user' %}"
    "{%- if loop.first and system_message is defined %}"
    "{{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}"
    "{%- else %}"
    "{{- ' [INST] ' + message['content'] + ' [/INST]' }}"
    "{%- endif %}"
    "{%- elif message['role'] == 'assistant' %}"
    "{{- ' ' + message['content'] + eos_token }}"
    "{%- else %}"
    "{{- raise_exception('Only user and assistant roles are supported, with the exception "
    "of an initial optional system message!') }}"
    "{%- endif %}"
    "{%- endfor %}"
)


@dataclass(frozen=True)
class Shape:
    """Dimensions of the demo network: small enough to be a few MB, shaped like Mistral."""

    vocab_size: int
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 2
    n_kv_heads: int = 1
    head_dim: int = 32  # a head size vLLM's CPU attention supports
    hidden_dim: int = 128
    max_position_embeddings: int = 8192
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5


SHAPES: dict[Variant, Shape] = {
    "v1": Shape(vocab_size=32000),
    "v3": Shape(vocab_size=32768),
    "embed": Shape(vocab_size=32000),
}
TOKENIZER_FILES: dict[Variant, str] = {
    "v1": "tokenizer.model.v1",
    "v3": "mistral_instruct_tokenizer_240323.model.v3",
    "embed": "tokenizer.model.v1",
}


def is_built(directory: Path, variant: Variant) -> bool:
    """True when ``directory`` holds a complete demo model of this variant and build version."""
    return _marker(directory) == {"variant": variant, "build_version": BUILD_VERSION}


def demo_variant(directory: Path) -> Variant | None:
    """The variant of the demo model built in ``directory``; None when it holds another model."""
    variant = (_marker(directory) or {}).get("variant")
    return variant if variant in VARIANTS else None


def _marker(directory: Path) -> dict | None:
    try:
        marker = json.loads((directory / _MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def ensure_demo_model(directory: Path, variant: Variant) -> Path:
    """Build the demo model into ``directory`` unless an identical build is already there.

    Builds into a temporary sibling and renames it into place, so a crash or a concurrent
    start never leaves a half-written model behind.
    """
    return _ensure(
        directory,
        lambda folder: is_built(folder, variant),
        lambda into: write_demo_model(into, variant),
    )


def ensure_demo_adapter(directory: Path) -> Path:
    """Build the demo LoRA adapter into ``directory`` unless it is already there (as
    :func:`ensure_demo_model` builds a model)."""
    return _ensure(directory, lambda folder: _marker(folder) == _ADAPTER_MARKER, write_demo_adapter)


def _ensure(directory: Path, built: Callable[[Path], bool], write: Callable[[Path], None]) -> Path:
    directory = directory.expanduser().resolve()
    if built(directory):
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        write(staging)
        staging.chmod(0o755)  # mkdtemp makes it private; the model is not a secret
        if directory.exists():
            shutil.rmtree(directory)
        staging.rename(directory)
    except FileExistsError:  # another process won the race with an identical build
        shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def write_demo_model(directory: Path, variant: Variant) -> None:
    """Write the demo checkpoint of ``variant`` into the (existing, empty) ``directory``."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown demo variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    shape = SHAPES[variant]
    tokenizer_source = resources.files("mistral_common") / "data" / TOKENIZER_FILES[variant]
    # An embedding model samples nothing: no control token to keep out of its output, and no
    # constant dimension to make every vector alike.
    control = control_token_ids(tokenizer_source) if variant != "embed" else None
    weights = _random_weights(shape, control)
    if variant == "v3":
        _write_mistral_format(directory, shape, weights, tokenizer_source)
    elif variant == "embed":
        weights.pop("output.weight")  # headless: it returns hidden states, pooled by vLLM
        # Any leading part of a vector may stand for it (vLLM's `dimensions`), as in a
        # Matryoshka-trained model: with random weights, one cut is as good as another.
        _write_hf_format(
            directory,
            shape,
            weights,
            tokenizer_source,
            architecture="MistralModel",
            is_matryoshka=True,
        )
        _write_pooling(directory, shape)
    else:
        _write_hf_format(directory, shape, weights, tokenizer_source)
    (directory / _MARKER).write_text(
        json.dumps({"variant": variant, "build_version": BUILD_VERSION})
    )


#: The built-in adapter's name (as a models file's adapter path) and what it is built for.
DEMO_ADAPTER = "demo-lora"
ADAPTER_BASE: Variant = "v3"
ADAPTER_RANK = 8
_ADAPTER_MARKER = {"adapter": DEMO_ADAPTER, "build_version": 2}


def write_demo_adapter(directory: Path) -> None:
    """A LoRA adapter of the ``demo`` model in PEFT's format (adapter_config.json,
    adapter_model.safetensors): rank 8 on every layer's query and value projections, weights
    from a fixed seed, large enough that greedy text differs from the base model's. It leaves
    the base's control-token rule intact: the output projection, which alone could write the
    anchor dimension, is not adapted."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    shape = SHAPES[ADAPTER_BASE]
    rng = np.random.Generator(np.random.PCG64(_SEED + 1))
    outputs = {
        "q_proj": shape.n_heads * shape.head_dim,
        "v_proj": shape.n_kv_heads * shape.head_dim,
    }
    tensors = {}
    for layer in range(shape.n_layers):
        for module, width in outputs.items():
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            a = rng.standard_normal((ADAPTER_RANK, shape.dim), dtype=np.float32) * 0.5
            # Small enough that the anchor keeps its share of the residual (control tokens stay
            # over 50 logits down); the base's logits are so flat that it still changes them.
            b = rng.standard_normal((width, ADAPTER_RANK), dtype=np.float32) * 0.05
            tensors[prefix + ".lora_A.weight"] = torch.from_numpy(a)
            tensors[prefix + ".lora_B.weight"] = torch.from_numpy(b)
    save_file(tensors, str(directory / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": "demo",
        "r": ADAPTER_RANK,
        "lora_alpha": 2 * ADAPTER_RANK,
        "lora_dropout": 0.0,
        "target_modules": sorted(outputs),
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
    }
    (directory / "adapter_config.json").write_text(json.dumps(config, indent=2))
    (directory / _MARKER).write_text(json.dumps(_ADAPTER_MARKER))


def control_token_ids(tokenizer_file) -> list[int]:
    """Ids of a SentencePiece tokenizer's control tokens (``<unk>``, ``<s>``, ``</s>``, and in
    v3 ``[INST]``, ``[TOOL_CALLS]``, ``[control_N]`` …): never text, never sampled freely."""
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_proto=tokenizer_file.read_bytes())
    return [
        token
        for token in range(processor.get_piece_size())
        if processor.is_control(token) or processor.is_unknown(token)
    ]


def _random_weights(shape: Shape, control_ids: list[int] | None) -> dict[str, object]:
    """Mistral-named tensors (bf16), deterministic for a given shape and tokenizer; control
    tokens suppressed unless ``control_ids`` is None."""
    import numpy as np
    import torch

    rng = np.random.Generator(np.random.PCG64(_SEED))

    def normal(*dims: int) -> np.ndarray:
        return rng.standard_normal(dims, dtype=np.float32) * 0.02

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    q_dim, kv_dim = shape.n_heads * shape.head_dim, shape.n_kv_heads * shape.head_dim
    tensors = {"tok_embeddings.weight": normal(shape.vocab_size, shape.dim)}
    for i in range(shape.n_layers):
        prefix = f"layers.{i}."
        tensors |= {
            prefix + "attention.wq.weight": normal(q_dim, shape.dim),
            prefix + "attention.wk.weight": normal(kv_dim, shape.dim),
            prefix + "attention.wv.weight": normal(kv_dim, shape.dim),
            prefix + "attention.wo.weight": normal(shape.dim, q_dim),
            prefix + "feed_forward.w1.weight": normal(shape.hidden_dim, shape.dim),
            prefix + "feed_forward.w2.weight": normal(shape.dim, shape.hidden_dim),
            prefix + "feed_forward.w3.weight": normal(shape.hidden_dim, shape.dim),
            prefix + "attention_norm.weight": ones(shape.dim),
            prefix + "ffn_norm.weight": ones(shape.dim),
        }
    tensors["norm.weight"] = ones(shape.dim)
    tensors["output.weight"] = normal(shape.vocab_size, shape.dim)  # untied: see below
    if control_ids is not None:
        _suppress_control_tokens(tensors, shape, control_ids)
    return {name: torch.from_numpy(values).to(torch.bfloat16) for name, values in tensors.items()}


def _suppress_control_tokens(tensors: dict, shape: Shape, control_ids: list[int]) -> None:
    """Hold one residual dimension constant and point control tokens' output rows against it.

    Every embedding carries the same positive value in the anchor dimension; no layer reads it
    (its norm weights are 0) or writes it (its output-projection rows are 0), so it reaches the
    final norm unchanged at every position, whatever the input. There it is the one feature
    the output layer sees for sure: ordinary tokens ignore it, control tokens weigh it at
    -_SUPPRESSION. The output layer is untied from the embeddings so that input control tokens
    (``[/INST]`` ends every prompt) keep the same anchor as everything else.
    """
    dim = _ANCHOR_DIM
    embeddings = tensors["tok_embeddings.weight"]
    typical = float((embeddings**2).mean() ** 0.5)  # one dimension's typical size
    # As large as all the other dimensions together: half of every embedding's energy.
    embeddings[:, dim] = typical * (shape.dim - 1) ** 0.5
    for i in range(shape.n_layers):
        prefix = f"layers.{i}."
        tensors[prefix + "attention_norm.weight"][dim] = 0.0
        tensors[prefix + "ffn_norm.weight"][dim] = 0.0
        tensors[prefix + "attention.wo.weight"][dim, :] = 0.0
        tensors[prefix + "feed_forward.w2.weight"][dim, :] = 0.0
    output = tensors["output.weight"]
    output[:, dim] = 0.0
    output[control_ids, dim] = -_SUPPRESSION


def _write_mistral_format(directory: Path, shape: Shape, weights: dict, tokenizer) -> None:
    from safetensors.torch import save_file

    params = {
        "dim": shape.dim,
        "n_layers": shape.n_layers,
        "head_dim": shape.head_dim,
        "hidden_dim": shape.hidden_dim,
        "n_heads": shape.n_heads,
        "n_kv_heads": shape.n_kv_heads,
        "norm_eps": shape.norm_eps,
        "vocab_size": shape.vocab_size,
        "rope_theta": shape.rope_theta,
        "max_position_embeddings": shape.max_position_embeddings,
        "tied_embeddings": False,
    }
    (directory / "params.json").write_text(json.dumps(params, indent=2))
    save_file(weights, str(directory / "consolidated.safetensors"))
    (directory / "tokenizer.model.v3").write_bytes(tokenizer.read_bytes())


# Mistral name -> Hugging Face name, for the HF-format variant.
_HF_NAMES = {
    "tok_embeddings": "model.embed_tokens",
    "norm": "model.norm",
    "output": "lm_head",
    "attention.wq": "self_attn.q_proj",
    "attention.wk": "self_attn.k_proj",
    "attention.wv": "self_attn.v_proj",
    "attention.wo": "self_attn.o_proj",
    "feed_forward.w1": "mlp.gate_proj",
    "feed_forward.w2": "mlp.down_proj",
    "feed_forward.w3": "mlp.up_proj",
    "attention_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}


def _hf_name(name: str) -> str:
    if name.startswith("layers."):
        _, index, rest = name.split(".", 2)
        module = rest.removesuffix(".weight")
        return f"model.layers.{index}.{_HF_NAMES[module]}.weight"
    return _HF_NAMES[name.removesuffix(".weight")] + ".weight"


def _write_hf_format(
    directory: Path,
    shape: Shape,
    weights: dict,
    tokenizer,
    architecture: str = "MistralForCausalLM",
    **extra_config: object,
) -> None:
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    config = {
        "architectures": [architecture],
        "model_type": "mistral",
        "vocab_size": shape.vocab_size,
        "hidden_size": shape.dim,
        "intermediate_size": shape.hidden_dim,
        "num_hidden_layers": shape.n_layers,
        "num_attention_heads": shape.n_heads,
        "num_key_value_heads": shape.n_kv_heads,
        "head_dim": shape.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": shape.max_position_embeddings,
        "rms_norm_eps": shape.norm_eps,
        "rope_theta": shape.rope_theta,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "bfloat16",
        **extra_config,
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    save_file(
        {_hf_name(name): tensor for name, tensor in weights.items()},
        str(directory / "model.safetensors"),
        metadata={"format": "pt"},
    )
    # transformers 5 builds an empty fast tokenizer from a bare vocab file; loading a folder
    # that names the slow class and saving it again yields a complete tokenizer.json.
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch)
        (source / "tokenizer.model").write_bytes(tokenizer.read_bytes())
        (source / "tokenizer_config.json").write_text(
            json.dumps(
                {
                    "tokenizer_class": "LlamaTokenizer",
                    "bos_token": "<s>",
                    "eos_token": "</s>",
                    "unk_token": "<unk>",
                    "add_bos_token": True,
                    "add_eos_token": False,
                    "legacy": False,
                    "model_max_length": shape.max_position_embeddings,
                    "chat_template": V1_CHAT_TEMPLATE,
                }
            )
        )
        AutoTokenizer.from_pretrained(str(source)).save_pretrained(str(directory))
    (directory / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 1, "eos_token_id": 2})
    )


def _write_pooling(directory: Path, shape: Shape) -> None:
    """sentence-transformers' pipeline, which vLLM reads for a pooling model: the last token's
    hidden state (as e5-mistral pools), normalized to length 1."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
        {
            "idx": 2,
            "name": "2",
            "path": "2_Normalize",
            "type": "sentence_transformers.models.Normalize",
        },
    ]
    (directory / "modules.json").write_text(json.dumps(modules, indent=2))
    pooling = {
        "word_embedding_dimension": shape.dim,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": False,
        "pooling_mode_max_tokens": False,
        "pooling_mode_lasttoken": True,
    }
    (directory / "1_Pooling").mkdir()
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
    (directory / "2_Normalize").mkdir()
