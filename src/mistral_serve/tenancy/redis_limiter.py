"""Limit counters in Redis, shared by every gateway process and replica (REDIS_URL).

One Lua script checks every limit of a request and takes from all of them or none; Redis runs
a script atomically, so any number of gateways enforce one limit exactly. The calls made in
one turn of the event loop go to Redis in one pipeline, and a settlement rides with the next
check (or goes within SETTLE_WITHIN_S). The arithmetic is
:mod:`mistral_serve.tenancy.limits`' (token buckets in milliseconds, a sorted set of leased
request ids, period counters). Time is Redis's own clock (``TIME``), so gateways whose clocks
differ still share one bucket; tests may pass a clock instead.

A key's counters share a hash tag (``{key id}``), so they stay on one node of a cluster. A
bucket expires once it would be full again (a missing bucket is a full one); budget counters
expire after their period.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mistral_serve.tenancy.limits import (
    CONCURRENCY_LEASE_S,
    CONCURRENCY_RETRY_S,
    Ask,
    KeyLimits,
    Settled,
    Verdict,
    Window,
)

PREFIX = "mistral-serve:limits"
#: A settlement waits at most this long for a check to ride with (see _Pipelined): the
#: longest a freed concurrency slot or unused tokens stay taken, next to a request's seconds.
SETTLE_WITHIN_S = 0.05
_DAY_TTL_S = 2 * 86_400
_MONTH_TTL_S = 32 * 86_400

# Shared by both scripts: the constants, the clock and the bucket arithmetic.
_COMMON = f"""
local LEASE_MS, RETRY_MS = {round(CONCURRENCY_LEASE_S * 1000)}, {round(CONCURRENCY_RETRY_S * 1000)}
local DAY_TTL_S, MONTH_TTL_S = {_DAY_TTL_S}, {_MONTH_TTL_S}
local now = tonumber(ARGV[1])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- A bucket's level at now (a missing bucket is full); capacity per minute, time in ms.
local function level_of(key, capacity)
  local saved = redis.call('HMGET', key, 'l', 't')
  local level, stamp = tonumber(saved[1]), tonumber(saved[2])
  if level == nil then return capacity end
  return math.min(capacity, level + math.max(0, now - stamp) * capacity / 60000)
end
local function save(key, capacity, level)
  redis.call('HSET', key, 'l', tostring(level), 't', tostring(now))
  redis.call('PEXPIRE', key, math.ceil((capacity - level) * 60000 / capacity) + 1000)
end
"""

# KEYS: requests bucket, tokens bucket, active set, day counter, month counter.
# ARGV: now_ms (0: Redis's clock), rpm, tpm, max_concurrent, per_day, per_month (-1: none),
#       tokens, request id. (Fewer arguments: packing each costs the gateway CPU.)
# Returns: granted (1/0), refused (''/rpm/tpm/concurrency/day/month), retry_ms (-1: never),
#          budget_left, then limit, remaining, reset_ms for requests and for tokens (-1: none).
TAKE = (
    _COMMON
    + """
local rpm, tpm, max_active = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local per_day, per_month = tonumber(ARGV[5]), tonumber(ARGV[6])
local tokens = tonumber(ARGV[7])
local requests_level = rpm >= 0 and level_of(KEYS[1], rpm) or 0
local tokens_level = tpm >= 0 and level_of(KEYS[2], tpm) or 0

