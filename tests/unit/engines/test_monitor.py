"""The monitor's observations against the in-process fake engine: probes, scrapes, canaries, and
a changing set of engines. Stalls are made with a real engine (tests/integration)."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from mistral_serve.engines.health import HealthPolicy, State
from mistral_serve.engines.monitor import EngineMonitor, canary_request
from mistral_serve.engines.registry import EngineRegistry
from tests.support import until

from ..conftest import probed
from .test_stats import EXPOSITION


async def test_the_watch_brings_a_down_engine_back(fake_engine, client):
    registry, monitor = await probed(client, fake_engine.url)
    engine = registry.engines[0]
    fake_engine.healthy = False
    await monitor.probe(engine)
    assert engine.state is State.DOWN
    fake_engine.healthy = True
    await monitor.start()
    try:
        await until(lambda: engine.state is State.READY)
    finally:
        await monitor.stop()


async def test_scrapes_read_stats_and_counters_moving_are_progress(fake_engine, client):
    registry, monitor = await probed(client, fake_engine.url)
    engine = registry.engines[0]
    fake_engine.metrics_text = EXPOSITION
    await monitor.scrape(engine)
    assert engine.stats.generation_tokens == 5
    assert engine.fresh_stats(time.monotonic(), registry.stats_max_age_s) is engine.stats
    assert engine.fresh_stats(time.monotonic() + 1, registry.stats_max_age_s) is None  # stale
    before = engine.health.last_progress
    await monitor.scrape(engine)  # nothing moved
    assert engine.health.last_progress == before
    fake_engine.metrics_text = EXPOSITION.replace(
        'generation_tokens_total{engine="0",model_name="demo"} 5.0',
        'generation_tokens_total{engine="0",model_name="demo"} 9.0',
    )
    await monitor.scrape(engine)
    assert engine.stats.generation_tokens == 9
    assert engine.health.last_progress > before


async def test_an_engine_without_metrics_is_still_watched(fake_engine, client):
    registry, monitor = await probed(client, fake_engine.url)
    engine = registry.engines[0]
    await monitor.scrape(engine)  # the fake answers 404
    fake_engine.metrics_text = 'vllm:generation_tokens_total{engine="0"} one\n'  # no number
    await monitor.scrape(engine)
    assert engine.stats is None
    assert engine.state is State.READY


def canary_handler(seen: list[dict], status: int = 200):
    async def handler(request: web.Request) -> web.Response:
        seen.append(await request.json())
        return web.json_response({"choices": [{"text": "x"}]}, status=status)

    return handler


async def test_an_idle_engine_gets_a_one_token_canary(fake_engine, client):
    seen: list[dict] = []
    fake_engine.handlers["/v1/completions"] = canary_handler(seen)
    policy = HealthPolicy(canary_interval_s=0.3)
    registry, monitor = await probed(client, fake_engine.url, policy=policy)
    await monitor.start()
    try:
        await until(lambda: len(seen) >= 2)
    finally:
        await monitor.stop()
    assert seen[0] == {"model": "fake-model", "prompt": "Hi", "max_tokens": 1, "temperature": 0}
    assert registry.engines[0].state is State.READY
    assert registry.engines[0].outstanding == 0


async def test_a_stalled_engine_returns_when_a_canary_succeeds(fake_engine, client):
    seen: list[dict] = []
    fake_engine.handlers["/v1/completions"] = canary_handler(seen, status=500)
    registry, monitor = await probed(client, fake_engine.url, policy=HealthPolicy())
    engine = registry.engines[0]
    engine.health.busy(0, True)  # as if its requests made no progress for the stall timeout
    registry.apply(engine, engine.health.check(time.monotonic() + 60))
    engine.health.busy(time.monotonic(), False)
    assert engine.state is State.STALLED
    await monitor.start()
    try:
        await until(lambda: len(seen) >= 1)
        await asyncio.sleep(0.2)
        assert engine.state is State.STALLED  # a failed canary proves nothing
        fake_engine.handlers["/v1/completions"] = canary_handler(seen)
        await until(lambda: engine.state is State.READY)
    finally:
        await monitor.stop()


async def test_set_urls_adds_probed_engines_and_drops_gone_ones(
    fake_engine, second_fake_engine, client
):
    registry, monitor = await probed(client, fake_engine.url)
    first = registry.engines[0]
    lease = registry.lease(first)  # a request in flight on it

    await monitor.set_urls([fake_engine.url, second_fake_engine.url])
    assert registry.engines[0] is first  # kept, with its state
    added = registry.engines[1]
    assert added.state is State.READY  # probed before it can be routed to
    assert added.name == f"engine {second_fake_engine.url.removeprefix('http://')}"

    await monitor.set_urls([second_fake_engine.url])
    assert registry.engines == [added]
    assert first.outstanding == 1  # a removed engine's requests go on
    lease.finish()


async def test_a_model_whose_engines_are_gone_is_still_known(fake_engine, client):
    registry, monitor = await probed(client, fake_engine.url)
    await monitor.set_urls([])
    assert registry.engines == []
    assert registry.is_known("fake-model")  # 503 "retry", not 404, while engines come back
    assert not registry.is_known("other")


async def test_the_model_list_is_read_again_only_when_due(fake_engine, client):
    registry = EngineRegistry([fake_engine.url])
    monitor = EngineMonitor(registry, client, models_refresh_s=0.3)
    engine = registry.engines[0]
    await monitor.probe(engine)  # loading: /health, then the list
    assert engine.ready and fake_engine.gets["/v1/models"] == 1
    fake_engine.models = ["fake-model", "fake-adapter"]
    await monitor.probe(engine)  # ready, list fresh: /health only
    assert fake_engine.gets == {"/health": 2, "/v1/models": 1}
    await asyncio.sleep(0.3)
    await monitor.probe(engine)
    assert fake_engine.gets["/v1/models"] == 2
    assert engine.model_ids == {"fake-model", "fake-adapter"}


async def test_an_engine_progressing_since_its_last_probe_is_not_probed(fake_engine, client):
    registry = EngineRegistry([fake_engine.url])
    monitor = EngineMonitor(registry, client, probe_interval_s=0.05, stats_interval_s=60)
    engine = registry.engines[0]
    await monitor.probe_all()
    await monitor.start()
    try:
        await until(lambda: fake_engine.gets["/health"] >= 4)  # idle: probed every interval
        probes = fake_engine.gets["/health"]
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:  # busy: its streams' bytes prove it alive
            engine.health.progressed(time.monotonic())
            await asyncio.sleep(0.01)
        assert fake_engine.gets["/health"] <= probes + 1
        await until(lambda: fake_engine.gets["/health"] >= probes + 3)  # idle again
    finally:
        await monitor.stop()


async def test_an_embedding_engines_canary_is_an_embedding(fake_engine, client):
    """An engine whose model is an embedding model (told by its card's root) is sent an
    embedding request as its canary, not a completion it cannot make."""
    fake_engine.roots = {"fake-model": "/models/e5"}
    kinds = {"/models/e5": "embed"}
    registry, monitor = await probed(
        client, fake_engine.url, policy=HealthPolicy(canary_interval_s=0.2), kind_of=kinds.get
    )
    [engine] = registry.engines
    assert engine.kind == "embed" and registry.model_kind("fake-model") == "embed"
    await monitor.start()
    try:
        await until(lambda: fake_engine.requests, what="a canary")
    finally:
        await monitor.stop()
    path, body, _ = fake_engine.requests[0]
    assert path == "/v1/embeddings" and b'"input"' in body


def test_canaries_by_kind():
    assert canary_request("generate", "m")[0] == "/v1/completions"
    assert canary_request("embed", "m")[0] == "/v1/embeddings"
