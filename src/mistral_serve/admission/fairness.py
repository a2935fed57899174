"""Whose turn it is: weighted fair shares of one model's line, by the tokens requests reserve.

Within one priority the line serves tenants (API keys; without keys, client addresses) in turn,
each in proportion to its weight, counted in tokens rather than requests: a tenant that sends
a few long requests and one that sends many short ones get the same share of the engines.

The order is start-time fair queuing (Goyal et al., 1996), as in llm-d's flow control and
Linux's CFQ: every request gets a *start tag*, the later of the line's virtual time and the end
of its tenant's previous request, and its tenant's end moves on by its tokens over its weight.
Requests start in order of start tags; the line's virtual time is the tag of the last one
started. A tenant that was quiet starts at the virtual time, ahead of every request a busy
tenant has queued beyond it: the quiet tenant waits at most one turn, whatever the busy one
sent. Tags are per priority: a more urgent priority is served first whatever the shares.

When the line is full, the tenant holding the largest share of it (its queued tokens over its
weight) gives up its last request, the one it would have been served last, rather than the
next request to arrive being refused whoever sent it (:meth:`FairShares.largest`).

Pure bookkeeping: the line (:mod:`mistral_serve.admission.queue`) owns the waiters and the heap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

#: The smallest weight taken (a weight of 0 would never be served).
MIN_WEIGHT = 0.01


@dataclass(frozen=True)
class Ticket:
    """Who a request is from, and how much it is worth in the line."""

    #: The tenant: an API key's id, or ``client:…`` for anonymous traffic.
    tenant: str = "anonymous"
    #: The tenant's share relative to others (``keys create --weight``); at least a little.
    weight: float = 1.0
    #: Tokens it reserves: its prompt estimate plus its output limit.
    tokens: int = 1

    @property
    def weighted(self) -> float:
        """Its tokens over its weight: how far it moves its tenant's turn."""
        return self.tokens / max(self.weight, MIN_WEIGHT)


@dataclass
class _Tenant:
    """One tenant at one priority: where its next request starts, what it has waiting."""

    end: float = 0.0  # the virtual time its queued requests reach
    weight: float = 1.0  # its latest request's
    waiting: int = 0
    tokens: int = 0

    @property
    def held(self) -> float:
        """Its queued tokens, weighted: what "the largest share" compares."""
        return self.tokens / self.weight


@dataclass
class _Level:
    """One priority's virtual time and tenants."""

    now: float = 0.0
    waiting: int = 0
    tenants: dict[str, _Tenant] = field(default_factory=dict)


class TenantShare(NamedTuple):
    """What ``/ready`` and the metrics show of one tenant in one line: counts only."""

    tenant: str
    priority: int
    waiting: int
    tokens: int
    weight: float
    #: Its part of the line's queued tokens at its priority, weighted (0..1).
    share: float


class FairShares:
    """The start tags of one model's line and each tenant's part of it."""

    def __init__(self) -> None:
        self._levels: dict[int, _Level] = {}

    def enter(self, ticket: Ticket, priority: int) -> tuple[float, float]:
        """A request joins the line: its start tag, and the end its tenant reaches with it."""
        level = self._levels.get(priority)
        if level is None:
            level = self._levels[priority] = _Level()
        tenant = level.tenants.get(ticket.tenant)
        if tenant is None:
            tenant = level.tenants[ticket.tenant] = _Tenant(end=level.now)
        tenant.weight = max(ticket.weight, MIN_WEIGHT)
        start = max(level.now, tenant.end)
        tenant.end = start + ticket.weighted
        tenant.waiting += 1
        level.waiting += 1
        tenant.tokens += ticket.tokens
        return start, tenant.end

    def started(self, ticket: Ticket, priority: int, start: float) -> None:
        """A request left the line for an engine: the line's time moves to its tag."""
        level = self._levels[priority]
        level.now = max(level.now, start)
        self._gone(level, ticket, priority)

    def left(self, ticket: Ticket, priority: int, start: float, end: float) -> None:
        """A request left without starting (its client went, it timed out, it was refused for
        a fuller tenant): if it was its tenant's last, the tenant's end goes back to its start,
        so leaving costs nobody a turn."""
        level = self._levels[priority]
        tenant = level.tenants[ticket.tenant]
        if tenant.end == end:
            tenant.end = start
        self._gone(level, ticket, priority)

    def _gone(self, level: _Level, ticket: Ticket, priority: int) -> None:
        tenant = level.tenants[ticket.tenant]
        tenant.waiting -= 1
        tenant.tokens -= ticket.tokens
        level.waiting -= 1
        if not level.waiting:
            # Nobody waits at this priority: shares start afresh (an idle line owes no one),
            # and tenants that came and went are forgotten.
            del self._levels[priority]

    def largest(self, at_or_below: int) -> str | None:
        """The tenant whose queued tokens over its weight are the largest among requests not
        more urgent than ``at_or_below`` (a priority value: larger is less urgent); None when
        nothing waits there."""
        best: tuple[float, str] | None = None
        for priority, level in self._levels.items():
            if priority < at_or_below:
                continue
            for name, tenant in level.tenants.items():
                if tenant.waiting == 0:
                    continue
                held = self.held(name, at_or_below)
                if best is None or held > best[0]:
                    best = (held, name)
        return None if best is None else best[1]

    def held(self, tenant: str, at_or_below: int) -> float:
        """``tenant``'s weighted tokens waiting at priorities not more urgent than
        ``at_or_below``."""
        return sum(
            level.tenants[tenant].held
            for priority, level in self._levels.items()
            if priority >= at_or_below and tenant in level.tenants
        )

    def shares(self) -> list[TenantShare]:
        """Every waiting tenant's counts in the order the line serves them: most urgent
        priority first, then the tenant whose next request's turn comes first (its end less
        what it has waiting), then the largest share."""
        shown: list[TenantShare] = []
        for priority in sorted(self._levels):
            tenants = [(n, t) for n, t in self._levels[priority].tenants.items() if t.waiting]
            total = sum(tenant.held for _, tenant in tenants)
            ordered = sorted(tenants, key=lambda item: (item[1].end - item[1].held, -item[1].held))
            shown.extend(
                TenantShare(
                    tenant=name,
                    priority=priority,
                    waiting=tenant.waiting,
                    tokens=tenant.tokens,
                    weight=tenant.weight,
                    share=round(tenant.held / total, 4) if total > 0 else 0.0,
                )
                for name, tenant in ordered
            )
        return shown
