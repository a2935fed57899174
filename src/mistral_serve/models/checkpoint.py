"""What a checkpoint on this machine is, read from its files: the one reader of config.json,
params.json and the tokenizer files that the catalog, the planner and the fleet ask.

- its shape (:class:`Architecture`, what sizes it on the GPUs), from Hugging Face's
  config.json or Mistral's params.json, parameters counted from the shapes;
- its format: Mistral's own (params.json, consolidated weights, a Mistral tokenizer), served
  with mistral_common doing the tokenizing, or Hugging Face's;
- its kind: a generative model, or an embedding model (a bare ``…Model`` architecture with no
  language-model head, or a sentence-transformers folder with its pooling config);
- the built-in demo variant it is, if any.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mistral_serve.models.demo import Variant, demo_variant

Kind = Literal["generate", "embed"]
KINDS: tuple[Kind, ...] = ("generate", "embed")
KV_BYTES = 2  # the KV cache in bf16


@dataclass(frozen=True)
class Architecture:
    """The facts of a checkpoint that size it."""

    name: str
    parameters: float  # all of them (every expert of a mixture)
    layers: int
    hidden_size: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    max_context: int
    experts: int = 0  # 0: dense

    def kv_bytes_per_token(self) -> int:
        return self.layers * self.kv_heads * self.head_dim * 2 * KV_BYTES


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint folder as its files describe it."""

    folder: Path
    #: None when the folder has neither config.json nor params.json.
    architecture: Architecture | None
    mistral_format: bool
    kind: Kind
    demo_variant: Variant | None


def read_checkpoint(folder: Path, name: str | None = None) -> Checkpoint:
    """``folder``'s checkpoint; ``name`` (default: the folder's) names its architecture."""
    name = name or folder.name
    return Checkpoint(
        folder=folder,
        architecture=_shape(folder, name),
        mistral_format=is_mistral_format_dir(folder),
        kind=_kind(folder),
        demo_variant=demo_variant(folder),
    )


def _shape(folder: Path, name: str) -> Architecture | None:
    """From params.json, else config.json; None when neither is there or says enough."""
    for reader in (_from_params_json, _from_config_json):
        try:
            found = reader(folder, name)
        except (KeyError, TypeError, ValueError, ZeroDivisionError):  # a file missing fields
            continue
        if found is not None:
            return found
    return None


def is_mistral_format_dir(path: Path) -> bool:
    """A local checkpoint in Mistral's format: params.json, consolidated weights, a Mistral
    tokenizer."""
    has_tokenizer = (path / "tekken.json").exists() or any(path.glob("tokenizer.model.v*"))
    has_weights = any(path.glob("consolidated*.safetensors"))
    return (path / "params.json").exists() and has_weights and has_tokenizer


def _kind(folder: Path) -> Kind:
    """An embedding checkpoint says so: sentence-transformers' pooling config, or an
    architecture without a head (``MistralModel``, not ``MistralForCausalLM``)."""
    if (folder / "modules.json").is_file() or (folder / "1_Pooling").is_dir():
        return "embed"
    config = _read_json(folder / "config.json") or {}
    return "embed" if _headless(config) else "generate"


def _headless(config: dict[str, Any]) -> bool:
    """An architecture without a language-model head: it returns hidden states."""
    architectures = config.get("architectures") or []
    return bool(architectures) and all(name.endswith("Model") for name in architectures)


def _from_config_json(folder: Path, name: str) -> Architecture | None:
    """Hugging Face's config.json (MistralForCausalLM, MixtralForCausalLM …)."""
    config = _read_json(folder / "config.json")
    if config is None:
        return None
    headless = _headless(config)
    config = config.get("text_config", config)  # vision models keep the decoder's here
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    return _architecture(
        name,
        layers=config["num_hidden_layers"],
        hidden=hidden,
        heads=heads,
        kv_heads=config.get("num_key_value_heads", heads),
        head_dim=config.get("head_dim") or hidden // heads,
        intermediate=config["intermediate_size"],
        vocab=config["vocab_size"],
        experts=config.get("num_local_experts", 0),
        context=config.get("max_position_embeddings", 32768),
        tied=bool(config.get("tie_word_embeddings", False)) or headless,  # one vocab matrix
    )


def _from_params_json(folder: Path, name: str) -> Architecture | None:
    """Mistral's params.json (consolidated checkpoints)."""
    params = _read_json(folder / "params.json")
    if params is None:
        return None
    hidden, heads = params["dim"], params["n_heads"]
    moe = params.get("moe") or {}
    return _architecture(
        name,
        layers=params["n_layers"],
        hidden=hidden,
        heads=heads,
        kv_heads=params.get("n_kv_heads", heads),
        head_dim=params.get("head_dim") or hidden // heads,
        intermediate=params["hidden_dim"],
        vocab=params["vocab_size"],
        experts=moe.get("num_experts", 0),
        context=params.get("max_position_embeddings") or params.get("max_seq_len") or 32768,
        tied=bool(params.get("tied_embeddings", False)),
    )


def _architecture(
    name: str,
    *,
    layers: int,
    hidden: int,
    heads: int,
    kv_heads: int,
    head_dim: int,
    intermediate: int,
    vocab: int,
    experts: int,
    context: int,
    tied: bool,
) -> Architecture:
    """Parameters counted from the shapes: embeddings (and an untied output layer), attention,
    the feed-forward (every expert, and the router), norms."""
    attention = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2
    feed_forward = 3 * hidden * intermediate * max(1, experts) + hidden * experts
    per_layer = attention + feed_forward + 2 * hidden
    parameters = vocab * hidden * (1 if tied else 2) + layers * per_layer + hidden
    return Architecture(
        name, float(parameters), layers, hidden, heads, kv_heads, head_dim, context, experts
    )


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None
