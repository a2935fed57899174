"""A batch job's life: its states, what a gateway does with it next, and how OpenAI's and
Mistral's APIs show it.

States (OpenAI's names; Mistral's in brackets)::

    validating (QUEUED) ─► in_progress (RUNNING) ─► finalizing (RUNNING) ─► completed (SUCCESS)
      │                      ├─ past its window, once nothing runs ─► expired (TIMEOUT_EXCEEDED)
      └──────────────────────┴─ cancel ─► cancelling (CANCELLATION_REQUESTED) ─► cancelled

    failed (FAILED): the job could not run at all (its key was revoked or deleted).

A job's input is checked whole when it is created (a bad line is a 400 then, nothing stored),
so ``validating`` is only the moment before a gateway first picks it up. A cancelled job's
running requests finish (their results are kept); what had not started ends as
``batch_cancelled``; an expired job's as ``batch_expired``. Both are in the error file: every
request of a job is in exactly one of its two files once it has ended.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from mistral_serve.store.batches import CANCELLED, EXPIRED, BatchJob, RequestCounts
from mistral_serve.tenancy.manage import fixed_width

VALIDATING, IN_PROGRESS, FINALIZING = "validating", "in_progress", "finalizing"
COMPLETED, FAILED, CANCELLING = "completed", "failed", "cancelling"
#: Job states in which a gateway has work to do with it.
ACTIVE = (VALIDATING, IN_PROGRESS, FINALIZING, CANCELLING)
#: A job's end states.
FINAL = (COMPLETED, FAILED, EXPIRED, CANCELLED)
#: Every state, as OpenAI's API names it (``cancelled``/``expired`` as the store's request ends).
STATES = (*ACTIVE, *FINAL)

MISTRAL_STATES = {
    VALIDATING: "QUEUED",
    IN_PROGRESS: "RUNNING",
    FINALIZING: "RUNNING",
    COMPLETED: "SUCCESS",
    FAILED: "FAILED",
    EXPIRED: "TIMEOUT_EXCEEDED",
    CANCELLING: "CANCELLATION_REQUESTED",
    CANCELLED: "CANCELLED",
}

#: OpenAI's one completion window; Mistral's jobs give hours instead (``timeout_hours``).
COMPLETION_WINDOWS = {"24h": timedelta(hours=24)}


@dataclass(frozen=True)
class Step:
    """What a gateway does with a job now."""

    #: "start" (validating → in_progress), "run" (claim its requests), "finish" (write its
    #: files and end it as ``final``), or "wait" (requests still run; or another gateway is
    #: finalizing it).
    action: str
    final: str | None = None
    #: What its requests that never ran end as (``cancelled``, ``expired``), if any.
    unrun: str | None = None


def next_step(job: BatchJob, unfinished: bool, live: int, now: datetime, stale: timedelta) -> Step:
    """The state machine: ``unfinished``: some of the job's requests are still to run or
    running (a lapsed claim included); ``live``: those running under a live lease on some
    gateway; ``stale``: how long a ``finalizing`` job is left to the gateway finalizing it
    before another takes it over."""
    status = job.status
    if status == VALIDATING:
        return Step("start")
    if status == CANCELLING:
        return Step("finish", CANCELLED, CANCELLED) if live == 0 else Step("wait")
    if status == FINALIZING:
        return Step("finish", COMPLETED) if now - job.updated_at >= stale else Step("wait")
    if status != IN_PROGRESS:
        return Step("wait")
    if now >= job.expires_at:  # nothing new starts; what runs may finish
        return Step("finish", EXPIRED, EXPIRED) if live == 0 else Step("wait")
    if not unfinished:
        return Step("finish", COMPLETED)
    return Step("run")


def mistral_status(status: str) -> str:
    return MISTRAL_STATES.get(status, status.upper())


def statuses_of_mistral(names: list[str]) -> list[str]:
    """The states a Mistral status filter names."""
    return [status for status, name in MISTRAL_STATES.items() if name in names]


def _seconds(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())


def ended_at(job: BatchJob) -> datetime | None:
    """When the job reached its end state, if it has."""
    moments = (job.completed_at, job.cancelled_at, job.expired_at, job.failed_at)
    return next((moment for moment in moments if moment is not None), None)


def throughput(job: BatchJob, counts: RequestCounts, now: datetime) -> dict[str, Any]:
    """Requests and output tokens per second since the job started running (to its end)."""
    if job.in_progress_at is None:
        return {"model": job.model, "requests_per_second": 0.0, "output_tokens_per_second": 0.0}
    seconds = max(((ended_at(job) or now) - job.in_progress_at).total_seconds(), 1e-3)
    return {
        "model": job.model,
        "requests_per_second": round(counts.ended / seconds, 3),
        "output_tokens_per_second": round(counts.completion_tokens / seconds, 1),
    }


def _extras(job: BatchJob, counts: RequestCounts, now: datetime) -> dict[str, Any]:
    """What both objects carry beyond their API's own fields: the pause, the throughput."""
    return {
        "paused": None if job.paused is None else {"reason": job.paused},
        "throughput": throughput(job, counts, now),
    }


