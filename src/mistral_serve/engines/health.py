"""What the gateway believes about one engine, and the rules that change that belief.

Pure: no I/O and no clock of its own. Every observation carries ``now`` (monotonic seconds), so
the rules are unit-tested step by step; the registry feeds observations in and acts on the
:class:`Change` each one returns (logs, metrics, aborting requests, a restart).

Three questions, each answered from what the engine really does, never from one missed probe:

- *alive*: does the process answer? Only a refused connection, an explicit "unhealthy" from
  its /health, or no answer **and** no progress for ``stall_timeout_s`` take it out. A busy
  engine answers probes late; an API server paused for a few seconds is not dead.
- *progressing*: with requests in flight, do bytes arrive on its streams and do its /metrics
  counters advance? No progress for ``stall_timeout_s`` is a stall (vLLM's /health stays 200 on
  a hung engine core). An idle engine proves itself with a one-token canary every
  ``canary_interval_s``; a stalled one is back only when a canary succeeds.
- *healthy answers*: consecutive failed requests (5xx, broken connections) eject it for a
  period that grows with each ejection, as Envoy's outlier detection does.

States and the moves between them::

    loading ──probe ok──► ready
    ready, ejected ──in flight, no progress──► stalled ──canary ok──► ready
    ready ──N failed requests in a row──► ejected ──period over──► ready
    any ──refused / unhealthy / silent──► down ──probe ok──► ready
    any ──restarted by the supervisor──► loading
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mistral_serve.config import Settings


class State(enum.StrEnum):
    LOADING = "loading"  # not ready yet since it was added or (re)started
    READY = "ready"
    STALLED = "stalled"  # work in flight made no progress; out until a canary succeeds
    EJECTED = "ejected"  # too many failed requests in a row; out for a growing period
    DOWN = "down"  # refused, said it is unhealthy, or silent; out until a probe succeeds


@dataclass(frozen=True)
class HealthPolicy:
    """The timeouts and thresholds (ENGINE_* settings; config/sample.env explains each)."""

    stall_timeout_s: float = 30.0
    canary_interval_s: float = 30.0
    eject_after_failures: int = 5
    eject_base_s: float = 30.0
    eject_max_s: float = 300.0
    #: Largest share of engines ejected at once (at least one may always be).
    eject_max_share: float = 0.5
    #: How often a stalled engine is offered another canary.
    stalled_canary_every_s: float = 1.0
    #: A request whose engine sent it nothing for this long is taken back (ENGINE_READ_TIMEOUT_S):
    #: one stuck request on an engine that progresses otherwise is no stall.
    read_timeout_s: float = 600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> HealthPolicy:
        return cls(
            stall_timeout_s=settings.engine_stall_timeout_s,
            canary_interval_s=settings.engine_canary_interval_s,
            eject_after_failures=settings.engine_eject_after_failures,
            eject_base_s=settings.engine_eject_base_s,
            eject_max_s=settings.engine_eject_max_s,
            eject_max_share=settings.engine_eject_max_percent / 100,
            read_timeout_s=settings.engine_read_timeout_s,
        )


@dataclass(frozen=True)
class Change:
    """A move from one state to another, and why."""

    old: State
    new: State
    reason: str


class EngineHealth:
    """The state of one engine and the observations it is made of."""

    def __init__(self, policy: HealthPolicy, now: float) -> None:
        self.policy = policy
        self.state = State.LOADING
        self.reason = "waiting for its first answer"
        self.since = now
        self.last_answer: float | None = None
        self.last_progress = now
        self.consecutive_failures = 0
        self.ejections = 0
        self.ejected_until: float | None = None
        self._busy_since: float | None = None
        self._idle_since = now
        self._back_at = now  # when it last returned to rotation (ejection decay)
        self._canary_at: float | None = None  # start of the last canary

    # -- observations ------------------------------------------------------------------------
    def answered(self, now: float) -> None:
        """The engine answered something: a probe, a scrape, a response's headers."""
        self.last_answer = now

    def progressed(self, now: float) -> None:
        """Work advanced: stream bytes arrived, counters moved, or an answer completed."""
        self.last_progress = now
        self.last_answer = now

    def busy(self, now: float, busy: bool) -> None:
        """Requests in flight went from none to some (``busy``) or back to none."""
        if busy:
            self._busy_since = now
        else:
            self._busy_since = None
            self._idle_since = now

    def probe_succeeded(self, now: float, started: float) -> Change | None:
        """/health and the model list answered. Brings back a loading or down engine; not a
        stalled one (/health stays 200 on a hung engine core), and not from a probe that
        began before the engine was restarted."""
        self.answered(now)
        if self.state in (State.LOADING, State.DOWN) and started >= self.since:
            return self._move(now, State.READY, "answered its probe")
        return None

    def refused(self, now: float, reason: str) -> Change | None:
        """Nothing listens at its address: out at once (a loading engine stays loading)."""
        if self.state is State.LOADING:
            self.reason = reason
            return None
        return self._move(now, State.DOWN, reason)

    def unhealthy(self, now: float, reason: str) -> Change | None:
        """Its own /health said it is not healthy (vLLM: the engine core died)."""
        self.answered(now)
        if self.state is State.LOADING:
            self.reason = reason
            return None
        return self._move(now, State.DOWN, reason)

    def request_succeeded(self, now: float) -> None:
        self.consecutive_failures = 0
        self.progressed(now)

    def request_failed(self) -> bool:
        """A request failed (5xx, broken connection). True when this one reaches the ejection
        threshold: the registry then ejects, unless too many engines are out already."""
        self.consecutive_failures += 1
        return (
            self.state is State.READY
            and self.consecutive_failures >= self.policy.eject_after_failures
        )

    def eject(self, now: float) -> Change | None:
        policy = self.policy
        # The multiplier decays by one for every base period spent back in rotation.
        self.ejections = max(0, self.ejections - int((now - self._back_at) / policy.eject_base_s))
        self.ejections += 1
        period = min(policy.eject_base_s * self.ejections, policy.eject_max_s)
        self.ejected_until = now + period
        failures, self.consecutive_failures = self.consecutive_failures, 0
        return self._move(
            now, State.EJECTED, f"{failures} failed requests in a row; out for {period:.0f} s"
        )

    def canary_started(self, now: float) -> None:
        self._canary_at = now

    def canary_succeeded(self, now: float) -> Change | None:
        self.request_succeeded(now)
        if self.state is State.STALLED:
            return self._move(now, State.READY, "generated a canary token")
        return None

    def canary_unanswered(self, now: float) -> Change | None:
        """A canary got no token in time. A stall, unless something else progressed meanwhile
        (the engine is slow under other gateways' work, not stuck)."""
        started = self._canary_at if self._canary_at is not None else now
        if self.state is State.READY and self.last_progress < started:
            return self._move(now, State.STALLED, f"a canary got no token in {now - started:.0f} s")
        return None

    def restarting(self, now: float, reason: str) -> Change | None:
        """The supervisor is restarting it: loading until its probe succeeds again."""
        self.consecutive_failures = 0
        return self._move(now, State.LOADING, reason)

    # -- the clock ---------------------------------------------------------------------------
    def check(self, now: float) -> Change | None:
        """The verdicts that time alone brings: a stall, silence, the end of an ejection."""
        timeout = self.policy.stall_timeout_s
        in_rotation_or_finishing = self.state in (State.READY, State.EJECTED)
        if self._busy_since is not None and in_rotation_or_finishing:
            quiet = now - max(self.last_progress, self._busy_since)
            if quiet >= timeout:
                return self._move(
                    now, State.STALLED, f"requests in flight, no progress for {quiet:.0f} s"
                )
        if self._busy_since is None and in_rotation_or_finishing:
            heard = max(self.last_answer or self.since, self.last_progress)
            if now - heard >= timeout:
                return self._move(
                    now, State.DOWN, f"no answer and no progress for {now - heard:.0f} s"
                )
        if self.state is State.EJECTED and self.ejected_until is not None:
            if now >= self.ejected_until:
                return self._move(now, State.READY, "ejection period over")
        return None

    def canary_due(self, now: float) -> bool:
        """Whether to send a canary now: a ready engine idle for a canary interval, or a
        stalled one (again and again, until one succeeds). Never while requests are in flight
        (a running canary counts as one)."""
        if self._busy_since is not None:
            return False
        last_canary = self._canary_at if self._canary_at is not None else -float("inf")
        if self.state is State.STALLED:
            return now - last_canary >= self.policy.stalled_canary_every_s
        if self.state is State.READY:
            idle_for = now - max(self.last_progress, self._idle_since, last_canary)
            return idle_for >= self.policy.canary_interval_s
        return False

    def _move(self, now: float, new: State, reason: str) -> Change | None:
        old = self.state
        self.reason = reason
        if new is old:
            return None
        self.state = new
        self.since = now
        if new is State.READY:
            self._back_at = now
            self.ejected_until = None
            self.consecutive_failures = 0
            self.last_progress = max(self.last_progress, now)  # a fresh start for the clocks
        return Change(old, new, reason)
