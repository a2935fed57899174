"""LoRA adapters added at run time (`/admin/adapters`), kept in the store and held by every
engine of their base.

Adding one stores it and loads it on every ready engine of its base through vLLM's runtime
endpoint (``/v1/load_lora_adapter``; the engines run with ``--enable-lora`` and
``VLLM_ALLOW_RUNTIME_LORA_UPDATING``, as `up` starts the engines of a model that takes
adapters). Every few seconds each gateway reads the store again and loads what an engine of
the base does not list: so a restarted engine, a new replica and every other gateway get the
adapter back without anyone asking. Removing one unloads it everywhere and forgets it.
Requests for an adapter are routed as a model's: to the engines that list it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson

from mistral_serve.engines.client import EngineClient
from mistral_serve.engines.registry import Engine, EngineRegistry
from mistral_serve.errors import EngineError, InvalidRequestError, NotFoundError
from mistral_serve.gateway.answers import engine_message
from mistral_serve.store import AdapterExistsError, AdapterRecord, AdapterRecords

log = logging.getLogger(__name__)

#: How often the store is read again for adapters to load.
SYNC_INTERVAL_S = 5.0
_JSON = {"content-type": "application/json"}


class AdapterKeeper:
    def __init__(
        self,
        registry: EngineRegistry,
        client: EngineClient,
        records: AdapterRecords,
        *,
        sync_interval_s: float = SYNC_INTERVAL_S,
    ) -> None:
        self._registry = registry
        self._client = client
        self._records = records
        self._interval_s = sync_interval_s
        self._task: asyncio.Task[None] | None = None
        #: Loads that failed, by engine (and its incarnation) and adapter: said once, not
        #: every round, until the engine restarts or the load succeeds.
        self._failed: set[tuple[str, int, str]] = set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._keep(), name="adapters")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _keep(self) -> None:
        while True:
            try:
                await self.sync()
            except Exception:  # the store or an engine is away: next round
                log.warning("adapters: could not sync", exc_info=True)
            await asyncio.sleep(self._interval_s)

    async def sync(self) -> None:
        """Load every kept adapter on every ready engine of its base that does not list it."""
        for adapter in await self._records.list():
            for engine in self._registry.candidates(adapter.base):
                if not engine.serves(adapter.name):
                    await self._load(engine, adapter)

    # -- the admin API ---------------------------------------------------------------------------
    async def add(self, name: str, base: str, path: str) -> dict[str, Any]:
        """Keep ``name`` and load it on every ready engine of ``base``; a 400 naming the field
        when the name is taken, the base is not a generative model served here, or no engine
        could load it (the engine's own reason)."""
        if self._registry.is_known(name):
            raise InvalidRequestError(f"`{name}` is already a model or adapter.", param="name")
        if self._registry.model_kind(base) != "generate":
            raise InvalidRequestError(
                f"`{base}` is not a generative model served here: adapters need one.",
                param="base",
            )
        try:
            adapter = await self._records.add(name, base, path)
        except AdapterExistsError:
            raise InvalidRequestError(f"The adapter `{name}` exists.", param="name") from None
        failures = [
            failure
            for engine in self._registry.candidates(base)
            if (failure := await self._load(engine, adapter)) is not None
        ]
        if failures and not self._holders(name):
            await self._records.remove(name)
            raise InvalidRequestError(
                f"No engine of `{base}` could load `{name}`: {failures[0]}", param="path"
            )
        return self._describe(adapter)

    async def list(self) -> list[dict[str, Any]]:
        return [self._describe(adapter) for adapter in await self._records.list()]

    async def remove(self, name: str) -> None:
        if not await self._records.remove(name):
            raise NotFoundError(f"No adapter `{name}`.")
        for engine in self._holders(name):
            await self._post(engine, "/v1/unload_lora_adapter", {"lora_name": name})
            self._registry.adapter_unloaded(engine, name)

    # -- engines -----------------------------------------------------------------------------
    async def _load(self, engine: Engine, adapter: AdapterRecord) -> str | None:
        """Load ``adapter`` on ``engine``; None when it holds it now, else why not."""
        body = {"lora_name": adapter.name, "lora_path": adapter.path}
        status, answer = await self._post(engine, "/v1/load_lora_adapter", body)
        attempt = (engine.name, engine.incarnation, adapter.name)
        if status == 200 or b"already been loaded" in answer:
            self._failed.discard(attempt)
            self._registry.adapter_loaded(engine, adapter.name, adapter.base)
            log.info("%s: adapter %s loaded", engine.name, adapter.name)
            return None
        reason = engine_message(answer) if answer else f"answered {status}"
        level = logging.DEBUG if attempt in self._failed else logging.WARNING
        self._failed.add(attempt)
        log.log(level, "%s: adapter %s not loaded: %s", engine.name, adapter.name, reason)
        return reason

    async def _post(self, engine: Engine, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        try:
            upstream = await self._client.post(engine.url + path, orjson.dumps(body), _JSON)
            return upstream.status, await upstream.read()
        except EngineError as exc:
            return 0, exc.message.encode()

    def _holders(self, name: str) -> list[Engine]:
        return [engine for engine in self._registry.engines if engine.serves(name)]

    def _describe(self, adapter: AdapterRecord) -> dict[str, Any]:
        return {
            "name": adapter.name,
            "base": adapter.base,
            "path": adapter.path,
            "created_at": adapter.created_at.isoformat(),
            "engines": sorted(engine.name for engine in self._holders(adapter.name)),
        }
