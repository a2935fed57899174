"""The engines the gateway can route to: what it knows of each, and what follows from it.

Each :class:`Engine` carries its :class:`~mistral_serve.engines.health.EngineHealth` (the state
and the rules), the models it serves, its last ``/metrics`` statistics, and the requests the
gateway has on it, each held as a :class:`Lease`. The registry turns observations into state
changes and carries out their consequences in one place (:meth:`EngineRegistry.apply`): a log
line, metrics, taking back the requests of an engine that left rotation, and under ``up``
asking the supervisor for a restart. The observing itself (probes, scrapes, canaries) is
:mod:`mistral_serve.engines.monitor`'s.

The set of engines can change (DNS discovery): a new engine is probed before it takes traffic;
a removed one finishes the requests it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from mistral_serve.config import DEFAULT_ENGINE_MAX_INFLIGHT, fair_headroom
from mistral_serve.engines.client import EngineClient, EngineConnectError, UpstreamResponse
from mistral_serve.engines.health import Change, EngineHealth, HealthPolicy, State
from mistral_serve.engines.shared_load import SharedLoad, slot_of
from mistral_serve.engines.stats import EngineStats
from mistral_serve.errors import (
    EngineError,
    EngineStalledError,
    EngineTimeoutError,
    EngineUnreachableError,
    MistralServeError,
)
from mistral_serve.telemetry.engines import EngineTelemetry

log = logging.getLogger(__name__)

#: Under ``up``: ask the supervisor to restart the engine named so, for this reason. True when
#: it will (it knows the engine and is not stopping).
Restarter = Callable[[str, str], bool]
#: Told when an engine may take more work: one of its requests ended (True), or its state
#: changed (False).
CapacityListener = Callable[["Engine", bool], None]
#: Tells what a model served from a root (a folder or hub id) does: "generate" or "embed".
KindOf = Callable[[str], str]


@dataclass(frozen=True)
class KnownAdapter:
    """A LoRA adapter: its base model and the path its engines load it from."""

    base: str
    path: str

    def card(self, name: str) -> dict[str, Any]:
        """Its card as vLLM lists an adapter."""
        return {"id": name, "object": "model", "parent": self.base, "root": self.path}


@dataclass(eq=False)
class Engine:
    """One engine as the gateway sees it."""

    url: str
    name: str
    health: EngineHealth
    #: The OpenAI model cards it last listed (kept while it restarts, for error messages).
    model_cards: tuple[dict[str, Any], ...] = ()
    model_ids: frozenset[str] = field(default_factory=frozenset)
    #: Requests sent to it that have not finished yet (canaries included), and the bytes of
    #: their routable text: known exactly, at the moment of each choice.
    outstanding: int = 0
    prompt_bytes: int = 0
    leases: set[Lease] = field(default_factory=set)
    #: How many requests admission lets it have at once (ENGINE_MAX_INFLIGHT).
    max_inflight: int = DEFAULT_ENGINE_MAX_INFLIGHT
    #: Counts restarts: a restarted engine's prefix cache is empty.
    incarnation: int = 0
    #: The last /metrics scrape and when it was taken (monotonic seconds).
    stats: EngineStats | None = None
    stats_at: float | None = None
    #: Requests other gateways had on it at the last scrape: what it counted beyond ours.
    others: float = 0.0
    #: This gateway's other worker processes' requests on it, now (GATEWAY_WORKERS), and its
    #: slot in their shared load table.
    siblings: Callable[[], int] = field(default=lambda: 0, repr=False)
    slot: int = 0
    #: What its model does, from its card's root: "generate" (chat, completions) or "embed".
    kind: str = "generate"
    #: LoRA adapters: how many it holds at once (vLLM's --max-loras, off its /metrics; None
    #: until it says), the ones it lists, the loads under way, and per adapter, when this
    #: gateway last sent it a request for it and how many of those are in flight.
    adapter_slots: int | None = None
    adapters: frozenset[str] = frozenset()
    adapters_loading: set[str] = field(default_factory=set)
    adapter_used: dict[str, float] = field(default_factory=dict)
    adapter_inflight: dict[str, int] = field(default_factory=dict)

    @property
    def state(self) -> State:
        return self.health.state

    @property
    def ready(self) -> bool:
        return self.health.state is State.READY

    def serves(self, model: str) -> bool:
        return model in self.model_ids

    def holds(self, adapter: str) -> bool:
        """Whether it lists ``adapter`` or is loading it."""
        return adapter in self.adapters or adapter in self.adapters_loading

    def fresh_stats(self, now: float, max_age_s: float) -> EngineStats | None:
        """The last statistics if they are recent enough to act on; old ones are unknown,
        never "idle"."""
        if self.stats is None or self.stats_at is None or now - self.stats_at > max_age_s:
            return None
        return self.stats

    def load(self, now: float, max_age_s: float) -> float:
        """Requests on it now: ours (every worker's), known exactly at every choice, plus other
        gateways' as of its last fresh scrape (none known when the scrape is stale)."""
        ours = self.outstanding + self.siblings()
        if self.fresh_stats(now, max_age_s) is None:
            return float(ours)
        return ours + self.others

    def observed(self, stats: EngineStats, now: float) -> None:
        """A scrape: its statistics, and the requests on it that are not ours (running and
        waiting beyond what our workers have in flight: other gateway replicas')."""
        self.stats, self.stats_at = stats, now
        ours = self.outstanding + self.siblings()
        self.others = max(0.0, stats.running + stats.waiting - ours)
        if stats.adapter_slots is not None:
            self.adapter_slots = stats.adapter_slots


class Lease:
    """One request's hold on an engine, from the moment the engine is chosen until the answer
    ends. It counts the request as in flight, reports its progress, and can be taken back
    (:meth:`abort`) when the engine stalls: the request's reads then raise at once."""

    __slots__ = (
        "_abort_error",
        "_ended",
        "_registry",
        "_sending",
        "_upstream",
        "adapter",
        "engine",
        "last_read",
        "prompt_bytes",
    )

    def __init__(
        self,
        registry: EngineRegistry,
        engine: Engine,
        prompt_bytes: int = 0,
        adapter: str | None = None,
    ) -> None:
        self.engine = engine
        self.prompt_bytes = prompt_bytes
        self.adapter = adapter  # the LoRA adapter it asks for, if any
        self._registry = registry
        self._upstream: UpstreamResponse | None = None
        self._abort_error: MistralServeError | None = None
        self._sending: asyncio.Task[object] | None = None  # the task awaiting the headers
        self._ended = False
        #: When the engine last sent this request anything (monotonic; at first, the choice).
        self.last_read = time.monotonic()

    def progressed(self) -> None:
        """Bytes arrived from the engine (called per chunk: cheap)."""
        self.last_read = now = time.monotonic()
        self.engine.health.progressed(now)

    async def send(
        self, client: EngineClient, url: str, body: bytes, headers: Mapping[str, str]
    ) -> UpstreamResponse:
        """POST the request to the engine and return once its headers are in, unless the lease
        is taken back first: then raise why. Reads of the answer's body raise the same way,
        at no cost per chunk (the abort reaches the body's stream reader).

        The request is sent from the caller's own task, and taking the lease back cancels that
        task while it waits (no second task, no wait on two futures per request); a
        cancellation that is not the lease's stays a cancellation."""
        if self._abort_error is not None:
            raise self._abort_error
        task = self._sending = asyncio.current_task()
        try:
            upstream = await client.post(url, body, headers)
        except asyncio.CancelledError:
            if self._abort_error is not None and task is not None and task.uncancel() == 0:
                raise self._abort_error from None
            raise
        finally:
            self._sending = None
        self.engine.health.answered(time.monotonic())  # its headers are in
        self._upstream = upstream
        return upstream

    def abort(self, error: MistralServeError) -> None:
        """Take the request back from its engine: whatever it awaits raises ``error``."""
        if self._ended or self._abort_error is not None:
            return
        self._abort_error = error
        if self._sending is not None:
            self._sending.cancel()
        if self._upstream is not None:
            self._upstream.abort(error)

    def finish(self, error: BaseException | None = None) -> None:
        """The request is over on this engine: ``None`` for an answer (a 4xx is one too), or
        the error it ended with. Only the first call counts."""
        if self._ended:
            return
        self._ended = True
        self._registry._finished(self, error)

    def release(self) -> None:
        """Over without a verdict on the engine (the client left, a bug of ours)."""
        if self._ended:
            return
        self._ended = True
        self._registry._finished(self, None, neutral=True)


class EngineRegistry:
    def __init__(
        self,
        urls: Sequence[str],
        *,
        names: Sequence[str] | None = None,
        policy: HealthPolicy | None = None,
        telemetry: EngineTelemetry | None = None,
        restarter: Restarter | None = None,
        stats_interval_s: float = 1.0,
        max_inflight: int = DEFAULT_ENGINE_MAX_INFLIGHT,
        shared: SharedLoad | None = None,
        kind_of: KindOf | None = None,
    ) -> None:
        self.policy = policy or HealthPolicy()
        #: Tells an engine's kind from what it serves (its card's root); the models layer's
        #: catalog, passed in (engines/ sits beside models/, not above it).
        self._kind_of = kind_of or (lambda root: "generate")
        #: The load table of this gateway's workers (None: one process).
        self.shared = shared
        self.max_inflight = max_inflight
        self._listeners: list[CapacityListener] = []
        #: Statistics older than three scrape intervals are unknown, never "idle".
        self.stats_max_age_s = 3 * stats_interval_s
        names = names or [engine_name(url) for url in urls]
        self.engines = [self.new_engine(url, name) for url, name in zip(urls, names, strict=True)]
        #: Every model id any engine has listed, so a model whose engines are all gone (or
        #: replaced) is answered "not ready, retry" rather than "no such model".
        self._known_models: set[str] = set()
        #: Every LoRA adapter known here, listed by an engine now or not: what it adapts and
        #: where engines load it from.
        self.adapter_catalog: dict[str, KnownAdapter] = {}
        #: The longest context (max_model_len, tokens) any engine has listed; 0 until one has.
        self.longest_context = 0
        self._telemetry = telemetry
        self._restarter = restarter
        if telemetry is not None:
            telemetry.watch_states(
                [state.value for state in State],
                lambda: [(engine.name, engine.state.value) for engine in self.engines],
            )
            telemetry.watch_memory(self._resident_memory)
            telemetry.watch_adapters(self._adapter_residency)

    def _resident_memory(self) -> list[tuple[str, float]]:
        """Each engine's API-server memory from its latest fresh scrape, where it says."""
        now = time.monotonic()
        found = []
        for engine in self.engines:
            stats = engine.fresh_stats(now, self.stats_max_age_s)
            if stats is not None and stats.resident_memory_bytes is not None:
                found.append((engine.name, stats.resident_memory_bytes))
        return found

    def _adapter_residency(self) -> list[tuple[str, str, bool]]:
        """For each engine and each adapter of its base: whether it holds it."""
        return [
            (engine.name, name, name in engine.adapters)
            for engine in list(self.engines)
            for name, adapter in list(self.adapter_catalog.items())  # read from the export thread
            if engine.serves(adapter.base)
        ]

    def new_engine(self, url: str, name: str | None = None) -> Engine:
        health = EngineHealth(self.policy, time.monotonic())
        engine = Engine(url, name or engine_name(url), health, max_inflight=self.max_inflight)
        if self.shared is not None:
            shared, slot = self.shared, slot_of(url)
            engine.slot = slot
            engine.siblings = lambda: shared.others(slot)
        return engine

    @contextlib.contextmanager
    def choosing(self) -> Iterator[None]:
        """Held while an engine is chosen by its load and leased: with several workers, one at
        a time, so that no two take an engine's last free place."""
        if self.shared is None:
            yield
        else:
            with self.shared.exclusive():
                yield

    def scraped(self, engine: Engine, stats: EngineStats, now: float) -> None:
        """New statistics for ``engine``; other gateways' load on it may have fallen."""
        engine.observed(stats, now)
        self._capacity_changed(engine, False)

    def time_out_silent_requests(self, now: float) -> None:
        """Take back every request its engine has sent nothing for ENGINE_READ_TIMEOUT_S. Read
        by the monitor's clock, not by a timer per request: a timer re-armed on every chunk
        would cost the streaming path a timer handle per chunk."""
        limit = self.policy.read_timeout_s
        for engine in self.engines:
            for lease in list(engine.leases):
                if now - lease.last_read >= limit:
                    lease.abort(EngineTimeoutError(f"{engine.name} sent nothing for {limit:.0f} s"))

    def has_room(self, engine: Engine, now: float, *, headroom: bool = False) -> bool:
        """Whether ``engine`` is below its concurrency target, counting every gateway's load;
        with ``headroom``, below the target plus its fair headroom (config.fair_headroom)."""
        limit = engine.max_inflight
        if headroom:
            limit += fair_headroom(limit)
        return engine.load(now, self.stats_max_age_s) < limit

    def on_capacity(self, listener: CapacityListener) -> None:
        """Call ``listener`` whenever an engine may take more work (admission waits on it)."""
        self._listeners.append(listener)

    def _capacity_changed(self, engine: Engine, request_ended: bool) -> None:
        for listener in self._listeners:
            listener(engine, request_ended)

    # -- what the gateway asks ---------------------------------------------------------------
    def ready_engines(self) -> list[Engine]:
        return [engine for engine in self.engines if engine.ready]

    def candidates(self, model: str) -> list[Engine]:
        """Ready engines serving ``model``; for a LoRA adapter, every ready engine of its base
        (one that does not hold it can load it)."""
        adapter = self.adapter_catalog.get(model)
        if adapter is None:
            return [engine for engine in self.engines if engine.ready and engine.serves(model)]
        return [
            engine
            for engine in self.engines
            if engine.ready and (engine.serves(adapter.base) or engine.serves(model))
        ]

    def lines_of(self, engine: Engine) -> Set[str]:
        """The models whose requests ``engine`` can take: those it lists, and the adapters of
        its base that it does not hold now."""
        if not self.adapter_catalog:  # the usual case, on every request's end: no copy
            return engine.model_ids
        lines = set(engine.model_ids)
        lines.update(
            name for name, adapter in self.adapter_catalog.items() if adapter.base in lines
        )
        return lines

    def is_known(self, model: str) -> bool:
        """Whether any engine, ready or not, present or gone, has ever listed ``model``."""
        return model in self._known_models

    def model_root(self, model: str) -> str:
        """What an engine serves ``model`` from (its card's ``root``: the checkpoint's folder or
        repo id); the name itself when no engine has said."""
        for engine in self.engines:
            for card in engine.model_cards:
                if card.get("id") == model and isinstance(card.get("root"), str):
                    return card["root"]
        return model

    def adapter_known(self, name: str, base: str, path: str) -> None:
        """``name`` is a LoRA adapter of ``base`` that engines load from ``path``: requests for
        it may go to any engine of the base, listed or not."""
        self.adapter_catalog[name] = KnownAdapter(base, path)
        self._known_models.add(name)

    def adapter_forgotten(self, name: str) -> None:
        """``name`` was removed: no longer an adapter, nor a model name in use."""
        if self.adapter_catalog.pop(name, None) is not None:
            self._known_models.discard(name)

    def adapter_loaded(self, engine: Engine, name: str) -> None:
        """``engine`` took the LoRA adapter ``name`` at run time: it serves it now (its next
        model listing says the same)."""
        adapter = self.adapter_catalog.get(name)
        if engine.serves(name) or adapter is None:
            return
        self.learned_models(engine, (*engine.model_cards, adapter.card(name)))

    def adapter_unloaded(self, engine: Engine, name: str) -> None:
        self.learned_models(
            engine, tuple(card for card in engine.model_cards if card.get("id") != name)
        )

    def model_kind(self, model: str) -> str | None:
        """What the engines serving ``model`` do ("generate" or "embed"); None when none has
        listed it."""
        adapter = self.adapter_catalog.get(model)
        if adapter is not None:
            model = adapter.base
        return next((engine.kind for engine in self.engines if engine.serves(model)), None)

    def model_cards(self) -> list[dict[str, Any]]:
        """The model cards of the ready engines, one per model id; an adapter that no engine
        holds now is listed while its base is served (a request for it loads it)."""
        cards = _unique_cards(engine.model_cards for engine in self.ready_engines())
        listed = {card["id"] for card in cards}
        for name, adapter in self.adapter_catalog.items():
            if name not in listed and adapter.base in listed:
                cards.append(adapter.card(name))
        return cards

    def lease(self, engine: Engine, prompt_bytes: int = 0, adapter: str | None = None) -> Lease:
        """Count a request (of ``prompt_bytes`` routable bytes, for the LoRA ``adapter`` if
        any) as in flight on ``engine`` until its lease ends."""
        lease = Lease(self, engine, prompt_bytes, adapter)
        if adapter is not None:
            engine.adapter_inflight[adapter] = engine.adapter_inflight.get(adapter, 0) + 1
            engine.adapter_used[adapter] = time.monotonic()
        engine.leases.add(lease)
        engine.outstanding += 1
        if self.shared is not None:
            self.shared.add(engine.slot, 1)
        engine.prompt_bytes += prompt_bytes
        if engine.outstanding == 1:
            engine.health.busy(time.monotonic(), True)
        return lease

    def _finished(
        self, lease: Lease, error: BaseException | None, *, neutral: bool = False
    ) -> None:
        engine = lease.engine
        engine.leases.discard(lease)
        engine.outstanding -= 1
        if lease.adapter is not None:
            engine.adapter_inflight[lease.adapter] -= 1
        if self.shared is not None:
            self.shared.add(engine.slot, -1)
        engine.prompt_bytes -= lease.prompt_bytes
        now = time.monotonic()
        if engine.outstanding == 0:
            engine.health.busy(now, False)
        if not neutral:
            self._judge(engine, error, now)
        self._capacity_changed(engine, True)

    def _judge(self, engine: Engine, error: BaseException | None, now: float) -> None:
        """What a request's end says about its engine."""
        if error is None:
            engine.health.request_succeeded(now)
        elif isinstance(error, EngineConnectError):
            self.apply(engine, engine.health.refused(now, error.message))
        elif isinstance(error, EngineStalledError):
            pass  # the stall has been dealt with; this request was one of its casualties
        elif isinstance(error, EngineError) and engine.health.request_failed():
            self._eject(engine, now)

    def _eject(self, engine: Engine, now: float) -> None:
        """Eject ``engine`` unless the cap on the share of ejected engines is reached (at least
        one engine may always be ejected, as in Envoy)."""
        ejected = sum(1 for other in self.engines if other.state is State.EJECTED)
        allowed = max(1, int(len(self.engines) * self.policy.eject_max_share))
        if ejected >= allowed:
            log.warning(
                "%s: %d failed requests in a row, but %d of %d engines are ejected already: "
                "kept in rotation",
                engine.name,
                engine.health.consecutive_failures,
                ejected,
                len(self.engines),
            )
            return
        self.apply(engine, engine.health.eject(now))

    # -- state changes -------------------------------------------------------------------------
    def apply(self, engine: Engine, change: Change | None) -> None:
        """Carry out a state change: log it, count it, and take back the requests of an engine
        that can no longer answer them (an ejected one keeps its requests: they may well end)."""
        if change is None:
            return
        level = logging.INFO if change.new in (State.READY, State.LOADING) else logging.WARNING
        log.log(level, "%s: %s → %s (%s)", engine.name, change.old, change.new, change.reason)
        if change.new is State.LOADING:
            engine.incarnation += 1  # restarted: its caches are empty
        if change.new is State.STALLED:
            if self._telemetry is not None:
                self._telemetry.stalled(engine.name)
            self._take_back(engine, EngineStalledError(f"{engine.name} stalled: {change.reason}"))
            if self._restarter is not None and self._restarter(engine.name, change.reason):
                restarting = engine.health.restarting(time.monotonic(), "restarted after a stall")
                self.apply(engine, restarting)
        elif change.new is State.DOWN:
            self._take_back(engine, EngineUnreachableError(f"{engine.name}: {change.reason}"))
        elif change.new is State.EJECTED and self._telemetry is not None:
            self._telemetry.ejected(engine.name)
        self._capacity_changed(engine, False)  # waiting requests may start, or find no engine

    def _take_back(self, engine: Engine, error: MistralServeError) -> None:
        for lease in list(engine.leases):
            lease.abort(error)

    # -- the set of engines ----------------------------------------------------------------------
    def replace_engines(self, engines: Sequence[Engine]) -> tuple[list[Engine], list[Engine]]:
        """Make ``engines`` the set; returns (added, removed)."""
        added = [engine for engine in engines if engine not in self.engines]
        removed = [engine for engine in self.engines if engine not in engines]
        self.engines = list(engines)
        for engine in added:
            log.info("%s added (%s)", engine.name, engine.state)
        for engine in removed:
            log.info("%s removed (%d requests still on it)", engine.name, engine.outstanding)
            self._capacity_changed(engine, False)  # its models' waiting requests look again
        return added, removed

    def learned_models(self, engine: Engine, cards: Iterable[dict[str, Any]]) -> None:
        engine.model_cards = tuple(cards)
        engine.model_ids = frozenset(card["id"] for card in engine.model_cards)
        engine.adapters = frozenset(card["id"] for card in engine.model_cards if card.get("parent"))
        for card in engine.model_cards:  # an adapter it lists can be loaded again elsewhere
            parent, root = card.get("parent"), card.get("root")
            if parent and isinstance(parent, str) and isinstance(root, str):
                self.adapter_catalog.setdefault(card["id"], KnownAdapter(parent, root))
        # What it does is its base model's (an adapter's card names its base as parent)
        roots = [
            card["root"]
            for card in engine.model_cards
            if isinstance(card.get("root"), str) and not card.get("parent")
        ]
        if roots:
            engine.kind = self._kind_of(roots[0])
        self._known_models |= engine.model_ids
        for card in engine.model_cards:
            length = card.get("max_model_len")
            if isinstance(length, int) and length > self.longest_context:
                self.longest_context = length

    def readiness(self) -> list[dict[str, Any]]:
        """Each engine's state and why, for /ready."""
        now = time.monotonic()
        return [_describe(engine, now, self.stats_max_age_s) for engine in self.engines]


def _describe(engine: Engine, now: float, stats_max_age_s: float) -> dict[str, Any]:
    health = engine.health
    detail: dict[str, Any] = {
        "name": engine.name,
        "url": engine.url,
        "state": engine.state.value,
        "ready": engine.ready,
        "reason": health.reason,
        "for_s": round(now - health.since, 1),
        "models": sorted(engine.model_ids),
        "adapters": sorted(engine.adapters),
        "adapter_slots": engine.adapter_slots,
        "outstanding": engine.outstanding + engine.siblings(),  # every worker's
        "max_inflight": engine.max_inflight,
        "prompt_bytes_in_flight": engine.prompt_bytes,
        "last_progress_s": round(now - health.last_progress, 1),
    }
    if health.ejected_until is not None:
        detail["ejected_for_s"] = round(max(0.0, health.ejected_until - now), 1)
    stats = engine.fresh_stats(now, stats_max_age_s)
    if stats is not None:
        detail["stats"] = stats.as_dict()
    return detail


def engine_name(url: str) -> str:
    """``engine 10.0.3.7:8000``: an engine found by address is named by its address."""
    return f"engine {urlsplit(url).netloc}"


def _unique_cards(groups: Iterable[Iterable[dict[str, Any]]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for cards in groups:
        for card in cards:
            seen.setdefault(card["id"], card)
    return list(seen.values())