def openai_object(job: BatchJob, counts: RequestCounts, now: datetime) -> dict[str, Any]:
    """The job as OpenAI's ``Batch``."""
    return {
        "id": job.id,
        "object": "batch",
        "endpoint": job.endpoint,
        "model": job.model,
        "errors": None,
        "input_file_id": job.input_files[0] if job.input_files else None,
        "completion_window": job.completion_window,
        "status": job.status,
        "output_file_id": job.output_file_id,
        "error_file_id": job.error_file_id,
        "created_at": _seconds(job.created_at),
        "in_progress_at": _seconds(job.in_progress_at),
        "expires_at": _seconds(job.expires_at),
        "finalizing_at": _seconds(job.finalizing_at),
        "completed_at": _seconds(job.completed_at),
        "failed_at": _seconds(job.failed_at),
        "expired_at": _seconds(job.expired_at),
        "cancelling_at": _seconds(job.cancelling_at),
        "cancelled_at": _seconds(job.cancelled_at),
        "request_counts": {
            "total": job.total,
            "completed": counts.succeeded,
            "failed": counts.unsuccessful,
        },
        "usage": {
            "input_tokens": counts.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": counts.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": counts.prompt_tokens + counts.completion_tokens,
        },
        "metadata": job.metadata,
        **_extras(job, counts, now),
    }


def mistral_object(
    job: BatchJob,
    counts: RequestCounts,
    now: datetime,
    outputs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The job as Mistral's ``BatchJob`` (``outputs``: its output lines, when asked inline)."""
    return {
        "id": job.id,
        "object": "batch",
        "input_files": job.input_files,
        "metadata": job.metadata,
        "endpoint": job.endpoint,
        "model": job.model,
        "errors": [],
        "status": mistral_status(job.status),
        "created_at": _seconds(job.created_at),
        "total_requests": job.total,
        "completed_requests": counts.ended,
        "succeeded_requests": counts.succeeded,
        "failed_requests": counts.unsuccessful,
        "started_at": _seconds(job.in_progress_at),
        "completed_at": _seconds(ended_at(job)),
        "output_file": job.output_file_id,
        "error_file": job.error_file_id,
        "outputs": outputs,
        **_extras(job, counts, now),
    }


def table(rows: list[tuple[BatchJob, RequestCounts]]) -> str:
    """Jobs for operators (`mistral-serve batch list`): one line each, newest first."""
    header = ("ID", "KEY", "API", "MODEL", "STATUS", "DONE", "FAILED", "TOTAL", "CREATED", "PAUSED")
    lines = [header]
    for job, counts in rows:
        lines.append(
            (
                job.id,
                job.key_id or "-",
                job.api,
                job.model,
                job.status,
                str(counts.succeeded),
                str(counts.unsuccessful),
                str(job.total),
                job.created_at.strftime("%Y-%m-%d %H:%M"),
                job.paused or "",
            )
        )
    return fixed_width(lines)
