"""The load table gateway workers share: each writes its own row, reads the others', and one
worker at a time chooses and leases."""

from __future__ import annotations

import threading
import time

import pytest

from mistral_serve.engines.registry import EngineRegistry
from mistral_serve.engines.shared_load import SharedLoad, clear_row, create_table, slot_of

URL = "http://10.0.0.1:8000"


@pytest.fixture
def table(tmp_path):
    path = tmp_path / "load-table"
    create_table(path, 3)
    return path


def test_each_worker_sees_the_others_requests_not_its_own(table):
    workers = [SharedLoad(table, 3, index) for index in range(3)]
    slot = slot_of(URL)
    workers[0].add(slot, 2)
    workers[1].add(slot, 1)
    assert [worker.others(slot) for worker in workers] == [1, 2, 3]
    assert workers[2].others(slot_of("http://10.0.0.2:8000")) in (0, 3)  # another engine's slot
    clear_row(table, 3, 0)  # worker 0 died with its requests
    assert workers[2].others(slot) == 1
    for worker in workers:
        worker.close()


def test_the_concurrency_target_holds_across_two_workers_registries(table):
    """Two workers' registries over the same engine, target 2: what one leases is load in the
    other's eyes, and its end is room again."""
    first, second = (
        EngineRegistry([URL], max_inflight=2, shared=SharedLoad(table, 3, index))
        for index in (0, 1)
    )
    engine_in_first, engine_in_second = first.engines[0], second.engines[0]
    now = time.monotonic()
    leases = [first.lease(engine_in_first), first.lease(engine_in_first)]
    assert not second.has_room(engine_in_second, now)
    assert second.readiness()[0]["outstanding"] == 2  # every worker's, in /ready
    leases[0].finish()
    assert second.has_room(engine_in_second, now)
    leases.append(second.lease(engine_in_second))
    assert not first.has_room(engine_in_first, now)


def test_one_worker_at_a_time_chooses(table):
    first, second = SharedLoad(table, 3, 0), SharedLoad(table, 3, 1)
    order: list[str] = []

    def other_worker() -> None:
        with second.exclusive():
            order.append("second")

    with first.exclusive():
        thread = threading.Thread(target=other_worker)
        thread.start()
        time.sleep(0.1)  # the other worker is waiting for the lock meanwhile
        order.append("first")
    thread.join(5)
    assert order == ["first", "second"]
