"""Load for the benchmarks: closed and open loops of POSTs, and throwaway PostgreSQL
databases."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from typing import Any

import aiohttp
import asyncpg

POSTGRES = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
#: A short chat request: the benchmarks' default body.
BODY = {"model": "demo", "messages": [{"role": "user", "content": "Hello there."}], "max_tokens": 8}


async def closed_loop(
    url: str,
    key: str | None,
    requests: int,
    concurrency: int,
    *,
    path: str = "/v1/chat/completions",
    body: dict[str, Any] = BODY,
) -> None:
    """``requests`` POSTs of ``body`` to ``path``, ``concurrency`` at a time; each must be a 200."""
    headers = {"authorization": f"Bearer {key}"} if key else {}
    queue = iter(range(requests))

    async def worker(session: aiohttp.ClientSession) -> None:
        for _ in queue:
            async with session.post(url + path, json=body) as response:
                assert response.status == 200, await response.text()
                await response.read()

    async with aiohttp.ClientSession(headers=headers) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))


async def open_loop(
    urls: list[str],
    keys: list[str | None],
    rate: float,
    seconds: float,
    *,
    each: bool = False,
    path: str = "/v1/chat/completions",
    body: dict[str, Any] = BODY,
) -> tuple[Counter[int], list[float]]:
    """``rate`` requests a second for ``seconds``, whatever the answers' pace; statuses and
    latencies. Request n goes to ``urls[n % len(urls)]`` with ``keys[n % len(keys)]``; with
    ``each``, every tick sends one request to every URL, with the key at the same index."""
    statuses: Counter[int] = Counter()
    latencies: list[float] = []

    async def one(session: aiohttp.ClientSession, url: str, key: str | None) -> None:
        started = time.perf_counter()
        headers = {"authorization": f"Bearer {key}"} if key else {}
        try:
            async with session.post(url + path, json=body, headers=headers) as response:
                await response.read()
                statuses[response.status] += 1
        except aiohttp.ClientError:
            statuses[0] += 1  # no answer
        latencies.append(time.perf_counter() - started)

    tasks = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        began = time.perf_counter()
        for n in range(int(rate * seconds)):
            delay = began + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if each:
                for url, key in zip(urls, keys, strict=True):
                    tasks.append(asyncio.create_task(one(session, url, key)))
            else:
                url, key = urls[n % len(urls)], keys[n % len(keys)]
                tasks.append(asyncio.create_task(one(session, url, key)))
        await asyncio.gather(*tasks)
    return statuses, latencies


async def make_database() -> tuple[str, str]:
    name = f"mistral_serve_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(POSTGRES)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    return name, POSTGRES.rsplit("/", 1)[0] + f"/{name}"


async def drop_database(name: str) -> None:
    admin = await asyncpg.connect(POSTGRES)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()
