"""Batch jobs as the APIs see them: OpenAI's ``/v1/batches`` and Mistral's ``/v1/batch/jobs``
(created, retrieved, listed, cancelled), each job its key's (another key's is not found).

Creating a job reads and checks its whole input first (batch/lines.py: a bad line is a 400
naming it, nothing stored), checks that its key may use the model and that an engine of the
right kind serves it, then stores the job and one row per request (in its prefix order) in
one transaction, as ``validating``. The runner (batch/runner.py) of any gateway takes it from
there.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from mistral_serve.batch.files import Files
from mistral_serve.batch.jobs import (
    CANCELLING,
    COMPLETION_WINDOWS,
    IN_PROGRESS,
    VALIDATING,
    mistral_object,
    openai_object,
    statuses_of_mistral,
)
from mistral_serve.batch.lines import BatchLine, endpoint_of, order_key, read_lines
from mistral_serve.batch.output import line_of
from mistral_serve.errors import InvalidRequestError, NotFoundError
from mistral_serve.gateway.pipeline import Endpoint, Gateway, validated
from mistral_serve.protocol.batch import CreateBatch, CreateBatchJob, InlineRequest
from mistral_serve.store import WallClock, utc_now
from mistral_serve.store.batches import BatchJob, BatchRecords, NewRequest, RequestCounts
from mistral_serve.telemetry.batch import BatchTelemetry
from mistral_serve.tenancy.auth import Caller

#: Jobs per page at most.
MAX_PAGE = 100
#: Jobs a metadata filter looks through (the key's newest).
MAX_MATCHED = 10_000


def not_found(job_id: str) -> NotFoundError:
    return NotFoundError(f"No batch with id `{job_id}` was found.", param="batch_id")


@dataclass(frozen=True)
class _Input:
    endpoint: str
    model: str
    input_files: list[str]
    lines: list[BatchLine]


class Batches:
    def __init__(
        self,
        records: BatchRecords,
        files: Files,
        gateway: Gateway | None = None,
        *,
        telemetry: BatchTelemetry | None = None,
        clock: WallClock = utc_now,
        made: Callable[[], None] = lambda: None,
    ) -> None:
        self._records = records
        self._files = files
        self._gateway = gateway
        self._telemetry = telemetry
        self._clock = clock
        self._made = made  # tells this gateway's runner (it looks now rather than next tick)

    # -- create ----------------------------------------------------------------------------
    async def create_openai(self, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/batches``: ``input_file_id``, ``endpoint``, ``completion_window``
        (``24h``), ``metadata``."""
        asked = validated(CreateBatch, body)
        endpoint_of(asked.endpoint)
        data = await self._files.read(caller.owner, asked.input_file_id)
        lines = await _checked(data, asked.endpoint)
        made = _Input(asked.endpoint, str(lines[0].body["model"]), [asked.input_file_id], lines)
        window = asked.completion_window
        job = await self._create(
            caller, "openai", made, window, COMPLETION_WINDOWS[window], asked.metadata
        )
        return openai_object(job, RequestCounts(pending=job.total), self._clock())

    async def create_mistral(self, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/batch/jobs``: ``input_files`` or inline ``requests``, ``model``,
        ``endpoint``, ``metadata``, ``timeout_hours``."""
        asked = validated(CreateBatchJob, body)
        if asked.agent_id is not None:
            raise InvalidRequestError("agent_id: agents are not served here.", param="agent_id")
        endpoint_of(asked.endpoint)
        if bool(asked.input_files) == bool(asked.requests):
            raise InvalidRequestError(
                "Give either `input_files` or inline `requests` (not both).",
                param="input_files",
            )
        model, file_ids = asked.model, asked.input_files or []
        if asked.requests:
            inline = _inline(asked.requests)
            lines = await _checked(inline, asked.endpoint, model=model, param="requests")
        else:
            lines = await self._read_files(caller, file_ids, asked.endpoint, model)
        made = _Input(asked.endpoint, model or str(lines[0].body["model"]), file_ids, lines)
        hours = asked.timeout_hours
        job = await self._create(
            caller, "mistral", made, f"{hours}h", timedelta(hours=hours), asked.metadata
        )
        return mistral_object(job, RequestCounts(pending=job.total), self._clock())

    async def _read_files(
        self, caller: Caller, files: list[str], endpoint: str, model: str | None
    ) -> list[BatchLine]:
        """Every file's lines, numbered on from one file to the next; a custom_id once in all."""
        lines: list[BatchLine] = []
        seen: set[str] = set()
        for file_id in files:
            data = await self._files.read(caller.owner, file_id)
            for line in await _checked(data, endpoint, model=model, param="input_files"):
                if line.custom_id in seen:
                    raise InvalidRequestError(
                        f"input_files: {file_id}: line {line.number}: `custom_id` "
                        f"{line.custom_id!r} is used by an earlier line.",
                        param="input_files",
                    )
                seen.add(line.custom_id)
                lines.append(BatchLine(len(lines) + 1, line.custom_id, line.body))
        models = {str(line.body.get("model")) for line in lines}
        if len(models) > 1:
            raise InvalidRequestError(
                "input_files: every request of a batch must name the same `model`.",
                param="input_files",
            )
        return lines

    async def _create(
        self,
        caller: Caller,
        api: str,
        made: _Input,
        window: str,
        lasts: timedelta,
        metadata: dict[str, Any] | None,
    ) -> BatchJob:
        endpoint = endpoint_of(made.endpoint)
        if self._gateway is not None:
            self._gateway.check_batch(caller, endpoint, made.model)
        now = self._clock()
        job_id = f"batch_{secrets.token_hex(12)}"
        trace_parent = self._telemetry.job_created(job_id, made.model) if self._telemetry else None
        job = BatchJob(
            id=job_id,
            key_id=caller.owner,
            api=api,
            endpoint=made.endpoint,
            model=made.model,
            input_files=made.input_files,
            completion_window=window,
            status=VALIDATING,
            metadata=metadata,
            output_file_id=None,
            error_file_id=None,
            total=len(made.lines),
            paused=None,
            paused_until=None,
            trace_parent=trace_parent,
            created_at=now,
            in_progress_at=None,
            finalizing_at=None,
            completed_at=None,
            failed_at=None,
            expired_at=None,
            cancelling_at=None,
            cancelled_at=None,
            expires_at=now + lasts,
            updated_at=now,
        )
        requests = await asyncio.to_thread(_ordered, made, endpoint)
        await self._records.add(job, requests)
        self._made()
        return job

    # -- read ------------------------------------------------------------------------------
    async def job(self, key_id: str | None, job_id: str) -> tuple[BatchJob, RequestCounts]:
        job = await self._records.get(job_id, key_id)
        if job is None:
            raise not_found(job_id)
        return job, await self._records.counts(job.id)

    async def listed(
        self, key_id: str | None, *, statuses: list[str] | None = None, limit: int = 100
    ) -> list[tuple[BatchJob, RequestCounts]]:
        """Jobs with their counts, newest first (``key_id`` None: every key's, for operators)."""
        jobs = await self._records.page(key_id, statuses=statuses, limit=limit)
        return [(job, await self._records.counts(job.id)) for job in jobs]

    async def described(self, job_id: str) -> dict[str, Any]:
        """One job for operators: OpenAI's object, and which gateways run its requests now."""
        job, counts = await self.job(None, job_id)
        return {
            **openai_object(job, counts, self._clock()),
            "key_id": job.key_id,
            "api": job.api,
            "requests": {
                "pending": counts.pending,
                "running": counts.running,
                "succeeded": counts.succeeded,
                "failed": counts.failed,
                "cancelled": counts.cancelled,
                "expired": counts.expired,
            },
            "running_on": await self._records.holders(job.id),
        }

    async def retrieve_openai(self, caller: Caller, job_id: str) -> dict[str, Any]:
        job, counts = await self.job(caller.owner, job_id)
        return openai_object(job, counts, self._clock())

    async def retrieve_mistral(
        self, caller: Caller, job_id: str, *, inline: bool = False
    ) -> dict[str, Any]:
        job, counts = await self.job(caller.owner, job_id)
        outputs = None
        if inline:
            ended = await self._records.ended(job.id)
            outputs = [line_of(job.id, request) for request in ended]
        return mistral_object(job, counts, self._clock(), outputs)

    async def list_openai(self, caller: Caller, *, after: str | None, limit: int) -> dict[str, Any]:
        _check_limit(limit)
        jobs = await self._records.page(caller.owner, after=after, limit=limit + 1)
        shown = jobs[:limit]
        now = self._clock()
        data = [openai_object(job, await self._records.counts(job.id), now) for job in shown]
        return {
            "object": "list",
            "data": data,
            "first_id": shown[0].id if shown else None,
            "last_id": shown[-1].id if shown else None,
            "has_more": len(jobs) > limit,
        }

    async def list_mistral(
        self,
        caller: Caller,
        *,
        page: int,
        page_size: int,
        model: str | None = None,
        statuses: list[str] | None = None,
        created_after: datetime | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        _check_limit(page_size)
        filters: dict[str, Any] = {
            "model": model,
            "statuses": statuses_of_mistral(statuses) if statuses else None,
            "created_after": created_after,
        }
        owner = caller.owner
        if metadata:  # matched here, not in SQL (JSON differs per database): a key's jobs
            matching = [
                job
                for job in await self._records.page(owner, limit=MAX_MATCHED, **filters)
                if all((job.metadata or {}).get(k) == v for k, v in metadata.items())
            ]
            jobs = matching[page * page_size : (page + 1) * page_size]
            total = len(matching)
        else:
            jobs = await self._records.page(
                owner, limit=page_size, offset=page * page_size, **filters
            )
            total = await self._records.count(owner, **filters)
        now = self._clock()
        return {
            "object": "list",
            "data": [mistral_object(job, await self._records.counts(job.id), now) for job in jobs],
            "total": total,
        }

    # -- cancel ----------------------------------------------------------------------------
    async def cancel(self, key_id: str | None, job_id: str) -> tuple[BatchJob, RequestCounts]:
        """Stop claiming the job's requests now; those running finish (their results are
        kept); the rest end as ``batch_cancelled`` when the runner writes its files. A job
        already over is left as it is."""
        job = await self._records.get(job_id, key_id)
        if job is None:
            raise not_found(job_id)
        await self._records.move(job.id, (VALIDATING, IN_PROGRESS), CANCELLING, self._clock())
        self._made()
        return await self.job(key_id, job_id)

    async def cancel_openai(self, caller: Caller, job_id: str) -> dict[str, Any]:
        job, counts = await self.cancel(caller.owner, job_id)
        return openai_object(job, counts, self._clock())

    async def cancel_mistral(self, caller: Caller, job_id: str) -> dict[str, Any]:
        job, counts = await self.cancel(caller.owner, job_id)
        return mistral_object(job, counts, self._clock())


async def _checked(data: bytes, endpoint: str, **options: Any) -> list[BatchLine]:
    """batch/lines.py's check, in a thread: 50,000 lines take the CPU for a second or two,
    which the event loop's other requests must not wait for."""
    return await asyncio.to_thread(read_lines, data, endpoint, **options)


def _ordered(made: _Input, endpoint: Endpoint) -> list[NewRequest]:
    """The job's rows, each with its prefix-order key (hashing every prompt: in a thread)."""
    return [
        NewRequest(
            line.number, line.custom_id, line.body, order_key(made.model, line.body, endpoint)
        )
        for line in made.lines
    ]


def _inline(requests: list[InlineRequest]) -> bytes:
    """Mistral's inline ``requests`` as the lines of a file (a missing custom_id is the
    request's index), for the same checks a file's lines get."""
    return b"\n".join(
        orjson.dumps({"custom_id": request.custom_id or str(index), "body": request.body})
        for index, request in enumerate(requests)
    )


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequestError(f"limit: 1 to {MAX_PAGE}.", param="limit")
