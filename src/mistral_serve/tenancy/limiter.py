"""Where limit counters live, and what the gateway asks of them.

:class:`Limiter` is a backend: :class:`MemoryLimiter` keeps counters in this process (one
gateway process); the Redis one (:mod:`mistral_serve.tenancy.redis_limiter`) shares them
between every process and replica. :class:`KeyLimits` of a key and an :class:`Ask` go in, a
:class:`Verdict` comes out, and ``settle_soon`` later corrects the reservation to what was used
(without waiting: the gateway never waits for a settlement).

:class:`Limits` is what the gateway uses: it skips keys without limits, starts a key's day
and month budgets from the ledger (:mod:`mistral_serve.tenancy.budgets`), turns a refusal into
its 429, applies LIMITS_ON_STORE_ERROR when the backend fails (logged once per outage and
counted), and hands back a :class:`Reservation` to settle when the request ends, which
settles without waiting (the Redis backend sends it with the next pipeline);
:meth:`Limits.close` waits for those settlements.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from mistral_serve.errors import LimitsUnavailableError
from mistral_serve.tenancy.auth import Caller
from mistral_serve.tenancy.budgets import BudgetSeeds, SeedableLimiter
from mistral_serve.tenancy.limits import (
    CONCURRENCY_LEASE_S,
    CONCURRENCY_RETRY_S,
    Ask,
    Bucket,
    KeyLimits,
    RawHeaders,
    Settled,
    Verdict,
)

log = logging.getLogger(__name__)

OnStoreError = Literal["open", "closed"]


class Limiter(SeedableLimiter, Protocol):
    async def take(self, limits: KeyLimits, ask: Ask) -> Verdict:
        """Grant the request (taking from every limit) or refuse it (taking from none)."""
        ...

    def settle_soon(self, limits: KeyLimits, ask: Ask, used_tokens: int, done: Settled) -> None:
        """The request ended having used ``used_tokens``: give back or charge the difference
        from its reservation, and free its concurrency slot, without waiting (no task per
        request); ``done`` hears how it went."""
        ...

    async def close(self) -> None:
        """Finish the settlements under way, then let go of the counters."""
        ...


@dataclass(slots=True)
class _KeyCounters:
    requests: Bucket | None = None
    tokens: Bucket | None = None
    active: dict[str, float] = field(default_factory=dict)  # request id → lease deadline
    spent: dict[str, int] = field(default_factory=dict)  # "day:2026-11-25" / "month:…" → tokens
    #: The key's budgets as (counter name, budget), for the limits and the day they were made
    #: for (made once a day, not per request).
    periods: list[tuple[str, int]] = field(default_factory=list)
    periods_limits: KeyLimits | None = None
    periods_day: str = ""
    seeded: set[str] = field(default_factory=set)  # budget counters the ledger's totals are in

    def made_for(self, limits: KeyLimits, ask: Ask) -> bool:
        """Whether ``periods`` are the budgets of these limits on ``ask``'s day (and month)."""
        return self.periods_limits is limits and self.periods_day == ask.day

    def budgets(self, limits: KeyLimits, ask: Ask) -> list[tuple[str, int]]:
        """The budgets ``ask`` counts against; on a new day or month, its counters start."""
        if not self.made_for(limits, ask):
            self.periods = _periods(limits, ask)
            self.periods_limits, self.periods_day = limits, ask.day
            self.spent = {period: self.spent.get(period, 0) for period, _ in self.periods}
            self.seeded &= self.spent.keys()
        return self.periods


