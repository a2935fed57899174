"""Routing policies: which of the ready engines with a free slot takes a request.

Each policy is a small class with one method, ``choose(candidates, key, now)``, over engines
the gateway has already filtered (ready, serving the model, below their concurrency target).
It does no I/O; the clock is passed in. It returns a :class:`Decision`: the engine and why,
which goes on the request's span. :data:`POLICIES` names them for ROUTING_POLICY, and
:func:`make_policy` is how the gateway gets the one it names.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

from mistral_serve.engines.registry import Engine
from mistral_serve.engines.stats import EngineStats
from mistral_serve.routing.prefix import (
    DEFAULT_CAPACITY_TOKENS,
    PrefixIndex,
    RouteKey,
    rendezvous,
)

#: Why an engine was chosen (the span's ``mistral_serve.routing.reason``).
PREFIX = "prefix"  # it holds (or is agreed to hold) the request's prefix
SESSION = "session"  # the client named a session, and this is its engine
LOAD = "load"  # the least loaded, over any affinity
ONLY_CHOICE = "only-choice"  # one engine could take it
ROTATION = "rotation"  # round-robin's turn


@dataclass(frozen=True)
class Decision:
    engine: Engine
    reason: str
    #: The share of the request's blocks the engine is believed to hold (prefix-load only).
    prefix_share: float | None = None


class RoutingPolicy(Protocol):
    name: ClassVar[str]

    def choose(self, candidates: Sequence[Engine], key: RouteKey, now: float) -> Decision: ...


@dataclass(frozen=True)
class Balance:
    """When affinity gives way to load (both must hold, as in SGLang's router): the preferred
    engine has ``absolute`` more requests than the least loaded, and ``relative`` times as
    many."""

    absolute: int = 4
    relative: float = 1.5

    def broken(self, preferred: float, least: float) -> bool:
        return preferred - least > self.absolute and preferred > self.relative * least


@dataclass(frozen=True)
class RoutingOptions:
    """What the settings tell the policies (ROUTING_BALANCE_*, the stats' age); each policy
    takes what it uses."""

    stats_max_age_s: float = 3.0
    balance: Balance = Balance()


def _check(candidates: Sequence[Engine]) -> None:
    if not candidates:
        raise ValueError("no candidate engines")


class RoundRobin:
    """Each engine in turn, whatever its load: the baseline the others are measured against."""

    name: ClassVar[str] = "round-robin"
    reason: ClassVar[str] = ROTATION

    def __init__(self) -> None:
        self._turn = itertools.count()

    @classmethod
    def configured(cls, options: RoutingOptions) -> RoundRobin:
        return cls()  # blind to statistics: nothing to configure

    def choose(self, candidates: Sequence[Engine], key: RouteKey, now: float) -> Decision:
        _check(candidates)
        if len(candidates) == 1:
            return Decision(candidates[0], ONLY_CHOICE)
        eligible = self._eligible(candidates)
        return Decision(eligible[next(self._turn) % len(eligible)], self.reason)

    def _eligible(self, candidates: Sequence[Engine]) -> Sequence[Engine]:
        return candidates


class LeastOutstanding(RoundRobin):
    """The engine with the fewest unfinished requests; ties take turns so idle engines share
    work. Outstanding requests are what the gateway itself has in flight at each engine, known
    exactly and at no cost; blind to prefixes."""

    name: ClassVar[str] = "least-outstanding"
    reason: ClassVar[str] = LOAD

    def _eligible(self, candidates: Sequence[Engine]) -> Sequence[Engine]:
        fewest = min(engine.outstanding for engine in candidates)
        return [engine for engine in candidates if engine.outstanding == fewest]


class PrefixLoad:
    """Send a request where its prefix is cached, unless that engine is much busier.

    Each engine's score is its *affinity* minus half its *pressure*:

    - affinity: the share of the request's blocks the engine was sent before (the learned
      index; blocks shared by several conversations count as held everywhere), plus
      :attr:`HOME_BONUS` for the request's home engine (rendezvous of the conversation's
      opening, which every gateway replica computes alike, so replicas that have not seen the
      conversation agree), plus 1 when that home is a session the client named.
    - pressure: requests on it over its concurrency target, plus its KV-cache usage. Load is the
      gateway's own count (exact, current) plus other gateways' requests as of the last scrape
      (:meth:`Engine.load`); statistics older than three scrapes are unknown: they add
      :attr:`STALE_PRESSURE` instead of counting as idle.

    Then the :class:`Balance` guard: if the best-scoring engine is too much busier than the
    least loaded, the least loaded takes the request, so one hot prefix cannot pile every
    request onto one engine. The chosen engine learns the request's blocks.

    A request shorter than one block, with no session, has nothing cacheable to keep together:
    it goes to the least loaded engine, ties in turn.
    """

    name: ClassVar[str] = "prefix-load"
    HOME_BONUS: ClassVar[float] = 0.25
    LOAD_WEIGHT: ClassVar[float] = 0.5
    STALE_PRESSURE: ClassVar[float] = 1.0  # as if its KV cache were full

    def __init__(
        self,
        *,
        stats_max_age_s: float = 3.0,
        balance: Balance = Balance(),
        index: PrefixIndex | None = None,
    ) -> None:
        self._stats_max_age_s = stats_max_age_s
        self._balance = balance
        self.index = index or PrefixIndex()
        self._turn = itertools.count()

    @classmethod
    def configured(cls, options: RoutingOptions) -> PrefixLoad:
        return cls(stats_max_age_s=options.stats_max_age_s, balance=options.balance)

    def choose(self, candidates: Sequence[Engine], key: RouteKey, now: float) -> Decision:
        _check(candidates)
        blocks = len(key.blocks)
        if not blocks and not key.session and len(candidates) > 1:
            # Shorter than one block: nothing cacheable to keep together, so only load counts
            # (a home would pile every short request onto one engine).
            return self._least_loaded(candidates, now)
        matched = {engine: self.index.matched(engine, key.blocks) for engine in candidates}
        home = rendezvous(key.home, candidates)
        affinity: dict[Engine, float] = {}
        for engine in candidates:
            affinity[engine] = key.share(matched[engine])
        affinity[home] += self.HOME_BONUS + (1.0 if key.session else 0.0)
        loads = {engine: self._load(engine, now) for engine in candidates}
        scores = {
            engine: affinity[engine] - self.LOAD_WEIGHT * self._pressure(engine, loads, now)
            for engine in candidates
        }
        chosen = max(candidates, key=lambda engine: scores[engine])
        least = min(candidates, key=lambda engine: (loads[engine], -affinity[engine]))
        if self._balance.broken(loads[chosen], loads[least]):
            chosen = least
        if len(candidates) == 1:
            reason = ONLY_CHOICE
        elif affinity[chosen] < max(affinity.values()):
            reason = LOAD
        else:
            reason = SESSION if key.session and chosen is home else PREFIX
        self.index.learn(chosen, key.blocks, self._capacity_tokens(chosen), key.home)
        return Decision(chosen, reason, key.share(matched[chosen]))

    def _least_loaded(self, candidates: Sequence[Engine], now: float) -> Decision:
        loads = {engine: self._load(engine, now) for engine in candidates}
        fewest = min(loads.values())
        tied = [engine for engine in candidates if loads[engine] == fewest]
        return Decision(tied[next(self._turn) % len(tied)], LOAD, 0.0)

    def _fresh(self, engine: Engine, now: float) -> EngineStats | None:
        return engine.fresh_stats(now, self._stats_max_age_s)

    def _load(self, engine: Engine, now: float) -> float:
        return engine.load(now, self._stats_max_age_s)

    def _pressure(self, engine: Engine, loads: dict[Engine, float], now: float) -> float:
        stats = self._fresh(engine, now)
        kv = stats.kv_cache_usage if stats is not None else self.STALE_PRESSURE
        return loads[engine] / max(1, engine.max_inflight) + kv

    @staticmethod
    def _capacity_tokens(engine: Engine) -> float:
        stats = engine.stats  # capacity does not go stale
        if stats is not None and stats.kv_capacity_tokens > 0:
            return stats.kv_capacity_tokens
        return DEFAULT_CAPACITY_TOKENS


#: Every policy by its ROUTING_POLICY name.
POLICIES: dict[str, type[RoundRobin] | type[PrefixLoad]] = {
    policy.name: policy for policy in (PrefixLoad, LeastOutstanding, RoundRobin)
}


def make_policy(name: str, options: RoutingOptions) -> RoutingPolicy:
    """The policy ``name`` names, configured; a ValueError names the ones there are."""
    policy = POLICIES.get(name)
    if policy is None:
        raise ValueError(f"no routing policy {name!r}: one of {', '.join(POLICIES)}")
    return policy.configured(options)
