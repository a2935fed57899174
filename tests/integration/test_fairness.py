"""Fair queuing by key against a real engine: a loud key floods a small line, a quiet key's
requests still go next (within one engine slot's turn), and the refusals fall on the loud key.

One gateway over the session's "demo" engine with a concurrency target of 2 and room for 8 in
line; keys in its own SQLite store.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

import aiohttp
import httpx
import pytest

from tests.support import stop_process, until

from .conftest import Fleet, Stack, start_fleet

pytestmark = pytest.mark.integration

TARGET = 2
QUEUE_MAX = 8
LOUD, QUIET = 20, 2  # concurrent requests: ten times as many
REQUEST = {"model": "demo", "prompt": "The tide came in", "max_tokens": 48, "ignore_eos": True}


@pytest.fixture
def fleet(stack: Stack, otlp, tmp_path) -> Iterator[Fleet]:
    fleet = start_fleet(
        stack,
        otlp,
        tmp_path,
        1,
        MISTRAL_SERVE_DATA_DIR=str(tmp_path),
        ENGINE_MAX_INFLIGHT=str(TARGET),
        ADMISSION_QUEUE_MAX=str(QUEUE_MAX),
        ADMISSION_QUEUE_TIMEOUT_S="120",
    )
    try:
        yield fleet
    finally:
        for process in fleet.processes:
            stop_process(process)


async def send(session: aiohttp.ClientSession, url: str, key: str) -> tuple[int, dict]:
    headers = {"authorization": f"Bearer {key}"}
    async with session.post(url + "/v1/completions", json=REQUEST, headers=headers) as answer:
        await answer.read()
        return answer.status, dict(answer.headers)


def test_a_quiet_key_goes_next_and_the_loud_key_gets_the_429s(fleet: Fleet):
    url = fleet.urls[0]
    loud_id, loud = fleet.create_key()
    _, quiet = fleet.create_key()

    async def run() -> tuple[list, list, list]:
        timeout = aiohttp.ClientTimeout(total=300)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            flood = [asyncio.create_task(send(session, url, loud)) for _ in range(LOUD)]
            async with httpx.AsyncClient(timeout=10) as http:

                async def line_full_of_loud() -> bool:
                    ready = (await http.get(url + "/ready")).json()
                    rows = ready["queues"].get("demo", [])
                    return ready["waiting"].get("demo", 0) >= QUEUE_MAX and any(
                        row["tenant"] == loud_id and row["waiting"] == QUEUE_MAX for row in rows
                    )

                await until(line_full_of_loud, 60, "the line full of the loud key's requests")
                shown = (await http.get(url + "/ready")).json()["queues"]["demo"]
            quiet_answers = await asyncio.gather(*(send(session, url, quiet) for _ in range(QUIET)))
            return await asyncio.gather(*flood), quiet_answers, shown

    loud_answers, quiet_answers, shown = asyncio.run(run())
    # /ready showed the line by key, in counts (the loud key held all of it).
    assert shown == [
        {
            "tenant": loud_id,
            "priority": 0,
            "waiting": QUEUE_MAX,
            "tokens": shown[0]["tokens"],
            "weight": 1.0,
            "share": 1.0,
        }
    ]
    assert [status for status, _ in quiet_answers] == [200] * QUIET
    loud_statuses = Counter(status for status, _ in loud_answers)
    # Two ran and eight waited; the rest were refused at once, and the quiet key's second
    # request, finding the line full, took the place of the loud key's last (its first started
    # at once in the engines' headroom: a key under its share does not wait behind a loud one).
    assert loud_statuses == Counter(
        {200: TARGET + QUEUE_MAX - 1, 429: LOUD - TARGET - QUEUE_MAX + 1}
    )
    # The quiet key waited at most one slot's turn: no longer than one loud request runs.
    turn_s = max(
        int(headers["x-inference-time"]) for status, headers in loud_answers if status == 200
    )
    for _, headers in quiet_answers:
        assert int(headers["x-queue-time"]) <= 1.2 * turn_s + 200, (headers, turn_s)
