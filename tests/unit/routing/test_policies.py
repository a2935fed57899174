"""The routing policies as tables: given engines in these states, this engine, for this reason."""

from __future__ import annotations

from typing import get_args

import pytest

from mistral_serve.config import Settings
from mistral_serve.engines.registry import Engine, EngineRegistry
from mistral_serve.engines.stats import EngineStats
from mistral_serve.routing import (
    POLICIES,
    Balance,
    LeastOutstanding,
    PrefixLoad,
    RoundRobin,
    RoutingOptions,
    make_policy,
    route_key,
)
from mistral_serve.routing.prefix import rendezvous

NOW = 1000.0
MODEL = "demo"


def engines(*outstanding: int, prefix: str = "http://e") -> list[Engine]:
    registry = EngineRegistry([f"{prefix}{i}" for i in range(len(outstanding))])
    for engine, count in zip(registry.engines, outstanding, strict=True):
        engine.outstanding = count
        engine.max_inflight = 16
    return registry.engines


def chat(*turns: str, system: str = "You are terse.") -> dict:
    messages = [{"role": "system", "content": system}]
    for index, text in enumerate(turns):
        messages.append({"role": "user" if index % 2 == 0 else "assistant", "content": text})
    return {"model": MODEL, "messages": messages}


LONG = "Tell me everything about the history of the Roman empire, in detail. " * 20


def stats(engine: Engine, *, running: float = 0, kv: float = 0.0, age_s: float = 0.0) -> None:
    stats = EngineStats(running=running, kv_cache_usage=kv, kv_capacity_tokens=100_000)
    engine.observed(stats, NOW - age_s)


# -- least-outstanding and round-robin --------------------------------------------------------
def choose(policy, pool, document=None):
    return policy.choose(pool, route_key(MODEL, document or chat("hi")), NOW)


def test_least_outstanding_picks_the_engine_with_fewest_requests():
    pool = engines(3, 1, 2)
    decision = choose(LeastOutstanding(), pool)
    assert decision.engine is pool[1]
    assert decision.reason == "load"


def test_least_outstanding_ties_rotate_so_idle_engines_share_the_work():
    pool = engines(0, 0, 5)
    policy = LeastOutstanding()
    picks = [choose(policy, pool).engine.name for _ in range(4)]
    assert picks == ["engine e0", "engine e1", "engine e0", "engine e1"]


def test_round_robin_takes_turns_whatever_the_load():
    pool = engines(9, 0)
    policy = RoundRobin()
    assert [choose(policy, pool).engine for _ in range(3)] == [pool[0], pool[1], pool[0]]


@pytest.mark.parametrize("policy", [LeastOutstanding(), RoundRobin(), PrefixLoad()])
def test_one_candidate_is_the_only_choice(policy):
    [engine] = engines(3)
    assert choose(policy, [engine]).reason == "only-choice"


@pytest.mark.parametrize("policy", [LeastOutstanding(), RoundRobin(), PrefixLoad()])
def test_no_candidates_is_an_error(policy):
    with pytest.raises(ValueError):
        choose(policy, [])


def test_routing_policy_takes_exactly_the_registered_names_and_each_makes_its_policy():
    """The setting's choices (config) and the registry (routing) are two lists: they must agree,
    and each name must make the policy of that name."""
    assert set(get_args(Settings.model_fields["routing_policy"].annotation)) == set(POLICIES)
    for name, policy in POLICIES.items():
        made = make_policy(name, RoutingOptions())
        assert type(made) is policy and made.name == name
    tuned = make_policy("prefix-load", RoutingOptions(7.0, Balance(2, 3.0)))
    assert (tuned._stats_max_age_s, tuned._balance) == (7.0, Balance(2, 3.0))
    with pytest.raises(ValueError, match="round-robin"):
        make_policy("random", RoutingOptions())


# -- prefix-load ------------------------------------------------------------------------------
def test_a_conversation_follows_its_first_turn():
    pool = engines(0, 0)
    policy = PrefixLoad()
    first = choose(policy, pool, chat(LONG))
    second = choose(policy, pool, chat(LONG, "It began small.", "And then?"))
    assert second.engine is first.engine
    assert second.reason == "prefix"
    assert 0.8 < second.prefix_share < 1.0  # all but the new turn


def test_prompts_shorter_than_a_block_go_by_load_alone():
    pool = engines(0, 0)
    policy = PrefixLoad()
    picks = [choose(policy, pool, {"prompt": "Once upon a time"}) for _ in range(4)]
    assert [d.engine for d in picks] == [pool[0], pool[1], pool[0], pool[1]]  # idle: in turn
    assert {d.reason for d in picks} == {"load"}
    pool[0].outstanding = 3
    assert choose(policy, pool, {"prompt": "Once upon a time"}).engine is pool[1]


def test_the_learned_prefix_wins_over_the_home_engine():
    pool = engines(0, 0)
    policy = PrefixLoad()
    key = route_key(MODEL, chat(LONG))
    home = rendezvous(key.home, pool)
    elsewhere = pool[1] if home is pool[0] else pool[0]
    policy.index.learn(elsewhere, key.blocks, 100_000, key.home)  # e.g. load sent turn 1 there
    decision = choose(policy, pool, chat(LONG, "Rome.", "More."))
    assert decision.engine is elsewhere
    assert decision.reason == "prefix"


