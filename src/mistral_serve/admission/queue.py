"""The gateway's waiting line: requests that no engine can start now wait here, per model.

vLLM's own queue is unbounded, so without this an overloaded server makes clients wait minutes.
Here a request starts at once when an engine serving its model is below its concurrency target
(ENGINE_MAX_INFLIGHT); otherwise it waits, highest priority first (vLLM's ``priority`` field:
lower values first), then by fair shares of its tenants (:mod:`mistral_serve.admission.fairness`:
keys in turn, weighted, by the tokens they reserve), then in arrival order. The engine is
chosen when a slot frees, not when the request arrives, so routing sees the load of that moment.

A tenant's turn comes when a slot frees; a quiet tenant could still wait for that behind a
loud one that fills every slot. So a request whose tenant runs fewer requests than its fair
share of the model's running ones, while another tenant runs more than its own, may start in
the engines' *headroom* (a few slots past the target the engines are started with, see
``config.fair_headroom``): it starts at once, and the loud tenant's next requests wait until
the total is back under the target. A tenant alone never uses the headroom.

Past either bound the answer is immediate: a full line (ADMISSION_QUEUE_MAX) refuses the
tenant holding the largest share of it (the newcomer, or that tenant's last request), and a
wait as long as ADMISSION_QUEUE_TIMEOUT_S ends too; both are a 429 whose Retry-After comes from
the line's length and the rate requests have been completing. A client that leaves while
waiting leaves the line at once; when the gateway drains, everyone still waiting is answered 503.

No I/O here: the gateway passes in how to start a request (``try_start``, told whether it may
use the headroom), tells the line when a slot may have freed (:meth:`ModelQueue.wake`) and
when a request it started has ended (:meth:`ModelQueue.ended`).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from mistral_serve.admission.fairness import MIN_WEIGHT, FairShares, TenantShare, Ticket
from mistral_serve.errors import DrainingError, ServerOverloadedError

T = TypeVar("T")

#: The ticket of a request nobody named a tenant for (one tenant: arrival order).
ANONYMOUS = Ticket()
#: Batch jobs' priority: after every interactive request (vLLM's priority is an int64, lower
#: first; keys and clients use small numbers). The engines' scheduler is given it too.
BATCH_PRIORITY = 2**62

#: Completions counted for the drain rate: those of the last RATE_WINDOW_S seconds.
RATE_WINDOW_S = 30.0
_RATE_SAMPLES = 4096


@dataclass(frozen=True)
class AdmissionLimits:
    max_waiting: int = 1024  # per model (ADMISSION_QUEUE_MAX)
    timeout_s: float = 30.0  # ADMISSION_QUEUE_TIMEOUT_S


#: Starts a request on an engine below its target, or past it into the fair headroom when
#: told True; None when no engine has room.
TryStart = Callable[[bool], T | None]


@dataclass(order=True)
class _Waiter(Generic[T]):
    priority: int
    start: float  # its fair-share start tag within its priority
    arrival: int
    try_start: TryStart[T] = field(compare=False)
    started: asyncio.Future[T] = field(compare=False)
    ticket: Ticket = field(compare=False)
    end: float = field(compare=False)  # its tenant's end with it (fairness.FairShares.left)


class DrainRate:
    """How fast requests have been completing, over the last :data:`RATE_WINDOW_S`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._ends: deque[float] = deque(maxlen=_RATE_SAMPLES)

    def completed(self) -> None:
        self._ends.append(self._clock())

    def per_second(self) -> float | None:
        """Completions per second, or None when none were seen in the window."""
        now = self._clock()
        while self._ends and now - self._ends[0] > RATE_WINDOW_S:
            self._ends.popleft()
        if not self._ends:
            return None
        # Over the span the samples cover, at least one second (one early end is not a rate).
        return len(self._ends) / max(1.0, now - self._ends[0])


