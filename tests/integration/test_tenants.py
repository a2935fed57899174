"""Per-key limits and the usage ledger against real gateways, engines, PostgreSQL and Redis.

Two gateway processes share one PostgreSQL store and one Redis: an RPM and a TPM limit hold
across both under concurrent load, and a revoked key is refused by both within the cache TTL.
The ledger, on SQLite and on PostgreSQL, records one row per request whose usage equals what
the responses reported (streamed, not streamed, and clients that leave mid-stream), and a
SIGTERM during load loses no row. Keys and reports go through `mistral-serve keys` and
`mistral-serve usage`, as an operator would use them."""

from __future__ import annotations

import asyncio
import json
import math
import signal
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.services import REDIS, postgres_database_sync
from tests.support import seconds_until, stop_process

from .conftest import FLEET_KEY_CACHE_TTL_S, Fleet, Stack, models_status, start_fleet

pytestmark = pytest.mark.integration

TTL_S = FLEET_KEY_CACHE_TTL_S
MESSAGES = [{"role": "user", "content": "Count to three."}]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with postgres_database_sync() as url:
        yield url


@pytest.fixture(scope="module")
def shared(stack: Stack, otlp, postgres_url: str, tmp_path_factory) -> Iterator[Fleet]:
    """Two gateways, one PostgreSQL store, one Redis."""
    log_dir = tmp_path_factory.mktemp("shared")
    fleet = start_fleet(stack, otlp, log_dir, 2, DATABASE_URL=postgres_url, REDIS_URL=REDIS)
    try:
        yield fleet
    finally:
        for process in fleet.processes:
            stop_process(process)


async def _burst(urls: list[str], key: str, count: int, max_tokens: int) -> list[httpx.Response]:
    """``count`` concurrent chats, alternating between the gateways."""
    headers = {"authorization": f"Bearer {key}"}
    body = {"model": "demo", "messages": MESSAGES, "max_tokens": max_tokens}
    async with httpx.AsyncClient(timeout=120) as client:
        return await asyncio.gather(
            *(
                client.post(
                    urls[n % len(urls)] + "/v1/chat/completions", json=body, headers=headers
                )
                for n in range(count)
            )
        )


def timed_burst(
    fleet: Fleet, key: str, count: int, max_tokens: int
) -> tuple[list[httpx.Response], list[httpx.Response], float]:
    """A burst's answers, granted (200) and refused (429) — nothing else — and its seconds."""
    started = time.monotonic()
    answers = asyncio.run(_burst(fleet.urls, key, count, max_tokens))
    took = time.monotonic() - started
    granted = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 429]
    assert len(granted) + len(refused) == count
    return granted, refused, took


def test_rpm_holds_exactly_across_two_gateways(shared: Fleet) -> None:
    _, key = shared.create_key("--rpm", "10")
    granted, refused, took = timed_burst(shared, key, 30, 1)
    # 10 at once, plus what refilled (10 a minute) while the burst was being checked.
    assert 10 <= len(granted) <= 10 + math.floor(took * 10 / 60), (len(granted), took)
    for answer in refused:
        error = answer.json()["error"]
        assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
        assert 1 <= int(answer.headers["retry-after"]) <= 6
        assert answer.headers["x-ratelimit-limit-requests"] == "10"
        assert answer.headers["x-ratelimit-remaining-requests"] == "0"
    remaining = sorted(int(a.headers["x-ratelimit-remaining-requests"]) for a in granted)
    assert remaining[:10] == list(range(10))  # each grant took one; both gateways, one bucket
    assert all(a.headers["x-ratelimit-reset-requests"].endswith("s") for a in granted)


def test_tpm_holds_across_two_gateways(shared: Fleet) -> None:
    _, key = shared.create_key("--tpm", "600")
    granted, refused, took = timed_burst(shared, key, 16, 40)
    assert granted and refused
    used = sum(a.json()["usage"]["total_tokens"] for a in granted)
    # What the granted requests used fits the limit, plus what refilled during the burst.
    assert used <= 600 + took * 600 / 60, (used, took)
    for answer in refused:
        assert answer.json()["error"]["type"] == "tokens"
        assert answer.headers["x-ratelimit-limit-tokens"] == "600"
        assert int(answer.headers["retry-after"]) >= 1


