"""LoRA adapters on the engines: which engine holds which, loads and evictions, and the ones
added at run time (`/admin/adapters`), kept in the store.

An engine of a base model holds a few adapters at once (its ``--max-loras`` slots, read off its
``/metrics``). Requests are routed to an engine that holds their adapter
(:mod:`mistral_serve.routing.adapters`); when none does, the one chosen loads it here first,
through vLLM's runtime endpoint (``/v1/load_lora_adapter``: the engines run with
``--enable-lora`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING``), after evicting its least recently
used idle adapter if it is full (one another engine holds too, first). Requests for an adapter
being loaded wait for that one load.

Adapters come from the models file (the engines list them at start) and from
``/admin/adapters``, which keeps them in the store. Every few seconds each gateway reads the
store again and fills free slots of the engines with adapters they do not hold, the adapters
on fewest engines first: so a restarted engine, a new replica and every other gateway get the
kept adapters back without anyone asking, and with slots to spare every engine holds every
adapter. Removing one unloads it everywhere and forgets it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from typing import Any

import orjson

from mistral_serve.engines.client import EngineClient
from mistral_serve.engines.registry import Engine, EngineRegistry
from mistral_serve.errors import (
    AdapterUnavailableError,
    EngineError,
    EngineTimeoutError,
    EngineUnreachableError,
    InvalidRequestError,
    NotFoundError,
)
from mistral_serve.gateway.answers import engine_message
from mistral_serve.routing.adapters import has_free_slot, route_adapter, victims
from mistral_serve.store import AdapterExistsError, AdapterRecord, AdapterRecords
from mistral_serve.telemetry.engines import EngineTelemetry

log = logging.getLogger(__name__)

#: How often the store is read again and free slots filled.
SYNC_INTERVAL_S = 5.0
#: How long a load or unload may take before the engine is taken as not answering (a load
#: reads the adapter from disk; a stopped engine would otherwise hold its requests forever).
CALL_TIMEOUT_S = 60.0
#: Why a load was made (the loads metric's reason).
REQUEST, SYNC, ADMIN = "request", "sync", "admin"
_JSON = {"content-type": "application/json"}


class AdapterKeeper:
    def __init__(
        self,
        registry: EngineRegistry,
        client: EngineClient,
        records: AdapterRecords | None,
        *,
        telemetry: EngineTelemetry | None = None,
        sync_interval_s: float = SYNC_INTERVAL_S,
        call_timeout_s: float = CALL_TIMEOUT_S,
    ) -> None:
        self._registry = registry
        self._client = client
        self._records = records  # None: no store (AUTH=off), no adapters added at run time
        self._telemetry = telemetry
        self._interval_s = sync_interval_s
        self._call_timeout_s = call_timeout_s
        self._task: asyncio.Task[None] | None = None
        #: The loads under way, by engine and adapter: every request for it awaits the one.
        self._loads: dict[tuple[Engine, str], asyncio.Task[None]] = {}
        #: One load or eviction at a time per engine: each decides on the slots it leaves.
        self._locks: defaultdict[Engine, asyncio.Lock] = defaultdict(asyncio.Lock)
        #: The names the store held at the last sync: one gone from it was removed elsewhere.
        self._kept: set[str] = set()
        #: Loads that failed, by engine (and its incarnation) and adapter: said once, not
        #: every round, until the engine restarts or the load succeeds.
        self._failed: set[tuple[str, int, str]] = set()

    @property
    def keeps(self) -> bool:
        """Whether adapters can be added at run time (there is a store to keep them in)."""
        return self._records is not None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._keep(), name="adapters")

    async def stop(self) -> None:
        tasks = [task for task in (self._task, *self._loads.values()) if task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _keep(self) -> None:
        while True:
            try:
                await self.sync()
            except Exception:  # the store or an engine is away: next round
                log.warning("adapters: could not sync", exc_info=True)
            await asyncio.sleep(self._interval_s)

    async def sync(self) -> None:
        """Learn the kept adapters (and forget those removed elsewhere), then fill every ready
        engine's free slots with adapters of its base it does not hold, those on the fewest
        engines first."""
        if self._records is not None:
            kept = await self._records.list()
            for adapter in kept:
                self._registry.adapter_known(adapter.name, adapter.base, adapter.path)
            names = {adapter.name for adapter in kept}
            for gone in self._kept - names:
                self._registry.adapter_forgotten(gone)
            self._kept = names
        registry = self._registry
        for engine in registry.ready_engines():
            missing = [
                name
                for name, adapter in list(registry.adapter_catalog.items())
                if engine.serves(adapter.base) and not engine.holds(name)
            ]
            missing.sort(key=lambda name: (len(self._holders(name)), name))
            for name in missing:
                if not has_free_slot(engine):
                    break
                with contextlib.suppress(AdapterUnavailableError, EngineError):
                    await self.load(engine, name, SYNC)

    # -- requests ------------------------------------------------------------------------------
    def begin(self, engine: Engine, name: str) -> None:
        """``engine`` was chosen to load ``name`` for a request: count the load as under way
        now (so the next choice sees it held) and start it."""
        self._start(engine, name, REQUEST)

    async def ready(self, engine: Engine, name: str) -> float | None:
        """Wait until ``engine`` holds ``name``: None when it did, else the seconds waited for
        its load. Raises AdapterUnavailableError when the engine cannot load it, EngineError
        when the engine failed. Leaving does not stop the load (others may wait for it)."""
        task = self._loads.get((engine, name))
        if task is None:
            if name in engine.adapters:
                return None
            task = self._start(engine, name, REQUEST)
        started = time.perf_counter()
        await asyncio.shield(task)
        return time.perf_counter() - started

    def lost(self, engine: Engine, name: str) -> None:
        """``engine`` said it has no ``name`` although this gateway thought it held it (another
        gateway evicted it): believe it, so that the next :meth:`ready` loads it again."""
        self._registry.adapter_unloaded(engine, name)

    def _start(self, engine: Engine, name: str, reason: str) -> asyncio.Task[None]:
        task = self._loads.get((engine, name))
        if task is None:
            engine.adapters_loading.add(name)
            task = asyncio.create_task(self._load_task(engine, name, reason), name=f"load {name}")
            task.add_done_callback(_retrieved)
            self._loads[engine, name] = task
        return task

    async def load(self, engine: Engine, name: str, reason: str) -> None:
        """Load ``name`` on ``engine`` now (making room if it is full), or raise why not."""
        await asyncio.shield(self._start(engine, name, reason))

    async def _load_task(self, engine: Engine, name: str, reason: str) -> None:
        try:
            async with self._locks[engine]:
                for victim in victims(engine, self._held_elsewhere(engine)):
                    await self._evict(engine, victim)
                failure = await self._load(engine, name, reason)
        finally:
            engine.adapters_loading.discard(name)
            self._loads.pop((engine, name), None)
        if failure is not None:
            raise failure

    # -- the admin API ---------------------------------------------------------------------------
    async def add(self, name: str, base: str, path: str) -> dict[str, Any]:
        """Keep ``name`` and load it on the engines of ``base`` with a free slot (or, when all
        are full, on the least loaded, which evicts one); a 400 naming the field when the name
        is taken, the base is not a generative model served here, or no engine could load it
        (the engine's own reason)."""
        registry = self._registry
        if self._records is None:
            raise InvalidRequestError("Adapters need the store (AUTH on).", param="name")
        if registry.is_known(name):
            raise InvalidRequestError(f"`{name}` is already a model or adapter.", param="name")
        if registry.model_kind(base) != "generate" or base in registry.adapter_catalog:
            raise InvalidRequestError(
                f"`{base}` is not a generative model served here: adapters need one.",
                param="base",
            )
        try:
            adapter = await self._records.add(name, base, path)
        except AdapterExistsError:
            raise InvalidRequestError(f"The adapter `{name}` exists.", param="name") from None
        registry.adapter_known(name, base, path)
        self._kept.add(name)
        engines = registry.candidates(base)
        with_room = [engine for engine in engines if has_free_slot(engine)]
        if not with_room:  # every engine full: the one a request would load it on makes room
            now = time.monotonic()
            route = route_adapter(engines, name, lambda e: e.load(now, registry.stats_max_age_s))
            with_room = list(route.engines) if route is not None else []
        failures = []
        for engine in with_room:
            try:
                await self.load(engine, name, ADMIN)
            except (AdapterUnavailableError, EngineError) as error:
                failures.append(error.message)
        if not self._holders(name):
            await self._records.remove(name)
            registry.adapter_forgotten(name)
            self._kept.discard(name)
            reason = failures[0] if failures else f"no engine of `{base}` is ready"
            raise InvalidRequestError(f"`{name}` could not be loaded: {reason}", param="path")
        return self._describe(adapter)

    async def list(self) -> list[dict[str, Any]]:
        if self._records is None:
            return []
        return [self._describe(adapter) for adapter in await self._records.list()]

    async def remove(self, name: str) -> None:
        if self._records is None or not await self._records.remove(name):
            raise NotFoundError(f"No adapter `{name}`.")
        self._kept.discard(name)
        self._registry.adapter_forgotten(name)
        for engine in self._holders(name):
            await self._unload(engine, name)

    # -- engines -----------------------------------------------------------------------------
    async def _load(self, engine: Engine, name: str, reason: str) -> Exception | None:
        """Load ``name`` on ``engine``: None when it holds it now, else the error to raise."""
        adapter = self._registry.adapter_catalog.get(name)
        if adapter is None:
            return AdapterUnavailableError(f"`{name}` is no longer an adapter here.")
        started = time.perf_counter()
        body = {"lora_name": name, "lora_path": adapter.path}
        try:
            status, answer = await self._post(engine, "/v1/load_lora_adapter", body)
        except EngineError as error:
            self._loaded(engine, name, reason, started, loaded=False)
            return EngineUnreachableError(f"{engine.name}: loading `{name}`: {error.message}")
        attempt = (engine.name, engine.incarnation, name)
        if status == 200 or b"already been loaded" in answer:
            self._failed.discard(attempt)
            self._registry.adapter_loaded(engine, name)
            self._loaded(engine, name, reason, started, loaded=True)
            log.info("%s: adapter %s loaded (%s)", engine.name, name, reason)
            return None
        self._loaded(engine, name, reason, started, loaded=False)
        why = engine_message(answer) if answer else f"answered {status}"
        level = logging.DEBUG if attempt in self._failed else logging.WARNING
        self._failed.add(attempt)
        log.log(level, "%s: adapter %s not loaded: %s", engine.name, name, why)
        return AdapterUnavailableError(f"{engine.name} could not load `{name}`: {why}")

    def _loaded(
        self, engine: Engine, name: str, reason: str, started: float, *, loaded: bool
    ) -> None:
        if self._telemetry is not None:
            seconds = time.perf_counter() - started
            self._telemetry.adapter_loaded(engine.name, name, reason, seconds, loaded=loaded)

    async def _evict(self, engine: Engine, name: str) -> None:
        """Drop ``name`` from ``engine`` to make room (its requests there have all ended)."""
        await self._unload(engine, name)
        if self._telemetry is not None:
            self._telemetry.adapter_evicted(engine.name, name)
        log.info("%s: adapter %s evicted", engine.name, name)

    async def _unload(self, engine: Engine, name: str) -> None:
        # Whatever the answer (an engine that no longer lists it says 404), it is not held now.
        with contextlib.suppress(EngineError):
            await self._post(engine, "/v1/unload_lora_adapter", {"lora_name": name})
        self._registry.adapter_unloaded(engine, name)

    async def _post(self, engine: Engine, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        try:
            async with asyncio.timeout(self._call_timeout_s):
                upstream = await self._client.post(engine.url + path, orjson.dumps(body), _JSON)
                return upstream.status, await upstream.read()
        except TimeoutError:
            raise EngineTimeoutError(
                f"{engine.name} did not answer {path} in {self._call_timeout_s:.0f} s"
            ) from None

    def _held_elsewhere(self, engine: Engine) -> set[str]:
        """The adapters some other engine holds too."""
        return {
            name
            for other in self._registry.engines
            if other is not engine
            for name in other.adapters
        }

    def _holders(self, name: str) -> list[Engine]:
        return [engine for engine in self._registry.engines if name in engine.adapters]

    def _describe(self, adapter: AdapterRecord) -> dict[str, Any]:
        return {
            "name": adapter.name,
            "base": adapter.base,
            "path": adapter.path,
            "created_at": adapter.created_at.isoformat(),
            "engines": sorted(engine.name for engine in self._holders(adapter.name)),
        }


def _retrieved(task: asyncio.Task[None]) -> None:
    """A load nobody awaited (its requests left) ends quietly: its failure was logged."""
    if not task.cancelled():
        task.exception()
