"""Where the engines are: fixed URLs, and DNS names that stand for every engine behind them.

ENGINE_URLS lists ``http(s)://host:port`` (one engine each) and ``dns://name:port``: every
address ``name`` resolves to, each an engine on ``port``. A Kubernetes headless Service answers
with the address of each ready engine pod, a Compose network alias with each container's. Names
are looked up again every ENGINE_DNS_REFRESH_S, so engines that come and go are followed without
a gateway restart.

A name that does not exist (NXDOMAIN: a headless Service with no ready pod) stands for no
engine. A lookup that fails for another reason (resolver unreachable, timeout) keeps the last
answer: a DNS blip must not empty the routing table.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence

from mistral_serve.config import DnsName, parse_engine_entry

log = logging.getLogger(__name__)

#: host, port → the addresses the host resolves to. Raises socket.gaierror like getaddrinfo.
Resolver = Callable[[str, int], Awaitable[list[str]]]

# getaddrinfo's answers for "this name has no address": authoritative, not a failure.
_NO_SUCH_NAME = frozenset(
    code
    for code in (getattr(socket, "EAI_NONAME", None), getattr(socket, "EAI_NODATA", None))
    if code is not None
)


async def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's resolver (/etc/hosts, then DNS with the search domains), off the
    event loop."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def engine_url(address: str, port: int) -> str:
    """``http://address:port``, bracketing an IPv6 address."""
    host = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
    return f"http://{host}:{port}"


def split_entries(entries: Sequence[str]) -> tuple[list[str], list[DnsName]]:
    """ENGINE_URLS split into fixed engine URLs and DNS names."""
    parsed = [parse_engine_entry(entry) for entry in entries]
    urls = [entry for entry in parsed if isinstance(entry, str)]
    return urls, [entry for entry in parsed if isinstance(entry, DnsName)]


class EngineDirectory:
    """The engine URLs ENGINE_URLS stands for right now."""

    def __init__(self, entries: Sequence[str], resolver: Resolver = system_resolver) -> None:
        self._urls, self._names = split_entries(entries)
        self._resolver = resolver
        self._last: dict[DnsName, list[str]] = {}

    @property
    def dynamic(self) -> bool:
        """Whether the answer can change (some entry is a DNS name)."""
        return bool(self._names)

    async def resolve(self) -> list[str]:
        """Fixed URLs first, in order, then every resolved address, sorted; no duplicates."""
        answers = await asyncio.gather(*(self._lookup(name) for name in self._names))
        resolved = sorted({url for urls in answers for url in urls})
        return list(dict.fromkeys([*self._urls, *resolved]))

    async def _lookup(self, name: DnsName) -> list[str]:
        try:
            addresses = await self._resolver(name.host, name.port)
        except socket.gaierror as exc:
            if exc.errno in _NO_SUCH_NAME:
                addresses = []
            else:
                log.warning("cannot resolve %s (%s): keeping its last engines", name, exc)
                return self._last.get(name, [])
        urls = sorted({engine_url(address, name.port) for address in addresses})
        if urls != self._last.get(name):
            log.info("%s resolves to %s", name, ", ".join(urls) or "no engine")
        self._last[name] = urls
        return urls

    async def follow(
        self, apply: Callable[[list[str]], Awaitable[None]], interval_s: float
    ) -> None:
        """Resolve every ``interval_s`` and hand each answer to ``apply``; runs until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await apply(await self.resolve())
            except Exception:  # a bug here must not stop the following
                log.exception("engine discovery failed")
