"""The registry: engines, their models, leases, and what a state change sets off.

Probes run against the in-process fake engine (tests/unit/conftest.py); failures a real engine
cannot produce on cue (a 500 five times in a row) are reported through leases directly.
"""

from __future__ import annotations

import time

import pytest

from mistral_serve.engines.health import HealthPolicy, State
from mistral_serve.engines.registry import EngineRegistry
from mistral_serve.engines.stats import EngineStats
from mistral_serve.engines.supervisor import free_port
from mistral_serve.errors import EngineError, EngineStalledError
from mistral_serve.telemetry import semconv
from mistral_serve.telemetry.engines import EngineTelemetry

from ..conftest import probed


async def test_ready_when_health_and_models_answer(fake_engine, client):
    registry, _ = await probed(client, fake_engine.url)
    engine = registry.engines[0]
    assert engine.state is State.READY
    assert engine.model_ids == {"fake-model"}
    assert registry.candidates("fake-model") == [engine]
    assert registry.candidates("other") == []
    assert registry.model_cards() == [{"id": "fake-model", "object": "model"}]


async def test_down_when_it_says_unhealthy_but_models_remembered(fake_engine, client):
    registry, monitor = await probed(client, fake_engine.url)
    fake_engine.healthy = False
    await monitor.probe_all()
    engine = registry.engines[0]
    assert engine.state is State.DOWN
    assert "503" in engine.health.reason
    assert registry.is_known("fake-model")  # so requests get 503, not 404
    assert registry.model_cards() == []


async def test_models_are_merged_across_engines(fake_engine, second_fake_engine, client):
    second_fake_engine.models = ["fake-model", "second-model"]
    registry, _ = await probed(
        client, fake_engine.url, second_fake_engine.url, f"http://127.0.0.1:{free_port()}"
    )
    assert [card["id"] for card in registry.model_cards()] == ["fake-model", "second-model"]
    assert len(registry.candidates("fake-model")) == 2
    assert [e.state for e in registry.engines] == [State.READY, State.READY, State.LOADING]


# -- leases ----------------------------------------------------------------------------------------
def test_a_lease_counts_the_request_until_it_ends_once():
    registry = EngineRegistry(["http://e0"])
    engine = registry.engines[0]
    lease = registry.lease(engine)
    assert engine.outstanding == 1 and engine.leases == {lease}
    lease.finish()
    lease.finish(EngineError("late"))  # only the first end counts
    lease.release()
    assert engine.outstanding == 0 and not engine.leases
    assert engine.health.consecutive_failures == 0


def ready_registry(*urls: str, **kwargs) -> EngineRegistry:
    registry = EngineRegistry(list(urls), **kwargs)
    now = time.monotonic()
    for engine in registry.engines:
        registry.apply(engine, engine.health.probe_succeeded(now, started=now))
    return registry


def fail(registry: EngineRegistry, engine, times: int) -> None:
    for _ in range(times):
        registry.lease(engine).finish(EngineError("The engine failed (500): boom"))


def test_consecutive_failures_eject_but_never_more_than_the_cap(captured):
    registry = ready_registry(
        "http://e0",
        "http://e1",
        policy=HealthPolicy(eject_after_failures=3, eject_max_share=0.5),
        telemetry=EngineTelemetry(captured.telemetry.meter),
    )
    first, second = registry.engines
    fail(registry, first, 3)
    assert first.state is State.EJECTED
    fail(registry, second, 5)
    assert second.state is State.READY  # half the engines are out already: it stays
    [point] = captured.metrics()[semconv.ENGINE_EJECTIONS].data.data_points
    assert point.value == 1
    assert point.attributes[semconv.ENGINE_NAME] == first.name


def test_the_only_engine_may_be_ejected():
    registry = ready_registry("http://e0", policy=HealthPolicy(eject_after_failures=2))
    fail(registry, registry.engines[0], 2)
    assert registry.engines[0].state is State.EJECTED


