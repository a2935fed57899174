"""Background runs over a real SQLite store, fed by a fake chat stream (named as one): a chat
stream the test controls, one chunk at a time."""

import asyncio
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from mistral_serve.errors import NoReadyEngineError
from mistral_serve.gateway.responses import GatewayResponse
from mistral_serve.protocol.openai_responses import ResponseRequest
from mistral_serve.responses import background
from mistral_serve.responses.background import BackgroundRuns, stored_events
from mistral_serve.responses.events import ResponseEvents
from mistral_serve.responses.output import Frame
from mistral_serve.store import Store
from mistral_serve.store.database import sqlite_url
from mistral_serve.store.responses import ResponseRecords, StoredResponse
from tests.support import until


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 7, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class FakeChatStream:
    """A fake engine's chat stream: chunks put by the test; closing it is recorded."""

    def __init__(self) -> None:
        self.chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = False

    def say(self, text: str) -> None:
        chunk = {"choices": [{"index": 0, "delta": {"content": text}}]}
        self.chunks.put_nowait(b"data: " + orjson.dumps(chunk) + b"\n\n")

    def end(self) -> None:
        usage = {"prompt_tokens": 3, "completion_tokens": 2}
        self.chunks.put_nowait(b"data: " + orjson.dumps({"choices": [], "usage": usage}) + b"\n\n")
        self.chunks.put_nowait(b"data: [DONE]\n\n")
        self.chunks.put_nowait(None)

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        chunk = await self.chunks.get()
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        self.closed = True


@pytest.fixture
async def records(tmp_path):
    store = await Store.open(sqlite_url(tmp_path))
    yield ResponseRecords(store, Clock())
    await store.close()


@pytest.fixture(autouse=True)
def quick_flush(monkeypatch):
    monkeypatch.setattr(background, "FLUSH_S", 0.02)
    monkeypatch.setattr(background, "POLL_S", 0.02)


async def queued(records: ResponseRecords, response_id: str = "resp_1"):
    frame = Frame(response_id, 1, ResponseRequest(model="demo", background=True))
    events = ResponseEvents(frame, status="queued")
    await records.put(
        StoredResponse(
            response_id,
            "k",
            "queued",
            "demo",
            None,
            response_id,
            None,
            [],
            events.snapshot(),
            datetime(2027, 1, 1, tzinfo=UTC),
        )
    )
    return events, [events.created(), events.queued()]


def starting(stream: FakeChatStream):
    async def start() -> GatewayResponse:
        return GatewayResponse(200, "text/event-stream", stream=stream)

    return start


async def test_a_run_is_written_as_it_goes_and_followed_to_its_end(records):
    runs = BackgroundRuns(records, Clock())
    events, opening = await queued(records)
    stream = FakeChatStream()
    run = runs.start(events, opening, starting(stream))
    stream.say("Hel")
    await until(lambda: any(e["type"] == "response.output_text.delta" for e in run.made))
    await asyncio.sleep(0.1)  # a flush or two
    stored = await records.get("resp_1", "k")
    assert stored.status == "in_progress"
    assert stored.response["output"][0]["content"][0]["text"] == "Hel"
    stream.say("lo")
    stream.end()
    followed = [event async for batch in run.follow(after=-1) for event in batch]
    assert followed[-1]["type"] == "response.completed"
    assert [e["sequence_number"] for e in followed] == list(range(len(followed)))
    await until(lambda: run.done)
    stored = await records.get("resp_1", "k")
    assert stored.status == "completed"
    assert stored.response["output"][0]["content"][0]["text"] == "Hello"
    replayed = [e async for batch in stored_events(records, stored, after=2) for e in batch]
    assert replayed == followed[3:]  # the store has every event, in order


async def test_cancelled_here_closes_the_engine_stream(records):
    runs = BackgroundRuns(records, Clock())
    events, opening = await queued(records)
    stream = FakeChatStream()
    run = runs.start(events, opening, starting(stream))
    stream.say("Hel")
    await until(lambda: len(run.made) > 4)
    final = await runs.cancel("resp_1")
    assert final["status"] == "cancelled" and stream.closed
    assert (await records.get("resp_1", "k")).status == "cancelled"
    assert run.made[-1]["type"] == "response.cancelled"


async def test_cancelled_elsewhere_stops_at_the_next_write(records):
    runs = BackgroundRuns(records, Clock())
    events, opening = await queued(records)
    stream = FakeChatStream()
    run = runs.start(events, opening, starting(stream))
    stream.say("Hel")
    await until(lambda: len(run.made) > 4)
    # Another gateway's cancel: the store row says so.
    stored = await records.get("resp_1", "k")
    assert await records.advance("resp_1", "cancelled", {**stored.response, "status": "cancelled"})
    await until(lambda: run.done)
    assert stream.closed
    assert (await records.get("resp_1", "k")).status == "cancelled"


async def test_a_refused_start_is_a_failed_response(records):
    runs = BackgroundRuns(records, Clock())
    events, opening = await queued(records)

    async def refused() -> GatewayResponse:
        raise NoReadyEngineError("No engine serving `demo` is ready.")

    run = runs.start(events, opening, refused)
    await until(lambda: run.done)
    stored = await records.get("resp_1", "k")
    assert stored.status == "failed"
    assert stored.response["error"]["code"] == "no_ready_engine"


async def test_runs_of_a_dead_gateway_are_failed_by_another(records):
    clock = Clock()
    records._clock = clock  # the store's clock is the one moved
    await queued(records, "resp_lost")
    survivor = BackgroundRuns(records, clock, lost_after_s=30)
    assert await survivor.fail_lost() == 0  # written just now
    clock.now += timedelta(seconds=31)
    assert await survivor.fail_lost() == 1
    stored = await records.get("resp_lost", "k")
    assert stored.status == "failed" and stored.response["error"]["code"] == "gateway_lost"
    [event] = await records.events("resp_lost", after=-1)
    assert event["type"] == "response.failed"


async def test_stopping_lets_runs_finish_then_fails_the_rest(records):
    runs = BackgroundRuns(records, Clock())
    events, opening = await queued(records)
    stream = FakeChatStream()
    run = runs.start(events, opening, starting(stream))
    stream.say("Hel")
    await runs.stop(grace_s=0.1)
    assert run.done and stream.closed
    stored = await records.get("resp_1", "k")
    assert stored.status == "failed" and stored.response["error"]["code"] == "gateway_stopped"
