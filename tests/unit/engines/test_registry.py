import asyncio

from mistral_serve.engines.registry import EngineRegistry
from mistral_serve.engines.supervisor import free_port


def make_registry(client, *urls: str) -> EngineRegistry:
    return EngineRegistry(list(urls), client, interval_s=0.05)


async def test_ready_when_health_and_models_answer(fake_engine, client):
    registry = make_registry(client, fake_engine.url)
    await registry.refresh()
    engine = registry.engines[0]
    assert engine.ready
    assert engine.model_ids == {"fake-model"}
    assert registry.candidates("fake-model") == [engine]
    assert registry.candidates("other") == []
    assert registry.model_cards() == [{"id": "fake-model", "object": "model"}]


async def test_not_ready_when_unhealthy_but_models_remembered(fake_engine, client):
    registry = make_registry(client, fake_engine.url)
    await registry.refresh()
    fake_engine.healthy = False
    await registry.refresh()
    engine = registry.engines[0]
    assert not engine.ready
    assert "503" in engine.last_error
    assert registry.is_known("fake-model")  # so requests get 503, not 404
    assert registry.model_cards() == []


async def test_background_probe_brings_an_engine_back(fake_engine, client):
    registry = make_registry(client, fake_engine.url)
    await registry.start()
    try:
        engine = registry.engines[0]
        registry.mark_down(engine, "connection refused")
        assert not engine.ready
        for _ in range(100):
            if engine.ready:
                break
            await asyncio.sleep(0.02)
        assert engine.ready
    finally:
        await registry.stop()


async def test_models_are_merged_across_engines(fake_engine, second_fake_engine, client):
    second_fake_engine.models = ["fake-model", "second-model"]
    registry = make_registry(
        client, fake_engine.url, second_fake_engine.url, f"http://127.0.0.1:{free_port()}"
    )
    await registry.refresh()
    assert [card["id"] for card in registry.model_cards()] == ["fake-model", "second-model"]
    assert len(registry.candidates("fake-model")) == 2
    assert [e.ready for e in registry.engines] == [True, True, False]


async def test_set_urls_adds_probed_engines_and_drops_gone_ones(
    fake_engine, second_fake_engine, client
):
    registry = make_registry(client, fake_engine.url)
    await registry.refresh()
    first = registry.engines[0]
    first.outstanding = 2  # requests in flight on it

    await registry.set_urls([fake_engine.url, second_fake_engine.url])
    assert registry.engines[0] is first  # kept, with its state
    added = registry.engines[1]
    assert added.ready  # probed before it can be routed to
    assert added.name == f"engine {second_fake_engine.url.removeprefix('http://')}"

    await registry.set_urls([second_fake_engine.url])
    assert registry.engines == [added]
    assert first.outstanding == 2  # a removed engine's requests go on


async def test_a_model_whose_engines_are_gone_is_still_known(fake_engine, client):
    registry = make_registry(client, fake_engine.url)
    await registry.refresh()
    await registry.set_urls([])
    assert registry.engines == []
    assert registry.is_known("fake-model")  # 503 "retry", not 404, while engines come back
    assert not registry.is_known("other")
