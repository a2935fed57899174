"""The fleet: which models one gateway serves, read from the models file (MODELS_FILE, YAML;
config/models.example.yaml documents every field).

Each model has a name clients ask for (and aliases), and either a ``source`` the engines load
(a hub id, a local folder, or a built-in demo) or ``engine_urls`` of engines run elsewhere.
Its kind (``generate`` or ``embed``) is read from the checkpoint when the file does not say
it. A bad file is refused with one line naming the entry and the field.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mistral_serve.errors import ConfigError
from mistral_serve.models.catalog import UnknownModelError, architecture_of, kind_of
from mistral_serve.models.checkpoint import Kind
from mistral_serve.models.placement import Demand

#: Names clients send as ``model``: what the OpenAI and Mistral APIs accept in a path segment.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Adapter(_Strict):
    """A LoRA adapter of a generative model, loaded on every engine of its base."""

    name: Name
    #: A local folder (PEFT format: adapter_config.json, adapter_model.safetensors), a hub id,
    #: or a built-in demo adapter.
    path: str = Field(min_length=1)


class ModelEntry(_Strict):
    """One served model."""

    name: Name
    aliases: tuple[Name, ...] = ()
    #: What the engines load: a hub id, a local folder, or ``demo`` / ``demo-v1`` /
    #: ``demo-embed``. Not given with ``engine_urls``.
    source: str | None = Field(default=None, min_length=1)
    #: None: read from the checkpoint (models/checkpoint.py) or known by the family's name.
    kind: Kind | None = None
    replicas: int = Field(default=1, ge=1, le=64)
    tensor_parallel_size: Literal[1, 2, 4, 8] = 1
    #: The share of each of its GPUs' memory an engine may take (vLLM's
    #: --gpu-memory-utilization). None: the placement decides.
    gpu_memory_share: float | None = Field(default=None, gt=0.0, le=0.95)
    max_model_len: int | None = Field(default=None, ge=16)
    #: More vLLM flags for this model's engines, a list or one shell-quoted string.
    engine_args: tuple[str, ...] = ()
    adapters: tuple[Adapter, ...] = ()
    #: How many adapters one engine holds on the GPU at once (vLLM's --max-loras).
    max_loras: int = Field(default=4, ge=1, le=64)
    #: Engines run elsewhere (compose, Kubernetes): no source, nothing placed.
    engine_urls: tuple[str, ...] = ()

    @field_validator("engine_args", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return shlex.split(value) if isinstance(value, str) else value

    @field_validator("engine_urls")
    @classmethod
    def _urls(cls, urls: tuple[str, ...]) -> tuple[str, ...]:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http:// or https:// URL")
        return tuple(url.rstrip("/") for url in urls)

    @model_validator(mode="after")
    def _where_it_runs(self) -> ModelEntry:
        if (self.source is None) == (not self.engine_urls):
            raise ValueError("give either source (engines started here) or engine_urls")
        if self.adapters and self.kind == "embed":
            raise ValueError("adapters: an embedding model takes no LoRA adapters")
        return self

    @property
    def names(self) -> tuple[str, ...]:
        """Every name it answers to, its own first."""
        return (self.name, *self.aliases)

    @property
    def started_here(self) -> bool:
        return self.source is not None

    @property
    def takes_adapters(self) -> bool:
        """Whether its engines run with LoRA on: it lists adapters, or says how many it holds
        (for adapters added at run time, `/admin/adapters`)."""
        return bool(self.adapters) or "max_loras" in self.model_fields_set


class Fleet(_Strict):
    """Every served model; names (models, aliases, adapters) unique across all of them."""

    models: tuple[ModelEntry, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> Fleet:
        seen: dict[str, str] = {}
        for entry in self.models:
            for name in (*entry.names, *(adapter.name for adapter in entry.adapters)):
                if name in seen:
                    raise ValueError(
                        f"the name {name!r} is used twice ({seen[name]} and {entry.name})"
                    )
                seen[name] = entry.name
        return self

    def model(self, name: str) -> ModelEntry | None:
        """The entry answering to ``name`` (a model's name or alias)."""
        return next((entry for entry in self.models if name in entry.names), None)


def load_fleet(path: Path) -> Fleet:
    """The fleet the models file at ``path`` describes; ConfigError, one line, when it is
    unreadable or wrong (naming the entry and the field)."""
    where = f"MODELS_FILE {path}"
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{where}: cannot be read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{where}: not valid YAML{at}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{where}: should be a mapping with a 'models' list")
    try:
        return Fleet.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {describe(exc, document)}") from None


def describe(exc: ValidationError, document: dict[str, Any]) -> str:
    """The first problem as ``models[1] (e5): gpu_memory_share: Input should be …``."""
    error = exc.errors(include_url=False)[0]
    location = list(error["loc"])
    reason = error["msg"].removeprefix("Value error, ")
    if location[:1] != ["models"] or len(location) < 2:
        field = ".".join(str(part) for part in location) or "models"
        return f"{field}: {reason}"
    index = location[1]
    entries = document.get("models") or []
    entry = entries[index] if isinstance(index, int) and index < len(entries) else None
    named = f" ({entry['name']})" if isinstance(entry, dict) and entry.get("name") else ""
    field = ".".join(str(part) for part in location[2:])
    return f"models[{index}]{named}: {field + ': ' if field else ''}{reason}"


def kind_of_entry(entry: ModelEntry, source: str, hf_cache: Path | None) -> Kind:
    """What ``entry`` serves from ``source`` (what its engines load): the file's ``kind``, else
    its checkpoint's or family's; ConfigError when that kind cannot take the adapters it lists
    (the file's own ``kind: embed`` with adapters is refused as it is read)."""
    kind = entry.kind or kind_of(source, hf_cache)
    if entry.adapters and kind == "embed":
        raise ConfigError(f"models file: {entry.name}: an embedding model takes no adapters")
    return kind


def demands_of(
    fleet: Fleet, hf_cache: Path | None, locate: Callable[[str], str] = str
) -> list[Demand]:
    """What each model started here asks of the GPUs, its shape and kind read from its
    checkpoint (or known by its family's name). ``locate`` turns a source into what the engines
    load (a built-in demo's folder). ConfigError, naming the model, for a model that cannot be
    sized or whose adapters its kind cannot take."""
    found = []
    for entry in fleet.models:
        if not entry.started_here:
            continue
        assert entry.source is not None
        source = locate(entry.source)
        try:
            architecture = architecture_of(source, hf_cache)
        except UnknownModelError as exc:
            raise ConfigError(f"models file: {entry.name}: {exc}") from None
        kind = kind_of_entry(entry, source, hf_cache)
        found.append(
            Demand(
                model=entry.name,
                architecture=architecture,
                kind=kind,
                replicas=entry.replicas,
                tensor_parallel=entry.tensor_parallel_size,
                share=entry.gpu_memory_share,
                max_model_len=entry.max_model_len or architecture.max_context,
                adapters=tuple(adapter.name for adapter in entry.adapters),
                max_loras=entry.max_loras,
            )
        )
    return found
