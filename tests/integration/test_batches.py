"""Batch jobs with both official SDKs on real engines, as users run them: upload → create →
poll → output for chat and completions (embeddings: test_embeddings.py, beside its engine),
Mistral's inline requests, a bad line refused at creation, cancel mid-job, another key sees
nothing, and interactive requests sent during a batch are not queued behind it. One gateway
over the session's `demo` engine, its store and files its own; the gateway's concurrency
target is small (8 slots), so the batch's share (6) and the slots it leaves are few."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import orjson
import pytest
from mistralai.client import Mistral

from mistral_serve.telemetry import semconv
from tests.support import stop_process, wait_for

from .conftest import Fleet, Stack, start_fleet
from .test_telemetry import SERVER, traceparent

pytestmark = pytest.mark.integration

SLOTS = 8
FINAL = ("completed", "failed", "expired", "cancelled")


@pytest.fixture(scope="module")
def fleet(stack: Stack, otlp, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    folder = tmp_path_factory.mktemp("batches")
    fleet = start_fleet(
        stack,
        otlp,
        folder,
        1,
        MISTRAL_SERVE_DATA_DIR=str(folder),
        DATABASE_URL=f"sqlite+aiosqlite:///{folder}/store.db",
        ENGINE_MAX_INFLIGHT=str(SLOTS),
    )
    try:
        yield fleet
    finally:
        for process in fleet.processes:
            stop_process(process)


def chat_lines(count: int, *, max_tokens: int = 4, broken: int | None = None) -> bytes:
    lines = []
    for n in range(count):
        body = {
            "model": "demo",
            "messages": [
                {"role": "system", "content": "You label support tickets. " * 20},
                {"role": "user", "content": f"ticket {n}"},
            ],
            "max_tokens": max_tokens,
            "ignore_eos": True,
        }
        line = {"custom_id": f"t{n}", "method": "POST", "url": "/v1/chat/completions", "body": body}
        lines.append(b"{oops" if n == broken else orjson.dumps(line))
    return b"\n".join(lines) + b"\n"


def finished(client: openai.OpenAI, batch_id: str, timeout_s: float = 180):
    def ended():
        batch = client.batches.retrieve(batch_id)
        return batch if batch.status in FINAL else None

    wait_for(ended, timeout_s, f"batch {batch_id} to end")
    return client.batches.retrieve(batch_id)


def output_lines(client: openai.OpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [orjson.loads(line) for line in client.files.content(file_id).read().splitlines()]


def openai_client(fleet: Fleet, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=fleet.urls[0] + "/v1", api_key=key, max_retries=0)


def test_openai_chat_and_completions_batches_run_to_their_output(fleet: Fleet):
    key_id, key = fleet.create_key()
    client = openai_client(fleet, key)
    upload = client.files.create(file=("tickets.jsonl", chat_lines(12)), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"team": "support"},
    )
    assert (batch.status, batch.request_counts.total, batch.metadata) == (
        "validating",
        12,
        {"team": "support"},
    )
    done = finished(client, batch.id)
    assert done.status == "completed" and done.error_file_id is None
    assert (done.request_counts.completed, done.request_counts.failed) == (12, 0)
    lines = output_lines(client, done.output_file_id)
    assert sorted(line["custom_id"] for line in lines) == sorted(f"t{n}" for n in range(12))
    for line in lines:
        body = line["response"]["body"]
        assert line["response"]["status_code"] == 200 and line["error"] is None
        assert body["object"] == "chat.completion" and body["usage"]["completion_tokens"] == 4
    assert batch.id in [listed.id for listed in client.batches.list()]
    # Completions, in the same way.
    prompts = b"".join(
        orjson.dumps(
            {
                "custom_id": f"p{n}",
                "method": "POST",
                "url": "/v1/completions",
                "body": {"model": "demo", "prompt": f"Once upon a time {n}", "max_tokens": 3},
            }
        )
        + b"\n"
        for n in range(5)
    )
    upload = client.files.create(file=("prompts.jsonl", prompts), purpose="batch")
    done = finished(
        client,
        client.batches.create(
            input_file_id=upload.id, endpoint="/v1/completions", completion_window="24h"
        ).id,
    )
    lines = output_lines(client, done.output_file_id)
    assert sorted(line["custom_id"] for line in lines) == [f"p{n}" for n in range(5)]
    assert all(line["response"]["body"]["object"] == "text_completion" for line in lines)
    # Every request is in the ledger, under its batch.
    wait_for(
        lambda: len([row for row in fleet.rows() if row.batch_id == done.id]) == 5,
        30,
        "the batch's ledger rows",
    )
    rows = [row for row in fleet.rows() if row.batch_id == done.id]
    assert {row.key_id for row in rows} == {key_id}
    assert {row.request_id for row in rows} == {f"{done.id}-{n}" for n in range(1, 6)}


def gateway_spans(otlp, trace_id: str) -> list:
    return [
        s
        for s in otlp.spans
        if s.trace_id == trace_id and s.kind == SERVER and s.service == "mistral-serve"
    ]


def test_a_jobs_requests_are_children_of_its_span_linked_from_its_creation(fleet: Fleet, otlp):
    """The job's span links the request that created it; each batch request's span (the
    generation's, with its engine call below) is the job span's child; metrics count them."""
    _, key = fleet.create_key()
    client = openai_client(fleet, key)
    upload = client.files.create(file=("traced.jsonl", chat_lines(3)), purpose="batch")
    header, trace_id, _ = traceparent()
    made = client.batches.with_raw_response.create(
        input_file_id=upload.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        extra_headers={"traceparent": header},
    )
    batch = made.parse()
    finished(client, batch.id)
    creating = otlp.wait_for(lambda: next(iter(gateway_spans(otlp, trace_id)), None))

    def job_span():
        named = [s for s in otlp.spans if s.name == f"batch_job {batch.id}"]
        return named[0] if named else None

    job = otlp.wait_for(job_span)
    assert job.links == [(trace_id, creating.span_id)] and job.trace_id != trace_id
    assert job.attributes[semconv.BATCH_ID] == batch.id

    def children():
        found = [s for s in otlp.spans if s.parent_span_id == job.span_id]
        return found if len(found) >= 3 else None

    requests = otlp.wait_for(children)
    assert {s.attributes["mistral_serve.batch.custom_id"] for s in requests} == {"t0", "t1", "t2"}
    assert all(s.attributes[semconv.BATCH_ID] == batch.id for s in requests)
    assert all(s.trace_id == job.trace_id for s in requests)
    engine_calls = [s for s in otlp.spans if s.parent_span_id in {r.span_id for r in requests}]
    assert len(engine_calls) >= 3  # each request's call to its engine, below it

    metric = otlp.wait_for(lambda: otlp.metrics.get(semconv.BATCH_REQUESTS))
    states = {
        attribute.value.string_value
        for point in metric.sum.data_points
        for attribute in point.attributes
        if attribute.key == semconv.BATCH_REQUEST_STATE
    }
    assert "succeeded" in states
    assert otlp.wait_for(lambda: otlp.metrics.get(semconv.BATCH_JOBS))


def test_a_bad_line_is_refused_at_creation_naming_it(fleet: Fleet):
    _, key = fleet.create_key()
    client = openai_client(fleet, key)
    upload = client.files.create(file=("bad.jsonl", chat_lines(5, broken=3)), purpose="batch")
    with pytest.raises(openai.BadRequestError) as refused:
        client.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert "line 4: not JSON" in refused.value.message
    assert list(client.batches.list()) == []  # nothing was made


def test_mistral_inline_requests_run_and_show_their_outputs(fleet: Fleet):
    _, key = fleet.create_key()
    mistral = Mistral(api_key=key, server_url=fleet.urls[0])
    job = mistral.batch.jobs.create(
        endpoint="/v1/chat/completions",
        model="demo",
        requests=[
            {
                "custom_id": f"q{n}",
                "body": {"messages": [{"role": "user", "content": f"hi {n}"}], "max_tokens": 3},
            }
            for n in range(4)
        ],
        metadata={"run": "nightly"},
        timeout_hours=2,
    )
    assert (job.status, job.total_requests, job.model) == ("QUEUED", 4, "demo")

    def ended():
        current = mistral.batch.jobs.get(job_id=job.id)
        return current if current.status in ("SUCCESS", "FAILED", "CANCELLED") else None

    wait_for(ended, 120, "the Mistral job to end")
    done = mistral.batch.jobs.get(job_id=job.id, inline=True)
    assert (done.status, done.succeeded_requests, done.failed_requests) == ("SUCCESS", 4, 0)
    assert sorted(line["custom_id"] for line in done.outputs or []) == [f"q{n}" for n in range(4)]
    downloaded = mistral.files.download(file_id=done.output_file).read()
    assert len(downloaded.splitlines()) == 4
    listed = mistral.batch.jobs.list(status=["SUCCESS"])
    assert job.id in [each.id for each in listed.data or []] and listed.total >= 1
    assert mistral.batch.jobs.list(status=["RUNNING"]).total == 0


def test_a_responses_batch_answers_response_objects(fleet: Fleet):
    _, key = fleet.create_key()
    client = openai_client(fleet, key)
    lines = b"".join(
        orjson.dumps(
            {
                "custom_id": f"r{n}",
                "method": "POST",
                "url": "/v1/responses",
                "body": {
                    "model": "demo",
                    "instructions": "Answer briefly.",
                    "input": f"Question {n}",
                    "max_output_tokens": 3,
                    "store": False,
                },
            }
        )
        + b"\n"
        for n in range(3)
    )
    upload = client.files.create(file=("responses.jsonl", lines), purpose="batch")
    done = finished(
        client,
        client.batches.create(
            input_file_id=upload.id, endpoint="/v1/responses", completion_window="24h"
        ).id,
    )
    output = output_lines(client, done.output_file_id)
    assert sorted(line["custom_id"] for line in output) == ["r0", "r1", "r2"]
    for line in output:
        body = line["response"]["body"]
        assert body["object"] == "response" and body["output"][0]["type"] == "message"
        assert body["status"] == "incomplete"  # three tokens: max_output_tokens was reached
        assert body["incomplete_details"] == {"reason": "max_output_tokens"}
        assert body["usage"]["output_tokens"] >= 1
    assert done.usage.output_tokens == sum(
        line["response"]["body"]["usage"]["output_tokens"] for line in output
    )


def test_a_spent_budget_pauses_the_job_with_its_reason(fleet: Fleet):
    """The key's daily token budget covers a few of the job's requests: the job is paused
    (still in progress, the reason shown), not failed; cancelled, what ran is its output."""
    _, key = fleet.create_key("--tokens-per-day", "400")
    client = openai_client(fleet, key)
    upload = client.files.create(
        file=("budget.jsonl", chat_lines(20, max_tokens=40)), purpose="batch"
    )
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )

    def state() -> dict:
        return httpx.get(
            fleet.urls[0] + f"/v1/batches/{batch.id}",
            headers={"authorization": f"Bearer {key}"},
            timeout=30,
        ).json()

    wait_for(lambda: state()["paused"], 60, "the job to pause")
    state = state()
    assert state["status"] == "in_progress" and "budget" in state["paused"]["reason"]
    assert state["request_counts"]["failed"] == 0
    mistral = Mistral(api_key=key, server_url=fleet.urls[0])
    assert mistral.batch.jobs.cancel(job_id=batch.id).status == "CANCELLATION_REQUESTED"
    done = finished(client, batch.id)
    output = output_lines(client, done.output_file_id)
    errors = output_lines(client, done.error_file_id)
    assert 1 <= len(output) < 20 and len(output) + len(errors) == 20
    assert {line["error"]["code"] for line in errors} == {"batch_cancelled"}


def test_cancel_mid_job_keeps_what_ran_and_ends_the_rest(fleet: Fleet):
    _, key = fleet.create_key()
    client = openai_client(fleet, key)
    upload = client.files.create(
        file=("long.jsonl", chat_lines(60, max_tokens=48)), purpose="batch"
    )
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    wait_for(
        lambda: client.batches.retrieve(batch.id).request_counts.completed >= 3,
        120,
        "a few requests to complete",
    )
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    done = finished(client, batch.id)
    assert done.status == "cancelled"
    output = output_lines(client, done.output_file_id)
    errors = output_lines(client, done.error_file_id)
    assert 3 <= len(output) < 60 and len(output) + len(errors) == 60
    assert {line["error"]["code"] for line in errors} == {"batch_cancelled"}
    ids = [line["custom_id"] for line in output + errors]
    assert sorted(ids) == sorted(f"t{n}" for n in range(60))  # each exactly once


def test_another_key_sees_no_batch_and_no_output(fleet: Fleet):
    _, key = fleet.create_key()
    _, other_key = fleet.create_key()
    client, other = openai_client(fleet, key), openai_client(fleet, other_key)
    upload = client.files.create(file=("mine.jsonl", chat_lines(2)), purpose="batch")
    with pytest.raises(openai.NotFoundError):  # nor can it run another key's file
        other.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    done = finished(
        client,
        client.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        ).id,
    )
    for call in (other.batches.retrieve, other.batches.cancel):
        with pytest.raises(openai.NotFoundError):
            call(done.id)
    assert done.id not in [listed.id for listed in other.batches.list()]
    with pytest.raises(openai.NotFoundError):
        other.files.content(done.output_file_id)
    mistral = Mistral(api_key=other_key, server_url=fleet.urls[0])
    assert done.id not in [job.id for job in mistral.batch.jobs.list().data or []]


def test_interactive_requests_during_a_batch_are_not_queued_behind_it(fleet: Fleet):
    """A batch of long requests fills its share of the engine's slots (6 of 8) for a while;
    interactive requests sent meanwhile start at once (their x-queue-time is milliseconds,
    where waiting for a batch request to end would take seconds)."""
    _, key = fleet.create_key()
    client = openai_client(fleet, key)
    upload = client.files.create(
        file=("fill.jsonl", chat_lines(40, max_tokens=96)), purpose="batch"
    )
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    ready = fleet.urls[0] + "/ready"

    def batch_running() -> bool:
        engines = httpx.get(ready, timeout=10).json()["engines"]
        return any(engine.get("outstanding", 0) >= int(SLOTS * 0.8) for engine in engines)

    wait_for(batch_running, 120, "the batch to take its share of the engine")
    started = time.monotonic()

    def interactive(n: int) -> float:
        answer = httpx.post(
            fleet.urls[0] + "/v1/chat/completions",
            headers={"authorization": f"Bearer {key}"},
            json={
                "model": "demo",
                "messages": [{"role": "user", "content": f"now {n}"}],
                "max_tokens": 2,
            },
            timeout=120,
        )
        assert answer.status_code == 200
        return float(answer.headers["x-queue-time"])

    with ThreadPoolExecutor(2) as pool:
        waits = list(pool.map(interactive, range(6)))
    elapsed = time.monotonic() - started
    still = client.batches.retrieve(batch.id)
    assert still.status == "in_progress", "the batch ended before the interactive requests ran"
    assert max(waits) < 500, (waits, elapsed)  # ms: none waited for a batch request
    client.batches.cancel(batch.id)
    finished(client, batch.id)
