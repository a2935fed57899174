"""Limit arithmetic, run the same way against both backends (conftest.py): the counters in this
process and the Lua script in the real Redis on this machine. A test clock drives both, so
windows are exact."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from mistral_serve.errors import (
    InsufficientQuotaError,
    LimitsUnavailableError,
    RateLimitExceededError,
)
from mistral_serve.tenancy.auth import Caller
from mistral_serve.tenancy.limiter import Limits, MemoryLimiter
from mistral_serve.tenancy.limits import Ask, KeyLimits, duration, reservation, text_headers
from mistral_serve.tenancy.redis_limiter import RedisLimiter
from tests.services import REDIS

from .conftest import START, ask, caller, settled


async def test_requests_per_minute_refill_continuously(limiter, clock, key_id) -> None:
    limits = KeyLimits(rpm=3)
    for remaining in (2, 1, 0):
        verdict = await limiter.take(limits, ask(key_id))
        assert verdict.granted and verdict.requests.remaining == remaining
    refused = await limiter.take(limits, ask(key_id))
    assert not refused.granted and refused.refused == "rpm"
    assert refused.retry_after_s == pytest.approx(20.0)  # one request refills in 60/3 s
    assert refused.headers() == {
        "x-ratelimit-limit-requests": "3",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1m0s",
    }
    clock.now += 20
    assert (await limiter.take(limits, ask(key_id))).granted


async def test_tokens_are_reserved_then_settled_to_what_was_used(limiter, clock, key_id) -> None:
    limits = KeyLimits(tpm=1000)
    first = ask(key_id, 600)
    granted = await limiter.take(limits, first)
    assert granted.granted and granted.tokens.remaining == 400
    assert granted.tokens.reset_s == pytest.approx(36.0)  # 600 tokens at 1000/60 per s
    refused = await limiter.take(limits, ask(key_id, 600))
    assert refused.refused == "tpm" and refused.retry_after_s == pytest.approx(12.0)
    await settled(limiter, limits, first, 100)  # 500 unused tokens come back
    again = await limiter.take(limits, ask(key_id, 600))
    assert again.granted and again.tokens.remaining == 300


async def test_using_more_than_reserved_is_charged(limiter, clock, key_id) -> None:
    limits = KeyLimits(tpm=1000)
    first = ask(key_id, 100)
    await limiter.take(limits, first)
    await settled(limiter, limits, first, 700)
    refused = await limiter.take(limits, ask(key_id, 400))
    assert refused.refused == "tpm" and refused.tokens.remaining == 300


async def test_a_request_larger_than_the_whole_tpm_never_fits(limiter, key_id) -> None:
    limits = KeyLimits(tpm=1000)
    verdict = await limiter.take(limits, ask(key_id, 1001))
    assert verdict.refused == "tpm" and verdict.retry_after_s is None
    error = verdict.error(limits, ask(key_id, 1001))
    assert isinstance(error, RateLimitExceededError) and "too large" in error.message
    assert "retry-after" not in error.headers()


async def test_all_or_nothing(limiter, key_id) -> None:
    """Refused by the TPM, the request takes nothing from the RPM, budgets or slots."""
    limits = KeyLimits(rpm=10, tpm=100, max_concurrent=5, tokens_per_day=10_000)
    refused = await limiter.take(limits, ask(key_id, 150))
    assert refused.refused == "tpm"
    for n in range(5):
        granted = await limiter.take(limits, ask(key_id, 20))
        assert granted.granted and granted.requests.remaining == 9 - n
    assert (await limiter.take(limits, ask(key_id, 1))).refused == "concurrency"


async def test_concurrency_frees_on_settlement_and_after_the_lease(limiter, clock, key_id):
    limits = KeyLimits(max_concurrent=2)
    first, second = ask(key_id), ask(key_id)
    assert (await limiter.take(limits, first)).granted
    assert (await limiter.take(limits, second)).granted
    refused = await limiter.take(limits, ask(key_id))
    assert refused.refused == "concurrency" and refused.retry_after_s == pytest.approx(1.0)
    await settled(limiter, limits, first, 5)
    assert (await limiter.take(limits, ask(key_id))).granted
    clock.now += 901  # the lease of requests a crashed gateway never settled
    assert (await limiter.take(limits, ask(key_id))).granted
    assert (await limiter.take(limits, ask(key_id))).granted


async def test_budgets_cannot_be_overshot(limiter, key_id) -> None:
    limits = KeyLimits(tokens_per_day=1000)
    first = ask(key_id, 600)
    assert (await limiter.take(limits, first)).granted
    refused = await limiter.take(limits, ask(key_id, 600))
    assert refused.refused == "day" and refused.budget_left == 400
    error = refused.error(limits, ask(key_id, 600))
    assert isinstance(error, InsufficientQuotaError) and error.status == 429
    assert "retry-after" not in error.headers()
    await settled(limiter, limits, first, 100)
    assert (await limiter.take(limits, ask(key_id, 600))).granted
    tomorrow = datetime.fromtimestamp(START + 86_400, UTC)
    assert (await limiter.take(limits, ask(key_id, 1000, at=tomorrow))).granted


async def test_a_request_from_before_midnight_settles_without_touching_today(limiter, key_id):
    limits = KeyLimits(tokens_per_day=1000)
    tomorrow = datetime.fromtimestamp(START + 86_400, UTC)
    late = ask(key_id, 600)  # reserved before midnight
    assert (await limiter.take(limits, late)).granted
    assert (await limiter.take(limits, ask(key_id, 600, at=tomorrow))).granted  # a new budget
    await settled(limiter, limits, late, 100)  # yesterday's request ends after midnight
    assert not (await limiter.take(limits, ask(key_id, 500, at=tomorrow))).granted
    assert (await limiter.take(limits, ask(key_id, 400, at=tomorrow))).granted


async def test_monthly_budget(limiter, key_id) -> None:
    limits = KeyLimits(tokens_per_month=100)
    assert (await limiter.take(limits, ask(key_id, 100))).granted
    assert (await limiter.take(limits, ask(key_id, 1))).refused == "month"


async def test_a_changed_limit_applies_at_once(limiter, key_id) -> None:
    await limiter.take(KeyLimits(rpm=100), ask(key_id))
    verdict = await limiter.take(KeyLimits(rpm=2), ask(key_id))
    assert verdict.granted and verdict.requests.limit == 2 and verdict.requests.remaining == 1


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0ms"),
        (0.02, "20ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (59.9994, "59.999s"),
        (360, "6m0s"),
        (90, "1m30s"),
        (3600, "1h0m0s"),
        (3725.25, "1h2m5.25s"),
    ],
)
def test_durations_read_like_openais(seconds: float, text: str) -> None:
    assert duration(seconds) == text


# -- the gateway's side: skipping, refusing, failing open or closed ----------------------------
async def test_keys_without_limits_are_not_counted() -> None:
    limits = Limits(MemoryLimiter())
    assert await limits.reserve(caller(), "r1", 10) is None
    assert await limits.reserve(Caller("static"), "r2", 10) is None
    # The pipeline asks the caller first, and makes no reservation for them.
    assert caller().limits is None and Caller("static").limits is None
    assert caller(tokens_per_month=1).limits == KeyLimits(tokens_per_month=1)


async def test_a_refusal_is_its_429_with_headers() -> None:
    limits = Limits(MemoryLimiter())
    reservation = await limits.reserve(caller(rpm=1), "r1", 10)
    assert reservation is not None
    assert text_headers(reservation.headers)["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(RateLimitExceededError) as refused:
        await limits.reserve(caller(rpm=1), "r2", 10)
    assert refused.value.headers()["retry-after"] == "60"
    assert refused.value.headers()["x-ratelimit-limit-requests"] == "1"
    assert refused.value.to_dict()["error"]["code"] == "rate_limit_exceeded"


async def test_a_key_record_changed_in_the_cache_brings_its_new_limits() -> None:
    limits = Limits(MemoryLimiter())
    first = await limits.reserve(caller(rpm=5), "r1", 10)
    assert first is not None and (b"x-ratelimit-limit-requests", b"5") in first.headers
    again = await limits.reserve(caller(rpm=5), "r2", 10)  # the same limits
    assert again is not None and (b"x-ratelimit-remaining-requests", b"3") in again.headers
    raised = await limits.reserve(caller(rpm=100), "r3", 10)  # the key cache read a new record
    assert raised is not None and (b"x-ratelimit-limit-requests", b"100") in raised.headers
    assert await limits.reserve(caller(), "r4", 10) is None  # its limits were removed


class CountingLimiter(MemoryLimiter):
    """The counters in this process, counting the settlements asked of them."""

    def __init__(self) -> None:
        super().__init__()
        self.settlements: list[tuple[str, int]] = []

    def settle_soon(self, limits, ask, used_tokens, done) -> None:
        self.settlements.append((ask.request_id, used_tokens))
        super().settle_soon(limits, ask, used_tokens, done)


async def test_a_reservation_settles_once_without_waiting() -> None:
    backend = CountingLimiter()
    limits = Limits(backend)
    reservation = await limits.reserve(caller(max_concurrent=1), "r1", 10)
    assert reservation.end(5) is None  # not a coroutine: nothing for the request to wait on
    reservation.end(7)  # a second end (a stream's close after its failure) settles nothing
    assert backend.settlements == [("r1", 5)]
    assert await limits.reserve(caller(max_concurrent=1), "r2", 10) is not None  # slot freed
    await limits.close()


class BrokenLimiter(MemoryLimiter):
    async def take(self, limits: KeyLimits, ask: Ask):
        raise ConnectionError("counters unreachable")


async def test_store_errors_fail_open_or_closed(caplog: pytest.LogCaptureFixture) -> None:
    open_ = Limits(BrokenLimiter(), on_store_error="open")
    assert await open_.reserve(caller(rpm=1), "r1", 10) is None
    assert await open_.reserve(caller(rpm=1), "r2", 10) is None
    assert open_.store_errors == 2
    assert len([r for r in caplog.records if "unreachable" in r.message]) == 1  # once an outage
    closed = Limits(BrokenLimiter(), on_store_error="closed")
    with pytest.raises(LimitsUnavailableError) as refused:
        await closed.reserve(caller(rpm=1), "r3", 10)
    assert refused.value.status == 503 and closed.store_errors == 1


async def test_redis_that_does_not_answer_fails_the_check() -> None:
    backend = RedisLimiter.from_url("redis://127.0.0.1:1/0")
    limits = Limits(backend, on_store_error="open")
    assert await limits.reserve(caller(rpm=1), "r1", 10) is None
    assert limits.store_errors == 1
    await limits.close()


async def test_a_redis_that_forgot_the_scripts_is_taught_them_again(clock, key_id) -> None:
    """A restarted Redis knows no scripts: the calls are answered NOSCRIPT, and the limiter
    loads the scripts and sends them again."""
    backend = RedisLimiter.from_url(REDIS, clock)
    limits = KeyLimits(rpm=10, max_concurrent=3)
    first = ask(key_id)
    assert (await backend.take(limits, first)).granted
    client = Redis.from_url(REDIS)
    await client.script_flush()
    await client.aclose()
    second, third = ask(key_id), ask(key_id)
    verdicts = await asyncio.gather(backend.take(limits, second), backend.take(limits, third))
    assert [verdict.requests.remaining for verdict in verdicts] == [8, 7]
    await settled(backend, limits, first, 5)
    assert (await backend.take(limits, ask(key_id))).granted  # first's slot was freed
    await backend.close()


async def test_a_connection_redis_closed_is_replaced(clock, key_id) -> None:
    """Redis closes the limiter's connection (a restart, an idle-client timeout): the next call
    goes over a new one and is answered, not failed."""
    backend = RedisLimiter.from_url(REDIS, clock)
    limits = KeyLimits(rpm=10)
    assert (await backend.take(limits, ask(key_id))).granted
    host, port = backend._calls._connection._writer.get_extra_info("sockname")[:2]
    client = Redis.from_url(REDIS)
    assert await client.client_kill_filter(_id=None, addr=f"{host}:{port}") == 1
    await client.aclose()
    verdict = await backend.take(limits, ask(key_id))
    assert verdict.granted and verdict.requests.remaining == 8
    await backend.close()


def test_a_reservation_is_the_prompt_estimate_plus_max_tokens_per_choice() -> None:
    assert reservation(400, 100, 2, default=1024) == 100 + 8 + 200
    assert reservation(0, None, 1, default=1024) == 8 + 1024  # no max_tokens: the default


async def test_settlements_at_once_all_apply(limiter, key_id) -> None:
    """Many requests ending together (Redis sends their settlements in one pipeline)."""
    limits = KeyLimits(max_concurrent=5, tpm=1000)
    asks = [ask(key_id, 100) for _ in range(5)]
    for each in asks:
        assert (await limiter.take(limits, each)).granted
    await asyncio.gather(*(settled(limiter, limits, each, 10) for each in asks))
    verdict = await limiter.take(limits, ask(key_id, 100))
    assert verdict.granted and verdict.tokens.remaining == 1000 - 50 - 100


def count_round_trips(backend: RedisLimiter) -> list[int]:
    """The sizes of the batches the Redis limiter sends, as it sends them."""
    sizes: list[int] = []
    pipelined = backend._calls
    exchange = pipelined._exchange

    async def counted(commands):
        sizes.append(len(commands))
        return await exchange(commands)

    pipelined._exchange = counted
    return sizes


async def slot_held(
    clock, key_id: str, settle_within_s: float, **limits: int
) -> tuple[RedisLimiter, KeyLimits, Ask]:
    """A Redis limiter settling within ``settle_within_s``, and the Ask holding the key's one
    concurrency slot."""
    backend = RedisLimiter.from_url(REDIS, clock, settle_within_s=settle_within_s)
    key_limits = KeyLimits(max_concurrent=1, **limits)
    first = ask(key_id, 100)
    assert (await backend.take(key_limits, first)).granted
    return backend, key_limits, first


async def test_a_redis_settlement_rides_with_the_next_check(clock, key_id) -> None:
    """At a steady rate a request costs one round trip: its settlement waits for the next
    check and goes ahead of it, so the slot it frees is the check's to take."""
    backend, limits, first = await slot_held(clock, key_id, 5, tpm=1000)
    sizes = count_round_trips(backend)
    settled: list[Exception | None] = []
    backend.settle_soon(limits, first, 40, settled.append)
    await asyncio.sleep(0.05)
    assert sizes == [] and settled == []  # waiting for a check
    verdict = await backend.take(limits, ask(key_id, 100))
    assert sizes == [2] and settled == [None]  # one round trip: the settlement, then the check
    assert verdict.granted and verdict.tokens.remaining == 1000 - 40 - 100
    await backend.close()


