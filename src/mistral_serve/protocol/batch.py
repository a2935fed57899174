"""Batch jobs' requests: OpenAI's ``POST /v1/batches`` and Mistral's ``POST /v1/batch/jobs``.
Types are strict (a wrong type is a 400 naming the field); fields the APIs add later pass
(their SDKs send them)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

#: OpenAI's bounds on a batch's metadata: 16 pairs, keys of 64 characters, values of 512.
Metadata = Annotated[
    dict[Annotated[str, Field(max_length=64)], Annotated[StrictStr, Field(max_length=512)]],
    Field(max_length=16),
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class CreateBatch(_Request):
    """OpenAI's batch: an uploaded input file's requests to one endpoint."""

    input_file_id: StrictStr = Field(min_length=1)
    endpoint: StrictStr
    completion_window: Literal["24h"] = "24h"
    metadata: Metadata | None = None


class InlineRequest(_Request):
    """One of a Mistral job's inline requests (``custom_id``: its index when absent)."""

    custom_id: StrictStr | None = None
    body: dict[str, Any]


class CreateBatchJob(_Request):
    """Mistral's batch job: input files' requests, or inline ones, to one endpoint."""

    endpoint: StrictStr
    input_files: list[StrictStr] | None = None
    requests: list[InlineRequest] | None = None
    model: StrictStr | None = None
    agent_id: StrictStr | None = None
    metadata: Metadata | None = None
    timeout_hours: StrictInt = Field(default=24, ge=1, le=168)