def test_concurrency_and_budget(shared: Fleet) -> None:
    _, key = shared.create_key("--max-concurrent", "2", "--tokens-per-day", "400")
    answers = asyncio.run(_burst(shared.urls, key, 6, 20))
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) >= 2 and 429 in statuses
    codes = {a.json()["error"]["code"] for a in answers if a.status_code == 429}
    assert codes <= {"rate_limit_exceeded", "insufficient_quota"}
    # Spend the rest of the day's budget; then the budget refuses, with no Retry-After.
    for _ in range(40):
        (answer,) = asyncio.run(_burst(shared.urls[:1], key, 1, 20))
        if answer.status_code == 429 and answer.json()["error"]["code"] == "insufficient_quota":
            assert "retry-after" not in answer.headers
            assert answer.json()["error"]["type"] == "insufficient_quota"
            break
    else:
        pytest.fail("the daily budget never ran out")


def test_a_restarted_gateway_remembers_what_a_key_spent_today(stack, otlp, tmp_path) -> None:
    """Counters in the process die with it (a deploy); the key's day starts again from the
    ledger, to the token."""
    env = {"MISTRAL_SERVE_DATA_DIR": str(tmp_path)}  # its SQLite store
    first = start_fleet(stack, otlp, tmp_path, 1, **env)
    try:
        _, key = first.create_key("--tokens-per-day", "400")
        answers = asyncio.run(_burst(first.urls, key, 3, 20))
        spent = sum(answer.json()["usage"]["total_tokens"] for answer in answers)
    finally:
        for process in first.processes:
            stop_process(process)  # SIGTERM: the ledger writes every row
    (tmp_path / "again").mkdir()
    again = start_fleet(stack, otlp, tmp_path / "again", 1, **env)
    try:
        seconds_until(lambda: models_status(again.urls[0], key) == 200, 15, "the key known again")
        # It reserves about 360 of 400: granted by a fresh budget, refused by what is left.
        (answer,) = asyncio.run(_burst(again.urls, key, 1, 350))
    finally:
        for process in again.processes:
            stop_process(process)
    assert answer.status_code == 429, answer.text
    assert answer.json()["error"]["code"] == "insufficient_quota"
    assert f"{400 - spent} of today's 400 remain" in answer.json()["error"]["message"]


def test_a_revoked_key_is_refused_by_every_gateway(shared: Fleet) -> None:
    key_id, key = shared.create_key()
    shared.cli("keys", "revoke", key_id)
    for url in shared.urls:
        refused_after = seconds_until(
            lambda url=url: models_status(url, key) == 401, 15, "the revoked key refused"
        )
        assert refused_after <= 2 * TTL_S + 1


# -- the ledger --------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def ledger_env(request, tmp_path_factory) -> Iterator[dict[str, str]]:
    """The settings of a store for the ledger tests: SQLite in a folder, or PostgreSQL."""
    data_dir = tmp_path_factory.mktemp(f"ledger-{request.param}")
    env = {"MISTRAL_SERVE_DATA_DIR": str(data_dir)}
    if request.param == "sqlite":
        yield {**env, "DATABASE_URL": f"sqlite+aiosqlite:///{data_dir / 'mistral-serve.db'}"}
        return
    with postgres_database_sync() as url:
        yield {**env, "DATABASE_URL": url}


