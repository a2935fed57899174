"""The batch runner: every gateway process runs one. It claims jobs' requests from the store
and runs them through the gateway's pipeline on the engines' idle capacity, writes each
result back, and moves jobs through their states (batch/jobs.py).

- **Idle capacity only** (batch/share.py): a request is claimed only into a free engine slot
  of its model, while nobody waits in the model's admission line, and while the batch holds
  less than BATCH_MAX_SHARE of the model's slots (every gateway's batch requests counted from
  the store). It then runs at :data:`~mistral_serve.admission.BATCH_PRIORITY`, after every
  interactive request, in the gateway's line and in the engine's scheduler. The runner looks
  again whenever an engine frees a slot, and every :attr:`RunnerOptions.tick_s`.
- **Durable**: a claim is a lease in the store, renewed every third of BATCH_LEASE_S while
  the request runs. A gateway killed mid-job leaves its claims to lapse; then any gateway
  (itself, restarted) claims those requests again. A result is written only under the claim
  that ran it (store/batches.py), so each request has exactly one.
- **Retries**: a request that could not reach an engine (no engine ready, the line full, the
  gateway draining) goes back unrun, uncounted; an engine's failure is retried up to
  :attr:`RunnerOptions.max_attempts` times, then written as the request's error. The engine's
  own answer (a 400 for a prompt too long, say) is the request's result, as for a live client.
- **Paused, not failed**: a key over its rate limit or out of its token budget pauses its
  job (the reason shown on the job) and the request goes back; the job is tried again after
  the limiter's Retry-After, or every :data:`BUDGET_RETRY_S` for a budget.
- **Stopping**: a gateway shutting down stops claiming, lets its running requests finish for
  the shutdown grace, and gives back the rest unrun, for another gateway to take at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import orjson

from mistral_serve.batch.files import OUTPUT_PURPOSE, Files
from mistral_serve.batch.jobs import (
    ACTIVE,
    CANCELLING,
    FAILED,
    FINALIZING,
    IN_PROGRESS,
    VALIDATING,
    Step,
    next_step,
)
from mistral_serve.batch.output import KEY_GONE, job_files
from mistral_serve.batch.share import batch_room
from mistral_serve.errors import (
    EngineError,
    InsufficientQuotaError,
    InvalidApiKeyError,
    MistralServeError,
    NoReadyEngineError,
    RateLimitExceededError,
    ServerOverloadedError,
)
from mistral_serve.gateway.responses import GatewayResponse
from mistral_serve.responses.background import error_of
from mistral_serve.store import WallClock, utc_now
from mistral_serve.store.batches import (
    FAILED as REQUEST_FAILED,
)
from mistral_serve.store.batches import (
    SUCCEEDED,
    BatchJob,
    BatchRecords,
    ClaimedRequest,
)
from mistral_serve.telemetry.batch import BatchTelemetry
from mistral_serve.tenancy.auth import Caller

log = logging.getLogger(__name__)

#: How often a job paused on its key's token budget is tried again.
BUDGET_RETRY_S = 60.0
#: How long a job's requests are not claimed here after one could not reach an engine.
REST_S = 1.0
#: How often the jobs' and queue's counts behind the metrics are read from the store.
METRICS_REFRESH_S = 5.0

#: Runs one request of a job as its key (the gateway's pipeline); its answer.
Execute = Callable[[Caller, BatchJob, ClaimedRequest], Awaitable[GatewayResponse]]
#: The key a job runs as (raises InvalidApiKeyError when it is gone).
CallerOf = Callable[[str], Awaitable[Caller]]
#: A model's engine slots, free slots and interactive requests waiting (Gateway.batch_capacity).
CapacityOf = Callable[[str], tuple[int, int, int]]


@dataclass(frozen=True)
class RunnerOptions:
    max_share: float = 0.8  # BATCH_MAX_SHARE
    lease_s: float = 30.0  # BATCH_LEASE_S
    tick_s: float = 0.5
    max_attempts: int = 3

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.lease_s)


class BatchRunner:
    def __init__(
        self,
        records: BatchRecords,
        files: Files,
        execute: Execute,
        caller_of: CallerOf,
        capacity: CapacityOf,
        options: RunnerOptions = RunnerOptions(),
        *,
        telemetry: BatchTelemetry | None = None,
        clock: WallClock = utc_now,
        worker: str | None = None,
    ) -> None:
        self._records = records
        self._files = files
        self._execute = execute
        self._caller_of = caller_of
        self._capacity = capacity
        self._options = options
        self._telemetry = telemetry
        self._clock = clock
        #: This process's name on its claims (unique per run: a restarted gateway is new).
        self.worker = worker or f"gw-{secrets.token_hex(6)}"
        #: The jobs whose requests this runner may claim now, oldest first.
        self._runnable: list[BatchJob] = []
        #: Requests running here, per model, and other gateways' as last read.
        self._mine: Counter[str] = Counter()
        self._others: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: Jobs not claimed from here until then (a request could not reach an engine).
        self._resting: dict[str, datetime] = {}
        self._wakeup = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._renewed_at: datetime | None = None
        self._maintained_at: datetime | None = None
        self._metrics_at: datetime | None = None
        #: The store's jobs by state and waiting requests per model (for the metrics).
        self.job_states: dict[str, int] = {}
        self.waiting: dict[str, int] = {}

    # -- life ----------------------------------------------------------------------------------
    def start(self) -> None:
        log.info(
            "batch runner %s: claims last %g s; at most %g of a model's slots",
            self.worker,
            self._options.lease_s,
            self._options.max_share,
        )
        self._loop_task = asyncio.get_running_loop().create_task(self._loop(), name="batch")

    def wake(self) -> None:
        """An engine may take more work, or a job was made or cancelled: look now."""
        self._wakeup.set()

    def stop_claiming(self) -> None:
        """Draining: take no new requests (those running finish)."""
        self._stopping = True

    async def stop(self, grace_s: float) -> None:
        """Stop claiming; let running requests finish for ``grace_s``; give back the rest."""
        self._stopping = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace_s)
        for task in list(self._tasks):
            task.cancel()  # each gives its request back unrun
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    async def _loop(self) -> None:
        failing = False
        while True:
            try:
                await self._round()
                if failing:
                    log.info("batch runner: the store answers again")
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store is away: try again next tick (said once)
                if not failing:
                    log.warning(
                        "batch runner: %s (trying again every %g s)", exc, self._options.tick_s
                    )
                failing = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._options.tick_s)
            self._wakeup.clear()

    async def _round(self) -> None:
        """Keep leases, move jobs on, then fill free slots."""
        now = self._clock()
        await self._keep_leases(now)
        if (
            self._maintained_at is None
            or (now - self._maintained_at).total_seconds() >= self._options.tick_s
        ):
            self._maintained_at = now
            await self._maintain(now)
        await self._fill(now)

    async def _keep_leases(self, now: datetime) -> None:
        third = self._options.lease / 3
        if self._tasks and (self._renewed_at is None or now - self._renewed_at >= third):
            self._renewed_at = now
            await self._records.renew(self.worker, now, self._options.lease)

    # -- jobs ----------------------------------------------------------------------------------
    async def _maintain(self, now: datetime) -> None:
        """Every job's next step (batch/jobs.py): start, run, finish or wait."""
        jobs = await self._records.active(ACTIVE)
        runnable: list[BatchJob] = []
        if jobs:
            running = await self._records.running_by_model(now)
            self._others = {m: max(0, n - self._mine[m]) for m, n in running.items()}
        for job in jobs:
            step = await self._step(job, now)
            if step.action == "start":
                if await self._records.move(job.id, (VALIDATING,), IN_PROGRESS, now):
                    job = await self._records.get(job.id) or job
                    step = Step("run")
            if step.action == "run" and not self._stopping:
                runnable.append(job)
            elif step.action == "finish":
                await self._finish(job, step, now)
        self._runnable = runnable
        await self._count(now)

    async def _step(self, job: BatchJob, now: datetime) -> Step:
        if job.status in (VALIDATING, IN_PROGRESS):
            try:
                await self._caller_of(job.key_id)
            except InvalidApiKeyError:
                return Step("finish", FAILED, REQUEST_FAILED)
        unfinished = await self._records.unfinished(job.id)
        live = await self._records.running(job.id, now) if unfinished else 0
        return next_step(job, unfinished, live, now, stale=self._options.lease)

    async def _finish(self, job: BatchJob, step: Step, now: datetime) -> None:
        """End the job as ``step.final``: what never ran ends too, the files are written from
        the rows, then the job's status says so (any gateway may do this; the files come out
        the same, and one status change wins)."""
        assert step.final is not None
        if step.unrun is not None:
            error = KEY_GONE if step.final == FAILED else {}  # else: output.UNRUN_ERRORS
            ended = await self._records.end_unrun(job.id, step.unrun, now, error)
            for _ in range(ended):
                self._ended(step.unrun, job.model)
        if job.status == IN_PROGRESS and step.final != FAILED:
            if not await self._records.move(job.id, (IN_PROGRESS,), FINALIZING, now):
                return  # another gateway is finalizing it
        ended_requests = await self._records.ended(job.id)
        files = await asyncio.to_thread(job_files, job.id, ended_requests)  # 50k lines: a thread
        output_id = error_id = None
        if files.output_lines:
            output_id = f"file-{job.id}-output"
            await self._files.keep(
                job.key_id, output_id, f"{job.id}_output.jsonl", files.output, OUTPUT_PURPOSE
            )
        if files.error_lines:
            error_id = f"file-{job.id}-errors"
            await self._files.keep(
                job.key_id, error_id, f"{job.id}_errors.jsonl", files.errors, OUTPUT_PURPOSE
            )
        moved = await self._records.move(
            job.id,
            (VALIDATING, IN_PROGRESS, FINALIZING, CANCELLING),
            step.final,
            self._clock(),
            output_file_id=output_id,
            error_file_id=error_id,
            paused=None,
            paused_until=None,
        )
        if moved:
            log.info(
                "batch %s %s: %d succeeded, %d not",
                job.id,
                step.final,
                files.output_lines,
                files.error_lines,
            )

    async def _count(self, now: datetime) -> None:
        """The store's counts behind the metrics, every METRICS_REFRESH_S."""
        if self._telemetry is None:
            return
        last = self._metrics_at
        if last is not None and (now - last).total_seconds() < METRICS_REFRESH_S:
            return
        self._metrics_at = now
        self.job_states = await self._records.statuses()
        self.waiting = await self._records.waiting_by_model(ACTIVE)

    # -- requests ------------------------------------------------------------------------------
    async def _fill(self, now: datetime) -> None:
        """Claim as many requests as the share rule allows, per model, oldest job first."""
        if self._stopping:
            return
        room: dict[str, int] = {}
        for job in self._runnable:
            if job.paused_until is not None and job.paused_until > now:
                continue
            resting = self._resting.get(job.id)
            if resting is not None:
                if resting > now:
                    continue
                del self._resting[job.id]
            if job.model not in room:
                slots, free, waiting = self._capacity(job.model)
                running = self._mine[job.model] + self._others.get(job.model, 0)
                room[job.model] = batch_room(
                    slots=slots,
                    free=free,
                    waiting=waiting,
                    batch_running=running,
                    share=self._options.max_share,
                )
            if room[job.model] <= 0:
                continue
            claimed = await self._records.claim(
                job.id, self.worker, room[job.model], now, self._options.lease
            )
            room[job.model] -= len(claimed)
            for request in claimed:
                self._mine[job.model] += 1
                task = asyncio.get_running_loop().create_task(self._run(job, request))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _run(self, job: BatchJob, request: ClaimedRequest) -> None:
        try:
            await self._run_one(job, request)
        except asyncio.CancelledError:  # stopping: back to the store, unrun
            with contextlib.suppress(Exception):
                await self._records.release(request, self.worker, counted=False)
            raise
        except Exception:
            log.exception("batch %s line %d: not recorded", job.id, request.line)
        finally:
            self._mine[job.model] -= 1
            self.wake()

    async def _run_one(self, job: BatchJob, request: ClaimedRequest) -> None:
        telemetry = self._telemetry
        span = (
            telemetry.request_span(job.trace_parent, job.id, request.custom_id)
            if telemetry is not None
            else contextlib.nullcontext()
        )
        with span:
            try:
                caller = await self._caller_of(job.key_id)
                answer = await self._execute(caller, job, request)
            except (RateLimitExceededError, InsufficientQuotaError) as error:
                await self._pause(job, error)
                await self._settle_unrun(job, request, counted=False)
                return
            except (ServerOverloadedError, NoReadyEngineError):
                # no engine, a full line, limits unreachable, draining: later, not at once
                self._resting[job.id] = self._clock() + timedelta(seconds=REST_S)
                await self._settle_unrun(job, request, counted=False)
                return
            except EngineError as error:
                if request.attempts < self._options.max_attempts:
                    await self._settle_unrun(job, request, counted=True)
                    return
                await self._settle(job, request, REQUEST_FAILED, None, error_of(error))
                return
            except MistralServeError as error:  # the request's own fault: its answer
                await self._settle(job, request, REQUEST_FAILED, error.status, error.to_dict())
                return
            body = answer.body if answer.body is not None else b"{}"
            result = _json(body)
            state = SUCCEEDED if answer.status == 200 else REQUEST_FAILED
            await self._settle(job, request, state, answer.status, result)
            if job.paused is not None and state == SUCCEEDED:
                await self._records.set(job.id, self._clock(), paused=None, paused_until=None)

    async def _settle(
        self,
        job: BatchJob,
        request: ClaimedRequest,
        state: str,
        status_code: int | None,
        result: dict[str, Any],
    ) -> None:
        usage = result.get("usage") if isinstance(result.get("usage"), dict) else {}
        written = await self._records.settle(
            request,
            self.worker,
            self._clock(),
            state=state,
            status_code=status_code,
            result=result,
            prompt_tokens=_int(usage.get("prompt_tokens", usage.get("input_tokens"))),
            completion_tokens=_int(usage.get("completion_tokens", usage.get("output_tokens"))),
        )
        if written:
            self._ended(state, job.model)
        else:  # its lease ran out and another gateway took it: that run's result counts
            log.warning("batch %s line %d: claim lost; result dropped", job.id, request.line)
            self._ended("dropped", job.model)

    async def _settle_unrun(self, job: BatchJob, request: ClaimedRequest, *, counted: bool) -> None:
        await self._records.release(request, self.worker, counted=counted)
        self._ended("released", job.model)

    async def _pause(self, job: BatchJob, error: MistralServeError) -> None:
        wait_s = getattr(error, "retry_after_s", None) or BUDGET_RETRY_S
        until = self._clock() + timedelta(seconds=wait_s)
        await self._records.set(
            job.id, self._clock(), paused=error.message[:300], paused_until=until
        )
        self._runnable = [
            replace(j, paused=error.message, paused_until=until) if j.id == job.id else j
            for j in self._runnable
        ]

    def _ended(self, state: str, model: str) -> None:
        if self._telemetry is not None:
            self._telemetry.request_ended(state, model)


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {"text": body.decode(errors="replace")}
    return value if isinstance(value, dict) else {"value": value}


def _int(value: object) -> int | None:
    return value if isinstance(value, int) else None
