"""What the limit tests share: a test clock, both backends (the counters in this process and
the real Redis on this machine: TEST_REDIS_URL to point elsewhere; never skipped), a fresh key
id whose Redis counters are removed after the test, the Asks and Callers they make, and a
settlement made as the gateway makes it (``settle_soon``), waited for."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from mistral_serve.store import KeyRecord
from mistral_serve.tenancy.auth import Caller
from mistral_serve.tenancy.limiter import Limiter, MemoryLimiter
from mistral_serve.tenancy.limits import Ask, KeyLimits
from mistral_serve.tenancy.redis_limiter import PREFIX, RedisLimiter
from tests.services import REDIS

START = 1_800_000_000.0
DAY = datetime.fromtimestamp(START, UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[Limiter]:
    if request.param == "memory":
        yield MemoryLimiter(clock)
        return
    backend = RedisLimiter.from_url(REDIS, clock)  # a Redis that does not answer fails the test
    yield backend
    await backend.close()


@pytest.fixture
async def key_id() -> AsyncIterator[str]:
    """A key id no other test uses; its counters in Redis are removed after the test."""
    key_id = uuid.uuid4().hex[:12]
    yield key_id
    client = Redis.from_url(REDIS)
    keys = [key async for key in client.scan_iter(f"{PREFIX}:{{{key_id}}}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def ask(key_id: str, tokens: int = 10, request: str | None = None, at: datetime = DAY) -> Ask:
    return Ask.at(key_id, request or uuid.uuid4().hex, tokens, at.timestamp())


def caller(key_id: str = "k1", **limits: int) -> Caller:
    return Caller(key_id, KeyRecord(key_id, "test", "hash", DAY, DAY, **limits))


async def settled(limiter: Limiter, limits: KeyLimits, ask: Ask, used_tokens: int) -> None:
    """Settle ``ask`` as the gateway does (``settle_soon``: Redis sends it with the next batch,
    or alone within its bound) and wait until it is done; it must succeed."""
    done: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
    limiter.settle_soon(limits, ask, used_tokens, done.set_result)
    assert await done is None
