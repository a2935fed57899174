"""Background responses: created at once as ``queued``, run by the gateway that took them.

A run is the response's chat stream, read in a task of this gateway (the request waits in its
model's line at its key's priority like any other). Its events are kept in memory, for streams
that follow it here, and written to the store every :data:`FLUSH_S` with the response as it
stands, in one transaction: any gateway can ``GET`` it, or resume its stream from a sequence
number. Each write is also the run's heartbeat.

- **Cancelled** (``POST …/cancel``): here, the run's task is cancelled, which closes the
  engine's stream (vLLM aborts the generation); elsewhere, the store row becomes
  ``cancelled`` and the running gateway's next write finds it so and cancels its task.
- **Lost**: a gateway that dies takes its runs with it. Every gateway looks, every third of
  RESPONSES_LOST_AFTER_S, for running responses nobody wrote for that long and marks them
  ``failed`` (``gateway_lost``). Not run again: the key would pay twice, and a client that
  followed the stream has already seen part of an answer that a second run would not repeat.
- **Stopped**: a gateway shutting down lets its runs finish for up to its shutdown timeout,
  then fails the rest (``gateway_stopped``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import timedelta
from typing import Any

import orjson

from mistral_serve.errors import MistralServeError
from mistral_serve.gateway.responses import ByteStream, GatewayResponse
from mistral_serve.responses.events import Event, ResponseEvents
from mistral_serve.responses.stream import ChatEvents
from mistral_serve.store import WallClock
from mistral_serve.store.responses import RUNNING, ResponseRecords, StoredResponse

log = logging.getLogger(__name__)

#: How often a run writes its new events and state (its heartbeat).
FLUSH_S = 0.5
#: How often a stream following another gateway's run reads the store.
POLL_S = 0.2

#: Starts the run's chat stream (the pipeline's answer): awaited inside the run's task.
ChatStarter = Callable[[], Coroutine[Any, Any, GatewayResponse]]
#: Told the response as it ended (adds it to its conversation).
Ended = Callable[[dict[str, Any]], Coroutine[Any, Any, None]]


def error_of(error: MistralServeError) -> dict[str, str]:
    """An error as a response's ``error`` (OpenAI's: a code and a message)."""
    return {"code": error.code or error.label, "message": error.message}


class Run:
    """One background response running in this gateway."""

    def __init__(
        self, events: ResponseEvents, records: ResponseRecords, opening: list[Event]
    ) -> None:
        self.events = events
        self._records = records
        self.made: list[Event] = list(opening)
        self._unsaved: list[Event] = list(opening)
        self._changed = asyncio.Condition()
        self.task: asyncio.Task[None] | None = None
        #: Why the task was cancelled: "cancelled" (asked to) or "stopped" (shutdown).
        self.stop_reason: str | None = None
        self.done = False

    @property
    def id(self) -> str:
        return self.events.frame.id

    async def add(self, events: list[Event]) -> None:
        self.made += events
        self._unsaved += events
        async with self._changed:
            self._changed.notify_all()

    async def flush(self) -> bool:
        """Write the new events and the state; False when the store says it is over (it
        was cancelled, or given up as lost, elsewhere)."""
        events, self._unsaved = self._unsaved, []
        return await self._records.advance(self.id, self.events.status, self.events.final(), events)

    async def follow(self, after: int) -> AsyncIterator[list[Event]]:
        """The events after sequence number ``after``, as they are made, until the end."""
        sent = after + 1  # the events are numbered from 0, in order
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda sent=sent: len(self.made) > sent or self.done)
            if len(self.made) > sent:
                batch, sent = self.made[sent:], len(self.made)
                yield batch
            elif self.done:
                return


class BackgroundRuns:
    """The background responses this gateway runs."""

    def __init__(
        self, records: ResponseRecords, clock: WallClock, *, lost_after_s: float = 30.0
    ) -> None:
        self._records = records
        self._clock = clock
        self._lost_after_s = lost_after_s
        self._runs: dict[str, Run] = {}
        self._watch: asyncio.Task[None] | None = None

    def get(self, response_id: str) -> Run | None:
        return self._runs.get(response_id)

    def start(
        self,
        events: ResponseEvents,
        opening: list[Event],
        chat: ChatStarter,
        *,
        ended: Ended | None = None,
    ) -> Run:
        """Run the response (already stored as queued; ``opening``: its first events) in a
        task of its own; ``ended`` is given the response as it ended, once it is written."""
        run = Run(events, self._records, opening)
        self._runs[run.id] = run
        run.task = asyncio.get_running_loop().create_task(
            self._run(run, chat, ended), name=f"background {run.id}"
        )
        return run

    async def _run(self, run: Run, chat: ChatStarter, ended: Ended | None) -> None:
        events = run.events
        flushing = asyncio.create_task(self._flushing(run))
        stream: ByteStream | None = None
        try:
            answer = await chat()
            if answer.stream is None:  # refused before it started (the engine's 4xx)
                await run.add(events.failed(_refusal(answer)))
                return
            stream = answer.stream
            await run.add(events.in_progress())

            async def nothing(_: ResponseEvents) -> None:
                return None

            async for made in ChatEvents(stream, events, ended=nothing, clock=self._now):
                await run.add(made)
        except asyncio.CancelledError:
            if run.stop_reason == "stopped":
                await run.add(
                    events.failed(
                        {
                            "code": "gateway_stopped",
                            "message": "The gateway running it stopped before it ended.",
                        }
                    )
                )
            else:
                await run.add(events.cancelled())
        except MistralServeError as error:
            await run.add(events.failed(error_of(error)))
        except Exception:
            log.exception("background response %s failed", run.id)
            await run.add(events.failed({"code": "server_error", "message": "unexpected error"}))
        finally:
            flushing.cancel()
            if stream is not None:
                await stream.aclose()  # a cancelled run's engine request is aborted
            await self._last_write(run)
            if ended is not None:
                try:
                    await ended(run.events.final())
                except Exception as exc:
                    log.warning(
                        "background response %s: not added to its conversation: %s", run.id, exc
                    )
            run.done = True
            await run.add([])
            self._runs.pop(run.id, None)

    async def _last_write(self, run: Run) -> None:
        try:
            if not await run.flush() and run.events.status != "cancelled":
                log.info("background response %s ended after it was cancelled", run.id)
        except Exception as exc:  # the store is away: the lost-run check will fail it
            log.warning("background response %s: its end was not written: %s", run.id, exc)

    async def _flushing(self, run: Run) -> None:
        """Every FLUSH_S, write what is new; stop the run if it was cancelled elsewhere."""
        while True:
            await asyncio.sleep(FLUSH_S)
            try:
                running = await run.flush()
            except Exception as exc:
                log.warning("background response %s: not written: %s", run.id, exc)
                continue
            if not running and run.task is not None:
                run.stop_reason = "cancelled"
                run.task.cancel()
                return

    async def cancel(self, response_id: str) -> dict[str, Any] | None:
        """Cancel a run of this gateway; its final response (None: not running here)."""
        run = self._runs.get(response_id)
        if run is None or run.task is None:
            return None
        run.stop_reason = "cancelled"
        run.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(run.task)
        return run.events.final()

    # -- lost and stopped runs -------------------------------------------------------------------
    def watch(self) -> None:
        """Look for other gateways' lost runs, from now on."""
        self._watch = asyncio.get_running_loop().create_task(self._watching(), name="lost-runs")

    async def _watching(self) -> None:
        while True:
            try:
                await self.fail_lost()
            except Exception as exc:
                log.warning("could not look for lost background responses: %s", exc)
            await asyncio.sleep(self._lost_after_s / 3)

    async def fail_lost(self) -> int:
        """Mark failed every running response nobody wrote for RESPONSES_LOST_AFTER_S; how
        many."""
        before = self._clock() - timedelta(seconds=self._lost_after_s)
        failed = 0
        for stored in await self._records.stale(before):
            if stored.id in self._runs:
                continue  # ours, and alive (a slow store write)
            error = {
                "code": "gateway_lost",
                "message": "The gateway running it stopped before it ended; create it again.",
            }
            response = {**stored.response, "status": "failed", "error": error}
            earlier = await self._records.events(stored.id, after=-1)
            sequence = earlier[-1]["sequence_number"] + 1 if earlier else 0
            event = {"type": "response.failed", "sequence_number": sequence, "response": response}
            if await self._records.advance(stored.id, "failed", response, [event]):
                log.warning("background response %s: its gateway was lost; failed", stored.id)
                failed += 1
        return failed

    async def stop(self, grace_s: float) -> None:
        """Shutting down: let the runs finish for up to ``grace_s``, then fail the rest."""
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        tasks = [run.task for run in self._runs.values() if run.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=grace_s)
        for run in list(self._runs.values()):
            if run.task is not None and not run.task.done():
                run.stop_reason = "stopped"
                run.task.cancel()
        remaining = [run.task for run in self._runs.values() if run.task is not None]
        if remaining:
            await asyncio.wait(remaining)

    def _now(self) -> int:
        return int(self._clock().timestamp())


async def stored_events(
    records: ResponseRecords, stored: StoredResponse, after: int
) -> AsyncIterator[list[Event]]:
    """A background response's events after ``after`` from the store, following it (every
    POLL_S) while it runs on another gateway, until its end."""
    while True:
        batch = await records.events(stored.id, after)
        if batch:
            after = batch[-1]["sequence_number"]
            yield batch
        current = await records.get(stored.id, stored.key_id)
        if current is None or current.status not in RUNNING:
            last = await records.events(stored.id, after)  # written with the final state
            if last:
                yield last
            return
        if not batch:
            await asyncio.sleep(POLL_S)


def _refusal(answer: GatewayResponse) -> dict[str, str]:
    """An engine's (or a limit's) refusal as a response's error."""
    try:
        error = orjson.loads(answer.body)["error"]
        return {
            "code": str(error.get("code") or error.get("type") or answer.status),
            "message": str(error.get("message")),
        }
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return {"code": str(answer.status), "message": answer.body.decode(errors="replace")}