local function answer(granted, refused, retry_ms, budget_left)
  local out = {granted, refused, retry_ms, budget_left}
  for _, w in ipairs({{rpm, requests_level}, {tpm, tokens_level}}) do
    local capacity, level = w[1], w[2]
    if capacity >= 0 then
      out[#out + 1] = capacity
      out[#out + 1] = math.max(0, math.floor(level))
      out[#out + 1] = math.max(0, math.ceil((capacity - level) * 60000 / capacity))
    else
      out[#out + 1] = -1; out[#out + 1] = -1; out[#out + 1] = -1
    end
  end
  return out
end

local budgets = {{'day', KEYS[4], per_day}, {'month', KEYS[5], per_month}}
for _, b in ipairs(budgets) do
  if b[3] >= 0 then
    local left = b[3] - (tonumber(redis.call('GET', b[2])) or 0)
    if tokens > left then return answer(0, b[1], -1, math.max(0, left)) end
  end
end
if max_active >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= max_active then
    return answer(0, 'concurrency', RETRY_MS, -1)
  end
end
for _, w in ipairs({{'rpm', rpm, requests_level, 1}, {'tpm', tpm, tokens_level, tokens}}) do
  local name, capacity, level, cost = w[1], w[2], w[3], w[4]
  if capacity >= 0 then
    if cost > capacity then return answer(0, name, -1, -1) end
    if level < cost then
      return answer(0, name, math.ceil((cost - level) * 60000 / capacity), -1)
    end
  end
end

-- Every limit allows it: take from all of them.
for _, b in ipairs(budgets) do
  if b[3] >= 0 then
    redis.call('SET', b[2], 0, 'EX', b[1] == 'day' and DAY_TTL_S or MONTH_TTL_S, 'NX')
    redis.call('INCRBY', b[2], tokens)
  end
end
if max_active >= 0 then
  redis.call('ZADD', KEYS[3], now + LEASE_MS, ARGV[8])
  redis.call('PEXPIRE', KEYS[3], LEASE_MS)
end
if rpm >= 0 then requests_level = requests_level - 1; save(KEYS[1], rpm, requests_level) end
if tpm >= 0 then tokens_level = tokens_level - tokens; save(KEYS[2], tpm, tokens_level) end
return answer(1, '', 0, -1)
"""
)

# KEYS: as TAKE. ARGV: now_ms, tpm (-1: none), unused tokens (negative: used more),
#       request id, has per_day (1/0), has per_month (1/0).
SETTLE = (
    _COMMON
    + """
local tpm, unused = tonumber(ARGV[2]), tonumber(ARGV[3])
if tpm >= 0 and redis.call('EXISTS', KEYS[2]) == 1 then
  save(KEYS[2], tpm, math.min(tpm, level_of(KEYS[2], tpm) + unused))
end
for i, has in ipairs({ARGV[5], ARGV[6]}) do
  if has == '1' and redis.call('EXISTS', KEYS[3 + i]) == 1 then
    redis.call('DECRBY', KEYS[3 + i], unused)
  end
end
redis.call('ZREM', KEYS[3], ARGV[4])
return 1
"""
)

# KEYS: day counter, month counter, and each one's mark of being seeded.
# ARGV: the ledger's tokens for the day and for the month (-1: the key has no such budget).
# Each counter takes them once (its mark lives as long as it does), whichever gateway is first.
SEED = f"""
for i = 1, 2 do
  local tokens, ttl = tonumber(ARGV[i]), i == 1 and {_DAY_TTL_S} or {_MONTH_TTL_S}
  if tokens >= 0 and redis.call('SET', KEYS[i + 2], 1, 'EX', ttl, 'NX') then
    redis.call('SET', KEYS[i], 0, 'EX', ttl, 'NX')
    redis.call('INCRBY', KEYS[i], tokens)
  end
end
return 1
"""


def _keys(ask: Ask) -> list[str]:
    base = f"{PREFIX}:{{{ask.key_id}}}"
    return [
        f"{base}:rpm",
        f"{base}:tpm",
        f"{base}:active",
        f"{base}:day:{ask.day}",
        f"{base}:month:{ask.month}",
    ]


def _or_none(limit: int | None) -> int:
    return -1 if limit is None else limit


Reply = Callable[[Any], None]  # hears a script's reply, or the Exception it raised
_Call = tuple[AsyncScript, list[str], list[int | str], Reply]


class _Pipelined:
    """Script calls made during one turn of the event loop, sent together: under load one
    round trip serves many requests (each script still runs atomically).

    The calls go over one connection of their own, written and read directly: one write for
    the batch, its replies read in order, one timeout for the whole. redis-py's pipeline
    object, its connection pool and its per-read timeouts cost the gateway about 3 times the
    CPU of the round trip itself.

    A request makes two calls, its check and its settlement, and only the check is waited
    for. Settlements (:meth:`call_later`) ride with the next batch, ahead of its checks (what
    they free, those checks may take), or go on their own after ``defer_s``: at a steady rate
    a request costs one round trip, not two. A slot and unused tokens come back to the key up
    to ``defer_s`` late (the safe side); tokens used beyond a reservation (a prompt longer than
    its estimate) are charged up to ``defer_s`` late."""

    def __init__(self, client: Redis, timeout_s: float, defer_s: float) -> None:
        self._client = client
        self._timeout_s = timeout_s
        self._defer_s = defer_s
        self._connection: AbstractConnection | None = None
        self._queued: list[_Call] = []
        self._deferred: list[_Call] = []
        self._deferred_timer: asyncio.TimerHandle | None = None
        self._sending: asyncio.Task[None] | None = None
        #: Batches answered NOSCRIPT for a script Redis had run before: it lost its scripts (it
        #: restarted, or they were flushed), and perhaps its counters with them.
        self.scripts_lost = 0
        self._known: set[str] = set()  # SHAs of the scripts Redis has answered

    async def call(self, script: AsyncScript, keys: list[str], args: list[int | str]) -> Any:
        """The script's reply (raises what it raised)."""
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def reply(outcome: Any) -> None:
            if answer.done():  # its caller gave up waiting
                return
            if isinstance(outcome, Exception):
                answer.set_exception(outcome)
            else:
                answer.set_result(outcome)

        self.call_soon(script, keys, args, reply)
        return await answer

    def call_soon(
        self, script: AsyncScript, keys: list[str], args: list[int | str], reply: Reply
    ) -> None:
        """Queue the call; ``reply`` hears its outcome once the pipeline returns."""
        self._queued.append((script, keys, args, reply))
        self._start_sending()

    def call_later(
        self, script: AsyncScript, keys: list[str], args: list[int | str], reply: Reply
    ) -> None:
        """Queue the call to go with the next batch, or on its own within ``defer_s``."""
        self._deferred.append((script, keys, args, reply))
        self._arm_deferred_timer()

    def _arm_deferred_timer(self) -> None:
        if self._deferred_timer is None:
            self._deferred_timer = asyncio.get_running_loop().call_later(
                self._defer_s, self._send_deferred
            )

    def _send_deferred(self) -> None:
        self._deferred_timer = None
        if self._deferred:
            self._start_sending()  # or, if a batch is under way, when it ends (_send)

    def _start_sending(self) -> None:
        if self._sending is None:
            self._sending = asyncio.get_running_loop().create_task(
                self._send(), name="limits-redis"
            )

    async def _send(self) -> None:
        try:
            await asyncio.sleep(0)  # let this turn's other requests queue theirs
            while self._queued or self._deferred:
                batch = self._deferred + self._queued  # settlements first
                self._queued, self._deferred = [], []
                if self._deferred_timer is not None:
                    self._deferred_timer.cancel()
                    self._deferred_timer = None
                replies = await self._run(batch)
                for (*_, reply), outcome in zip(batch, replies, strict=True):
                    reply(outcome)
                # Settlements made meanwhile wait for a check or their timer, unless the timer
                # went off during this round trip.
                overdue = self._deferred and self._deferred_timer is None
                if not self._queued and not overdue:
                    break
        finally:
            self._sending = None
            if self._deferred:
                self._arm_deferred_timer()

    async def _run(self, batch: list[_Call]) -> list[Any]:
        """The batch's replies. Scripts go by their SHA alone: redis-py's pipelined scripts
        would ask Redis which scripts it knows (SCRIPT EXISTS) before every pipeline, one more
        round trip each time. A Redis that does not know one (first use, or it restarted)
        answers NOSCRIPT: the script is loaded and those calls are sent again."""
        try:
            async with asyncio.timeout(self._timeout_s):
                replies = await self._pipeline(batch)
                unknown = [n for n, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
                if unknown:
                    scripts = {batch[n][0] for n in unknown}
                    if any(script.sha in self._known for script in scripts):  # not a first use
                        self.scripts_lost += 1
                    for script in scripts:
                        await self._pipeline_commands([("SCRIPT", "LOAD", script.script)])
                    again = await self._pipeline([batch[n] for n in unknown])
                    for n, reply in zip(unknown, again, strict=True):
                        replies[n] = reply
            self._known.update(script.sha for script, *_ in batch)
            return replies
        except Exception as exc:  # the connection: every call in the batch failed
            if isinstance(exc, TimeoutError):
                exc = RedisTimeoutError(f"Redis did not answer within {self._timeout_s} s")
            return [exc] * len(batch)

    async def _pipeline(self, batch: list[_Call]) -> list[Any]:
        return await self._pipeline_commands(
            [("EVALSHA", script.sha, len(keys), *keys, *args) for script, keys, args, _ in batch]
        )

    async def _pipeline_commands(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` in one write and read their replies (a reply that is an error
        comes back as its exception, in its place). A connection Redis closed (it restarted,
        or dropped idle clients) is replaced and the commands sent once more, as redis-py
        retries; any other failure drops the connection (it may be mid-reply) and the next
        batch opens a new one."""
        try:
            return await self._exchange(commands)
        except RedisConnectionError:
            return await self._exchange(commands)

    async def _exchange(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        if self._connection is None:
            self._connection = self._client.connection_pool.make_connection()
        connection = self._connection
        try:
            await connection.send_packed_command(pack_commands(commands), check_health=False)
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await connection.read_response())
                except ResponseError as error:  # the reply was read: the connection is in step
                    replies.append(error)
            return replies
        except BaseException:
            self._connection = None
            await connection.disconnect(nowait=True)
            raise

    async def close(self) -> None:
        """Send what waits (settlements included), then let go of the connection."""
        while self._deferred or self._sending is not None:
            self._start_sending()
            await asyncio.gather(self._sending, return_exceptions=True)  # type: ignore[arg-type]
        if self._deferred_timer is not None:
            self._deferred_timer.cancel()
            self._deferred_timer = None
        if self._connection is not None:
            await self._connection.disconnect()
            self._connection = None


def pack_commands(commands: list[tuple[Any, ...]]) -> list[bytes]:
    """The limiter's own commands (names, strings and integers only), packed by hiredis, in
    C: redis-py's asyncio connections pack in Python (37 % of the limiter's CPU under load),
    and its hiredis packer first rebuilds each command, looking at every argument."""
    return [hiredis.pack_command(command) for command in commands]


class RedisLimiter:
    """Counters in Redis at ``url``. ``clock``: seconds, for tests; default Redis's clock."""

    def __init__(
        self,
        client: Redis,
        clock: Callable[[], float] | None = None,
        *,
        timeout_s: float = 1.0,
        settle_within_s: float = SETTLE_WITHIN_S,
    ) -> None:
        self._redis = client
        self._clock = clock
        self._take = client.register_script(TAKE)
        self._settle = client.register_script(SETTLE)
        self._seed = client.register_script(SEED)
        self._calls = _Pipelined(client, timeout_s, settle_within_s)

    @classmethod
    def from_url(
        cls,
        url: str,
        clock: Callable[[], float] | None = None,
        *,
        settle_within_s: float = SETTLE_WITHIN_S,
    ) -> RedisLimiter:
        # A short timeout: the check is on every limited request's path. It is applied per
        # batch (_Pipelined), not per socket read: redis-py's per-read timeouts cost a task
        # or a timer on every read.
        client = Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=None)
        return cls(client, clock, settle_within_s=settle_within_s)

    def _now_ms(self) -> int:
        return 0 if self._clock is None else round(self._clock() * 1000)

    async def take(self, limits: KeyLimits, ask: Ask) -> Verdict:
        args: list[int | str] = [
            self._now_ms(),
            _or_none(limits.rpm),
            _or_none(limits.tpm),
            _or_none(limits.max_concurrent),
            _or_none(limits.tokens_per_day),
            _or_none(limits.tokens_per_month),
            ask.tokens,
            ask.request_id,
        ]
        reply = await self._calls.call(self._take, _keys(ask), args)
        granted, refused, retry_ms, budget_left = reply[:4]
        refused = refused.decode() if isinstance(refused, bytes) else refused
        return Verdict(
            granted == 1,
            _window(reply[4:7]),
            _window(reply[7:10]),
            refused=refused or None,
            retry_after_s=None if retry_ms < 0 else retry_ms / 1000,
            budget_left=None if budget_left < 0 else budget_left,
        )

    @property
    def epoch(self) -> int:
        """Grows whenever Redis is found to have lost its scripts: budgets are seeded again
        (a Redis that kept its data keeps each counter's seeded mark, and nothing changes)."""
        return self._calls.scripts_lost

    async def seed(
        self, limits: KeyLimits, ask: Ask, day_tokens: int | None, month_tokens: int | None
    ) -> None:
        day, month = _keys(ask)[3:]
        await self._calls.call(
            self._seed,
            [day, month, f"{day}:seeded", f"{month}:seeded"],
            [_or_none(day_tokens), _or_none(month_tokens)],
        )

    def settle_soon(self, limits: KeyLimits, ask: Ask, used_tokens: int, done: Settled) -> None:
        args = self._settlement(limits, ask, used_tokens)
        self._calls.call_later(
            self._settle,
            _keys(ask),
            args,
            lambda outcome: done(outcome if isinstance(outcome, Exception) else None),
        )

    def _settlement(self, limits: KeyLimits, ask: Ask, used_tokens: int) -> list[int | str]:
        return [
            self._now_ms(),
            _or_none(limits.tpm),
            ask.tokens - used_tokens,
            ask.request_id,
            int(limits.tokens_per_day is not None),
            int(limits.tokens_per_month is not None),
        ]

    async def close(self) -> None:
        await self._calls.close()
        await self._redis.aclose()


def _window(values: list[int]) -> Window | None:
    limit, remaining, reset_ms = values
    return None if limit < 0 else Window(limit, remaining, reset_ms / 1000)
