"""Day and month budgets start from the usage ledger's totals, on both backends (conftest.py);
the ledger's side is read from a real store."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from redis.asyncio import Redis

from mistral_serve.errors import InsufficientQuotaError, LimitsUnavailableError
from mistral_serve.store import Store, UsageRecords
from mistral_serve.store.database import sqlite_url
from mistral_serve.tenancy.budgets import BudgetSeeds, spent_in_ledger
from mistral_serve.tenancy.limiter import Limits
from mistral_serve.tenancy.redis_limiter import PREFIX, RedisLimiter
from tests.services import REDIS
from tests.unit.store.test_usage import encoded, row

from .conftest import DAY, caller


class LedgerStandIn:
    """What the ledger holds for every key: (day's tokens, month's tokens); counts readings."""

    def __init__(self, on_day: int, in_month: int, *, delay_s: float = 0.0) -> None:
        self.spent = (on_day, in_month)
        self.delay_s = delay_s
        self.readings = 0

    async def __call__(self, key_id: str, day: str, month: str) -> tuple[int, int]:
        self.readings += 1
        await asyncio.sleep(self.delay_s)
        return self.spent


def limits_over(limiter, ledger, clock, **settings) -> Limits:
    return Limits(limiter, budgets=BudgetSeeds(ledger), clock=clock, **settings)


async def test_a_budget_starts_from_what_the_ledger_holds(limiter, clock, key_id) -> None:
    limits = limits_over(limiter, LedgerStandIn(900, 4_000), clock)
    key = caller(key_id, tokens_per_day=1_000, tokens_per_month=5_000)
    with pytest.raises(InsufficientQuotaError) as refused:
        await limits.reserve(key, "r1", 200)
    assert "100 of today's 1000 remain" in refused.value.message
    assert await limits.reserve(key, "r2", 100) is not None
    await limits.close()


async def test_the_month_is_seeded_once_while_each_day_is_seeded(limiter, clock, key_id) -> None:
    ledger = LedgerStandIn(0, 4_000)
    limits = limits_over(limiter, ledger, clock)
    key = caller(key_id, tokens_per_day=1_000, tokens_per_month=5_000)
    assert await limits.reserve(key, "r1", 600) is not None
    clock.now += 86_400  # the next day, in the same month
    ledger.spent = (0, 4_600)  # the ledger has the first request now
    assert await limits.reserve(key, "r2", 400) is not None
    assert ledger.readings == 2
    with pytest.raises(InsufficientQuotaError):  # 4000 + 600 + 400 of 5000: the month is spent
        await limits.reserve(key, "r3", 1)
    await limits.close()


async def test_the_ledger_is_read_once_however_many_requests_wait(limiter, clock, key_id) -> None:
    ledger = LedgerStandIn(500, 500, delay_s=0.05)
    limits = limits_over(limiter, ledger, clock)
    key = caller(key_id, tokens_per_day=1_000)
    outcomes = await asyncio.gather(
        *(limits.reserve(key, f"r{n}", 100) for n in range(8)), return_exceptions=True
    )
    assert ledger.readings == 1
    assert sum(not isinstance(outcome, Exception) for outcome in outcomes) == 5  # 500 + 5 × 100
    await limits.close()


async def test_keys_without_budgets_never_read_the_ledger(limiter, clock, key_id) -> None:
    ledger = LedgerStandIn(10**9, 10**9)
    limits = limits_over(limiter, ledger, clock)
    assert await limits.reserve(caller(key_id, rpm=10), "r1", 100) is not None
    assert ledger.readings == 0
    await limits.close()


class UnreadableLedger(LedgerStandIn):
    async def __call__(self, key_id: str, day: str, month: str) -> tuple[int, int]:
        self.readings += 1
        raise ConnectionError("database unreachable")


async def test_an_unreadable_ledger_fails_open_or_closed(limiter, clock, key_id, caplog) -> None:
    key = caller(key_id, tokens_per_day=1_000)
    closed = limits_over(limiter, UnreadableLedger(0, 0), clock, on_store_error="closed")
    for request_id in ("r0", "r1"):  # refused, and tried again each time
        with pytest.raises(LimitsUnavailableError):
            await closed.reserve(key, request_id, 100)
    assert closed.store_errors == 2
    assert len([r for r in caplog.records if "budget totals" in r.message]) == 1  # an outage
    ledger = UnreadableLedger(0, 0)
    open_ = limits_over(limiter, ledger, clock, on_store_error="open")
    assert await open_.reserve(key, "r2", 100) is not None  # counted from here
    assert await open_.reserve(key, "r3", 100) is not None
    assert ledger.readings == 1 and open_.store_errors == 1  # not read again today
    await closed.close()
    await open_.close()


async def test_two_gateways_seeding_one_redis_add_the_ledger_once(clock, key_id) -> None:
    ledger = LedgerStandIn(700, 700)
    first, second = (
        limits_over(RedisLimiter.from_url(REDIS, clock), ledger, clock) for _ in range(2)
    )
    key = caller(key_id, tokens_per_day=1_000)
    assert await first.reserve(key, "r1", 100) is not None
    assert await second.reserve(key, "r2", 100) is not None
    assert ledger.readings == 2  # each gateway asked; Redis took the totals once
    assert await first.reserve(key, "r3", 100) is not None  # 700 + 300
    with pytest.raises(InsufficientQuotaError):
        await second.reserve(key, "r4", 1)
    await first.close()
    await second.close()


async def test_scripts_redis_meets_for_the_first_time_are_no_restart(clock, key_id) -> None:
    """A Redis that never saw the scripts answers NOSCRIPT once for each; that is not a Redis
    that lost them, and the ledger is not read again."""
    client = Redis.from_url(REDIS)
    await client.script_flush()
    await client.aclose()
    ledger = LedgerStandIn(100, 100)
    limits = limits_over(RedisLimiter.from_url(REDIS, clock), ledger, clock)
    key = caller(key_id, tokens_per_day=1_000)
    first = await limits.reserve(key, "r1", 100)  # seeds, then takes: two scripts loaded
    first.end(50)  # the settlement's script, loaded too
    await asyncio.sleep(0.1)
    assert await limits.reserve(key, "r2", 100) is not None
    assert ledger.readings == 1
    await limits.close()


async def test_a_redis_that_restarted_is_seeded_again(clock, key_id) -> None:
    """Redis lost its data and its scripts: the next call is answered NOSCRIPT, and the
    requests after it start the key's budget from the ledger again."""
    ledger = LedgerStandIn(800, 800)
    limits = limits_over(RedisLimiter.from_url(REDIS, clock), ledger, clock)
    key = caller(key_id, tokens_per_day=1_000)
    assert await limits.reserve(key, "r1", 100) is not None  # 900 of 1000
    client = Redis.from_url(REDIS)
    await client.delete(*[k async for k in client.scan_iter(f"{PREFIX}:{{{key_id}}}:*")])
    await client.script_flush()
    await client.aclose()
    ledger.spent = (900, 900)  # the first request is in the ledger by now
    assert await limits.reserve(key, "r2", 50) is not None  # found NOSCRIPT; counted from 0
    assert await limits.reserve(key, "r3", 40) is not None  # seeded: 50 + 900 + 40
    assert ledger.readings == 2
    with pytest.raises(InsufficientQuotaError):
        await limits.reserve(key, "r4", 20)
    await limits.close()


async def test_the_ledgers_totals_are_a_days_and_its_months(tmp_path) -> None:
    store = await Store.open(sqlite_url(tmp_path))
    records = UsageRecords(store)
    rows = [
        row(at=DAY, prompt_tokens=100, completion_tokens=20),
        row(at=DAY, prompt_tokens=100, completion_tokens=20),
        row(at=DAY - timedelta(days=1), prompt_tokens=30, completion_tokens=5),  # this month
        row(at=DAY - timedelta(days=20), prompt_tokens=1_000, completion_tokens=0),  # the last
        row("other", at=DAY, prompt_tokens=7, completion_tokens=7),
    ]  # DAY is 2027-01-15
    await records.write(encoded(rows))
    spent = spent_in_ledger(records)
    assert await spent("k1", "2027-01-15", "2027-01") == (240, 275)
    assert await spent("k1", "2027-01-16", "2027-01") == (0, 275)
    assert await spent("nobody", "2027-01-15", "2027-01") == (0, 0)
    await store.close()
