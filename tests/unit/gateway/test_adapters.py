"""LoRA adapters over fake engines: added at run time on the engines of the base, loaded again
where an engine does not list one (a restart), refused with a reason, removed everywhere; and
residency: requests go to an engine holding their adapter, load it where none does (evicting
the least recently used), wait for one load, and reload one evicted behind their back."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiohttp import web

from mistral_serve.errors import EngineError, InvalidRequestError, NotFoundError
from mistral_serve.gateway.adapters import AdapterKeeper
from mistral_serve.gateway.pipeline import Endpoint, Gateway
from mistral_serve.routing import LeastOutstanding
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


# -- residency: requests go where their adapter is held, and load it where it is not -----------
class LoraEngine:
    """What a vLLM engine with LoRA does, on a fake: it lists its base and the adapters it
    holds (with their parent and path), says its slots on /metrics, loads and unloads them, and
    answers a request for an adapter it does not list with vLLM's 404."""

    def __init__(self, fake, slots: int) -> None:
        self.fake, self.held = fake, {}
        self.loads: list[str] = []
        fake.metrics_text = (
            f'vllm:lora_requests_info{{max_lora="{slots}",running_lora_adapters=""}} 1.7e9\n'
        )
        fake.handlers["/v1/load_lora_adapter"] = self._load
        fake.handlers["/v1/unload_lora_adapter"] = self._unload
        fake.handlers["/v1/chat/completions"] = self._chat
        self._list()

    def _list(self) -> None:
        self.fake.models = ["fake-model", *self.held]
        self.fake.roots = dict(self.held)

    async def _load(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        self.held[body["lora_name"]] = body["lora_path"]
        self.loads.append(body["lora_name"])
        self._list()
        return web.Response(text="Success")

    async def _unload(self, request: web.Request) -> web.Response:
        self.drop(orjson.loads(await request.read())["lora_name"])
        return web.Response(text="Success")

    def drop(self, name: str) -> None:
        self.held.pop(name, None)
        self._list()

    async def _chat(self, request: web.Request) -> web.Response:
        model = orjson.loads(await request.read())["model"]
        if model != "fake-model" and model not in self.held:
            message = f"The model `{model}` does not exist."
            return web.json_response({"error": {"message": message, "code": 404}}, status=404)
        return web.json_response({"id": "x", "model": model, "choices": []})


async def lora_gateway(client, records, *fakes, slots: int):
    """A gateway over LoRA engines with ``slots`` each, their slots and listings read."""
    engines = [LoraEngine(fake, slots) for fake in fakes]
    registry, monitor = await probed(client, *(fake.url for fake in fakes))
    for engine in registry.engines:
        await monitor.scrape(engine)
    keeper = AdapterKeeper(registry, client, records)
    gateway = Gateway(registry, client, LeastOutstanding(), adapters=keeper)
    return gateway, registry, keeper, engines


async def ask(gateway, model: str) -> None:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    answer = await gateway.generate(Endpoint.CHAT, orjson.dumps(body), "r")
    assert answer.status == 200, answer.body


async def test_kept_adapters_fill_free_slots_spread_over_the_engines_and_are_served_there(
    fake_engine, second_fake_engine, client, records
):
    for name in ("a", "b", "c", "d"):
        await records.add(name, "fake-model", f"/adapters/{name}")
    gateway, registry, keeper, lora = await lora_gateway(
        client, records, fake_engine, second_fake_engine, slots=2
    )
    assert [engine.adapter_slots for engine in registry.engines] == [2, 2]
    await keeper.sync()
    assert sorted(lora[0].held) == ["a", "b"] and sorted(lora[1].held) == ["c", "d"]
    for _ in range(3):
        for name in ("a", "b", "c", "d"):
            await ask(gateway, name)
    assert len(lora[0].loads) + len(lora[1].loads) == 4  # the sync's, and none since
    served = {
        e.fake: [orjson.loads(b)["model"] for p, b, _ in e.fake.requests if "chat" in p]
        for e in lora
    }
    assert set(served[fake_engine]) == {"a", "b"} and set(served[second_fake_engine]) == {"c", "d"}


async def test_an_adapter_no_engine_holds_is_loaded_evicting_the_least_recently_used(
    fake_engine, client, records
):
    for name in ("a", "b", "c"):
        await records.add(name, "fake-model", f"/adapters/{name}")
    gateway, registry, keeper, (lora,) = await lora_gateway(client, records, fake_engine, slots=2)
    await keeper.sync()
    assert sorted(lora.held) == ["a", "b"]
    await ask(gateway, "b")
    await ask(gateway, "a")  # b is now the least recently used
    await ask(gateway, "c")
    assert sorted(lora.held) == ["a", "c"] and lora.loads[-1] == "c"
    engine = registry.engines[0]
    assert engine.adapters == {"a", "c"} and not engine.adapters_loading
    await ask(gateway, "b")  # evicts a (used before c)
    assert sorted(lora.held) == ["b", "c"]
    assert {card["id"] for card in registry.model_cards()} >= {"a", "b", "c"}  # all listed


async def test_requests_for_an_adapter_being_loaded_wait_for_the_one_load(
    fake_engine, client, records
):
    gateway, registry, _, (lora,) = await lora_gateway(client, records, fake_engine, slots=1)
    registry.adapter_known("a", "fake-model", "/adapters/a")  # known, not loaded anywhere
    await asyncio.gather(*(ask(gateway, "a") for _ in range(5)))
    assert lora.loads == ["a"]


async def test_an_adapter_evicted_by_another_gateway_is_loaded_again_once(
    fake_engine, client, records
):
    await records.add("a", "fake-model", "/adapters/a")
    gateway, _, keeper, (lora,) = await lora_gateway(client, records, fake_engine, slots=2)
    await keeper.sync()
    lora.drop("a")  # another gateway's eviction: this one still believes the engine holds it
    await ask(gateway, "a")
    assert lora.loads == ["a", "a"] and "a" in lora.held
    chats = [path for path, _, _ in fake_engine.requests if path == "/v1/chat/completions"]
    assert len(chats) == 2  # the 404, then the request again


async def test_an_adapter_held_nowhere_is_tokenized_by_its_base_without_a_load(
    fake_engine, client, records
):
    gateway, registry, _, (lora,) = await lora_gateway(client, records, fake_engine, slots=1)
    registry.adapter_known("a", "fake-model", "/adapters/a")
    body = orjson.dumps({"model": "a", "prompt": "hi"})
    answer = await gateway.tokens("/tokenize", body, "r")
    assert answer.status == 200 and lora.loads == []
    [(path, sent, _)] = fake_engine.requests
    assert path == "/tokenize" and orjson.loads(sent)["model"] == "fake-model"


async def test_an_engine_that_does_not_answer_a_load_is_an_engine_failure_in_bounded_time(
    fake_engine, client, records
):
    """A stopped engine would hold every request for the adapter: the load gives up, and the
    request may move to another engine (an EngineError), not hang."""
    _, registry, _, _ = await lora_gateway(client, records, fake_engine, slots=1)

    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response(text="late")

    fake_engine.handlers["/v1/load_lora_adapter"] = hang
    registry.adapter_known("a", "fake-model", "/adapters/a")
    keeper = AdapterKeeper(registry, client, records, call_timeout_s=0.2)
    with pytest.raises(EngineError, match="loading `a`"):
        await keeper.load(registry.engines[0], "a", "request")
    assert not registry.engines[0].holds("a")
