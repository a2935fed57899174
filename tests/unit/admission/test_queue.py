"""The admission line: start now or wait, priority then arrival, bounded, timed, left at will."""

from __future__ import annotations

import asyncio

import pytest

from mistral_serve.admission import Admission, AdmissionLimits, DrainRate, ModelQueue, Ticket
from mistral_serve.errors import DrainingError, NoReadyEngineError, ServerOverloadedError


class Slots:
    """try_start for tests: hands out numbered tickets while slots are free."""

    def __init__(self, free: int, headroom: int = 0) -> None:
        self.free = free
        self.headroom = headroom  # past the target: only for a tenant under its share
        self.started: list[str] = []
        self.released: list[str] = []

    def starter(self, name: str):
        def try_start(headroom: bool) -> str | None:
            if self.free > 0:
                self.free -= 1
            elif headroom and self.headroom > 0:
                self.headroom -= 1
            else:
                return None
            self.started.append(name)
            return name

        return try_start

    def release(self, name: str) -> None:
        self.released.append(name)


def line(slots: Slots, **limits) -> ModelQueue[str]:
    return ModelQueue("demo", AdmissionLimits(**limits), release=slots.release)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_request_starts_at_once_when_a_slot_is_free():
    slots = Slots(1)
    assert await line(slots).admit(slots.starter("a")) == "a"


async def test_waiters_start_by_priority_then_arrival_as_slots_free():
    slots = Slots(0)
    queue = line(slots)
    order = [("low", 5), ("first", 0), ("urgent", -1), ("second", 0)]
    tasks = [asyncio.create_task(queue.admit(slots.starter(n), p)) for n, p in order]
    await settle()
    assert queue.depth == 4
    for _ in order:
        slots.free += 1
        queue.wake()
        await settle()
    assert slots.started == ["urgent", "first", "second", "low"]
    assert [t.result() for t in tasks] == ["low", "first", "urgent", "second"]


async def test_a_newcomer_does_not_jump_the_line():
    slots = Slots(0)
    queue = line(slots)
    waiting = asyncio.create_task(queue.admit(slots.starter("early")))
    await settle()
    slots.free = 1  # a slot freed, but the line has not been woken yet
    late = asyncio.create_task(queue.admit(slots.starter("late")))
    await settle()
    assert slots.started == []
    queue.wake()
    await settle()
    assert slots.started == ["early"]
    assert waiting.done() and not late.done()
    late.cancel()


async def test_a_full_line_answers_429_at_once():
    slots = Slots(0)
    queue = line(slots, max_waiting=2)
    waiting = [asyncio.create_task(queue.admit(slots.starter(str(i)))) for i in range(2)]
    await settle()
    with pytest.raises(ServerOverloadedError) as caught:
        await queue.admit(slots.starter("x"))
    assert caught.value.status == 429
    assert caught.value.label == "queue_full"
    assert caught.value.headers()["retry-after"].isdigit()
    for task in waiting:
        task.cancel()


async def test_a_request_waits_no_longer_than_the_timeout():
    slots = Slots(0)
    queue = line(slots, timeout_s=0.05)
    with pytest.raises(ServerOverloadedError) as caught:
        await queue.admit(slots.starter("a"))
    assert caught.value.label == "queue_timeout"
    assert queue.depth == 0


async def test_a_client_that_leaves_leaves_the_line_at_once():
    slots = Slots(0)
    queue = line(slots)
    gone = asyncio.create_task(queue.admit(slots.starter("gone")))
    stays = asyncio.create_task(queue.admit(slots.starter("stays")))
    await settle()
    gone.cancel()
    await settle()
    assert queue.depth == 1
    slots.free = 1
    queue.wake()
    await settle()
    assert stays.result() == "stays"
    assert slots.started == ["stays"]


async def test_a_request_started_just_as_its_client_left_gives_its_slot_back():
    slots = Slots(0)
    queue = line(slots)
    task = asyncio.create_task(queue.admit(slots.starter("a")))
    await settle()
    slots.free = 1
    queue.wake()  # started …
    task.cancel()  # … and cancelled before it ran again
    with pytest.raises(asyncio.CancelledError):
        await task
    assert slots.released == ["a"]


async def test_when_no_engine_is_left_waiters_hear_it():
    queue = ModelQueue[str]("demo", AdmissionLimits(), release=lambda _: None)
    state = {"gone": False}

    def try_start(headroom: bool) -> str | None:
        if state["gone"]:
            raise NoReadyEngineError("no engine")
        return None

    task = asyncio.create_task(queue.admit(try_start))
    await settle()
    state["gone"] = True
    queue.wake()
    with pytest.raises(NoReadyEngineError):
        await task


async def test_draining_answers_everyone_waiting_and_everyone_after():
    slots = Slots(0)
    admission: Admission[str] = Admission(AdmissionLimits(), release=slots.release)
    waiting = asyncio.create_task(admission.queue("demo").admit(slots.starter("a")))
    await settle()
    admission.close()
    with pytest.raises(DrainingError):
        await waiting
    with pytest.raises(DrainingError):
        await admission.queue("demo").admit(slots.starter("b"))
    with pytest.raises(DrainingError):
        await admission.queue("other").admit(slots.starter("c"))
    assert DrainingError.status == 503


def test_retry_after_comes_from_the_line_and_the_completion_rate():
    now = [100.0]
    queue = ModelQueue[str](
        "demo", AdmissionLimits(timeout_s=30), release=lambda _: None, clock=lambda: now[0]
    )
    assert queue.retry_after_s() == 30  # no rate yet: the wait bound
    for _ in range(10):  # 10 completions over 5 s: 2 per second
        queue.rate.completed()
        now[0] += 0.5
    queue._waiting = 3
    assert queue.retry_after_s() == pytest.approx(4 / 2)
    error = queue._overloaded("full", "x")
    assert error.headers() == {"retry-after": "2", "retry-after-ms": "2000"}


