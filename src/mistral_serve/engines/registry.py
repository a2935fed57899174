"""The engines the gateway can route to, and whether each is ready.

A background loop asks every engine for ``/health`` and ``/v1/models``; an engine is ready when
both answer. A request that cannot connect marks its engine down at once, so traffic moves off
a dead engine before the next probe. The :class:`Engine` objects are also the statistics the
routing policies read (``ready``, ``outstanding``).

The set of engines can change (:meth:`EngineRegistry.set_urls`, fed by DNS discovery): a new
engine is probed before it takes traffic; a removed one finishes the requests it has.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from mistral_serve.engines.client import EngineClient
from mistral_serve.errors import EngineError

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Engine:
    """One engine as the gateway sees it."""

    url: str
    name: str
    ready: bool = False
    #: The OpenAI model cards it last listed (kept while it restarts, for error messages).
    model_cards: tuple[dict[str, Any], ...] = ()
    #: Requests sent to it that have not finished yet.
    outstanding: int = 0
    last_error: str | None = None
    ready_since: float | None = None
    model_ids: frozenset[str] = field(default_factory=frozenset)

    def serves(self, model: str) -> bool:
        return model in self.model_ids


class EngineRegistry:
    def __init__(
        self,
        urls: Sequence[str],
        client: EngineClient,
        *,
        interval_s: float = 2.0,
        names: Sequence[str] | None = None,
        probe_timeout_s: float = 3.0,
    ) -> None:
        names = names or [engine_name(url) for url in urls]
        self.engines = [Engine(url=url, name=name) for url, name in zip(urls, names, strict=True)]
        #: Every model id any engine has listed, so a model whose engines are all gone (or
        #: replaced) is answered "not ready, retry" rather than "no such model".
        self._known_models: set[str] = set()
        self._client = client
        self._interval_s = interval_s
        self._probe_timeout_s = probe_timeout_s
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._probe_forever(), name="engine-registry")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def refresh(self) -> None:
        """Probe every engine once, concurrently."""
        await asyncio.gather(*(self._probe(engine) for engine in self.engines))

    async def set_urls(self, urls: Sequence[str]) -> None:
        """Make ``urls`` the engines: keep those already known, probe new ones, drop the rest."""
        known = {engine.url: engine for engine in self.engines}
        added = [Engine(url=url, name=engine_name(url)) for url in urls if url not in known]
        removed = [engine for engine in self.engines if engine.url not in urls]
        if not added and not removed:
            return
        await asyncio.gather(*(self._probe(engine) for engine in added))  # ready before routed to
        known.update((engine.url, engine) for engine in added)
        self.engines = [known[url] for url in urls]
        for engine in added:
            log.info("%s added (%s)", engine.name, "ready" if engine.ready else "not ready yet")
        for engine in removed:
            log.info("%s removed (%d requests still on it)", engine.name, engine.outstanding)

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.refresh()
            except Exception:  # a probe bug must not stop probing
                log.exception("engine probe failed")

    async def _probe(self, engine: Engine) -> None:
        try:
            await self._client.get_json(engine.url + "/health", timeout_s=self._probe_timeout_s)
            listing = await self._client.get_json(
                engine.url + "/v1/models", timeout_s=self._probe_timeout_s
            )
        except EngineError as exc:
            self._set_down(engine, exc.message)
            return
        cards = tuple(card for card in (listing or {}).get("data", []) if "id" in card)
        engine.model_cards = cards
        engine.model_ids = frozenset(card["id"] for card in cards)
        self._known_models |= engine.model_ids
        engine.last_error = None
        if not engine.ready:
            engine.ready = True
            engine.ready_since = time.monotonic()
            log.info("%s ready at %s serving %s", engine.name, engine.url, sorted(engine.model_ids))

    # -- what the gateway asks ---------------------------------------------------------------
    def mark_down(self, engine: Engine, reason: str) -> None:
        """A request could not reach ``engine``: stop routing to it until a probe succeeds."""
        self._set_down(engine, reason)

    def _set_down(self, engine: Engine, reason: str) -> None:
        if engine.ready:
            log.warning("%s not ready: %s", engine.name, reason)
        engine.ready = False
        engine.ready_since = None
        engine.last_error = reason

    def ready_engines(self) -> list[Engine]:
        return [engine for engine in self.engines if engine.ready]

    def candidates(self, model: str) -> list[Engine]:
        """Ready engines serving ``model``."""
        return [engine for engine in self.engines if engine.ready and engine.serves(model)]

    def is_known(self, model: str) -> bool:
        """Whether any engine, ready or not, present or gone, has ever listed ``model``."""
        return model in self._known_models

    def model_cards(self) -> list[dict[str, Any]]:
        """The model cards of the ready engines, one per model id."""
        return _unique_cards(engine.model_cards for engine in self.ready_engines())


def engine_name(url: str) -> str:
    """``engine 10.0.3.7:8000``: an engine found by address is named by its address."""
    return f"engine {urlsplit(url).netloc}"


def _unique_cards(groups: Iterable[Iterable[dict[str, Any]]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for cards in groups:
        for card in cards:
            seen.setdefault(card["id"], card)
    return list(seen.values())
