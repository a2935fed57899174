"""Which model to serve and what vLLM needs to know about it.

MODEL_ID may be a Hugging Face repo id, a local folder, or ``demo`` / ``demo-v1`` (built in).
Mistral publishes most current checkpoints in its own format (params.json,
consolidated.safetensors, tekken.json or tokenizer.model.v*), which vLLM serves best with
mistral_common doing the tokenizing; older ones (Mistral-7B-Instruct-v0.1, v0.2, Mixtral
8x7B) are served in Hugging Face format with their chat template.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from mistral_serve.config import DEFAULT_MODEL_ID, Settings
from mistral_serve.models.catalog import is_mistral_format_repo
from mistral_serve.models.checkpoint import is_mistral_format_dir
from mistral_serve.models.demo import (
    DEMO_ADAPTER,
    Variant,
    ensure_demo_adapter,
    ensure_demo_model,
)

DEMO_IDS: dict[str, Variant] = {"demo": "v3", "demo-v1": "v1", "demo-embed": "embed"}

# The demo weights are random: unconstrained, a grammar lets them emit whitespace forever
# inside JSON. Without free whitespace, json_schema output and forced tool calls end in a
# few tokens, as they do on a real model.
DEMO_ENGINE_ARGS = (
    "--structured-outputs-config",
    json.dumps({"backend": "xgrammar", "disable_any_whitespace": True}),
)


@dataclass(frozen=True)
class ServedModel:
    """What the engines load and under which names clients ask for it."""

    source: str  # vLLM's --model: a local folder or a hub repo id
    served_names: tuple[str, ...]  # the first is the name responses carry
    mistral_format: bool
    engine_args: tuple[str, ...] = ()
    is_demo: bool = False
    #: Why this model was chosen, when the user did not choose it.
    note: str | None = None


def resolve_model(settings: Settings, *, has_gpu: bool) -> ServedModel:
    """Decide what to serve. Builds the demo model into the cache folder when it is chosen."""
    model_id = settings.model_id
    if model_id is None and not has_gpu:
        served = _demo(settings, "demo")
        # Keep the README's client example (which names the default model) working as written.
        names = (
            (settings.served_model_name,)
            if settings.served_model_name
            else (
                "demo",
                DEFAULT_MODEL_ID,
            )
        )
        return ServedModel(
            source=served.source,
            served_names=names,
            mistral_format=served.mistral_format,
            engine_args=served.engine_args,
            is_demo=True,
            note=(
                "No GPU and no MODEL_ID: serving the built-in DEMO model (tiny, random weights, "
                f"gibberish output) as {' and '.join(repr(n) for n in names)}. "
                "Set MODEL_ID on a GPU machine to serve a real model."
            ),
        )
    model_id = model_id or DEFAULT_MODEL_ID
    return served_model(settings, model_id, (settings.served_model_name or model_id,))


def served_model(settings: Settings, source: str, names: tuple[str, ...]) -> ServedModel:
    """What engines load for ``source`` (a built-in demo, built when missing; a folder; a hub
    id), served under ``names``."""
    if source in DEMO_IDS:
        return replace(_demo(settings, source), served_names=names)
    path = Path(source).expanduser()
    if path.is_dir():
        return ServedModel(str(path.resolve()), names, is_mistral_format_dir(path))
    return ServedModel(source, names, is_mistral_format_repo(source))


def locate(settings: Settings, source: str) -> str:
    """What engines load for ``source``: a built-in demo's folder (built when missing), else
    ``source`` itself (a hub id or a folder)."""
    return _demo(settings, source).source if source in DEMO_IDS else source


def locate_adapter(settings: Settings, path: str) -> str:
    """What engines load for an adapter's ``path``: the built-in demo adapter's folder (built
    when missing), else ``path`` itself (a folder or a hub id)."""
    if path == DEMO_ADAPTER:
        return str(ensure_demo_adapter(settings.cache_dir / DEMO_ADAPTER))
    return path


def _demo(settings: Settings, model_id: str) -> ServedModel:
    variant = DEMO_IDS[model_id]
    folder = ensure_demo_model(settings.cache_dir / f"demo-{variant}", variant)
    return ServedModel(
        source=str(folder),
        served_names=(settings.served_model_name or model_id,),
        mistral_format=variant == "v3",
        engine_args=DEMO_ENGINE_ARGS if variant != "embed" else (),
        is_demo=True,
    )
