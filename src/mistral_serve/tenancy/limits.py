"""Per-key limits: what a request asks of its key, the arithmetic that grants or refuses it,
and the answer's x-ratelimit-* headers. The counters live in a backend
(:class:`~mistral_serve.tenancy.limiter.MemoryLimiter` in the process,
:class:`~mistral_serve.tenancy.redis_limiter.RedisLimiter` shared); both run this arithmetic.

- Requests and tokens per minute are token buckets: full at the limit, refilled continuously
  at limit/60 per second. A request takes 1 request and its reservation (prompt estimate plus
  max_tokens) at once; when it ends, what it did not use goes back. ``reset`` is the time
  until the bucket is full again, as OpenAI's headers mean it.
- Concurrent requests: the request ids in flight, each with a lease (so a crashed gateway's
  requests do not hold a slot forever).
- Token budgets per UTC day and month: counters that the reservation is added to, and the
  settlement corrects. A request the rest of the budget cannot cover is refused before it
  starts, so concurrent requests can never overshoot it.

A request is granted only if every limit allows it, and then takes from all of them; refused,
it takes from none.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from mistral_serve.errors import InsufficientQuotaError, MistralServeError, RateLimitExceededError
from mistral_serve.store import KeyRecord

#: A request in flight holds its concurrency slot at most this long (a crashed gateway's
#: requests free theirs after it).
CONCURRENCY_LEASE_S = 900.0
#: Retry-After for a key at its concurrency limit: a slot frees when a request ends.
CONCURRENCY_RETRY_S = 1.0


#: The prompt estimate: about 4 bytes a token for English with Mistral's tokenizers, plus the
#: chat template's own tokens (BOS, [INST] …). It is the reservation's prompt part, and what a
#: request cut short before the engine reported its usage is charged.
BYTES_PER_TOKEN = 4
TEMPLATE_TOKENS = 8


def prompt_estimate(prompt_bytes: int) -> int:
    return -(-prompt_bytes // BYTES_PER_TOKEN) + TEMPLATE_TOKENS


def reservation(prompt_bytes: int, output_limit: int | None, choices: int, default: int) -> int:
    """What a request reserves: its prompt estimate, plus ``output_limit`` (max_tokens, or
    ``default`` when it sets none) for each choice."""
    return prompt_estimate(prompt_bytes) + (output_limit or default) * max(1, choices)


@dataclass(frozen=True)
class KeyLimits:
    """A key's limits; None is unlimited."""

    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    tokens_per_day: int | None = None
    tokens_per_month: int | None = None

    @classmethod
    def of(cls, record: KeyRecord) -> KeyLimits:
        return cls(
            record.rpm,
            record.tpm,
            record.max_concurrent,
            record.tokens_per_day,
            record.tokens_per_month,
        )

    @functools.cached_property  # asked on every request; a key's limits are cached per record
    def has_budgets(self) -> bool:
        """Whether the key has a day or a month token budget."""
        return self.tokens_per_day is not None or self.tokens_per_month is not None

    @functools.cached_property
    def any(self) -> bool:
        return any(
            limit is not None
            for limit in (
                self.rpm,
                self.tpm,
                self.max_concurrent,
                self.tokens_per_day,
                self.tokens_per_month,
            )
        )


