"""What Mistral's published models can do, known by name, and what a served checkpoint can do.

A model card's ``capabilities`` must be true only where the served model really has them:
what its family was trained for (function calling, fill-in-the-middle, images) and what the
way it is served allows. Tool calls need Mistral's tokenizer (vLLM's mistral tool parser is
enabled for Mistral-format checkpoints only), and fill-in-the-middle needs a tokenizer with
its control tokens (v2 and later).

The family is found from the name the engine reports as the model's root (a hub id such as
``mistralai/Codestral-22B-v0.1``, or a local folder named after it). A local folder is also
read: the built-in demo model says what it is, and a Mistral-format folder names its
tokenizer. Names no family matches are chat models with nothing more.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from mistral_serve.models.demo import demo_variant
from mistral_serve.models.profiles import is_mistral_format_dir, is_mistral_format_repo
from mistral_serve.models.tokenizers import has_fim_tokens
from mistral_serve.protocol.mistral import Capabilities


@dataclass(frozen=True)
class Family:
    """A line of Mistral models and what its instruct checkpoints were trained to do."""

    name: str
    pattern: re.Pattern[str]  # matched against the checkpoint's name, case-insensitively
    capabilities: Capabilities


def _family(name: str, pattern: str, **capabilities: bool) -> Family:
    return Family(
        name,
        re.compile(pattern, re.IGNORECASE),
        Capabilities(completion_chat=True, **capabilities),
    )


#: Most specific first: the first match wins.
FAMILIES: tuple[Family, ...] = (
    _family("Codestral", r"codestral", completion_fim=True),
    _family("Devstral", r"devstral", function_calling=True),
    _family("Magistral", r"magistral", function_calling=True, reasoning=True),
    _family("Pixtral", r"pixtral", function_calling=True, vision=True),
    _family("Mistral Small 3.1+", r"mistral-small-3\.[1-9]", function_calling=True, vision=True),
    _family("Mistral Medium 3", r"mistral-medium-3", function_calling=True, vision=True),
    _family("Mistral Small", r"mistral-small", function_calling=True),
    _family("Mistral Large", r"mistral-large", function_calling=True),
    _family("Mistral Nemo", r"mistral-nemo", function_calling=True),
    _family("Ministral", r"ministral", function_calling=True),
    _family("Mixtral 8x22B", r"mixtral-8x22b-instruct", function_calling=True),
    _family("Mixtral 8x7B", r"mixtral-8x7b-instruct"),
    _family("Mistral 7B v0.3", r"mistral-7b-instruct-v0\.3", function_calling=True),
    _family("Mistral 7B", r"mistral-7b-instruct"),
)

#: Base (pretrained, not instruct) checkpoints: they complete text and have no chat format.
_BASE = re.compile(r"-base\b|^mistral-7b-v\d|^mixtral-8x(7|22)b-v\d", re.IGNORECASE)

#: The demo model: a chat model; its v3 variant has Mistral's tokenizer (tool calls, FIM).
DEMO = {
    "v3": Capabilities(completion_chat=True, function_calling=True, completion_fim=True),
    "v1": Capabilities(completion_chat=True),
}


def capabilities_of(root: str) -> Capabilities:
    """What the model an engine serves from ``root`` (its --model) can do."""
    path = Path(root).expanduser()
    local = path.is_dir()
    if local and (variant := demo_variant(path)) is not None:
        return DEMO[variant]
    name = path.name if local else root.rsplit("/", 1)[-1]
    if _BASE.search(name):
        return Capabilities()
    family = family_of(name)
    if family is None:
        return Capabilities(completion_chat=True)
    mistral_format = is_mistral_format_dir(path) if local else is_mistral_format_repo(root)
    return replace(
        family.capabilities,
        function_calling=family.capabilities.function_calling and mistral_format,
        completion_fim=family.capabilities.completion_fim
        and (has_fim_tokens(path) if local else mistral_format),
    )


def family_of(name: str) -> Family | None:
    """The family whose pattern the checkpoint's name matches first."""
    return next((family for family in FAMILIES if family.pattern.search(name)), None)
