"""Racing proxied work against the client leaving."""

from __future__ import annotations

import asyncio

import pytest

from mistral_serve.api.responses import ClientGone, unless_client_leaves


def receive_disconnect_after(delay_s: float | None):
    async def receive():
        if delay_s is None:
            await asyncio.Event().wait()  # the client stays
        await asyncio.sleep(delay_s)
        return {"type": "http.disconnect"}

    return receive


async def test_a_client_that_leaves_cancels_the_work():
    cancelled = asyncio.Event()

    async def endless():
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(ClientGone):
        await unless_client_leaves(endless(), receive_disconnect_after(0.05))
    assert cancelled.is_set()


async def test_finished_work_returns_its_result():
    async def quick():
        return "answer"

    assert await unless_client_leaves(quick(), receive_disconnect_after(None)) == "answer"


async def test_the_works_own_error_propagates():
    async def broken():
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await unless_client_leaves(broken(), receive_disconnect_after(None))