class ModelQueue(Generic[T]):
    """One model's line. ``admit`` returns what ``try_start`` returned once it succeeded."""

    def __init__(
        self,
        model: str,
        limits: AdmissionLimits,
        *,
        release: Callable[[T], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model = model
        self._limits = limits
        self._release = release  # gives back what a request that left after all started
        self._heap: list[_Waiter[T]] = []
        self._waiting = 0
        self._arrivals = itertools.count()
        self._closed: DrainingError | None = None
        self._fair = FairShares()
        #: Requests started here and not yet ended, per tenant, and each tenant's weight.
        self._running: Counter[str] = Counter()
        self._weights: dict[str, float] = {}
        self.rate = DrainRate(clock)

    @property
    def depth(self) -> int:
        """Requests waiting now."""
        return self._waiting

    def shares(self) -> list[TenantShare]:
        """Who waits here, in counts: each tenant's requests, tokens and share."""
        return self._fair.shares()

    async def admit(
        self, try_start: TryStart[T], priority: int = 0, ticket: Ticket = ANONYMOUS
    ) -> T:
        """Start now if nobody is waiting and ``try_start`` succeeds; otherwise wait in line.
        Raises ServerOverloadedError past either bound (or when a request of a tenant with a
        smaller share took its place), DrainingError when draining, and whatever
        ``try_start`` raises (no engine left for the model)."""
        if self._closed is not None:
            raise self._closed
        if not self._waiting or self._under_share(ticket):
            started = self._try(try_start, ticket, in_line=bool(self._waiting))
            if started is not None:
                return started
        if self._waiting >= self._limits.max_waiting:
            self._make_room(ticket, priority)
        start, end = self._fair.enter(ticket, priority)
        waiter: _Waiter[T] = _Waiter(
            priority,
            start,
            next(self._arrivals),
            try_start,
            asyncio.get_running_loop().create_future(),
            ticket,
            end,
        )
        heapq.heappush(self._heap, waiter)
        self._waiting += 1
        try:
            await asyncio.wait((waiter.started,), timeout=self._limits.timeout_s)
        except BaseException:  # the client left (cancelled)
            self._leave(waiter)
            raise
        if not waiter.started.done():
            self._leave(waiter)
            raise self._overloaded(
                "timeout", f"it waited {self._limits.timeout_s:g} s for a free engine"
            )
        return waiter.started.result()

    def ended(self, ticket: Ticket) -> None:
        """A request this line started has ended (its tenant runs one fewer)."""
        running = self._running
        running[ticket.tenant] -= 1
        if running[ticket.tenant] <= 0:
            del running[ticket.tenant]
            self._weights.pop(ticket.tenant, None)

    def _try(self, try_start: TryStart[T], ticket: Ticket, *, in_line: bool) -> T | None:
        """Start below the target (unless others wait: then only into the headroom, which
        is the under-share tenant's), else in the headroom when the tenant is under its share."""
        started = None if in_line else try_start(False)
        if started is None and self._under_share(ticket):
            started = try_start(True)
        if started is not None:
            self._running[ticket.tenant] += 1
            self._weights[ticket.tenant] = ticket.weight
        return started

    def _under_share(self, ticket: Ticket) -> bool:
        """Whether ``ticket``'s tenant runs fewer than its weighted share of this model's
        running requests (counting this one) while another tenant runs more than its own."""
        running = self._running
        if not running or (len(running) == 1 and ticket.tenant in running):
            return False  # alone: nobody to be fair to
        weights = {**self._weights, ticket.tenant: ticket.weight}
        total_weight = sum(max(weight, MIN_WEIGHT) for weight in weights.values())
        total = sum(running.values()) + 1

        def share(tenant: str) -> float:
            return total * max(weights[tenant], MIN_WEIGHT) / total_weight

        if running[ticket.tenant] + 1 > share(ticket.tenant):
            return False
        return any(count > share(tenant) for tenant, count in running.items())

    def _make_room(self, ticket: Ticket, priority: int) -> None:
        """The line is full: the tenant holding the largest share of it, among requests no
        more urgent than the newcomer, gives up its last request; when that is the newcomer's
        own tenant (or nothing less urgent waits), the newcomer is refused."""
        full = f"{self._waiting} requests are already waiting"
        largest = self._fair.largest(priority)
        if largest is None or largest == ticket.tenant:
            raise self._overloaded("full", full)
        mine = self._fair.held(ticket.tenant, priority) + ticket.weighted
        if mine >= self._fair.held(largest, priority):
            raise self._overloaded("full", full)
        last = max(
            (
                waiter
                for waiter in self._heap
                if not waiter.started.done()
                and waiter.ticket.tenant == largest
                and waiter.priority >= priority
            ),
            default=None,
        )
        if last is None:  # cannot happen while its tenant has requests waiting
            raise self._overloaded("full", full)
        self._give_up(last)
        last.started.set_exception(
            self._overloaded("full", f"{full}, and its key holds the largest share of them")
        )

    def wake(self) -> None:
        """A slot may have freed (or engines changed): start waiters from the head while they
        can start. The head cannot start means nobody behind it can (same model)."""
        while self._heap:
            head = self._heap[0]
            if head.started.done():  # left already
                heapq.heappop(self._heap)
                continue
            try:
                started = self._try(head.try_start, head.ticket, in_line=False)
            except Exception as error:
                heapq.heappop(self._heap)
                self._give_up(head)
                head.started.set_exception(error)
                continue
            if started is None:
                return
            heapq.heappop(self._heap)
            self._waiting -= 1
            self._fair.started(head.ticket, head.priority, head.start)
            head.started.set_result(started)

    def close(self, error: DrainingError) -> None:
        """Draining: everyone waiting, and everyone who comes, gets ``error``."""
        self._closed = error
        while self._heap:
            waiter = heapq.heappop(self._heap)
            if not waiter.started.done():
                waiter.started.set_exception(error)
        self._waiting = 0
        self._fair = FairShares()

    def retry_after_s(self) -> float:
        """When a request turned away now should come back: the time the line ahead of it
        takes at the measured completion rate; the wait bound when no rate is known yet."""
        rate = self.rate.per_second()
        if rate is None:
            return self._limits.timeout_s
        return (self._waiting + 1) / rate

    def _overloaded(self, reason: str, why: str) -> ServerOverloadedError:
        return ServerOverloadedError(
            f"Every engine serving `{self.model}` is busy and {why}; retry later.",
            reason=reason,
            retry_after_s=self.retry_after_s(),
        )

    def _give_up(self, waiter: _Waiter[T]) -> None:
        """``waiter`` leaves the line without starting (the caller settles its future)."""
        self._waiting -= 1
        self._fair.left(waiter.ticket, waiter.priority, waiter.start, waiter.end)

    def _leave(self, waiter: _Waiter[T]) -> None:
        """A waiter gives up its place (the waiter stays in the heap, marked done, until it
        reaches the head). If it had just been started, what it got is given back."""
        if waiter.started.done():
            if not waiter.started.cancelled() and waiter.started.exception() is None:
                self._release(waiter.started.result())
                self.ended(waiter.ticket)  # it never reached its caller, who would say so
            return
        self._give_up(waiter)
        waiter.started.cancel()


class Admission(Generic[T]):
    """The lines of every model, made on first use."""

    def __init__(
        self,
        limits: AdmissionLimits,
        *,
        release: Callable[[T], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self._release = release
        self._clock = clock
        self._queues: dict[str, ModelQueue[T]] = {}
        self._closed: DrainingError | None = None

    def queue(self, model: str) -> ModelQueue[T]:
        queue = self._queues.get(model)
        if queue is None:
            queue = self._queues[model] = ModelQueue(
                model, self.limits, release=self._release, clock=self._clock
            )
            if self._closed is not None:
                queue.close(self._closed)
        return queue

    def completed(self, models: frozenset[str] | set[str]) -> None:
        """A request on an engine serving ``models`` ended: its slot is free."""
        for model in models:
            queue = self._queues.get(model)
            if queue is not None:
                queue.rate.completed()
        self.wake(models)

    def wake(self, models: frozenset[str] | set[str]) -> None:
        """Engines serving ``models`` changed: their lines may move (or find no engine)."""
        for model in models:
            queue = self._queues.get(model)
            if queue is not None:
                queue.wake()

    def close(self) -> None:
        """Draining: let every waiting request go with a 503, and refuse new ones the same way."""
        self._closed = DrainingError("The server is shutting down; retry on another replica.")
        for queue in self._queues.values():
            queue.close(self._closed)

    def depths(self) -> dict[str, int]:
        return {model: queue.depth for model, queue in self._queues.items()}

    def shares(self) -> dict[str, list[TenantShare]]:
        """Each model's waiting tenants (models with nobody waiting left out)."""
        shown = {model: queue.shares() for model, queue in self._queues.items()}
        return {model: shares for model, shares in shown.items() if shares}