async def _mixed_load(url: str, key: str) -> tuple[dict[str, dict], set[str]]:
    """Concurrent plain, streamed and abandoned requests; the usage each response reported
    (by request id), and the ids of the abandoned ones."""
    headers = {"authorization": f"Bearer {key}"}
    reported: dict[str, dict] = {}
    abandoned: set[str] = set()

    async def plain(client: httpx.AsyncClient, rid: str) -> None:
        body = {"model": "demo", "messages": MESSAGES, "max_tokens": 8}
        answer = await client.post(
            url + "/v1/chat/completions", json=body, headers={**headers, "x-request-id": rid}
        )
        reported[rid] = answer.json()["usage"]

    async def streamed(client: httpx.AsyncClient, rid: str, leave: bool) -> None:
        body = {
            "model": "demo",
            "messages": MESSAGES,
            "max_tokens": 64 if leave else 8,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        async with client.stream(
            "POST",
            url + "/v1/chat/completions",
            json=body,
            headers={**headers, "x-request-id": rid},
        ) as answer:
            async for line in answer.aiter_lines():
                if leave and line.startswith("data: {"):
                    abandoned.add(rid)
                    return  # the client leaves after its first event
                if line.startswith("data: {") and '"usage":{' in line:
                    usage = json.loads(line[6:])["usage"]
                    if usage:
                        reported[rid] = usage

    async with httpx.AsyncClient(timeout=120) as client:
        jobs = []
        for n in range(4):
            jobs.append(plain(client, f"plain-{n}-{uuid.uuid4().hex[:6]}"))
            jobs.append(streamed(client, f"stream-{n}-{uuid.uuid4().hex[:6]}", leave=False))
            jobs.append(streamed(client, f"left-{n}-{uuid.uuid4().hex[:6]}", leave=True))
        await asyncio.gather(*jobs)
    return reported, abandoned


def test_the_ledger_equals_the_usage_reported(ledger_env, stack, otlp, tmp_path) -> None:
    fleet = start_fleet(stack, otlp, tmp_path, 1, **ledger_env)
    try:
        key_id, key = fleet.create_key()
        reported, abandoned = asyncio.run(_mixed_load(fleet.urls[0], key))
        assert len(reported) == 8 and len(abandoned) == 4
        seconds_until(
            lambda: len([r for r in fleet.rows() if r.key_id == key_id]) == 12, 15, "12 rows"
        )
    finally:
        for process in fleet.processes:
            stop_process(process)
    rows = {row.request_id: row for row in fleet.rows() if row.key_id == key_id}
    for rid, usage in reported.items():
        row = rows[rid]
        assert (row.prompt_tokens, row.completion_tokens) == (
            usage["prompt_tokens"],
            usage["completion_tokens"],
        ), rid
        assert row.status == 200 and not row.usage_estimated and row.model == "demo"
        assert row.streamed == rid.startswith("stream") and row.endpoint == "/v1/chat/completions"
        if row.streamed:  # the time to first token is a stream's
            assert row.ttft_ms is not None and row.duration_ms >= row.ttft_ms
    for rid in abandoned:  # cut short: the engine's work as estimated, or its usage if it won
        row = rows[rid]
        assert row.status in (200, 499) and row.prompt_tokens > 0
        assert row.usage_estimated == (row.status == 499)
    # The report agrees with the rows, by key and in every format.
    (total,) = json.loads(fleet.cli("usage", "--key", key_id, "--by", "key", "--format", "json"))
    assert total["requests"] == 12
    assert total["total_tokens"] == sum(
        r.prompt_tokens + r.completion_tokens for r in rows.values()
    )
    csv_lines = fleet.cli("usage", "--by", "model", "--format", "csv").splitlines()
    assert csv_lines[0] == "model,requests,prompt_tokens,completion_tokens,total_tokens"
    assert "DAY" in fleet.cli("usage", "--since", "1d")


def test_sigterm_during_load_loses_no_row(ledger_env, stack, otlp, tmp_path) -> None:
    fleet = start_fleet(stack, otlp, tmp_path, 1, **ledger_env, LEDGER_FLUSH_INTERVAL_S="30")
    process = fleet.processes[0]
    _, key = fleet.create_key()
    headers = {"authorization": f"Bearer {key}"}
    answered: set[str] = set()

    async def load() -> None:
        async def one(client: httpx.AsyncClient, n: int) -> None:
            rid = f"term-{n}-{uuid.uuid4().hex[:6]}"
            body = {"model": "demo", "messages": MESSAGES, "max_tokens": 16}
            try:
                answer = await client.post(
                    fleet.urls[0] + "/v1/chat/completions",
                    json=body,
                    headers={**headers, "x-request-id": rid},
                )
            except httpx.TransportError:
                return  # never reached the gateway (it had stopped listening)
            if answer.headers.get("x-request-id") == rid:
                answered.add(rid)

        async with httpx.AsyncClient(timeout=120) as client:
            jobs = [asyncio.create_task(one(client, n)) for n in range(16)]
            await asyncio.sleep(1.0)
            process.send_signal(signal.SIGTERM)
            await asyncio.gather(*jobs)

    try:
        asyncio.run(load())
        assert process.wait(timeout=60) == 0
    finally:
        stop_process(process)
    # Rows were not flushed by the interval (30 s): SIGTERM wrote them all.
    rows = {row.request_id for row in fleet.rows()}
    assert answered and answered <= rows, answered - rows
