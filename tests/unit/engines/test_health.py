"""The engine state rules, step by step on a made-up clock (the rules take ``now``; no sleeping)."""

from __future__ import annotations

import pytest

from mistral_serve.config import Settings
from mistral_serve.engines.health import EngineHealth, HealthPolicy, State

POLICY = HealthPolicy(
    stall_timeout_s=10,
    canary_interval_s=30,
    eject_after_failures=3,
    eject_base_s=20,
    eject_max_s=50,
)


def ready_engine(now: float = 0.0) -> EngineHealth:
    health = EngineHealth(POLICY, now)
    change = health.probe_succeeded(now, started=now)
    assert change is not None and change.new is State.READY
    return health


def test_a_new_engine_loads_until_its_first_probe_answers():
    health = EngineHealth(POLICY, 0)
    assert health.state is State.LOADING
    assert health.refused(1, "connection refused") is None  # still loading, not down
    assert health.state is State.LOADING
    assert health.reason == "connection refused"
    assert health.probe_succeeded(5, started=4).new is State.READY


# -- alive ---------------------------------------------------------------------------------------
def test_a_busy_engine_that_answers_no_probe_but_progresses_stays_ready():
    health = ready_engine()
    health.busy(0, True)
    for second in range(1, 120):  # two minutes of missed probes, tokens flowing all along
        health.progressed(second)
        assert health.check(second) is None
    assert health.state is State.READY


def test_an_api_server_paused_for_a_few_seconds_is_not_dead():
    health = ready_engine()
    health.busy(0, True)
    health.progressed(1)
    for second in range(2, 9):  # nothing at all for 8 s: below the stall timeout
        assert health.check(second) is None
    health.progressed(9)
    assert health.check(15) is None
    assert health.state is State.READY


def test_a_refused_connection_takes_an_engine_out_at_once():
    health = ready_engine()
    change = health.refused(3, "cannot connect: Connection refused")
    assert (change.old, change.new) == (State.READY, State.DOWN)
    assert health.probe_succeeded(4, started=2) is None  # a probe from before does not count
    assert health.probe_succeeded(6, started=5).new is State.READY


def test_an_idle_engine_that_neither_answers_nor_progresses_is_down():
    health = ready_engine()
    health.answered(2)
    assert health.check(11) is None
    change = health.check(12.5)
    assert change.new is State.DOWN
    assert "no answer and no progress for 10 s" in change.reason


def test_an_engine_that_says_it_is_unhealthy_is_down():
    health = ready_engine()
    assert health.unhealthy(1, "/health answered 503").new is State.DOWN


# -- progressing ---------------------------------------------------------------------------------
def test_work_in_flight_without_progress_is_a_stall():
    health = ready_engine()
    health.busy(100, True)  # idle for 100 s before: the clock starts when the work does
    assert health.check(105) is None
    health.answered(108)  # /health still answers (vLLM does, on a hung engine core)
    change = health.check(110)
    assert (change.old, change.new) == (State.READY, State.STALLED)
    assert "no progress for 10 s" in change.reason


def test_a_stalled_engine_is_back_only_after_a_canary_succeeds():
    health = ready_engine()
    health.busy(0, True)
    health.check(11)
    health.busy(11, False)  # its requests were taken back
    assert health.probe_succeeded(12, started=12) is None  # /health lies on a hung engine
    assert health.state is State.STALLED
    assert health.canary_due(12)
    health.canary_started(12)
    assert not health.canary_due(12.5)  # one at a time, at most every second
    assert health.canary_succeeded(13).new is State.READY


def test_an_idle_engine_is_due_a_canary_after_the_canary_interval():
    health = ready_engine()
    assert not health.canary_due(29)
    assert health.canary_due(30)
    health.canary_started(30)
    health.busy(30, True)  # the canary is in flight
    assert not health.canary_due(45)
    health.busy(30.2, False)
    health.canary_succeeded(30.2)
    assert not health.canary_due(50)
    assert health.canary_due(60.2)


def test_an_unanswered_canary_is_a_stall_unless_something_else_progressed():
    health = ready_engine()
    health.canary_started(30)
    assert health.canary_unanswered(41).new is State.STALLED

    other = ready_engine()
    other.canary_started(30)
    other.progressed(35)  # its counters moved: busy with other gateways' work, not stuck
    assert other.canary_unanswered(41) is None
    assert other.state is State.READY


# -- healthy answers -----------------------------------------------------------------------------
def test_consecutive_failures_eject_and_a_success_resets_the_count():
    health = ready_engine()
    assert not health.request_failed()
    assert not health.request_failed()
    health.request_succeeded(1)
    assert not health.request_failed()
    assert not health.request_failed()
    assert health.request_failed()  # the third in a row
    change = health.eject(2)
    assert change.new is State.EJECTED
    assert "out for 20 s" in change.reason
    health.answered(20)  # its probes go on while it is out
    assert health.check(21) is None
    assert health.check(22).new is State.READY


def test_ejection_periods_grow_with_each_ejection_up_to_the_cap():
    health = ready_engine()
    periods = []
    now = 0.0
    for _ in range(4):
        health.eject(now)
        periods.append(health.ejected_until - now)
        now = health.ejected_until
        health.answered(now)
        health.check(now)  # back in rotation
        assert health.state is State.READY
    assert periods == [20, 40, 50, 50]


def test_the_ejection_multiplier_decays_while_the_engine_behaves():
    health = ready_engine()
    health.eject(0)
    health.answered(20)
    health.check(20)
    health.eject(21)  # soon again: twice as long
    assert health.ejected_until - 21 == 40
    health.answered(61)
    health.check(61)
    health.eject(61 + 2 * 20)  # two clean base periods later: back to the first period
    assert health.ejected_until - 101 == 20


def test_an_ejected_engine_whose_requests_hang_is_stalled():
    health = ready_engine()
    health.busy(0, True)
    health.progressed(1)
    health.eject(1)
    assert health.check(12).new is State.STALLED


def test_a_restart_puts_it_back_to_loading():
    health = ready_engine()
    health.busy(0, True)
    health.check(11)
    assert health.restarting(11, "restarted after a stall").new is State.LOADING
    assert health.probe_succeeded(12, started=11.5).new is State.READY


@pytest.mark.parametrize("name", ["ENGINE_STALL_TIMEOUT_S", "ENGINE_CANARY_INTERVAL_S"])
def test_the_policy_comes_from_the_settings(name, monkeypatch):
    monkeypatch.setenv(name, "7")
    monkeypatch.setenv("ENGINE_EJECT_MAX_PERCENT", "25")
    policy = HealthPolicy.from_settings(Settings(_env_file=None))
    assert getattr(policy, name.removeprefix("ENGINE_").lower()) == 7
    assert policy.eject_max_share == 0.25
