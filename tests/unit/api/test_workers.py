"""GATEWAY_WORKERS: how many, when they are refused, and what a worker asks of its parent."""

from __future__ import annotations

import os

import pytest

from mistral_serve.api.workers import (
    check_workers,
    engines_given,
    restart_requester,
    worker_count,
)
from mistral_serve.config import Settings
from mistral_serve.errors import ConfigError


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)


@pytest.mark.parametrize(
    ("values", "gpus", "cpus", "count"),
    [
        ({}, 0, 2, 1),  # the CPU demo: the engines need the cores
        ({"auth": "off"}, 2, 64, 4),  # a 2×H100 box: one per 16 cores, at most 4
        ({"auth": "off"}, 2, 16, 2),  # at least 2 where there are GPUs
        ({"redis_url": "redis://127.0.0.1:6379/0"}, 2, 32, 2),  # keys, limits in Redis
        ({}, 2, 64, 1),  # keys may have limits and nothing counts them in one place
        ({"gateway_workers": 3, "auth": "off"}, 0, 2, 3),  # said: taken as said
    ],
)
def test_auto_is_enough_for_the_box(values, gpus, cpus, count):
    assert worker_count(settings(**values), gpus, cpus) == count


def test_several_workers_need_one_place_to_count_limits():
    check_workers(settings(gateway_workers=2, auth="off"), 2)
    check_workers(settings(gateway_workers=2, redis_url="redis://127.0.0.1:6379/0"), 2)
    with pytest.raises(ConfigError, match="REDIS_URL"):
        check_workers(settings(gateway_workers=2), 2)
    check_workers(settings(), 1)


def test_engines_are_passed_by_name_and_url():
    assert engines_given(["engine 0=http://127.0.0.1:8100", "engine 1=http://[::1]:8101"]) == {
        "http://127.0.0.1:8100": "engine 0",
        "http://[::1]:8101": "engine 1",
    }


def test_a_workers_restart_request_reaches_its_parent_as_one_line():
    read_end, write_end = os.pipe()
    request = restart_requester(write_end)
    assert request("engine 1", "requests in flight,\nno progress for 30 s")
    with os.fdopen(read_end, "rb") as pipe:
        line = pipe.readline()
    assert line == b"restart\tengine 1\trequests in flight, no progress for 30 s\n"
