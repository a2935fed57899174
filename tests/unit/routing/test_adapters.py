"""Residency-aware adapter routing as tables: which engines may take an adapter's request,
whether the chosen one loads it first, and which adapters it evicts to make room."""

from __future__ import annotations

import pytest

from mistral_serve.engines.registry import Engine, EngineRegistry
from mistral_serve.routing.adapters import (
    can_load,
    evictable,
    free_slots,
    has_free_slot,
    route_adapter,
    victims,
)


def engine(
    held: tuple[str, ...] = (),
    *,
    slots: int | None = 2,
    load: int = 0,
    used: dict[str, float] | None = None,
    busy: tuple[str, ...] = (),
    loading: tuple[str, ...] = (),
) -> Engine:
    """An engine of the base holding ``held``, ``load`` requests on it, ``busy`` adapters with a
    request in flight, ``loading`` loads under way."""
    made = EngineRegistry([f"http://e{engine.count}"]).engines[0]
    engine.count += 1
    made.adapter_slots = slots
    made.adapters = frozenset(held)
    made.adapters_loading = set(loading)
    made.adapter_used = dict(used or {})
    made.adapter_inflight = dict.fromkeys(busy, 1)
    made.outstanding = load
    return made


engine.count = 0  # type: ignore[attr-defined]


def route(candidates: list[Engine], adapter: str = "sql"):
    return route_adapter(candidates, adapter, lambda each: each.outstanding)


def test_an_adapter_goes_to_the_engines_that_hold_it():
    holder, other, another = engine(("sql",), load=3), engine(), engine(("sql", "chat"), load=5)
    chosen = route([holder, other, another])
    assert chosen is not None and not chosen.load
    assert list(chosen.engines) == [holder, another]  # the policy chooses among them


def test_a_load_under_way_counts_as_held():
    loading = engine(loading=("sql",))
    chosen = route([engine(), loading])
    assert chosen is not None and list(chosen.engines) == [loading] and not chosen.load


def test_when_none_holds_it_the_least_loaded_that_can_make_room_loads_it():
    full_and_busy = engine(("a", "b"), busy=("a", "b"))
    quiet_but_full = engine(("a", "b"), load=1)
    busier_with_room = engine(("a",), load=2)
    chosen = route([full_and_busy, quiet_but_full, busier_with_room])
    assert chosen is not None and chosen.load
    assert list(chosen.engines) == [quiet_but_full]  # it will evict its least recently used


def test_a_busy_holder_keeps_its_adapter_while_it_has_room():
    """Candidates are the engines below their concurrency target: a holder among them takes
    the request however much quieter another engine is (a load would hold up the other's
    requests); a holder at its target is not a candidate, and then another engine loads it."""
    hot, idle = engine(("sql",), load=10), engine(load=1)
    chosen = route([hot, idle])
    assert chosen is not None and not chosen.load and list(chosen.engines) == [hot]
    chosen = route([idle])  # the holder is full: filtered out before
    assert chosen is not None and chosen.load and list(chosen.engines) == [idle]


def test_no_engine_can_take_it_while_every_adapter_everywhere_is_busy():
    assert (
        route([engine(("a", "b"), busy=("a", "b")), engine(("c",), slots=1, busy=("c",))]) is None
    )


@pytest.mark.parametrize(
    ("held", "slots", "loading", "free", "room", "loadable"),
    [
        ((), 2, (), 2, True, True),
        (("a",), 2, (), 1, True, True),
        (("a", "b"), 2, (), 0, False, True),  # full: evicts one
        (("a", "b"), 2, ("c",), -1, False, True),  # one load will evict: "a" or "b" is left
        (("a", "b"), 2, ("c", "d"), -2, False, False),  # both will be evicted: nothing left
        (("a",), None, (), None, True, True),  # slots unknown: as many as it is given
    ],
)
def test_slots(held, slots, loading, free, room, loadable):
    made = engine(held, slots=slots, loading=loading)
    assert free_slots(made) == free
    assert has_free_slot(made) is room
    assert can_load(made) is loadable


def test_eviction_takes_the_least_recently_used_idle_adapters():
    made = engine(
        ("a", "b", "c"),
        slots=3,
        used={"a": 30.0, "b": 10.0, "c": 20.0},
        loading=("d",),
    )
    assert evictable(made) == ["b", "c", "a"]
    assert victims(made) == ["b"]  # one over: d is loading into a full engine
    made.adapter_inflight["b"] = 1  # a request for b is on it: b stays
    assert victims(made) == ["c"]
    made.adapters_loading.add("e")
    assert victims(made) == ["c", "a"]


def test_an_adapter_never_asked_for_here_is_evicted_first_and_none_while_there_is_room():
    made = engine(("x", "y"), slots=2, used={"y": 5.0}, loading=("z",))
    assert victims(made) == ["x"]
    assert victims(engine(("x",), slots=2, loading=("z",))) == []
    assert victims(engine(("x",), slots=None, loading=("z",))) == []


def test_an_adapter_another_engine_holds_too_is_evicted_before_an_only_copy():
    made = engine(("solo", "shared"), slots=2, used={"solo": 1.0, "shared": 9.0}, loading=("new",))
    assert victims(made) == ["solo"]  # least recently used
    assert victims(made, elsewhere={"shared"}) == ["shared"]  # its only copy stays