class MemoryLimiter:
    """Counters in this process: exact for one gateway process, not shared."""

    #: Counters in the process are lost only with it: budgets are seeded once per key and day.
    epoch = 0

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._keys: dict[str, _KeyCounters] = {}

    def _counters(self, key_id: str) -> _KeyCounters:
        counters = self._keys.get(key_id)
        if counters is None:
            counters = self._keys[key_id] = _KeyCounters()
        return counters

    async def seed(
        self, limits: KeyLimits, ask: Ask, day_tokens: int | None, month_tokens: int | None
    ) -> None:
        counters = self._counters(ask.key_id)
        for period, _ in counters.budgets(limits, ask):
            tokens = day_tokens if period.startswith("day:") else month_tokens
            if tokens is not None and period not in counters.seeded:
                counters.spent[period] += tokens
                counters.seeded.add(period)

    async def take(self, limits: KeyLimits, ask: Ask) -> Verdict:
        now = self._clock()
        counters = self._counters(ask.key_id)
        periods = counters.budgets(limits, ask)
        requests = counters.requests = _bucket(counters.requests, limits.rpm, now)
        tokens = counters.tokens = _bucket(counters.tokens, limits.tpm, now)
        for period, budget in periods:
            left = budget - counters.spent[period]
            if ask.tokens > left:
                refused = period.partition(":")[0]
                return _verdict(False, requests, tokens, refused=refused, budget_left=max(0, left))
        if limits.max_concurrent is not None and not _slot_free(
            counters.active, limits.max_concurrent, now
        ):
            return _verdict(
                False, requests, tokens, refused="concurrency", retry_after_s=CONCURRENCY_RETRY_S
            )
        if requests is not None and (wait := requests.wait_for(1)) != 0:
            return _verdict(False, requests, tokens, refused="rpm", retry_after_s=wait)
        if tokens is not None and (wait := tokens.wait_for(ask.tokens)) != 0:
            return _verdict(False, requests, tokens, refused="tpm", retry_after_s=wait)
        # Every limit allows it: take from all of them.
        for period, _ in periods:
            counters.spent[period] += ask.tokens
        if limits.max_concurrent is not None:
            counters.active[ask.request_id] = now + CONCURRENCY_LEASE_S
        if requests is not None:
            requests.level -= 1
        if tokens is not None:
            tokens.level -= ask.tokens
        return _verdict(True, requests, tokens)

    def settle_soon(self, limits: KeyLimits, ask: Ask, used_tokens: int, done: Settled) -> None:
        self._settle(limits, ask, used_tokens)
        done(None)

    def _settle(self, limits: KeyLimits, ask: Ask, used_tokens: int) -> None:
        counters = self._keys.get(ask.key_id)
        if counters is None:
            return
        unused = ask.tokens - used_tokens
        if counters.tokens is not None and limits.tpm is not None:
            counters.tokens.refill(limits.tpm, self._clock())
            counters.tokens.level = min(float(limits.tpm), counters.tokens.level + unused)
        # A request from before midnight settles yesterday's counter, if it is still kept.
        current = counters.made_for(limits, ask)
        for period, _ in counters.periods if current else _periods(limits, ask):
            if period in counters.spent:
                counters.spent[period] -= unused
        counters.active.pop(ask.request_id, None)

    async def close(self) -> None:
        self._keys.clear()


def _bucket(bucket: Bucket | None, capacity: int | None, now: float) -> Bucket | None:
    if capacity is None:
        return None
    if bucket is None:
        return Bucket.full(capacity, now)
    bucket.refill(capacity, now)
    return bucket


def _slot_free(active: dict[str, float], max_concurrent: int, now: float) -> bool:
    """Whether a key may start one more request; expired leases (requests of a gateway that
    died) are dropped only when the key is at its limit, not on every request."""
    if len(active) < max_concurrent:
        return True
    for request_id in [rid for rid, deadline in active.items() if deadline <= now]:
        del active[request_id]
    return len(active) < max_concurrent


def _verdict(
    granted: bool,
    requests: Bucket | None,
    tokens: Bucket | None,
    *,
    refused: str | None = None,
    retry_after_s: float | None = None,
    budget_left: int | None = None,
) -> Verdict:
    """A Verdict, with the per-minute buckets as it reports them."""
    return Verdict(
        granted,
        requests.window() if requests else None,
        tokens.window() if tokens else None,
        refused,
        retry_after_s,
        budget_left,
    )


def _periods(limits: KeyLimits, ask: Ask) -> list[tuple[str, int]]:
    """The budgets the key has, as (counter name, budget)."""
    periods = []
    if limits.tokens_per_day is not None:
        periods.append((f"day:{ask.day}", limits.tokens_per_day))
    if limits.tokens_per_month is not None:
        periods.append((f"month:{ask.month}", limits.tokens_per_month))
    return periods