async def test_a_redis_settlement_goes_alone_within_its_bound(clock, key_id) -> None:
    backend, limits, first = await slot_held(clock, key_id, 0.05)
    sizes = count_round_trips(backend)
    settled: list[Exception | None] = []
    backend.settle_soon(limits, first, 5, settled.append)
    await asyncio.sleep(0.2)
    assert sizes == [1] and settled == [None]
    assert (await backend.take(limits, ask(key_id))).granted  # the slot came back
    await backend.close()


async def test_a_settlement_whose_time_came_during_a_round_trip_goes_after_it(
    clock, key_id
) -> None:
    backend, limits, first = await slot_held(clock, key_id, 60)
    pipelined = backend._calls
    sizes: list[int] = []
    exchange = pipelined._exchange

    async def slow(commands):  # the check's round trip, during which the settlement's time comes
        sizes.append(len(commands))
        if len(sizes) == 1:
            backend.settle_soon(limits, first, 5, lambda failure: None)
            pipelined._deferred_timer.cancel()
            pipelined._send_deferred()  # its timer goes off, a batch being under way
        return await exchange(commands)

    pipelined._exchange = slow
    await backend.take(limits, ask(key_id))  # refused: the slot is still held
    assert sizes == [1, 1]  # the settlement went at once after, not after another 60 s
    await backend.close()


