"""ENGINE_URLS resolution: fixed URLs, dns://name:port names, and following their answers."""

from __future__ import annotations

import asyncio
import socket

import pytest

from mistral_serve.engines.discovery import EngineDirectory, engine_url, system_resolver


class FakeDns:
    """A resolver whose answers each test sets: addresses, or a getaddrinfo error code."""

    def __init__(self, **answers: list[str] | int) -> None:
        self.answers: dict[str, list[str] | int] = dict(answers)
        self.asked: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        answer = self.answers[host]
        if isinstance(answer, int):
            raise socket.gaierror(answer, "lookup failed")
        return answer


async def test_fixed_urls_are_kept_as_given_and_never_looked_up():
    dns = FakeDns()
    directory = EngineDirectory(["http://b:8000", "http://a:8000"], resolver=dns)
    assert not directory.dynamic
    assert await directory.resolve() == ["http://b:8000", "http://a:8000"]
    assert dns.asked == []


async def test_a_name_stands_for_every_address_it_resolves_to():
    dns = FakeDns(engines=["10.0.0.7", "10.0.0.5", "10.0.0.7", "fd00::3"])
    directory = EngineDirectory(["dns://engines:8000"], resolver=dns)
    assert directory.dynamic
    assert await directory.resolve() == [
        "http://10.0.0.5:8000",
        "http://10.0.0.7:8000",
        "http://[fd00::3]:8000",
    ]
    assert dns.asked == [("engines", 8000)]


async def test_fixed_urls_come_first_and_nothing_is_listed_twice():
    dns = FakeDns(engines=["10.0.0.9", "10.0.0.5"])
    directory = EngineDirectory(["http://10.0.0.5:8000", "dns://engines:8000"], resolver=dns)
    assert await directory.resolve() == ["http://10.0.0.5:8000", "http://10.0.0.9:8000"]


async def test_a_name_that_does_not_exist_stands_for_no_engine():
    # A headless Service with no ready pod answers NXDOMAIN: no engines, not an error.
    dns = FakeDns(engines=["10.0.0.5"])
    directory = EngineDirectory(["dns://engines:8000"], resolver=dns)
    assert await directory.resolve() == ["http://10.0.0.5:8000"]
    dns.answers["engines"] = socket.EAI_NONAME
    assert await directory.resolve() == []


async def test_a_failed_lookup_keeps_the_last_answer(caplog):
    dns = FakeDns(engines=["10.0.0.5", "10.0.0.6"])
    directory = EngineDirectory(["dns://engines:8000"], resolver=dns)
    first = await directory.resolve()
    dns.answers["engines"] = socket.EAI_AGAIN  # resolver unreachable, timed out
    assert await directory.resolve() == first
    assert "keeping its last engines" in caplog.text


async def test_follow_hands_over_each_new_answer():
    dns = FakeDns(engines=["10.0.0.5"])
    directory = EngineDirectory(["dns://engines:8000"], resolver=dns)
    seen: list[list[str]] = []
    twice = asyncio.Event()

    async def apply(urls: list[str]) -> None:
        seen.append(urls)
        dns.answers["engines"] = ["10.0.0.5", "10.0.0.6"]  # an engine scales out
        if len(seen) == 2:
            twice.set()

    following = asyncio.create_task(directory.follow(apply, interval_s=0.01))
    try:
        await asyncio.wait_for(twice.wait(), timeout=5)
    finally:
        following.cancel()
    assert seen[0] == ["http://10.0.0.5:8000"]
    assert seen[1] == ["http://10.0.0.5:8000", "http://10.0.0.6:8000"]


async def test_follow_survives_a_failing_apply(caplog):
    directory = EngineDirectory(["dns://engines:8000"], resolver=FakeDns(engines=["10.0.0.5"]))
    calls = 0
    thrice = asyncio.Event()

    async def apply(urls: list[str]) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            thrice.set()
        raise RuntimeError("boom")

    following = asyncio.create_task(directory.follow(apply, interval_s=0.01))
    try:
        await asyncio.wait_for(thrice.wait(), timeout=5)  # it went on after each failure
    finally:
        following.cancel()
    assert "engine discovery failed" in caplog.text


async def test_the_system_resolver_reads_the_hosts_file():
    assert "127.0.0.1" in await system_resolver("localhost", 8000)


@pytest.mark.parametrize(
    ("address", "url"),
    [("10.1.2.3", "http://10.1.2.3:8000"), ("::1", "http://[::1]:8000")],
)
def test_engine_url_brackets_ipv6(address, url):
    assert engine_url(address, 8000) == url
