"""What the gateway hands back to the api layer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol


class ByteStream(Protocol):
    """A streamed body. ``aclose`` must be safe to call at any time, even before iterating."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


@dataclass
class GatewayResponse:
    status: int
    media_type: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    stream: ByteStream | None = None
    #: More headers, already encoded as ASGI sends them (lowercase names): a limited key's
    #: x-ratelimit-*, made encoded because every answer to that key carries them.
    raw_headers: Sequence[tuple[bytes, bytes]] = ()
