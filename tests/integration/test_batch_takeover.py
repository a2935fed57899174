"""A gateway SIGKILLed mid-job: another gateway process takes its claimed requests over once
their leases lapse, and every custom_id is in the output exactly once. On PostgreSQL with two
gateways sharing the store and the files (one killed, the other goes on), and on SQLite with
one (killed, then a new process on the same data). Real engines, the openai SDK."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path

import openai
import pytest

from mistral_serve.store import Store
from mistral_serve.store.batches import BatchRecords, EndedRequest
from tests.services import postgres_database_sync
from tests.support import stop_process, wait_for

from .conftest import Fleet, Stack, start_fleet
from .test_batches import chat_lines, finished, output_lines

pytestmark = pytest.mark.integration

REQUESTS = 48
LEASE_S = 2


def settings(folder: Path, database_url: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "FILES_DIR": str(folder / "files"),
        "BATCH_LEASE_S": str(LEASE_S),
        "ENGINE_MAX_INFLIGHT": "8",
    }


def worker_of(log: Path) -> str:
    """The claim name of the batch runner that wrote ``log``."""
    return re.search(r"batch runner (gw-[0-9a-f]+)", log.read_text()).group(1)


def store_read(url: str, read):
    async def run():
        store = await Store.open(url)
        try:
            return await read(BatchRecords(store))
        finally:
            await store.close()

    return asyncio.run(run())


def start_job(fleet: Fleet, key: str) -> tuple[openai.OpenAI, str]:
    client = openai.OpenAI(base_url=fleet.urls[0] + "/v1", api_key=key, max_retries=0)
    upload = client.files.create(
        file=("work.jsonl", chat_lines(REQUESTS, max_tokens=32)), purpose="batch"
    )
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    wait_for(
        lambda: client.batches.retrieve(batch.id).request_counts.completed >= 6,
        120,
        "the job to be under way",
    )
    return client, batch.id


def killed_mid_job(fleet: Fleet, logs: list[Path], url: str, job_id: str) -> dict[str, int]:
    """SIGKILL, while the job runs, a gateway holding some of its claims (which one depends
    on who claimed first); its index, what it held, and what was done then."""
    workers = {worker_of(log): index for index, log in enumerate(logs)}

    def holding() -> int | None:
        held = store_read(url, lambda records: records.holders(job_id))
        return next((workers[w] for w, n in held.items() if n > 0 and w in workers), None)

    wait_for(lambda: holding() is not None, 60, "a gateway to hold claims")
    index = holding()
    assert index is not None
    worker = worker_of(logs[index])
    os.kill(fleet.processes[index].pid, signal.SIGKILL)
    fleet.processes[index].wait(10)
    counts = store_read(url, lambda records: records.counts(job_id))
    held = store_read(url, lambda records: records.holders(job_id))
    return {"killed": index, "held_by_killed": held.get(worker, 0), "done_at_kill": counts.ended}


def exactly_once(client: openai.OpenAI, job_id: str, url: str) -> list[EndedRequest]:
    done = finished(client, job_id)
    assert done.status == "completed", done
    output = output_lines(client, done.output_file_id)
    errors = output_lines(client, done.error_file_id)
    assert errors == [], errors
    ids = [line["custom_id"] for line in output]
    assert sorted(ids) == sorted(f"t{n}" for n in range(REQUESTS))  # each once, none missing
    assert all(line["response"]["status_code"] == 200 for line in output)
    return store_read(url, lambda records: records.ended(job_id))


def test_postgresql_another_gateway_takes_over_a_killed_ones_requests(stack: Stack, otlp, tmp_path):
    with postgres_database_sync() as url:
        fleet = start_fleet(stack, otlp, tmp_path, 2, **settings(tmp_path, url))
        try:
            _, key = fleet.create_key()
            _, job_id = start_job(fleet, key)
            logs = [tmp_path / f"gateway-{n}.log" for n in range(2)]
            at_kill = killed_mid_job(fleet, logs, url, job_id)
            other = fleet.urls[1 - at_kill["killed"]]
            survivor = openai.OpenAI(base_url=other + "/v1", api_key=key, max_retries=0)
            ended = exactly_once(survivor, job_id, url)
        finally:
            for process in fleet.processes:
                stop_process(process)
    taken_over = [request for request in ended if request.attempts > 1]
    assert len(taken_over) >= at_kill["held_by_killed"] > 0
    print(f"postgresql: {REQUESTS} requests, {at_kill} at the kill; {len(taken_over)} run again")


def test_sqlite_a_new_gateway_process_takes_over_after_a_kill(stack: Stack, otlp, tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/store.db"
    env = {**settings(tmp_path, url), "MISTRAL_SERVE_DATA_DIR": str(tmp_path / "data")}
    first = start_fleet(stack, otlp, tmp_path, 1, **env)
    again: Fleet | None = None
    try:
        _, key = first.create_key()
        _, job_id = start_job(first, key)
        at_kill = killed_mid_job(first, [tmp_path / "gateway-0.log"], url, job_id)
        (tmp_path / "again").mkdir()
        again = start_fleet(stack, otlp, tmp_path / "again", 1, **env)
        client = openai.OpenAI(base_url=again.urls[0] + "/v1", api_key=key, max_retries=0)
        ended = exactly_once(client, job_id, url)
    finally:
        for fleet in (first, again):
            for process in fleet.processes if fleet else ():
                stop_process(process)
    taken_over = [request for request in ended if request.attempts > 1]
    assert len(taken_over) >= at_kill["held_by_killed"] > 0
    print(f"sqlite: {REQUESTS} requests, {at_kill} at the kill; {len(taken_over)} run again")