@pytest.mark.parametrize(
    ("preferred_load", "other_load", "moves"),
    [
        (10, 0, True),  # 10 more and 10× as many: affinity gives way
        (10, 7, False),  # only 3 more: stays
        (30, 25, False),  # 5 more but only 1.2×: stays
        (40, 20, True),  # 20 more and 2×
    ],
)
def test_the_balance_guard_breaks_affinity_only_past_both_thresholds(
    preferred_load, other_load, moves
):
    pool = engines(0, 0)
    for engine in pool:
        engine.max_inflight = 256
    policy = PrefixLoad(balance=Balance(absolute=4, relative=1.5))
    first = choose(policy, pool, chat(LONG))
    other = pool[1] if first.engine is pool[0] else pool[0]
    first.engine.outstanding, other.outstanding = preferred_load, other_load
    decision = choose(policy, pool, chat(LONG, "a", "b"))
    assert (decision.engine is other) == moves
    assert decision.reason == ("load" if moves else "prefix")


def test_a_hot_prefix_cannot_pile_everything_onto_one_engine():
    pool = engines(0, 0)
    for engine in pool:
        engine.max_inflight = 256
    policy = PrefixLoad()
    for _ in range(40):  # the same prompt 40 times, none finishing
        choose(policy, pool, chat(LONG)).engine.outstanding += 1
    most, least = sorted((engine.outstanding for engine in pool), reverse=True)
    assert most <= max(least + 4, 1.5 * least) + 1  # the guard's thresholds, one over at most


def test_engine_reported_load_counts_other_gateways_requests():
    pool = engines(0, 0)
    policy = PrefixLoad()
    first = choose(policy, pool, chat(LONG))
    other = pool[1] if first.engine is pool[0] else pool[0]
    stats(first.engine, running=12)  # another gateway's requests, seen in its /metrics
    stats(other, running=0)
    assert choose(policy, pool, chat(LONG, "a", "b")).engine is other


def test_stale_statistics_are_unknown_never_idle():
    pool = engines(0, 0)
    policy = PrefixLoad(stats_max_age_s=3.0)
    key = route_key(MODEL, chat(LONG))
    for engine in pool:  # both hold the prefix: the home bonus and pressure decide
        policy.index.learn(engine, key.blocks, 100_000, key.home)
    home = rendezvous(key.home, pool)
    other = pool[1] if home is pool[0] else pool[0]
    stats(other, running=2, kv=0.2)
    stats(home, running=0, kv=0.0, age_s=1.0)  # fresh and idle: home it is
    assert choose(policy, pool, chat(LONG)).engine is home
    stats(home, running=0, kv=0.0, age_s=10.0)  # looked idle, ten seconds ago: unknown
    assert choose(policy, pool, chat(LONG)).engine is other


def test_a_named_session_stays_on_its_engine():
    pool = engines(0, 0)
    policy = PrefixLoad()
    picks = {
        policy.choose(pool, route_key(MODEL, chat(f"question {i} " * 40), session="s-1"), NOW)
        for i in range(8)
    }
    assert len({d.engine for d in picks}) == 1
    assert {d.reason for d in picks} == {"session"}


def test_a_session_leaves_an_overloaded_engine():
    pool = engines(0, 0)
    for engine in pool:
        engine.max_inflight = 256
    policy = PrefixLoad()
    key = route_key(MODEL, chat("hello"), session="s-1")
    home = policy.choose(pool, key, NOW).engine
    home.outstanding = 20
    moved = policy.choose(pool, key, NOW)
    assert moved.engine is not home
    assert moved.reason == "load"


def test_replicas_agree_on_conversations_neither_has_seen():
    policies = [PrefixLoad(), PrefixLoad()]
    pools = [engines(0, 0), engines(0, 0)]  # two gateways: their own Engine objects, same URLs
    homes = []
    for i in range(50):
        turn1 = chat(f"conversation {i}: " + LONG)
        turn2 = chat(f"conversation {i}: " + LONG, "Sure.", "Go on.")
        first = policies[0].choose(pools[0], route_key(MODEL, turn1), NOW)
        second = policies[1].choose(pools[1], route_key(MODEL, turn2), NOW)
        assert first.engine.url == second.engine.url
        homes.append(first.engine.url)
    assert 15 <= homes.count("http://e0") <= 35  # and different conversations spread


def test_sessions_sharing_a_long_prefix_spread_over_the_engines():
    pool = engines(0, 0)
    policy = PrefixLoad()
    shared = "Company handbook. " * 200
    picks = [
        choose(policy, pool, chat(f"{shared} Question {i}?", system="")).engine for i in range(100)
    ]
    assert 35 <= picks.count(pool[0]) <= 65


def test_a_restarted_engine_has_forgotten_its_prefixes():
    pool = engines(0, 0)
    policy = PrefixLoad()
    first = choose(policy, pool, chat(LONG))
    key = route_key(MODEL, chat(LONG))
    assert policy.index.matched(first.engine, key.blocks) == len(key.blocks)
    first.engine.incarnation += 1
    assert policy.index.matched(first.engine, key.blocks) == 0
