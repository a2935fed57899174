"""Server-sent events framing, as OpenAI and vLLM write it."""

from __future__ import annotations

MEDIA_TYPE = "text/event-stream"
DONE = b"data: [DONE]\n\n"
#: Headers of every streamed answer: not cached, not buffered by a proxy (nginx).
STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def event(payload: bytes) -> bytes:
    """One ``data:`` event carrying an already-encoded JSON payload."""
    return b"data: " + payload + b"\n\n"
