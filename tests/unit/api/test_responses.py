"""Racing proxied work against the client leaving."""

from __future__ import annotations

import asyncio

import pytest

from mistral_serve.api.responses import ClientGone, ClientWatch, unless_client_leaves


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
        await unless_client_leaves(endless(), ClientWatch(receive_disconnect_after(0.05)))
    assert cancelled.is_set()


async def test_finished_work_returns_its_result():
    async def quick():
        return "answer"

    assert (
        await unless_client_leaves(quick(), ClientWatch(receive_disconnect_after(None))) == "answer"
    )


async def test_the_works_own_error_propagates():
    async def broken():
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await unless_client_leaves(broken(), ClientWatch(receive_disconnect_after(None)))


async def test_one_watch_serves_the_whole_request_and_stops_with_it():
    """The route's work and then its stream are guarded by the same watch (one task); a client
    gone between the two is noticed at once, and a cancellation that is not the client's stays
    a cancellation."""
    watch = ClientWatch(receive_disconnect_after(0.05))

    async def quick():
        return "headers"

    assert await unless_client_leaves(quick(), watch) == "headers"
    await asyncio.sleep(0.1)  # the client leaves between the answer's start and its body
    assert watch.gone
    with pytest.raises(ClientGone):
        with watch.guarding():
            pass
    watch.stop()

    other = ClientWatch(receive_disconnect_after(None))

    async def cancelled_by_someone_else():
        with other.guarding():
            await asyncio.Event().wait()

    task = asyncio.ensure_future(cancelled_by_someone_else())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    other.stop()
