"""Where a LoRA adapter's request goes: to an engine that holds the adapter, or to the one that
loads it. Pure, like the policies: it reads what the registry knows of each engine.

An engine of a base model holds a few adapters at once (vLLM's ``--max-loras``; its
``adapter_slots``). A request for an adapter goes to the engines that hold it (or are loading
it) and have room (below their concurrency target, as every request), where the routing policy
chooses as for any model. Only when no holder has room does the least loaded engine that can
make room load it, so a hot adapter spreads to more engines once its own are full, and not
before: a load holds up every request on the loading engine (vLLM loads it inside the engine
step), which `bench/fleet.py` measured as the cost that matters (docs/fleet.md). Making room
evicts the engine's least recently used adapter that has no request in flight, one that another
engine also holds first; an engine whose every adapter is busy cannot take another now.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass

from mistral_serve.engines.registry import Engine

#: The routing reason of a request whose engine loads its adapter first.
ADAPTER_LOAD = "adapter-load"
#: An engine's load now (requests on it, every gateway's), as the registry counts it.
LoadOf = Callable[[Engine], float]


@dataclass(frozen=True)
class AdapterRoute:
    """The engines the policy may choose among, and whether the one chosen loads the adapter
    first (then there is exactly one)."""

    engines: Sequence[Engine]
    load: bool


def route_adapter(
    candidates: Sequence[Engine], adapter: str, load_of: LoadOf
) -> AdapterRoute | None:
    """Where a request for ``adapter`` may go among ``candidates`` (ready engines of its base,
    below their concurrency target); None when none holds it and none can make room now."""
    holders = [engine for engine in candidates if engine.holds(adapter)]
    if holders:
        return AdapterRoute(holders, load=False)
    loaders = [engine for engine in candidates if can_load(engine)]
    if not loaders:
        return None
    return AdapterRoute([min(loaders, key=load_of)], load=True)


def free_slots(engine: Engine) -> int | None:
    """How many more adapters ``engine`` can hold without evicting one; None when it has not
    said how many it holds (then it is given every adapter, as vLLM allows)."""
    if engine.adapter_slots is None:
        return None
    return engine.adapter_slots - len(engine.adapters | engine.adapters_loading)


def has_free_slot(engine: Engine) -> bool:
    """Whether ``engine`` can load one more adapter without evicting one."""
    free = free_slots(engine)
    return free is None or free > 0


def can_load(engine: Engine) -> bool:
    """Whether ``engine`` can take one more adapter now: a free slot, or an idle one to evict
    beyond those the loads under way will evict."""
    free = free_slots(engine)
    return free is None or free + len(evictable(engine)) > 0


def evictable(engine: Engine, elsewhere: Set[str] = frozenset()) -> list[str]:
    """The adapters ``engine`` could drop now (none of this gateway's requests on them, no load
    under way) in the order to drop them: those another engine holds too (``elsewhere``) first,
    since dropping an adapter's only copy makes its next request a load as well; then least
    recently used first, never asked for here counting as oldest."""
    idle = [
        name
        for name in engine.adapters - engine.adapters_loading
        if not engine.adapter_inflight.get(name)
    ]
    return sorted(
        idle, key=lambda name: (name not in elsewhere, engine.adapter_used.get(name, 0.0), name)
    )


def victims(engine: Engine, elsewhere: Set[str] = frozenset()) -> list[str]:
    """The adapters to evict so that ``engine`` can load one more: as many idle ones as it is
    over (a load counted in ``adapters_loading`` included), in :func:`evictable`'s order."""
    free = free_slots(engine)
    if free is None or free >= 0:
        return []
    return evictable(engine, elsewhere)[:-free]
