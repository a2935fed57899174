"""Routing policies over :class:`mistral_serve.engines.registry.Engine` statistics."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Protocol

from mistral_serve.engines.registry import Engine


class RoutingPolicy(Protocol):
    def __call__(self, candidates: Sequence[Engine]) -> Engine: ...


class LeastOutstanding:
    """The engine with the fewest unfinished requests; ties rotate so idle engines share work.

    Outstanding requests are what the gateway itself has in flight at each engine, known
    exactly and at no cost, which makes this a good default for engines of equal size.
    """

    def __init__(self) -> None:
        self._turn = itertools.count()

    def __call__(self, candidates: Sequence[Engine]) -> Engine:
        if not candidates:
            raise ValueError("no candidate engines")
        fewest = min(engine.outstanding for engine in candidates)
        tied = [engine for engine in candidates if engine.outstanding == fewest]
        return tied[next(self._turn) % len(tied)]


POLICIES: dict[str, type[RoutingPolicy]] = {"least-outstanding": LeastOutstanding}