async def test_a_stall_takes_back_every_request_and_asks_for_a_restart(captured, client):
    restarts: list[tuple[str, str]] = []
    registry = ready_registry(
        "http://e0",
        policy=HealthPolicy(stall_timeout_s=5),
        telemetry=EngineTelemetry(captured.telemetry.meter),
        restarter=lambda name, reason: restarts.append((name, reason)) or True,
    )
    engine = registry.engines[0]
    leases = [registry.lease(engine) for _ in range(2)]
    registry.apply(engine, engine.health.check(time.monotonic() + 6))
    assert restarts == [(engine.name, "requests in flight, no progress for 6 s")]
    assert engine.state is State.LOADING  # restarting: back when its probe answers
    for lease in leases:
        with pytest.raises(EngineStalledError, match="stalled"):  # before anything is sent
            await lease.send(client, "http://127.0.0.1:9/never", b"{}", {})
        lease.finish(EngineStalledError("x"))
    assert engine.outstanding == 0
    assert engine.health.consecutive_failures == 0  # a stall's casualties are not failures
    [point] = captured.metrics()[semconv.ENGINE_STALLS].data.data_points
    assert point.value == 1


def test_state_gauge_has_every_state_for_every_engine(captured):
    registry = ready_registry("http://e0", telemetry=EngineTelemetry(captured.telemetry.meter))
    registry.engines.append(registry.new_engine("http://e1"))
    points = captured.metrics()[semconv.ENGINE_STATE].data.data_points
    seen = {
        (p.attributes[semconv.ENGINE_NAME], p.attributes[semconv.ENGINE_STATE_ATTRIBUTE]): p.value
        for p in points
    }
    assert len(seen) == 2 * len(State)
    assert seen[("engine e0", "ready")] == 1 and seen[("engine e0", "down")] == 0
    assert seen[("engine e1", "loading")] == 1 and seen[("engine e1", "ready")] == 0


def test_readiness_says_each_engines_state_and_why():
    registry = ready_registry("http://e0", "http://e1", policy=HealthPolicy(eject_after_failures=1))
    fail(registry, registry.engines[1], 1)
    ready, ejected = registry.readiness()
    assert ready["state"] == "ready" and ready["ready"] is True
    assert ejected["state"] == "ejected" and ejected["ready"] is False
    assert ejected["reason"].startswith("1 failed requests in a row")
    assert ejected["ejected_for_s"] > 0
    assert "stats" not in ready  # never scraped: unknown, not "idle"


def test_room_counts_other_gateways_requests_while_their_count_is_fresh():
    registry = EngineRegistry(["http://e0"], stats_interval_s=1.0, max_inflight=4)
    [engine] = registry.engines
    now = time.monotonic()
    for _ in range(2):
        registry.lease(engine)
    # The engine runs 5 and queues 1: ours are 2, so other replicas have 4 on it.
    registry.scraped(engine, EngineStats(running=5, waiting=1), now)
    assert engine.load(now, registry.stats_max_age_s) == 6
    assert not registry.has_room(engine, now)
    # Three intervals later that count is unknown: only ours are known, and there is room.
    later = now + 3.5
    assert engine.load(later, registry.stats_max_age_s) == 2
    assert registry.has_room(engine, later)


def test_a_scrape_and_an_ended_request_tell_the_listeners():
    registry = EngineRegistry(["http://e0"])
    [engine] = registry.engines
    heard = []
    registry.on_capacity(lambda e, ended: heard.append(ended))
    registry.scraped(engine, EngineStats(), time.monotonic())
    registry.lease(engine).finish()
    assert heard == [False, True]


def test_an_engines_kind_is_its_base_models_whatever_order_it_lists_adapters_in():
    registry = EngineRegistry(["http://e"], kind_of={"/models/e5": "embed"}.get)
    [engine] = registry.engines
    adapter = {"id": "a", "root": "/adapters/a", "parent": "e5"}
    registry.learned_models(engine, [adapter, {"id": "e5", "root": "/models/e5", "parent": None}])
    assert engine.kind == "embed"
