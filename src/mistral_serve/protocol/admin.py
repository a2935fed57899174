"""The admin API's request bodies (`/admin/keys`): what `mistral-serve keys` takes, as JSON."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr


class KeySettings(BaseModel):
    """Settings of a key; a field left out is left as it is (on update) or default (on create).
    ``models``: null or absent is every model; ``expires``: ``30d``, ``12h``, an ISO date, or
    ``never``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: StrictStr | None = Field(default=None, min_length=1, max_length=200)
    models: list[StrictStr] | None = None
    priority: StrictInt | None = None
    #: Its share of turns within its priority, relative to other keys (default 1).
    weight: float | None = Field(default=None, gt=0, le=1000)
    expires: StrictStr | None = None
    #: Limits: a positive number, or null for none.
    rpm: StrictInt | None = Field(default=None, ge=1)
    tpm: StrictInt | None = Field(default=None, ge=1)
    max_concurrent: StrictInt | None = Field(default=None, ge=1)
    tokens_per_day: StrictInt | None = Field(default=None, ge=1)
    tokens_per_month: StrictInt | None = Field(default=None, ge=1)


class NewKey(KeySettings):
    name: StrictStr = Field(min_length=1, max_length=200)


class NewAdapter(BaseModel):
    """A LoRA adapter to add at run time (`/admin/adapters`): its name (what clients send as
    ``model``), the model it adapts, and where the engines read it (a folder on the engines'
    machine, or a Hugging Face id)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: StrictStr = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$")
    base: StrictStr = Field(min_length=1, max_length=200)
    path: StrictStr = Field(min_length=1, max_length=1000)
