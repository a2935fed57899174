"""Token budgets that outlive their counters: a key's day and month counters start from what
the usage ledger already holds.

Counters in the process are lost with their gateway process (a deploy, a crash); Redis's with
a Redis that restarts without persistence. Without this a key could spend its daily budget
again after every restart. Before a key's first limited request of a day in this process, and
again once the backend says its counters may have been lost (a Redis that answers NOSCRIPT
for a script it had run has restarted), the ledger's totals for the key's day and month are
added to the counters. Each counter takes them once (the Redis script marks a seeded
counter), so every gateway may try and only the first adds; however many requests of a key
arrive meanwhile, the ledger is read once.

The ledger lags the counters a little: rows still waiting for their flush on other gateways
(at most LEDGER_FLUSH_INTERVAL_S of them) are missed, and requests that ended between a
Redis restart and the seeding are counted twice. A ledger that cannot be read is a store
failure (LIMITS_ON_STORE_ERROR): failing open, the key's budgets count from that request on
in this process until the next day.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from typing import Protocol

from mistral_serve.store import UsageRecords
from mistral_serve.tenancy.limits import Ask, KeyLimits

#: What a key used in a UTC day and its month, as the ledger holds it: (key id, day, month) →
#: (day's tokens, month's tokens).
Spent = Callable[[str, str, str], Awaitable[tuple[int, int]]]


class SeedableLimiter(Protocol):
    @property
    def epoch(self) -> int:
        """Grows each time the counters may have been lost (then budgets are seeded again)."""
        ...

    async def seed(
        self, limits: KeyLimits, ask: Ask, day_tokens: int | None, month_tokens: int | None
    ) -> None:
        """Add what the ledger holds to ``ask``'s day and month counters (None: no such
        budget), unless that counter was seeded already."""
        ...


def spent_in_ledger(records: UsageRecords) -> Spent:
    """The ledger's per-day totals of a key, added up for a day and its month."""

    async def spent(key_id: str, day: str, month: str) -> tuple[int, int]:
        days = await records.totals(date.fromisoformat(f"{month}-01"), by="day", key_id=key_id)
        in_month = [summary for summary in days if summary.group.startswith(month)]
        on_day = sum(summary.total_tokens for summary in in_month if summary.group == day)
        return on_day, sum(summary.total_tokens for summary in in_month)

    return spent


@dataclass(slots=True)
class _Seeded:
    """A key's budgets were seeded for these limits, on this day, at this backend epoch."""

    limits: KeyLimits
    day: str
    epoch: int


class BudgetSeeds:
    """Which keys' budgets this process has seeded, and the seeding of those it has not."""

    def __init__(self, spent: Spent, *, timeout_s: float = 2.0) -> None:
        self._spent = spent
        self._timeout_s = timeout_s
        self._seeded: dict[str, _Seeded] = {}
        self._seeding: dict[str, asyncio.Future[None]] = {}

    def ready(self, limits: KeyLimits, ask: Ask, epoch: int) -> bool:
        """Whether ``ask``'s budgets are seeded already (asked on every limited request)."""
        seeded = self._seeded.get(ask.key_id)
        return (
            seeded is not None
            and seeded.limits is limits
            and seeded.day == ask.day
            and seeded.epoch == epoch
        )

    async def seed(self, limiter: SeedableLimiter, limits: KeyLimits, ask: Ask) -> None:
        """Seed ``ask``'s budgets from the ledger: one reading however many requests of the
        key wait for it (a waiter that leaves does not stop it). Raises what reading the
        ledger or the backend raised."""
        seeding = self._seeding.get(ask.key_id)
        if seeding is None:
            seeding = asyncio.ensure_future(self._seed(limiter, limits, ask))
            self._seeding[ask.key_id] = seeding
            seeding.add_done_callback(lambda done: self._finished(ask.key_id, done))
        await asyncio.shield(seeding)

    def skip(self, limits: KeyLimits, ask: Ask, epoch: int) -> None:
        """Count ``ask``'s budgets from here in this process (the ledger could not be read)."""
        self._seeded[ask.key_id] = _Seeded(limits, ask.day, epoch)

    async def _seed(self, limiter: SeedableLimiter, limits: KeyLimits, ask: Ask) -> None:
        async with asyncio.timeout(self._timeout_s):
            on_day, in_month = await self._spent(ask.key_id, ask.day, ask.month)
            await limiter.seed(
                limits,
                ask,
                on_day if limits.tokens_per_day is not None else None,
                in_month if limits.tokens_per_month is not None else None,
            )
        # The epoch after seeding: a restart that seeding itself found (NOSCRIPT) is covered.
        self._seeded[ask.key_id] = _Seeded(limits, ask.day, limiter.epoch)

    def _finished(self, key_id: str, done: asyncio.Future[None]) -> None:
        self._seeding.pop(key_id, None)
        if not done.cancelled():
            done.exception()  # retrieved: its waiters, if any are left, raise it
