"""Watching the engines: probes, ``/metrics`` scrapes, canaries, and the clock.

Per engine, two loops run side by side, so a slow answer to one never delays the other:

- the probe (every ENGINE_HEALTH_INTERVAL_S): ``/health``, and ``/v1/models`` when the engine
  is not in rotation or its list is older than ``models_refresh_s``. A refused connection or a
  non-200 ``/health`` is believed at once; a probe that times out is only silence, which the
  clock judges together with progress. A ready engine that made progress since its last probe
  has just proved more than a probe can, so it is not probed (under load that is every probe:
  the watching costs the gateway little CPU when it has the least to spare);
- the scrape (every ENGINE_STATS_INTERVAL_S): ``/metrics``, whose counters moving is progress
  even when no stream of the gateway's own is open.

One more loop reads the clock for every engine a few times a second: stalls, silence, the end
of an ejection, requests their engine has left without an answer for ENGINE_READ_TIMEOUT_S,
and whether an idle or stalled engine is due a canary (a one-token completion, or one
embedding for an embedding engine).
If the gateway's own event loop was held up, that round passes no verdicts: the gateway's pause
is not the engine's stall.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import orjson

from mistral_serve.engines.client import EngineClient, EngineConnectError
from mistral_serve.engines.registry import Engine, EngineRegistry
from mistral_serve.engines.stats import parse_stats
from mistral_serve.errors import EngineError, MistralServeError

log = logging.getLogger(__name__)

_CANARY_PROMPT = "Hi"


class EngineMonitor:
    def __init__(
        self,
        registry: EngineRegistry,
        client: EngineClient,
        *,
        probe_interval_s: float = 2.0,
        probe_timeout_s: float = 3.0,
        stats_interval_s: float = 1.0,
        models_refresh_s: float = 30.0,
    ) -> None:
        self._registry = registry
        self._client = client
        self._probe_interval_s = probe_interval_s
        self._probe_timeout_s = probe_timeout_s
        self._stats_interval_s = stats_interval_s
        self._models_refresh_s = models_refresh_s
        self._listed_at: dict[Engine, float] = {}  # when each engine's model list was read
        self._probed_at: dict[Engine, float] = {}  # when each engine's last probe began
        policy = registry.policy
        # How often silence is judged: a stalled engine's streams move to another engine at
        # most a tick after the stall timeout (a tick costs a loop over the engines).
        self._tick_s = min(0.25, policy.stall_timeout_s / 4, policy.canary_interval_s / 4)
        self._watchers: dict[Engine, list[asyncio.Task[None]]] = {}
        self._canaries: dict[Engine, asyncio.Task[None]] = {}
        self._clock: asyncio.Task[None] | None = None
        self._canary_ids = itertools.count(1)
        self._no_metrics: set[Engine] = set()

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Probe every engine once (so those that are up are ready at once), then watch."""
        await self.probe_all()
        for engine in self._registry.engines:
            self._watch(engine)
        self._clock = asyncio.create_task(self._read_the_clock(), name="engine clock")

    async def stop(self) -> None:
        tasks = [task for tasks in self._watchers.values() for task in tasks]
        tasks += list(self._canaries.values())
        if self._clock is not None:
            tasks.append(self._clock)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._watchers.clear()
        self._canaries.clear()
        self._clock = None

    async def probe_all(self) -> None:
        await asyncio.gather(*(self.probe(engine) for engine in self._registry.engines))

    async def set_urls(self, urls: Sequence[str]) -> None:
        """Make ``urls`` the engines: keep those already known, probe new ones before they can
        be routed to, stop watching the rest (they finish the requests they have)."""
        known = {engine.url: engine for engine in self._registry.engines}
        new = {url: self._registry.new_engine(url) for url in urls if url not in known}
        if not new and len(known) == len(urls):
            return
        await asyncio.gather(*(self.probe(engine) for engine in new.values()))
        added, removed = self._registry.replace_engines([known.get(u) or new[u] for u in urls])
        for engine in removed:
            self._no_metrics.discard(engine)
            self._listed_at.pop(engine, None)
            self._probed_at.pop(engine, None)
            for task in self._watchers.pop(engine, []):
                task.cancel()
        if self._clock is not None:
            for engine in added:
                self._watch(engine)

    def _watch(self, engine: Engine) -> None:
        self._watchers[engine] = [
            asyncio.create_task(
                self._every(self._probe_interval_s, self._probe_unless_progressing, engine),
                name=f"probe {engine.name}",
            ),
            asyncio.create_task(
                self._every(self._stats_interval_s, self.scrape, engine),
                name=f"scrape {engine.name}",
            ),
        ]

    async def _every(
        self, interval_s: float, action: Callable[[Engine], Awaitable[None]], engine: Engine
    ) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await action(engine)
            except Exception:  # a bug in one observation must not stop the watching
                log.exception("%s: watching failed", engine.name)

    # -- observations --------------------------------------------------------------------------
    async def _probe_unless_progressing(self, engine: Engine) -> None:
        probed_at = self._probed_at.get(engine)
        if engine.ready and probed_at is not None and engine.health.last_progress > probed_at:
            self._probed_at[engine] = time.monotonic()
            return
        await self.probe(engine)

    async def probe(self, engine: Engine) -> None:
        """``/health``, then the model list if it is due. Only a refusal or an explicit
        "unhealthy" counts against the engine; a probe with no answer in time is silence."""
        registry, health = self._registry, engine.health
        started = self._probed_at[engine] = time.monotonic()
        listed_at = self._listed_at.get(engine)
        list_models = not engine.ready or listed_at is None
        list_models = list_models or started - listed_at >= self._models_refresh_s
        try:
            status, _ = await self._client.get(
                engine.url + "/health", timeout_s=self._probe_timeout_s
            )
            if status != 200:
                registry.apply(
                    engine, health.unhealthy(time.monotonic(), f"/health answered {status}")
                )
                return
            if list_models:
                listing = await self._client.get_json(
                    engine.url + "/v1/models", timeout_s=self._probe_timeout_s
                )
        except EngineConnectError as exc:
            registry.apply(engine, health.refused(time.monotonic(), exc.message))
            return
        except EngineError as exc:
            log.debug("%s: probe unanswered: %s", engine.name, exc.message)
            return
        if list_models:
            cards = [card for card in (listing or {}).get("data", []) if "id" in card]
            registry.learned_models(engine, cards)
            self._listed_at[engine] = started
        registry.apply(engine, health.probe_succeeded(time.monotonic(), started))

    async def scrape(self, engine: Engine) -> None:
        """``/metrics``: its statistics, and progress when its counters moved."""
        try:
            status, body = await self._client.get(
                engine.url + "/metrics", timeout_s=max(2.0, 2 * self._stats_interval_s)
            )
        except EngineError:
            return  # silence; the probe reports refusals
        now = time.monotonic()
        engine.health.answered(now)
        try:
            if status != 200:
                raise ValueError(f"/metrics answered {status}")
            stats = parse_stats(body.decode("utf-8", "replace"))
        except ValueError as exc:  # Prometheus' parser says ValueError for malformed text
            if engine not in self._no_metrics:
                self._no_metrics.add(engine)
                log.warning(
                    "%s: no statistics (%s): progress is judged from its streams and answers",
                    engine.name,
                    exc,
                )
            return
        if engine.stats is not None and stats.progressed_since(engine.stats):
            engine.health.progressed(now)
        self._registry.scraped(engine, stats, now)

    # -- the clock -------------------------------------------------------------------------------
    async def _read_the_clock(self) -> None:
        expected = time.monotonic() + self._tick_s
        while True:
            await asyncio.sleep(max(0.0, expected - time.monotonic()))
            now = time.monotonic()
            late_s = now - expected
            expected = now + self._tick_s
            if late_s > max(1.0, self._tick_s):
                log.warning("event loop held up %.1f s: no engine verdicts this round", late_s)
                continue
            self._registry.time_out_silent_requests(now)
            for engine in list(self._registry.engines):
                self._registry.apply(engine, engine.health.check(now))
                if engine not in self._canaries and engine.health.canary_due(now):
                    self._canaries[engine] = asyncio.create_task(
                        self._canary(engine), name=f"canary {engine.name}"
                    )

    async def _canary(self, engine: Engine) -> None:
        """One token from the engine, the proof that it still generates. Bounded by the stall
        timeout: a canary that a hung engine never answers fails."""
        try:
            if bases := engine.model_ids - engine.adapters:  # an adapter may be evicted
                await self._send_canary(engine, min(bases))
        finally:
            self._canaries.pop(engine, None)

    async def _send_canary(self, engine: Engine, model: str) -> None:
        registry, health = self._registry, engine.health
        # A little past the stall timeout: the clock's stall rule, which also weighs the
        # engine's counters, normally decides first; this only ends a canary that is hopeless.
        timeout_s = registry.policy.stall_timeout_s + 1.0
        lease = registry.lease(engine)
        health.canary_started(time.monotonic())
        path, body = canary_request(engine.kind, model)
        headers = {"content-type": "application/json", "x-request-id": self._canary_id()}
        try:
            async with asyncio.timeout(timeout_s):
                upstream = await lease.send(self._client, engine.url + path, body, headers)
                payload = await upstream.read()
            if upstream.status != 200:
                raise EngineError(f"canary answered {upstream.status}: {payload[:200]!r}")
        except TimeoutError:
            lease.release()
            log.debug("%s: canary unanswered after %.0f s", engine.name, timeout_s)
            registry.apply(engine, health.canary_unanswered(time.monotonic()))
            return
        except MistralServeError as exc:
            lease.finish(exc)
            log.info("%s: canary failed: %s", engine.name, exc.message)
            return
        except BaseException:
            lease.release()
            raise
        lease.finish()
        registry.apply(engine, health.canary_succeeded(time.monotonic()))

    def _canary_id(self) -> str:
        return f"canary-{next(self._canary_ids)}"


def canary_request(kind: str, model: str) -> tuple[str, bytes]:
    """The path and body of a canary for an engine of ``kind``: one generated token, or one
    embedding (an embedding engine generates nothing)."""
    if kind == "embed":
        return "/v1/embeddings", orjson.dumps({"model": model, "input": _CANARY_PROMPT})
    body = {"model": model, "prompt": _CANARY_PROMPT, "max_tokens": 1, "temperature": 0}
    return "/v1/completions", orjson.dumps(body)