async def test_closing_the_redis_limiter_sends_the_waiting_settlements(clock, key_id) -> None:
    backend, limits, first = await slot_held(clock, key_id, 60)
    settled: list[Exception | None] = []
    backend.settle_soon(limits, first, 5, settled.append)
    await backend.close()
    assert settled == [None]
    again = RedisLimiter.from_url(REDIS, clock)
    assert (await again.take(limits, ask(key_id))).granted  # the slot came back
    await again.close()


class UnsettlingLimiter(MemoryLimiter):
    def settle_soon(self, limits, ask, used_tokens, done) -> None:
        done(ConnectionError("counters unreachable"))


async def test_a_failed_settlement_is_counted() -> None:
    limits = Limits(UnsettlingLimiter())
    reservation = await limits.reserve(caller(rpm=5), "r1", 10)
    reservation.end(3)
    await limits.close()
    assert limits.store_errors == 1


def test_redis_commands_are_packed_by_hiredis_into_the_same_bytes():
    """The limiter packs in C what redis-py's asyncio connections pack in Python."""
    from redis.asyncio.connection import Connection, SSLConnection

    from mistral_serve.tenancy import redis_limiter

    secure = RedisLimiter.from_url("rediss://127.0.0.1:6380/0")._redis.connection_pool
    assert issubclass(secure.connection_class, SSLConnection)  # the URL's scheme is kept
    command = ("EVALSHA", "f" * 40, 5, "k:{a}:rpm", "k:{a}:tpm", 1_800_000_000_000, -1, "rid-ü")
    assert redis_limiter.pack_commands([command, ("SCRIPT", "LOAD", "return 1")]) == [
        b"".join(Connection().pack_command(*command)),
        b"".join(Connection().pack_command("SCRIPT", "LOAD", "return 1")),
    ]
