"""Batch jobs and their requests, as plain records: made whole, read, paged, moved from state
to state by conditional updates, and their requests claimed, renewed, settled and released.

**Claims.** A gateway takes requests to run by *claiming* them: a claim names the gateway
(``claim``) and lasts until ``lease_until``; the gateway renews its leases while it runs them.
A request whose lease ran out (its gateway died) can be claimed again by anyone. On PostgreSQL
the claim reads with ``FOR UPDATE SKIP LOCKED``, so gateways claiming at once take different
rows without waiting on each other; on both databases the update that makes the claim is
conditional on the row still being free, so two claimers can never both hold one row.

**Exactly once.** A result is written only by the holder of the request's current claim
(``claim`` and ``attempts`` both match, the row still running): a gateway that lost its
lease, and whose request another gateway took, has its late result dropped. A request has one
result, and the output files are written from the rows: every ``custom_id`` once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update

from mistral_serve.store.database import Store
from mistral_serve.store.models import BatchJobRow, BatchRequestRow, utc

#: A request's states: waiting to run, running under a claim, and its ends.
PENDING, RUNNING = "pending", "running"
SUCCEEDED, FAILED, CANCELLED, EXPIRED = "succeeded", "failed", "cancelled", "expired"
ENDED = (SUCCEEDED, FAILED, CANCELLED, EXPIRED)
#: Rows inserted per statement when a job is made.
_INSERT_CHUNK = 1000
#: Tries of one claim that keeps losing rows to claimers at the same moment (SQLite).
_CLAIM_TRIES = 4


@dataclass(frozen=True)
class BatchJob:
    id: str
    key_id: str
    api: str
    endpoint: str
    model: str
    input_files: list[str]
    completion_window: str
    status: str
    metadata: dict[str, Any] | None
    output_file_id: str | None
    error_file_id: str | None
    total: int
    paused: str | None
    paused_until: datetime | None
    trace_parent: str | None
    created_at: datetime
    in_progress_at: datetime | None
    finalizing_at: datetime | None
    completed_at: datetime | None
    failed_at: datetime | None
    expired_at: datetime | None
    cancelling_at: datetime | None
    cancelled_at: datetime | None
    expires_at: datetime
    updated_at: datetime


_MOMENTS = tuple(f.name for f in fields(BatchJob) if f.name.endswith("_at"))


@dataclass(frozen=True)
class NewRequest:
    line: int
    custom_id: str
    body: dict[str, Any]
    route_key: str


@dataclass(frozen=True)
class ClaimedRequest:
    job_id: str
    line: int
    custom_id: str
    body: dict[str, Any]
    attempts: int  # this claim's number: 1 for the first


@dataclass(frozen=True)
class EndedRequest:
    line: int
    custom_id: str
    state: str
    status_code: int | None
    result: dict[str, Any] | None
    attempts: int = 1  # claims it took (more than one: retried, or taken over)


@dataclass(frozen=True)
class RequestCounts:
    pending: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    expired: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def ended(self) -> int:
        return self.succeeded + self.failed + self.cancelled + self.expired

    @property
    def unsuccessful(self) -> int:
        return self.failed + self.cancelled + self.expired


class BatchRecords:
    def __init__(self, store: Store) -> None:
        self._sessions = store.sessions

    # -- jobs ----------------------------------------------------------------------------------
    async def add(self, job: BatchJob, requests: Sequence[NewRequest]) -> None:
        """The job and every request of it, in one transaction."""
        async with self._sessions.begin() as session:
            session.add(_job_row(job))
            await session.flush()
            for start in range(0, len(requests), _INSERT_CHUNK):
                chunk = requests[start : start + _INSERT_CHUNK]
                await session.execute(
                    insert(BatchRequestRow),
                    [
                        {
                            "job_id": job.id,
                            "line": request.line,
                            "custom_id": request.custom_id,
                            "body": request.body,
                            "route_key": request.route_key,
                            "state": PENDING,
                            "attempts": 0,
                        }
                        for request in chunk
                    ],
                )

    async def get(self, job_id: str, key_id: str | None = None) -> BatchJob | None:
        """The job (``key_id``: only if it is that key's; None: anyone's, for operators)."""
        async with self._sessions() as session:
            row = await session.get(BatchJobRow, job_id, populate_existing=True)
        if row is None or (key_id is not None and row.key_id != key_id):
            return None
        return _job(row)

    async def page(
        self,
        key_id: str | None,
        *,
        after: str | None = None,
        limit: int = 20,
        offset: int = 0,
        statuses: Iterable[str] | None = None,
        model: str | None = None,
        created_after: datetime | None = None,
    ) -> list[BatchJob]:
        """Up to ``limit`` jobs, newest first, after the job ``after`` (OpenAI's cursor) or
        from ``offset`` (Mistral's pages); ``key_id`` None: every key's."""
        query = self._filtered(key_id, statuses, model, created_after)
        if after is not None:
            async with self._sessions() as session:
                cursor = await session.get(BatchJobRow, after)
            if cursor is not None:
                query = query.where(
                    or_(
                        BatchJobRow.created_at < cursor.created_at,
                        and_(
                            BatchJobRow.created_at == cursor.created_at,
                            BatchJobRow.id < cursor.id,
                        ),
                    )
                )
        query = query.order_by(BatchJobRow.created_at.desc(), BatchJobRow.id.desc())
        async with self._sessions() as session:
            rows = (await session.scalars(query.offset(offset).limit(limit))).all()
        return [_job(row) for row in rows]

    async def count(
        self,
        key_id: str | None,
        *,
        statuses: Iterable[str] | None = None,
        model: str | None = None,
        created_after: datetime | None = None,
    ) -> int:
        query = self._filtered(key_id, statuses, model, created_after)
        async with self._sessions() as session:
            return int(
                await session.scalar(select(func.count()).select_from(query.subquery())) or 0
            )

    @staticmethod
    def _filtered(
        key_id: str | None,
        statuses: Iterable[str] | None,
        model: str | None,
        created_after: datetime | None,
    ) -> Any:
        query = select(BatchJobRow)
        if key_id is not None:
            query = query.where(BatchJobRow.key_id == key_id)
        if statuses is not None:
            query = query.where(BatchJobRow.status.in_(list(statuses)))
        if model is not None:
            query = query.where(BatchJobRow.model == model)
        if created_after is not None:
            query = query.where(BatchJobRow.created_at > created_after)
        return query

    async def active(self, statuses: Iterable[str]) -> list[BatchJob]:
        """Every job in one of ``statuses``, oldest first (the runner's work)."""
        query = (
            select(BatchJobRow)
            .where(BatchJobRow.status.in_(list(statuses)))
            .order_by(BatchJobRow.created_at, BatchJobRow.id)
        )
        async with self._sessions() as session:
            return [_job(row) for row in (await session.scalars(query)).all()]

    async def move(
        self, job_id: str, from_statuses: Iterable[str], to: str, now: datetime, **values: Any
    ) -> bool:
        """Move the job to status ``to`` if it is in one of ``from_statuses`` (stamping
        ``<to>_at``), with ``values``; False when it was not (another gateway moved it)."""
        moment = f"{to}_at"
        stamped = {moment: now} if moment in _MOMENTS else {}
        statement = (
            update(BatchJobRow)
            .where(BatchJobRow.id == job_id, BatchJobRow.status.in_(list(from_statuses)))
            .values(status=to, updated_at=now, **stamped, **_columns(values))
        )
        async with self._sessions.begin() as session:
            result = await session.execute(statement)
        return bool(result.rowcount)

    async def set(self, job_id: str, now: datetime, **values: Any) -> None:
        """Change the job's ``values`` (a pause, its files), whatever its status."""
        statement = (
            update(BatchJobRow)
            .where(BatchJobRow.id == job_id)
            .values(updated_at=now, **_columns(values))
        )
        async with self._sessions.begin() as session:
            await session.execute(statement)

    async def statuses(self) -> dict[str, int]:
        """How many jobs are in each status (the metrics)."""
        query = select(BatchJobRow.status, func.count()).group_by(BatchJobRow.status)
        async with self._sessions() as session:
            return {status: int(n) for status, n in (await session.execute(query)).all()}

    # -- requests ------------------------------------------------------------------------------
    async def counts(self, job_id: str) -> RequestCounts:
        """The job's requests by state, and the tokens of those that ended."""
        query = (
            select(
                BatchRequestRow.state,
                func.count(),
                func.coalesce(func.sum(BatchRequestRow.prompt_tokens), 0),
                func.coalesce(func.sum(BatchRequestRow.completion_tokens), 0),
            )
            .where(BatchRequestRow.job_id == job_id)
            .group_by(BatchRequestRow.state)
        )
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
        by_state = {state: int(n) for state, n, _, _ in rows}
        return RequestCounts(
            **{state: by_state.get(state, 0) for state in (PENDING, RUNNING, *ENDED)},
            prompt_tokens=sum(int(prompt) for _, _, prompt, _ in rows),
            completion_tokens=sum(int(completion) for _, _, _, completion in rows),
        )

    async def claim(
        self, job_id: str, worker: str, limit: int, now: datetime, lease: timedelta
    ) -> list[ClaimedRequest]:
        """Up to ``limit`` of the job's requests that nobody holds (pending, or running under
        a lease that ran out), in routing-key order, now claimed by ``worker`` until
        ``now + lease``. (On SQLite a claimer that lost rows to another at the same moment
        looks again, a few times.)"""
        taken: list[ClaimedRequest] = []
        for _ in range(_CLAIM_TRIES):
            wanted = limit - len(taken)
            if wanted <= 0:
                break
            found, claimed = await self._claim(job_id, worker, wanted, now, lease)
            taken += claimed
            if found < wanted or len(claimed) == found:  # no more free, or none lost
                break
        return taken

    async def _claim(
        self, job_id: str, worker: str, limit: int, now: datetime, lease: timedelta
    ) -> tuple[int, list[ClaimedRequest]]:
        """One try: how many free requests it saw, and those it claimed, in order: those under
        a lapsed lease first (a dead gateway's: few, and waiting longest), then pending ones,
        each read in the work index's order (job, state, routing key, line)."""
        free = _free(now)
        async with self._sessions.begin() as session:
            connection = await session.connection()
            locked = connection.dialect.name == "postgresql"
            lines: list[int] = []
            for state, lapsed in ((RUNNING, now), (PENDING, None)):
                query = select(BatchRequestRow.line).where(
                    BatchRequestRow.job_id == job_id, BatchRequestRow.state == state
                )
                if lapsed is not None:
                    query = query.where(BatchRequestRow.lease_until < lapsed)
                query = query.order_by(BatchRequestRow.route_key, BatchRequestRow.line)
                query = query.limit(limit - len(lines))
                if locked:
                    query = query.with_for_update(skip_locked=True)
                lines += (await session.scalars(query)).all()
                if len(lines) >= limit:
                    break
            if not lines:
                return 0, []
            claimed = (
                update(BatchRequestRow)
                .where(
                    BatchRequestRow.job_id == job_id,
                    BatchRequestRow.line.in_(lines),
                    free,  # still free: another claimer did not take it in between
                )
                .values(
                    state=RUNNING,
                    claim=worker,
                    lease_until=now + lease,
                    attempts=BatchRequestRow.attempts + 1,
                )
                .returning(
                    BatchRequestRow.line,
                    BatchRequestRow.custom_id,
                    BatchRequestRow.body,
                    BatchRequestRow.attempts,
                )
            )
            rows = (await session.execute(claimed)).all()
        order = {line: n for n, line in enumerate(lines)}
        taken = [ClaimedRequest(job_id, line, custom, body, n) for line, custom, body, n in rows]
        return len(lines), sorted(taken, key=lambda request: order[request.line])

    async def renew(self, worker: str, now: datetime, lease: timedelta) -> int:
        """Extend every lease ``worker`` holds to ``now + lease``; how many it holds."""
        statement = (
            update(BatchRequestRow)
            .where(BatchRequestRow.claim == worker, BatchRequestRow.state == RUNNING)
            .values(lease_until=now + lease)
        )
        async with self._sessions.begin() as session:
            result = await session.execute(statement)
        return int(result.rowcount)

    async def settle(
        self,
        request: ClaimedRequest,
        worker: str,
        now: datetime,
        *,
        state: str,
        status_code: int | None,
        result: dict[str, Any],
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
    ) -> bool:
        """Write the request's result, if ``worker`` still holds this claim of it; False when
        it lost it (its lease ran out and another gateway took the request): dropped."""
        statement = (
            update(BatchRequestRow)
            .where(*_held(request, worker))
            .values(
                state=state,
                status_code=status_code,
                result=result,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                claim=None,
                lease_until=None,
                finished_at=now,
            )
        )
        async with self._sessions.begin() as session:
            outcome = await session.execute(statement)
        return bool(outcome.rowcount)

    async def release(self, request: ClaimedRequest, worker: str, *, counted: bool) -> bool:
        """Give the request back unrun (to be claimed again); ``counted`` False: this claim
        does not count as an attempt (it never reached an engine)."""
        values: dict[str, Any] = {"state": PENDING, "claim": None, "lease_until": None}
        if not counted:
            values["attempts"] = BatchRequestRow.attempts - 1
        statement = update(BatchRequestRow).where(*_held(request, worker)).values(**values)
        async with self._sessions.begin() as session:
            outcome = await session.execute(statement)
        return bool(outcome.rowcount)

    async def end_unrun(
        self, job_id: str, state: str, now: datetime, result: dict[str, Any]
    ) -> int:
        """End every request of the job that nobody runs now (pending, or running under a
        lost lease) as ``state`` with ``result`` (a cancelled or expired job's rest)."""
        statement = (
            update(BatchRequestRow)
            .where(BatchRequestRow.job_id == job_id, _free(now))
            .values(
                state=state,
                result=result,
                claim=None,
                lease_until=None,
                finished_at=now,
            )
        )
        async with self._sessions.begin() as session:
            outcome = await session.execute(statement)
        return int(outcome.rowcount)

    async def unfinished(self, job_id: str) -> bool:
        """Whether any request of the job is still to run or running (an index lookup: the
        runner asks it of every active job twice a second)."""
        query = (
            select(BatchRequestRow.line)
            .where(
                BatchRequestRow.job_id == job_id,
                BatchRequestRow.state.in_((PENDING, RUNNING)),
            )
            .limit(1)
        )
        async with self._sessions() as session:
            return (await session.scalar(query)) is not None

    async def running(self, job_id: str, now: datetime) -> int:
        """The job's requests running under a live lease (on any gateway)."""
        query = select(func.count()).where(
            BatchRequestRow.job_id == job_id,
            BatchRequestRow.state == RUNNING,
            BatchRequestRow.lease_until >= now,
        )
        async with self._sessions() as session:
            return int(await session.scalar(query) or 0)

    async def running_by_model(self, now: datetime) -> dict[str, int]:
        """Batch requests running under a live lease, per model (every gateway's): what the
        batch holds of each model's engines."""
        return await self._per_model(
            BatchRequestRow.state == RUNNING, BatchRequestRow.lease_until >= now
        )

    async def waiting_by_model(self, statuses: Iterable[str]) -> dict[str, int]:
        """Requests not yet run of jobs in ``statuses``, per model (the batch queue's depth)."""
        return await self._per_model(
            BatchRequestRow.state == PENDING, BatchJobRow.status.in_(list(statuses))
        )

    async def _per_model(self, *conditions: Any) -> dict[str, int]:
        """Requests meeting ``conditions`` (on them and their job), counted per model."""
        query = (
            select(BatchJobRow.model, func.count())
            .select_from(BatchRequestRow)
            .join(BatchJobRow, BatchJobRow.id == BatchRequestRow.job_id)
            .where(*conditions)
            .group_by(BatchJobRow.model)
        )
        async with self._sessions() as session:
            return {model: int(n) for model, n in (await session.execute(query)).all()}

    async def holders(self, job_id: str) -> dict[str, int]:
        """The job's running requests per gateway holding them (lapsed claims included)."""
        query = (
            select(BatchRequestRow.claim, func.count())
            .where(BatchRequestRow.job_id == job_id, BatchRequestRow.state == RUNNING)
            .group_by(BatchRequestRow.claim)
        )
        async with self._sessions() as session:
            return {str(claim): int(n) for claim, n in (await session.execute(query)).all()}

    async def ended(self, job_id: str) -> list[EndedRequest]:
        """Every request of the job that has ended, in the input's order (its output)."""
        query = (
            select(
                BatchRequestRow.line,
                BatchRequestRow.custom_id,
                BatchRequestRow.state,
                BatchRequestRow.status_code,
                BatchRequestRow.result,
                BatchRequestRow.attempts,
            )
            .where(BatchRequestRow.job_id == job_id, BatchRequestRow.state.in_(ENDED))
            .order_by(BatchRequestRow.line)
        )
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
        return [EndedRequest(*row) for row in rows]


def _free(now: datetime) -> Any:
    """A request nobody runs: pending, or running under a lease that ran out."""
    return or_(
        BatchRequestRow.state == PENDING,
        and_(BatchRequestRow.state == RUNNING, BatchRequestRow.lease_until < now),
    )


def _held(request: ClaimedRequest, worker: str) -> tuple[Any, ...]:
    """The request is still under this claim of ``worker``'s."""
    return (
        BatchRequestRow.job_id == request.job_id,
        BatchRequestRow.line == request.line,
        BatchRequestRow.state == RUNNING,
        BatchRequestRow.claim == worker,
        BatchRequestRow.attempts == request.attempts,
    )


def _column(name: str) -> str:
    """A job's field as its model's attribute (``metadata`` is ``metadata_`` there)."""
    return "metadata_" if name == "metadata" else name


def _columns(values: dict[str, Any]) -> dict[str, Any]:
    return {_column(name): value for name, value in values.items()}


def _job_row(job: BatchJob) -> BatchJobRow:
    return BatchJobRow(**_columns(job.__dict__))


def _job(row: BatchJobRow) -> BatchJob:
    values = {f.name: getattr(row, _column(f.name)) for f in fields(BatchJob)}
    for moment in (*_MOMENTS, "paused_until"):
        values[moment] = utc(values[moment])
    return BatchJob(**values)