def test_the_rate_forgets_completions_older_than_its_window():
    now = [0.0]
    rate = DrainRate(clock=lambda: now[0])
    rate.completed()
    now[0] = 100.0
    assert rate.per_second() is None


async def test_completions_wake_the_models_lines():
    slots = Slots(0)
    admission: Admission[str] = Admission(AdmissionLimits(), release=slots.release)
    task = asyncio.create_task(admission.queue("demo").admit(slots.starter("a")))
    await settle()
    assert admission.depths() == {"demo": 1}
    slots.free = 1
    admission.completed(frozenset({"demo"}))
    await settle()
    assert task.result() == "a"
    assert admission.depths() == {"demo": 0}


async def test_within_a_priority_tenants_take_turns():
    slots = Slots(0)
    queue = line(slots)
    loud = Ticket("loud", tokens=100)
    quiet = Ticket("quiet", tokens=100)
    names = [f"loud{i}" for i in range(5)]
    tasks = [asyncio.create_task(queue.admit(slots.starter(n), 0, loud)) for n in names]
    await settle()
    tasks.append(asyncio.create_task(queue.admit(slots.starter("quiet"), 0, quiet)))
    await settle()
    for _ in range(3):
        slots.free += 1
        queue.wake()
        await settle()
    assert slots.started == ["loud0", "quiet", "loud1"]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_full_line_refuses_the_largest_share_first():
    slots = Slots(0)
    queue = line(slots, max_waiting=4)
    loud = Ticket("loud", tokens=100)
    louds = [asyncio.create_task(queue.admit(slots.starter(f"l{i}"), 0, loud)) for i in range(4)]
    await settle()
    # The quiet key's request takes the loud key's last place, and the loud key's next is refused.
    quiet = asyncio.create_task(queue.admit(slots.starter("quiet"), 0, Ticket("quiet", tokens=100)))
    await settle()
    assert queue.depth == 4
    assert louds[3].done() and isinstance(louds[3].exception(), ServerOverloadedError)
    assert louds[3].exception().label == "queue_full"
    with pytest.raises(ServerOverloadedError):
        await queue.admit(slots.starter("l4"), 0, loud)
    assert [share.tenant for share in queue.shares()] == ["loud", "quiet"]
    slots.free = 2
    queue.wake()
    await settle()
    assert slots.started == ["l0", "quiet"]
    for task in [*louds[:3], quiet]:
        task.cancel()
    await asyncio.gather(*louds, quiet, return_exceptions=True)
    assert queue.depth == 0 and queue.shares() == []


async def test_a_full_line_never_refuses_a_more_urgent_request_for_a_less_urgent_one():
    slots = Slots(0)
    queue = line(slots, max_waiting=2)
    urgent = Ticket("urgent", tokens=1000)
    tasks = [asyncio.create_task(queue.admit(slots.starter(f"u{i}"), -1, urgent)) for i in range(2)]
    await settle()
    with pytest.raises(ServerOverloadedError):
        await queue.admit(slots.starter("low"), 5, Ticket("low", tokens=1))
    assert not any(task.done() for task in tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_tenant_under_its_share_starts_at_once_in_the_headroom():
    slots = Slots(2, headroom=1)
    queue = line(slots)
    loud, quiet = Ticket("loud", tokens=10), Ticket("quiet", tokens=10)
    for i in range(2):
        await queue.admit(slots.starter(f"l{i}"), 0, loud)
    waiting = [
        asyncio.create_task(queue.admit(slots.starter(f"l{i}"), 0, loud)) for i in range(2, 5)
    ]
    await settle()
    assert queue.depth == 3  # the loud key alone never uses the headroom
    assert await queue.admit(slots.starter("quiet"), 0, quiet) == "quiet"  # past its line
    # A second quiet request would be over its share now that the headroom is used: it waits,
    # but goes before the loud key's later requests.
    second = asyncio.create_task(queue.admit(slots.starter("quiet2"), 0, quiet))
    await settle()
    assert queue.depth == 4 and not second.done()
    for _ in range(2):  # two loud requests end
        queue.ended(loud)
        slots.free += 1
        queue.wake()
        await settle()
    assert slots.started == ["l0", "l1", "quiet", "l2", "quiet2"]
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)


async def test_a_tenant_alone_stays_within_the_target():
    slots = Slots(1, headroom=5)
    queue = line(slots)
    ticket = Ticket("only", tokens=10)
    await queue.admit(slots.starter("a"), 0, ticket)
    task = asyncio.create_task(queue.admit(slots.starter("b"), 0, ticket))
    await settle()
    assert not task.done() and slots.headroom == 5
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_request_started_as_its_client_left_is_not_counted_as_running():
    slots = Slots(1, headroom=1)
    queue = line(slots)
    loud, quiet = Ticket("loud", tokens=10), Ticket("quiet", tokens=10)
    await queue.admit(slots.starter("l0"), 0, loud)
    waiting = asyncio.create_task(queue.admit(slots.starter("l1"), 0, loud))
    await settle()
    queue.ended(loud)
    slots.free += 1
    queue.wake()  # started …
    waiting.cancel()  # … and cancelled before it ran again: given back, and not running
    await asyncio.gather(waiting, return_exceptions=True)
    assert slots.released == ["l1"]
    # Nobody runs: the quiet key is alone and stays within the target (no headroom).
    blocked = asyncio.create_task(queue.admit(slots.starter("q"), 0, quiet))
    await settle()
    assert not blocked.done() and slots.headroom == 1
    blocked.cancel()
    await asyncio.gather(blocked, return_exceptions=True)
