"""Runtime adapters over a fake engine: added on every engine of the base, loaded again where
an engine does not list one (a restart), refused with a reason, removed everywhere."""

from __future__ import annotations

import orjson
import pytest
from aiohttp import web

from mistral_serve.errors import InvalidRequestError, NotFoundError
from mistral_serve.gateway.adapters import AdapterKeeper
from mistral_serve.store import AdapterRecords, Store
from mistral_serve.store.database import sqlite_url

from ..conftest import probed


@pytest.fixture
async def records(tmp_path):
    store = await Store.open(sqlite_url(tmp_path))
    yield AdapterRecords(store)
    await store.close()


def lora_endpoints(engine, refuse: str | None = None):
    """vLLM's runtime LoRA endpoints on the fake engine: what it loaded and unloaded."""
    loaded: list[str] = []

    async def load(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        if refuse:
            return web.json_response({"error": {"message": refuse}}, status=400)
        loaded.append(body["lora_name"])
        return web.Response(text=f"Success: LoRA adapter '{body['lora_name']}' added")

    async def unload(request: web.Request) -> web.Response:
        loaded.remove(orjson.loads(await request.read())["lora_name"])
        return web.Response(text="ok")

    engine.handlers["/v1/load_lora_adapter"] = load
    engine.handlers["/v1/unload_lora_adapter"] = unload
    return loaded


async def test_an_adapter_is_loaded_on_every_engine_of_its_base_and_again_after_a_restart(
    fake_engine, second_fake_engine, client, records
):
    loaded = [lora_endpoints(engine) for engine in (fake_engine, second_fake_engine)]
    registry, _ = await probed(client, fake_engine.url, second_fake_engine.url)
    keeper = AdapterKeeper(registry, client, records)
    added = await keeper.add("sql", "fake-model", "/adapters/sql")
    assert loaded == [["sql"], ["sql"]]
    assert len(added["engines"]) == 2 and added["base"] == "fake-model"
    assert len(registry.candidates("sql")) == 2  # routed to as a model
    card = next(c for c in registry.model_cards() if c["id"] == "sql")
    assert card["parent"] == "fake-model"
    # an engine restarts: its listing no longer has the adapter, and the keeper loads it again
    first = registry.engines[0]
    registry.learned_models(first, [{"id": "fake-model", "object": "model"}])
    loaded[0].clear()
    await keeper.sync()
    assert loaded[0] == ["sql"] and first.serves("sql")
    await keeper.remove("sql")
    assert loaded == [[], []] and registry.candidates("sql") == []
    assert await keeper.list() == []
    with pytest.raises(NotFoundError):
        await keeper.remove("sql")


async def test_a_bad_adapter_is_refused_with_the_engines_reason_and_not_kept(
    fake_engine, client, records
):
    lora_endpoints(fake_engine, refuse="No adapter found at /nowhere")
    registry, _ = await probed(client, fake_engine.url)
    keeper = AdapterKeeper(registry, client, records)
    with pytest.raises(InvalidRequestError, match="No adapter found at /nowhere") as refused:
        await keeper.add("x", "fake-model", "/nowhere")
    assert refused.value.param == "path" and await records.list() == []
    with pytest.raises(InvalidRequestError, match="is not a generative model") as base:
        await keeper.add("x", "no-such-model", "/a")
    assert base.value.param == "base"
    with pytest.raises(InvalidRequestError, match="already a model") as taken:
        await keeper.add("fake-model", "fake-model", "/a")
    assert taken.value.param == "name"


async def test_an_engine_that_cannot_load_a_kept_adapter_is_told_once(
    fake_engine, client, records, caplog
):
    lora_endpoints(fake_engine, refuse="LoRA is not enabled")
    registry, _ = await probed(client, fake_engine.url)
    await records.add("sql", "fake-model", "/adapters/sql")  # kept by another gateway
    keeper = AdapterKeeper(registry, client, records)
    with caplog.at_level("WARNING", logger="mistral_serve.gateway.adapters"):
        for _ in range(3):
            await keeper.sync()
    warnings = [r for r in caplog.records if "not loaded" in r.getMessage()]
    assert len(warnings) == 1 and "LoRA is not enabled" in warnings[0].getMessage()
    assert len(fake_engine.requests) == 3  # still tried every round