# -- what the gateway uses -------------------------------------------------------------------
def _unavailable() -> LimitsUnavailableError:
    """The 503 of a request whose limits cannot be checked (LIMITS_ON_STORE_ERROR=closed)."""
    return LimitsUnavailableError(
        "Per-key limits cannot be checked now; try again shortly.", retry_after_s=1
    )


class Reservation:
    """A granted request's hold on its key's limits; :meth:`end` settles it (once)."""

    def __init__(self, limits: Limits, key_limits: KeyLimits, ask: Ask, headers: RawHeaders):
        self._limits = limits
        self._key_limits = key_limits
        self.ask = ask
        #: x-ratelimit-* for the answer, encoded (empty when the key has no per-minute limit).
        self.headers = headers
        self._ended = False

    def end(self, used_tokens: int) -> None:
        """The request is over, having used ``used_tokens``: settled in the background."""
        if self._ended:
            return
        self._ended = True
        self._limits.settle_later(self._key_limits, self.ask, used_tokens)


class Limits:
    def __init__(
        self,
        limiter: Limiter,
        *,
        on_store_error: OnStoreError = "open",
        budgets: BudgetSeeds | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._limiter = limiter
        #: Where day and month budgets start from (the ledger), if anywhere.
        self._budgets = budgets
        self._on_store_error = on_store_error
        self._clock = clock
        self._failing = False
        #: Backend failures (take or settle), for telemetry.
        self.store_errors = 0

    async def reserve(self, caller: Caller, request_id: str, tokens: int) -> Reservation | None:
        """Take ``tokens`` (and one request, and a concurrency slot) from the caller's key.
        None when the key has no limits (or the backend failed and limits fail open); raises
        the 429 that names the limit when refused."""
        key_limits = caller.limits
        if key_limits is None or caller.key_id is None:
            return None
        ask = Ask.at(caller.key_id, request_id, tokens, self._clock())
        budgets = self._budgets
        if (
            budgets is not None
            and key_limits.has_budgets
            and not budgets.ready(key_limits, ask, self._limiter.epoch)
        ):
            await self._seed_budgets(budgets, key_limits, ask)
        try:
            verdict = await self._limiter.take(key_limits, ask)
        except Exception as exc:  # the backend is down: LIMITS_ON_STORE_ERROR decides
            self._store_failed("check", exc)
            if self._on_store_error == "closed":
                raise _unavailable() from None
            return None
        if self._failing:
            self._store_answered()
        if not verdict.granted:
            raise verdict.error(key_limits, ask)
        return Reservation(self, key_limits, ask, verdict.raw_headers())

    async def _seed_budgets(self, budgets: BudgetSeeds, key_limits: KeyLimits, ask: Ask) -> None:
        """Start the key's day and month counters from the ledger's totals (once)."""
        epoch = self._limiter.epoch
        try:
            await budgets.seed(self._limiter, key_limits, ask)
        except Exception as exc:  # the ledger or the counters: LIMITS_ON_STORE_ERROR decides
            if self._on_store_error == "closed":  # refused, and tried again on the next request
                self._store_failed("budget totals", exc)
                raise _unavailable() from None
            self.store_errors += 1  # logged once per key and day: it is not tried again
            log.error(
                "usage totals of key %s unreadable: its budgets count from now in this process, "
                "until tomorrow: %s: %s",
                ask.key_id,
                type(exc).__name__,
                exc,
            )
            budgets.skip(key_limits, ask, epoch)

    def settle_later(self, key_limits: KeyLimits, ask: Ask, used_tokens: int) -> None:
        self._limiter.settle_soon(key_limits, ask, used_tokens, self._settled)

    def _settled(self, failure: Exception | None) -> None:
        if failure is not None:
            self._store_failed("settle", failure)
        elif self._failing:
            self._store_answered()

    async def close(self) -> None:
        """Finish the settlements under way, then close the backend."""
        await self._limiter.close()

    def _store_failed(self, what: str, exc: Exception) -> None:
        self.store_errors += 1
        if not self._failing:
            log.error(
                "limit counters unreachable (%s): limits fail %s until they answer: %s: %s",
                what,
                self._on_store_error,
                type(exc).__name__,
                exc,
            )
        self._failing = True

    def _store_answered(self) -> None:
        """The backend answers again (called only while ``_failing``: no call per request)."""
        log.info("limit counters reachable again")
        self._failing = False
