import pytest

from mistral_serve.engines.registry import Engine, EngineRegistry
from mistral_serve.routing import POLICIES, LeastOutstanding


def engines(*outstanding: int) -> list[Engine]:
    registry = EngineRegistry([f"http://e{i}" for i in range(len(outstanding))])
    for engine, count in zip(registry.engines, outstanding, strict=True):
        engine.outstanding = count
    return registry.engines


def test_picks_the_engine_with_fewest_outstanding_requests():
    pool = engines(3, 1, 2)
    assert LeastOutstanding()(pool) is pool[1]


def test_ties_rotate_so_idle_engines_share_the_work():
    pool = engines(0, 0, 5)
    policy = LeastOutstanding()
    picks = [policy(pool).name for _ in range(4)]
    assert picks == ["engine e0", "engine e1", "engine e0", "engine e1"]


def test_follows_load_as_it_changes():
    pool = engines(0, 0)
    policy = LeastOutstanding()
    first = policy(pool)
    first.outstanding += 1
    assert policy(pool) is not first


def test_empty_candidates_is_an_error():
    with pytest.raises(ValueError):
        LeastOutstanding()([])


def test_registered_by_name():
    assert POLICIES["least-outstanding"] is LeastOutstanding
