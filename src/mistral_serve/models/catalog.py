"""Mistral's published models, known by name: the one table of families, each with what its
instruct checkpoints can do, the shape that sizes it before anything is downloaded, whether
its official repos ship Mistral's own format, and its kind (generative or embedding).

A model card's ``capabilities`` must be true only where the served model really has them:
what its family was trained for (function calling, fill-in-the-middle, images) and what the
way it is served allows. Tool calls need Mistral's tokenizer (vLLM's mistral tool parser is
enabled for Mistral-format checkpoints only), and fill-in-the-middle needs a tokenizer with
its control tokens (v2 and later).

The family is found from the checkpoint's name (a hub id such as
``mistralai/Codestral-22B-v0.1``, or a local folder named after it). A local folder is read
too (models/checkpoint.py): its files say its shape, format and kind, and the built-in demo
models say what they are. Names no family matches are chat models with nothing more.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from mistral_serve.models.checkpoint import Architecture, Kind, read_checkpoint
from mistral_serve.models.hub import local_folder
from mistral_serve.models.tokenizers import has_fim_tokens
from mistral_serve.protocol.mistral import Capabilities


class UnknownModelError(ValueError):
    """A model neither on this machine nor known by name; the message says what was tried."""


@dataclass(frozen=True)
class Family:
    """A line of Mistral models: what its instruct checkpoints were trained to do, its shape,
    and how its official repos ship it."""

    name: str
    pattern: re.Pattern[str]  # matched against the checkpoint's name, case-insensitively
    capabilities: Capabilities
    #: The published shape; None for models whose weights are not published.
    architecture: Architecture | None
    #: Official (``mistralai/``) repos ship params.json, consolidated weights and a Mistral
    #: tokenizer: vLLM serves them with ``--tokenizer-mode mistral``.
    mistral_format: bool
    kind: Kind = "generate"


def _family(
    name: str,
    pattern: str,
    architecture: Architecture | None,
    *,
    mistral_format: bool = True,
    kind: Kind = "generate",
    **capabilities: bool,
) -> Family:
    chat = kind == "generate"
    return Family(
        name,
        re.compile(pattern, re.IGNORECASE),
        Capabilities(completion_chat=chat, **capabilities),
        architecture,
        mistral_format,
        kind,
    )


# The published shapes (config.json / params.json of each).
MISTRAL_7B = Architecture("Mistral 7B", 7.25e9, 32, 4096, 32, 8, 128, 32768)
MIXTRAL_8X7B = Architecture("Mixtral 8x7B", 46.7e9, 32, 4096, 32, 8, 128, 32768, 8)
MIXTRAL_8X22B = Architecture("Mixtral 8x22B", 140.6e9, 56, 6144, 48, 8, 128, 65536, 8)
NEMO_12B = Architecture("Mistral Nemo 12B", 12.2e9, 40, 5120, 32, 8, 128, 131072)
SMALL_3_1_24B = Architecture("Mistral Small 3.1 24B", 24.0e9, 40, 5120, 32, 8, 128, 131072)
SMALL_3_24B = Architecture("Mistral Small 3 24B", 23.6e9, 40, 5120, 32, 8, 128, 32768)
SMALL_22B = Architecture("Mistral Small 22B", 22.2e9, 56, 6144, 48, 8, 128, 32768)
CODESTRAL_22B = Architecture("Codestral 22B", 22.2e9, 56, 6144, 48, 8, 128, 32768)
MINISTRAL_8B = Architecture("Ministral 8B", 8.02e9, 36, 4096, 32, 8, 128, 131072)
PIXTRAL_LARGE = Architecture("Pixtral Large", 124e9, 88, 12288, 96, 8, 128, 131072)
PIXTRAL_12B = Architecture("Pixtral 12B", 12.4e9, 40, 5120, 32, 8, 128, 131072)
LARGE_2 = Architecture("Mistral Large 2", 122.6e9, 88, 12288, 96, 8, 128, 131072)
DEVSTRAL_SMALL = replace(SMALL_3_1_24B, name="Devstral Small 24B")
MAGISTRAL_SMALL = replace(SMALL_3_1_24B, name="Magistral Small 24B")
#: Embedding models built on Mistral 7B (no language-model head: one vocabulary matrix).
E5_MISTRAL_7B = Architecture("E5 Mistral 7B", 7.11e9, 32, 4096, 32, 8, 128, 32768)

#: Most specific first: the first match wins.
FAMILIES: tuple[Family, ...] = (
    _family(
        "Mistral 7B embeddings",
        r"e5-mistral-7b|sfr-embedding(-2_r)?-mistral|linq-embed-mistral",
        E5_MISTRAL_7B,
        mistral_format=False,
        kind="embed",
    ),
    _family("Codestral", r"codestral", CODESTRAL_22B, completion_fim=True),
    _family("Devstral", r"devstral", DEVSTRAL_SMALL, function_calling=True),
    _family(
        "Magistral Small",
        r"magistral-small",
        MAGISTRAL_SMALL,
        function_calling=True,
        reasoning=True,
    ),
    _family("Magistral", r"magistral", None, function_calling=True, reasoning=True),
    _family("Pixtral Large", r"pixtral-large", PIXTRAL_LARGE, function_calling=True, vision=True),
    _family("Pixtral", r"pixtral", PIXTRAL_12B, function_calling=True, vision=True),
    _family(
        "Mistral Small 3.1+",
        r"mistral-small-3\.[1-9]",
        SMALL_3_1_24B,
        function_calling=True,
        vision=True,
    ),
    _family("Mistral Small 3", r"mistral-small-(24b|3\b)", SMALL_3_24B, function_calling=True),
    _family("Mistral Medium 3", r"mistral-medium-3", None, function_calling=True, vision=True),
    _family("Mistral Small", r"mistral-small", SMALL_22B, function_calling=True),
    _family("Mistral Large", r"mistral-large", LARGE_2, function_calling=True),
    _family("Mistral Nemo", r"mistral-nemo", NEMO_12B, function_calling=True),
    _family("Ministral", r"ministral", MINISTRAL_8B, function_calling=True),
    _family("Mathstral", r"mathstral", MISTRAL_7B),
    # Only v0.3 of Mixtral 8x22B is published in Mistral's format.
    _family("Mixtral 8x22B v0.3", r"mixtral-8x22b.*v0\.3", MIXTRAL_8X22B, function_calling=True),
    _family(
        "Mixtral 8x22B",
        r"mixtral-8x22b",
        MIXTRAL_8X22B,
        mistral_format=False,
        function_calling=True,
    ),
    _family("Mixtral 8x7B", r"mixtral-8x7b", MIXTRAL_8X7B, mistral_format=False),
    _family("Mistral 7B v0.3", r"mistral-7b-(instruct-)?v0\.3", MISTRAL_7B, function_calling=True),
    _family("Mistral 7B", r"mistral-7b", MISTRAL_7B, mistral_format=False),
)

#: Base (pretrained, not instruct) checkpoints: they complete text and have no chat format.
_BASE = re.compile(r"-base\b|^mistral-7b-v\d|^mixtral-8x(7|22)b-v\d", re.IGNORECASE)

#: The demo models: chat models (the v3 variant has Mistral's tokenizer: tool calls, FIM),
#: and an embedding model, which chats not at all.
DEMO = {
    "v3": Capabilities(completion_chat=True, function_calling=True, completion_fim=True),
    "v1": Capabilities(completion_chat=True),
    "embed": Capabilities(),
}


def family_of(name: str) -> Family | None:
    """The family whose pattern the checkpoint's name (a hub id's last part, a folder's
    name) matches first."""
    short = name.rstrip("/").rsplit("/", 1)[-1]
    return next((family for family in FAMILIES if family.pattern.search(short)), None)


def capabilities_of(root: str) -> Capabilities:
    """What the model an engine serves from ``root`` (its --model) can do."""
    path = Path(root).expanduser()
    checkpoint = read_checkpoint(path) if path.is_dir() else None
    if checkpoint is not None and checkpoint.demo_variant is not None:
        return DEMO[checkpoint.demo_variant]
    name = path.name if checkpoint else root.rsplit("/", 1)[-1]
    family = family_of(name)
    kind = checkpoint.kind if checkpoint else (family.kind if family else "generate")
    if kind == "embed" or _BASE.search(name):
        return Capabilities()  # no chat format
    if family is None:
        return Capabilities(completion_chat=True)
    mistral_format = checkpoint.mistral_format if checkpoint else is_mistral_format_repo(root)
    return replace(
        family.capabilities,
        function_calling=family.capabilities.function_calling and mistral_format,
        completion_fim=family.capabilities.completion_fim
        and (has_fim_tokens(path) if checkpoint else mistral_format),
    )


def kind_of(model: str, hf_cache: Path | None = None) -> Kind:
    """Generative or embedding: a checkpoint on this machine says so in its files; otherwise
    the family known by name (an unknown name is generative)."""
    folder = local_folder(model, hf_cache)
    if folder is not None:
        return read_checkpoint(folder).kind
    family = family_of(model)
    return family.kind if family is not None else "generate"


def is_mistral_format_repo(repo_id: str) -> bool:
    """An official hub repo that ships Mistral-format weights and tokenizer."""
    owner, _, name = repo_id.partition("/")
    family = family_of(name) if owner.lower() == "mistralai" and name else None
    return family is not None and family.mistral_format


def architecture_of(model: str, hf_cache: Path | None = None) -> Architecture:
    """A local folder (config.json or params.json), a Hugging Face id in the ``hf_cache``
    (``Settings.hub_cache``; None: none is looked in), or one of Mistral's published models by
    name (``mistralai/Mixtral-8x7B-Instruct-v0.1``, ``mixtral-8x7b``)."""
    folder = local_folder(model, hf_cache)
    if folder is not None:
        local = folder == Path(model).expanduser()
        checkpoint = read_checkpoint(folder, folder.name if local else model)
        if checkpoint.architecture is not None:
            return checkpoint.architecture
        known = known_architecture(folder.name if local else model)
        if known is None:
            raise UnknownModelError(f"{folder} has neither config.json nor params.json")
        return known
    known = known_architecture(model)
    if known is None:
        names = ", ".join(f.name for f in FAMILIES if f.architecture is not None)
        raise UnknownModelError(
            f"{model!r} is not a local folder, not in the Hugging Face cache, and not one of "
            f"Mistral's published models known by name ({names})"
        )
    return known


def known_architecture(name: str) -> Architecture | None:
    """The published shape of the family ``name`` belongs to."""
    family = family_of(name)
    return family.architecture if family is not None else None
