"""Forwarding an engine's SSE stream to the client, byte for byte.

Upstream chunks are yielded the moment they arrive: no re-encoding, no buffering, no timers. If
the engine fails after the first byte, the client gets an OpenAI-shaped SSE error event and
``data: [DONE]``, so SDKs stop cleanly instead of hanging. Closing the stream early (the client
went away) closes the upstream connection, which makes vLLM abort the generation.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import orjson

from mistral_serve.engines.client import UpstreamResponse
from mistral_serve.errors import MistralServeError
from mistral_serve.protocol import sse

log = logging.getLogger(__name__)


def stream_error_event(error: MistralServeError) -> bytes:
    """The one mapping of an error after the first streamed byte: an error event, then DONE."""
    return sse.event(orjson.dumps(error.to_dict())) + sse.DONE


class ProxyStream:
    """The engine's body as an async byte stream, with a finish hook that runs exactly once."""

    def __init__(
        self,
        upstream: UpstreamResponse,
        *,
        on_finish: Callable[[], None],
        request_id: str,
    ) -> None:
        self._upstream = upstream
        self._on_finish = on_finish
        self._request_id = request_id
        self._finished = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        ends_event = True  # whether the bytes sent so far end on an event boundary
        try:
            async for chunk in self._upstream.chunks():
                ends_event = chunk.endswith(b"\n\n")
                yield chunk
        except MistralServeError as error:
            log.warning("request %s: stream broke off: %s", self._request_id, error.message)
            # Terminate a half-sent event first, or the client would splice the two together.
            yield (b"" if ends_event else b"\n\n") + stream_error_event(error)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if self._finished:
            return
        self._finished = True
        self._upstream.close()
        self._on_finish()
