"""Batch jobs' records on SQLite and PostgreSQL: claims in routing-key order, leases that
lapse and are taken over, results written only under the claim that ran them."""

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from mistral_serve.store.batches import (
    CANCELLED,
    SUCCEEDED,
    BatchJob,
    BatchRecords,
    NewRequest,
)

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)


def job(
    job_id: str = "batch_1", key: str = "k1", minutes: int = 0, model: str = "demo"
) -> BatchJob:
    created = NOW + timedelta(minutes=minutes)
    return BatchJob(
        id=job_id,
        key_id=key,
        api="openai",
        endpoint="/v1/chat/completions",
        model=model,
        input_files=["file-1"],
        completion_window="24h",
        status="in_progress",
        metadata={"team": "eval"},
        output_file_id=None,
        error_file_id=None,
        total=0,
        paused=None,
        paused_until=None,
        trace_parent=None,
        created_at=created,
        in_progress_at=created,
        finalizing_at=None,
        completed_at=None,
        failed_at=None,
        expired_at=None,
        cancelling_at=None,
        cancelled_at=None,
        expires_at=created + timedelta(hours=24),
        updated_at=created,
    )


def requests(keys: list[str]) -> list[NewRequest]:
    return [
        NewRequest(n + 1, f"r{n + 1}", {"model": "demo", "n": n}, key) for n, key in enumerate(keys)
    ]


async def test_a_job_reads_back_whole_and_pages_newest_first_for_its_key(store):
    records = BatchRecords(store)
    for n in range(3):
        await records.add(replace(job(f"batch_{n}", minutes=n), total=2), requests(["a", "b"]))
    await records.add(job("batch_other", key="k2"), [])
    assert await records.get("batch_1", "k1") == replace(job("batch_1", minutes=1), total=2)
    assert await records.get("batch_other", "k1") is None
    assert (await records.get("batch_other")) is not None  # an operator's read: any key's
    assert [j.id for j in await records.page("k1", limit=2)] == ["batch_2", "batch_1"]
    assert [j.id for j in await records.page("k1", after="batch_1")] == ["batch_0"]
    assert await records.count("k1") == 3
    counts = await records.counts("batch_0")
    assert (counts.pending, counts.running, counts.ended) == (2, 0, 0)


async def test_claims_follow_the_routing_key_and_never_overlap(store):
    records = BatchRecords(store)
    await records.add(job(), requests(["c", "a", "b", "a"]))
    first = await records.claim("batch_1", "gw-1", 2, NOW, LEASE)
    assert [r.line for r in first] == [2, 4]  # both "a" first, in line order
    second = await records.claim("batch_1", "gw-2", 5, NOW, LEASE)
    assert [r.line for r in second] == [3, 1]
    assert await records.claim("batch_1", "gw-3", 5, NOW, LEASE) == []
    assert await records.running("batch_1", NOW) == 4
    assert await records.running_by_model(NOW) == {"demo": 4}


async def test_claimers_at_once_take_each_request_once(store):
    records = BatchRecords(store)
    await records.add(job(), requests([f"{n:03d}" for n in range(60)]))
    taken = await asyncio.gather(
        *(records.claim("batch_1", f"gw-{n}", 7, NOW, LEASE) for n in range(6))
    )
    lines = [request.line for batch in taken for request in batch]
    assert len(lines) == len(set(lines)) == 42


async def test_a_lapsed_lease_is_taken_over_and_the_late_result_is_dropped(store):
    records = BatchRecords(store)
    await records.add(job(), requests(["a"]))
    [lost] = await records.claim("batch_1", "gw-dead", 1, NOW, LEASE)
    assert await records.claim("batch_1", "gw-2", 1, NOW + LEASE / 2, LEASE) == []
    later = NOW + LEASE + timedelta(seconds=1)
    [taken] = await records.claim("batch_1", "gw-2", 1, later, LEASE)
    assert taken.attempts == 2
    # The first gateway comes back with its answer: not written.
    dropped = await records.settle(
        lost, "gw-dead", later, state=SUCCEEDED, status_code=200, result={"first": True}
    )
    assert not dropped
    written = await records.settle(
        taken,
        "gw-2",
        later,
        state=SUCCEEDED,
        status_code=200,
        result={"second": True},
        prompt_tokens=5,
        completion_tokens=7,
    )
    assert written
    [ended] = await records.ended("batch_1")
    assert (ended.custom_id, ended.result) == ("r1", {"second": True})
    counts = await records.counts("batch_1")
    assert (counts.succeeded, counts.prompt_tokens, counts.completion_tokens) == (1, 5, 7)


async def test_renewed_leases_are_not_taken_and_released_requests_are(store):
    records = BatchRecords(store)
    await records.add(job(), requests(["a", "b"]))
    first, _ = await records.claim("batch_1", "gw-1", 2, NOW, LEASE)
    assert await records.renew("gw-1", NOW + LEASE / 2, LEASE) == 2
    assert await records.claim("batch_1", "gw-2", 2, NOW + LEASE, LEASE) == []
    assert await records.release(first, "gw-1", counted=False)
    [again] = await records.claim("batch_1", "gw-2", 2, NOW + LEASE, LEASE)
    assert (again.line, again.attempts) == (first.line, 1)  # not counted as an attempt


async def test_the_unrun_rest_of_a_job_ends_together(store):
    records = BatchRecords(store)
    await records.add(job(), requests(["a", "b", "c"]))
    [running] = await records.claim("batch_1", "gw-1", 1, NOW, LEASE)
    ended = await records.end_unrun("batch_1", CANCELLED, NOW, {})
    assert ended == 2  # the running one finishes on its own
    counts = await records.counts("batch_1")
    assert (counts.cancelled, counts.running) == (2, 1)
    assert await records.settle(running, "gw-1", NOW, state=SUCCEEDED, status_code=200, result={})


async def test_jobs_move_only_from_the_states_named(store):
    records = BatchRecords(store)
    await records.add(job(), [])
    later = NOW + timedelta(minutes=1)
    assert await records.move("batch_1", ("in_progress",), "cancelling", later)
    assert not await records.move("batch_1", ("in_progress",), "finalizing", later)
    moved = await records.get("batch_1")
    assert moved is not None and (moved.status, moved.cancelling_at) == ("cancelling", later)
    await records.set("batch_1", later, paused="over budget", paused_until=later)
    paused = await records.get("batch_1")
    assert paused is not None and paused.paused == "over budget"
    assert await records.statuses() == {"cancelling": 1}
    await records.add(job("batch_2"), requests(["a"]))
    assert await records.waiting_by_model(("in_progress",)) == {"demo": 1}
