"""The batch runner on a real store (SQLite and PostgreSQL) with a fake engine (a function
that answers each request): jobs run to their files within the share rule, claims lapse and
are taken over exactly once, budgets pause, cancel and expiry end the rest, a revoked key
fails the job. The same behaviours against real engines: tests/integration/test_batches.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import timedelta

import orjson
import pytest

from mistral_serve.batch.files import FileLimits, Files
from mistral_serve.batch.runner import BatchRunner, RunnerOptions
from mistral_serve.errors import EngineError, InsufficientQuotaError, InvalidApiKeyError
from mistral_serve.gateway.responses import GatewayResponse
from mistral_serve.store import utc_now
from mistral_serve.store.batches import BatchJob, BatchRecords, ClaimedRequest, NewRequest
from mistral_serve.store.files import FileRecords
from mistral_serve.tenancy.auth import ANYONE, Caller
from tests.unit.store.test_batches import job

OPTIONS = RunnerOptions(max_share=0.5, lease_s=1.0, tick_s=0.05)
SLOTS = 8


class FakeEngine:
    """Answers each batch request after ``delay_s``; counts how many run at once."""

    def __init__(self, delay_s: float = 0.02) -> None:
        self.delay_s = delay_s
        self.running = 0
        self.most = 0
        self.calls: list[str] = []
        self.fail: Callable[[ClaimedRequest], Exception | None] = lambda request: None
        self.started = asyncio.Event()

    async def execute(
        self, caller: Caller, job: BatchJob, request: ClaimedRequest
    ) -> GatewayResponse:
        self.calls.append(request.custom_id)
        failure = self.fail(request)
        if failure is not None:
            raise failure
        self.running += 1
        self.started.set()
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.running -= 1
        body = {
            "id": f"cmpl-{request.custom_id}",
            "usage": {"prompt_tokens": 3, "completion_tokens": 4},
        }
        return GatewayResponse(200, "application/json", body=orjson.dumps(body))

    def capacity(self, model: str) -> tuple[int, int, int]:
        return SLOTS, SLOTS - self.running, 0


async def anyone(key_id: str) -> Caller:
    return ANYONE


@pytest.fixture
async def files(store, tmp_path) -> Files:
    return Files(FileRecords(store), FileLimits(tmp_path / "files", 10**6))


@contextlib.asynccontextmanager
async def running(runner: BatchRunner) -> AsyncIterator[BatchRunner]:
    runner.start()
    try:
        yield runner
    finally:
        await runner.stop(5)


async def made(records: BatchRecords, n: int, **changes) -> BatchJob:
    new = replace(
        job(),
        status="validating",
        total=n,
        in_progress_at=None,
        created_at=utc_now(),
        updated_at=utc_now(),
        **{"expires_at": utc_now() + timedelta(hours=1), **changes},
    )
    await records.add(
        new, [NewRequest(i + 1, f"r{i + 1}", {"model": "demo"}, f"{i % 3}") for i in range(n)]
    )
    return new


async def ended(records: BatchRecords, job_id: str, timeout_s: float = 20) -> BatchJob:
    for _ in range(int(timeout_s / 0.05)):
        current = await records.get(job_id)
        assert current is not None
        if current.status in ("completed", "failed", "expired", "cancelled"):
            return current
        await asyncio.sleep(0.05)
    raise AssertionError(f"{job_id} still {current.status}")


def lines(files: Files, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [orjson.loads(line) for line in files.path(file_id).read_bytes().splitlines()]


async def test_a_job_runs_to_its_files_within_its_share(store, files):
    records, engine = BatchRecords(store), FakeEngine()
    new = await made(records, 30)
    async with running(
        BatchRunner(records, files, engine.execute, anyone, engine.capacity, OPTIONS)
    ):
        done = await ended(records, new.id)
    assert done.status == "completed" and done.in_progress_at is not None
    output = lines(files, done.output_file_id)
    assert sorted(line["custom_id"] for line in output) == sorted(f"r{i}" for i in range(1, 31))
    assert done.error_file_id is None
    assert engine.most <= SLOTS * OPTIONS.max_share  # never more than its share of the slots
    counts = await records.counts(new.id)
    assert (counts.succeeded, counts.prompt_tokens, counts.completion_tokens) == (30, 90, 120)


async def test_a_dead_gateways_claims_are_taken_over_and_each_request_ends_once(store, files):
    records, engine = BatchRecords(store), FakeEngine()
    new = await made(records, 12)
    await records.move(new.id, ("validating",), "in_progress", utc_now())
    # A gateway claimed five and died (nothing renews them, nothing settles them).
    dead = await records.claim(new.id, "gw-dead", 5, utc_now(), OPTIONS.lease)
    async with running(
        BatchRunner(records, files, engine.execute, anyone, engine.capacity, OPTIONS)
    ):
        done = await ended(records, new.id)
    # Its late answers change nothing.
    for request in dead:
        assert not await records.settle(
            request, "gw-dead", utc_now(), state="succeeded", status_code=200, result={}
        )
    output = lines(files, done.output_file_id)
    assert sorted(line["custom_id"] for line in output) == sorted(f"r{i}" for i in range(1, 13))
    assert all(line["response"]["body"]["id"].startswith("cmpl-") for line in output)


async def test_a_budget_pauses_the_job_and_it_goes_on_after(store, files):
    records, engine = BatchRecords(store), FakeEngine()
    refusals = iter(range(3))
    engine.fail = lambda request: (
        InsufficientQuotaError("The key's daily token budget is spent.")
        if next(refusals, None) is not None
        else None
    )
    new = await made(records, 4)
    runner = BatchRunner(records, files, engine.execute, anyone, engine.capacity, OPTIONS)
    import mistral_serve.batch.runner as module

    module_budget, module.BUDGET_RETRY_S = module.BUDGET_RETRY_S, 0.3
    try:
        async with running(runner):
            for _ in range(100):
                current = await records.get(new.id)
                if current is not None and current.paused:
                    break
                await asyncio.sleep(0.02)
            assert current is not None and current.status == "in_progress"
            assert "budget" in (current.paused or "")
            done = await ended(records, new.id)
    finally:
        module.BUDGET_RETRY_S = module_budget
    assert done.status == "completed" and done.paused is None
    assert len(lines(files, done.output_file_id)) == 4


async def test_engine_failures_are_retried_then_written_as_errors(store, files):
    records, engine = BatchRecords(store), FakeEngine()
    engine.fail = lambda request: (
        EngineError("The engine failed (500)") if request.custom_id == "r2" else None
    )
    new = await made(records, 3)
    async with running(
        BatchRunner(records, files, engine.execute, anyone, engine.capacity, OPTIONS)
    ):
        done = await ended(records, new.id)
    assert engine.calls.count("r2") == OPTIONS.max_attempts
    [error] = lines(files, done.error_file_id)
    assert (error["custom_id"], error["response"], error["error"]["code"]) == (
        "r2",
        None,
        "engine_error",
    )
    assert len(lines(files, done.output_file_id)) == 2


async def test_cancel_lets_running_requests_finish_and_ends_the_rest(store, files):
    records, engine = BatchRecords(store), FakeEngine(delay_s=0.3)
    new = await made(records, 20)
    async with running(
        BatchRunner(records, files, engine.execute, anyone, engine.capacity, OPTIONS)
    ):
        await asyncio.wait_for(engine.started.wait(), 10)
        assert await records.move(new.id, ("in_progress",), "cancelling", utc_now())
        started = len(engine.calls)
        done = await ended(records, new.id)
    assert done.status == "cancelled"
    output, errors = lines(files, done.output_file_id), lines(files, done.error_file_id)
    assert len(output) == started  # those running finished
    assert {line["error"]["code"] for line in errors} == {"batch_cancelled"}
    assert len(output) + len(errors) == 20


async def test_a_job_past_its_window_expires_with_its_partial_output(store, files):
    records, engine = BatchRecords(store), FakeEngine(delay_s=0.2)
    new = await made(records, 30, expires_at=utc_now() + timedelta(seconds=0.5))
    async with running(
        BatchRunner(records, files, engine.execute, anyone, engine.capacity, OPTIONS)
    ):
        done = await ended(records, new.id)
    assert done.status == "expired" and done.expired_at is not None
    output, errors = lines(files, done.output_file_id), lines(files, done.error_file_id)
    assert output and errors and len(output) + len(errors) == 30
    assert {line["error"]["code"] for line in errors} == {"batch_expired"}


async def test_a_revoked_key_fails_the_job(store, files):
    records, engine = BatchRecords(store), FakeEngine()

    async def revoked(key_id: str) -> Caller:
        raise InvalidApiKeyError("revoked")

    new = await made(records, 3)
    async with running(
        BatchRunner(records, files, engine.execute, revoked, engine.capacity, OPTIONS)
    ):
        done = await ended(records, new.id)
    assert done.status == "failed" and done.failed_at is not None and not engine.calls
    errors = lines(files, done.error_file_id)
    assert [line["error"]["code"] for line in errors] == ["invalid_api_key"] * 3


async def test_a_store_that_stops_answering_is_said_once_and_tried_again(store, files, caplog):
    caplog.set_level(logging.INFO, logger="mistral_serve.batch.runner")
    records, engine = BatchRecords(store), FakeEngine()
    new = await made(records, 3)
    failures = iter(range(5))

    class Away(BatchRecords):
        async def active(self, statuses):
            if next(failures, None) is not None:
                raise OSError("the database is away")
            return await super().active(statuses)

    away = Away(store)
    async with running(BatchRunner(away, files, engine.execute, anyone, engine.capacity, OPTIONS)):
        done = await ended(records, new.id)
    assert done.status == "completed"
    warned = [r for r in caplog.records if "the database is away" in r.getMessage()]
    assert len(warned) == 1 and any("answers again" in r.getMessage() for r in caplog.records)