@dataclass(slots=True)  # made on every request: not frozen, which is ten times slower to make
class Ask:
    """What one request takes from its key's limits; settled with the same Ask."""

    key_id: str
    request_id: str
    tokens: int  # the reservation: prompt estimate + max_tokens (or the configured cap)
    day: str  # the UTC day and month whose budgets it counts against, fixed at the start
    month: str

    @classmethod
    def at(cls, key_id: str, request_id: str, tokens: int, now: float) -> Ask:
        """The Ask of a request that starts at ``now`` (seconds since the epoch)."""
        return cls(key_id, request_id, tokens, *_period_names(int(now // 86_400)))


@functools.lru_cache(maxsize=4)
def _period_names(day: int) -> tuple[str, str]:
    """The UTC day (days since the epoch) and its month as budgets name them (2026-11-25,
    2026-11): formatted once a day, not per request."""
    date = datetime.fromtimestamp(day * 86_400, UTC)
    return date.strftime("%Y-%m-%d"), date.strftime("%Y-%m")


#: Hears how a settlement went: None, or what the backend raised.
Settled = Callable[[Exception | None], None]


#: Response headers as ASGI sends them: lowercase names and values, encoded once.
RawHeaders = list[tuple[bytes, bytes]]


class Window(NamedTuple):  # a tuple: made on every request, ten times faster than a dataclass
    """One per-minute bucket after a request: what x-ratelimit-* headers report."""

    limit: int
    remaining: int
    reset_s: float  # until the bucket is full again

    def write_headers(self, headers: RawHeaders, names: tuple[bytes, bytes, bytes]) -> None:
        """Its x-ratelimit-* headers (limit, remaining, reset, as ``names`` calls them)."""
        limit, remaining, reset = names
        headers += (
            (limit, b"%d" % self.limit),
            (remaining, b"%d" % self.remaining),
            (reset, duration(self.reset_s).encode()),
        )


_REQUESTS_HEADERS = (
    b"x-ratelimit-limit-requests",
    b"x-ratelimit-remaining-requests",
    b"x-ratelimit-reset-requests",
)
_TOKENS_HEADERS = (
    b"x-ratelimit-limit-tokens",
    b"x-ratelimit-remaining-tokens",
    b"x-ratelimit-reset-tokens",
)


@dataclass(slots=True)  # made on every request: not frozen, which is ten times slower to make
class Verdict:
    """A backend's answer: granted (with the windows after taking), or which limit refused."""

    granted: bool
    requests: Window | None = None
    tokens: Window | None = None
    refused: str | None = None  # rpm, tpm, concurrency, day, month
    retry_after_s: float | None = None
    budget_left: int | None = None  # for day/month: what remained of the budget

    def raw_headers(self) -> RawHeaders:
        """OpenAI's x-ratelimit-* headers, for the per-minute limits the key has, encoded: a
        granted request's go straight onto its answer (every answer to a limited key)."""
        headers: RawHeaders = []
        if self.requests is not None:
            self.requests.write_headers(headers, _REQUESTS_HEADERS)
        if self.tokens is not None:
            self.tokens.write_headers(headers, _TOKENS_HEADERS)
        return headers

    def headers(self) -> dict[str, str]:
        """The same as text (for a refusal's error answer)."""
        return text_headers(self.raw_headers())

    def error(self, limits: KeyLimits, ask: Ask) -> MistralServeError:
        """The 429 for a refused request, its headers included."""
        error: MistralServeError
        if self.refused in ("day", "month"):
            budget = limits.tokens_per_day if self.refused == "day" else limits.tokens_per_month
            period = "today's" if self.refused == "day" else "this month's"
            error = InsufficientQuotaError(
                f"This API key's token budget is spent: the request reserves {ask.tokens} "
                f"tokens (prompt estimate + max_tokens) and {self.budget_left} of {period} "
                f"{budget} remain. Lower max_tokens, or ask for a larger budget."
            )
        elif self.refused == "rpm":
            error = RateLimitExceededError(
                f"Rate limit reached for requests: {limits.rpm} per minute on this API key.",
                kind="requests",
                retry_after_s=self.retry_after_s,
            )
        elif self.refused == "concurrency":
            error = RateLimitExceededError(
                f"Rate limit reached for concurrent requests: {limits.max_concurrent} at a "
                "time on this API key.",
                kind="requests",
                retry_after_s=self.retry_after_s,
            )
        elif self.retry_after_s is None:  # tpm, and the request could never fit
            error = RateLimitExceededError(
                f"Request too large: it reserves {ask.tokens} tokens (prompt estimate + "
                f"max_tokens) and this API key's limit is {limits.tpm} tokens per minute. "
                "Lower max_tokens.",
                kind="tokens",
                retry_after_s=None,
            )
        else:
            error = RateLimitExceededError(
                f"Rate limit reached for tokens: {limits.tpm} per minute on this API key; "
                f"the request reserves {ask.tokens} (prompt estimate + max_tokens).",
                kind="tokens",
                retry_after_s=self.retry_after_s,
            )
        error.extra_headers = self.headers()
        return error


# -- the arithmetic, in the process (the Redis script does the same in Lua) -------------------
@dataclass(slots=True)
class Bucket:
    """A per-minute token bucket: ``level`` at ``stamp`` (seconds)."""

    capacity: int
    level: float
    stamp: float

    @classmethod
    def full(cls, capacity: int, now: float) -> Bucket:
        return cls(capacity, float(capacity), now)

    # Run for every limited request: comparisons, not min() and max() calls, which cost more.
    def refill(self, capacity: int, now: float) -> None:
        """Bring the level to ``now`` (and to a capacity that may have changed)."""
        level = self.level
        if now > self.stamp:  # a clock that stepped back refills nothing
            level += (now - self.stamp) * capacity / 60.0
            self.stamp = now
        self.level = level if level < capacity else float(capacity)
        self.capacity = capacity

    def wait_for(self, cost: int) -> float | None:
        """Seconds until ``cost`` fits (0: it fits now); None: it never can."""
        if cost > self.capacity:
            return None
        wait = (cost - self.level) / (self.capacity / 60.0)
        return wait if wait > 0 else 0.0

    def window(self) -> Window:
        level, capacity = self.level, self.capacity
        reset = (capacity - level) * 60.0 / capacity
        return Window(capacity, math.floor(level) if level > 0 else 0, reset if reset > 0 else 0.0)


def text_headers(headers: RawHeaders) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in headers}


def duration(seconds: float) -> str:
    """A duration as OpenAI's headers write it (Go's format): 20ms, 1.5s, 6m0s, 1h0m0s."""
    milliseconds = round(seconds * 1000) if seconds > 0 else 0
    if milliseconds < 1000:
        return f"{milliseconds}ms"
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
