"""The Responses API against real engines, through the official `openai` SDK as users call it:
create (plain, streamed, with a function tool round trip, with a JSON schema), retrieve,
input items, input tokens, delete; a chain continued on a second gateway process over the same
PostgreSQL store, each key seeing only its own responses; the ledger row and the span."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import httpx
import openai
import pytest
from agents import Agent, ModelSettings, Runner, function_tool, set_tracing_disabled
from agents.models.openai_responses import OpenAIResponsesModel
from pydantic import BaseModel

from mistral_serve.telemetry import semconv
from tests.services import postgres_database_sync
from tests.support import engine_stats, paused, seconds_until, stop_process

from .conftest import Stack, start_fleet
from .test_telemetry import gateway_span, spans_of, traceparent

pytestmark = pytest.mark.integration

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["Paris", "Lyon"]}},
        "required": ["city"],
    },
}
FORCED = {"type": "function", "name": "get_weather"}
#: How soon the gateways here give up a background response whose gateway died.
LOST_AFTER_S = 3
#: How soon the gateways here give up a background response whose gateway died.
LOST_AFTER_S = 3


def test_create_retrieve_list_and_delete(stack: Stack):
    client = stack.client()
    response = client.responses.create(
        model="demo",
        instructions="Answer briefly.",
        input="Say hello.",
        max_output_tokens=8,
        metadata={"team": "search"},
    )
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status in ("completed", "incomplete")
    assert response.output_text and response.output[0].type == "message"
    assert response.usage.output_tokens <= 8 and response.usage.input_tokens > 0
    assert response.usage.input_tokens_details.cached_tokens >= 0
    assert response.metadata == {"team": "search"}

    again = client.responses.retrieve(response.id)
    assert again.output_text == response.output_text and again.status == response.status
    items = client.responses.input_items.list(response.id)
    assert [item.type for item in items.data] == ["message"]
    assert items.data[0].content[0].text == "Say hello."

    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_a_stream_is_the_documented_event_sequence(stack: Stack):
    client = stack.client()
    with client.responses.stream(
        model="demo", input="Tell me a story.", max_output_tokens=12
    ) as stream:
        events = list(stream)
    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert "response.output_text.delta" in kinds
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.incomplete"
        if events[-1].response.status == "incomplete"
        else "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    final = events[-1].response
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert final.output_text == deltas
    assert final.usage.output_tokens <= 12
    # The stream's end was stored before the client saw it.
    assert client.responses.retrieve(final.id).output_text == deltas


def test_a_function_tool_round_trip(stack: Stack):
    client = stack.client()
    called = client.responses.create(
        model="demo",
        input="Weather in Paris?",
        tools=[WEATHER],
        tool_choice=FORCED,
        max_output_tokens=60,
    )
    [call] = [item for item in called.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments)["city"] in ("Paris", "Lyon")
    answered = client.responses.create(
        model="demo",
        previous_response_id=called.id,
        tools=[WEATHER],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 °C"}],
        max_output_tokens=8,
    )
    assert answered.previous_response_id == called.id and answered.output_text
    # The model read the whole chain: the question, its call, the tool's answer.
    assert answered.usage.input_tokens > called.usage.input_tokens


def test_a_streamed_function_call(stack: Stack):
    stream = stack.client().responses.create(
        model="demo",
        input="Weather?",
        tools=[WEATHER],
        tool_choice=FORCED,
        max_output_tokens=60,
        stream=True,
    )
    events = list(stream)
    done = next(event for event in events if event.type == "response.function_call_arguments.done")
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert done.arguments == deltas and json.loads(deltas)["city"] in ("Paris", "Lyon")
    assert events[-1].type == "response.completed"


def test_an_engine_failing_mid_stream_ends_the_response_failed(stack: Stack):
    """The engine core stops under a streamed response (demo-v1: no other engine serves it):
    after the stall timeout the stream ends with response.failed, and nothing hangs."""
    client = stack.client(max_retries=0, timeout=120)
    stream = client.responses.create(
        model="demo-v1", input="Talk on.", max_output_tokens=4000, stream=True
    )
    events = iter(stream)
    assert next(events).type == "response.created"
    with paused(stack.engine_core("demo-v1")):
        rest = list(events)
    assert rest[-1].type == "response.failed"
    failed = rest[-1].response
    assert failed.status == "failed" and failed.error.code == "engine_stalled"
    assert client.responses.retrieve(failed.id).status == "failed"  # stored as it ended
    seconds_until(lambda: engine_ready(stack, "demo-v1"), 60, "demo-v1 back after a canary")
    assert client.responses.create(model="demo-v1", input="hi", max_output_tokens=2).output_text


def engine_ready(stack: Stack, model: str) -> bool:
    engines = httpx.get(stack.gateway_url + "/ready", timeout=10).json()["engines"]
    return any(model in engine["models"] and engine["state"] == "ready" for engine in engines)


def test_json_schema_output(stack: Stack):
    """The answer follows the schema. (Its values are bounded: the demo model's random weights
    once wrote an integer of 40 digits and reached max_output_tokens inside it.)"""
    response = stack.client().responses.create(
        model="demo",
        input="Is the sea blue? Answer as JSON.",
        text={
            "format": {
                "type": "json_schema",
                "name": "answer",
                "schema": {
                    "type": "object",
                    "properties": {
                        "answer": {"type": "string", "enum": ["yes", "no"]},
                        "sure": {"type": "boolean"},
                    },
                    "required": ["answer", "sure"],
                    "additionalProperties": False,
                },
                "strict": True,
            }
        },
        max_output_tokens=40,
    )
    answer = json.loads(response.output_text)
    assert answer["answer"] in ("yes", "no") and isinstance(answer["sure"], bool)


def test_an_openai_agents_sdk_agent_runs_to_completion(stack: Stack):
    """An agent with one function tool: the model calls it (forced, then the SDK lets the
    model choose), reads its answer and ends with a structured answer (a JSON schema, so the
    demo model's output completes)."""
    set_tracing_disabled(True)  # the SDK would export its traces to OpenAI
    called: list[str] = []

    @function_tool
    def get_weather(city: Literal["Paris", "Lyon"]) -> str:
        """The weather in a city."""
        called.append(city)
        return f"Sunny in {city}"

    class Report(BaseModel):
        sunny: bool

    client = openai.AsyncOpenAI(base_url=stack.gateway_url + "/v1", api_key="unused")
    agent = Agent(
        name="weather",
        instructions="Use the tool, then report.",
        tools=[get_weather],
        model=OpenAIResponsesModel(model="demo", openai_client=client),
        model_settings=ModelSettings(tool_choice="get_weather", max_tokens=48),
        output_type=Report,
    )

    async def run() -> tuple[object, object]:
        plain = await Runner.run(agent, "Weather in Paris?", max_turns=4)
        streamed = Runner.run_streamed(agent, "Weather in Lyon?", max_turns=4)
        async for _ in streamed.stream_events():
            pass
        return plain, streamed

    plain, streamed = asyncio.run(run())
    assert isinstance(plain.final_output, Report) and isinstance(streamed.final_output, Report)
    assert len(called) == 2  # each run called the tool once, then answered
    kinds = [type(item).__name__ for item in plain.new_items]
    assert kinds == ["ToolCallItem", "ToolCallOutputItem", "MessageOutputItem"]


def test_input_tokens_counts_as_the_response_reads(stack: Stack):
    client = stack.client()
    response = client.responses.create(
        model="demo", input="Count these words please.", max_output_tokens=2
    )
    counted = client.responses.input_tokens.count(model="demo", input="Count these words please.")
    assert counted.input_tokens == response.usage.input_tokens
    with_tools = client.responses.input_tokens.count(
        model="demo", input="Count these words please.", tools=[WEATHER]
    )
    assert with_tools.input_tokens > counted.input_tokens


def test_truncation(stack: Stack):
    """The demo model reads 8192 tokens: two inputs of about 5000 fit only without the first."""
    client = stack.client()
    long_text = "word " * 5000
    first = client.responses.create(model="demo", input=long_text, max_output_tokens=1)
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(
            model="demo", previous_response_id=first.id, input=long_text, max_output_tokens=1
        )
    assert refused.value.body["param"] == "input"
    cut = client.responses.create(
        model="demo",
        previous_response_id=first.id,
        input=long_text,
        truncation="auto",
        max_output_tokens=1,
    )
    assert cut.truncation == "auto" and cut.usage.input_tokens < 8192


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools.0.type"),
        ({"reasoning": {"effort": "high"}}, "reasoning"),
        ({"extra_body": {"frobnicate": 1}}, "frobnicate"),
        ({"previous_response_id": "resp_nope"}, "previous_response_id"),
    ],
)
def test_what_is_not_served_is_a_4xx_naming_the_field(stack: Stack, fields, param):
    with pytest.raises((openai.BadRequestError, openai.NotFoundError)) as refused:
        stack.client().responses.create(model="demo", input="hi", **fields)
    assert refused.value.body["param"] == param


def running_on_engine(stack: Stack) -> float:
    return engine_stats(stack.engine_urls["demo"]).running


def test_background_create_poll_cancel(stack: Stack):
    client = stack.client()
    response = client.responses.create(
        model="demo", input="A very long story.", background=True, max_output_tokens=4000
    )
    assert response.status == "queued" and response.background
    seconds_until(
        lambda: len(client.responses.retrieve(response.id).output_text) > 0, 30, "some output"
    )
    assert client.responses.retrieve(response.id).status == "in_progress"
    cancelled = client.responses.cancel(response.id)
    assert cancelled.status == "cancelled"
    seconds_until(lambda: running_on_engine(stack) == 0, 10, "the engine request aborted")
    assert client.responses.retrieve(response.id).status == "cancelled"


def test_a_background_stream_resumes_where_it_was_left(stack: Stack):
    client = stack.client()
    stream = client.responses.create(
        model="demo", input="Tell me more.", background=True, stream=True, max_output_tokens=24
    )
    seen = []
    for event in stream:
        seen.append(event)
        if len(seen) == 6:
            break
    stream.close()  # the client leaves; the response goes on
    kinds = [event.type for event in seen]
    assert kinds[:3] == ["response.created", "response.queued", "response.in_progress"]
    resumed = list(
        client.responses.retrieve(
            seen[0].response.id, stream=True, starting_after=seen[-1].sequence_number
        )
    )
    numbers = [event.sequence_number for event in seen + resumed]
    assert numbers == list(range(len(numbers)))
    assert resumed[-1].type in ("response.completed", "response.incomplete")
    final = client.responses.retrieve(seen[0].response.id)
    assert final.status == resumed[-1].response.status
    assert final.output_text == resumed[-1].response.output_text


@pytest.fixture(scope="module")
def two_gateways(stack: Stack, otlp, tmp_path_factory):
    """Two gateway processes over one PostgreSQL store, keys required."""
    with postgres_database_sync() as url:
        fleet = start_fleet(
            stack,
            otlp,
            tmp_path_factory.mktemp("responses"),
            2,
            DATABASE_URL=url,
            RESPONSES_LOST_AFTER_S=str(LOST_AFTER_S),
        )
        try:
            yield fleet
        finally:
            for process in fleet.processes:
                stop_process(process)


def test_a_chain_continues_on_another_gateway_and_only_for_its_key(two_gateways, otlp):
    fleet = two_gateways
    key_id, key = fleet.create_key()
    _, other_key = fleet.create_key()
    first_gateway = openai.OpenAI(base_url=fleet.urls[0] + "/v1", api_key=key)
    second_gateway = openai.OpenAI(base_url=fleet.urls[1] + "/v1", api_key=key)
    header, trace_id, _ = traceparent()
    first = first_gateway.responses.create(
        model="demo",
        input="Remember: blue.",
        max_output_tokens=4,
        extra_headers={"traceparent": header},
    )
    second = second_gateway.responses.create(
        model="demo", previous_response_id=first.id, input="What colour?", max_output_tokens=4
    )
    assert second.previous_response_id == first.id
    assert second.usage.input_tokens > first.usage.input_tokens  # it read the first exchange
    assert second_gateway.responses.retrieve(first.id).id == first.id

    stranger = openai.OpenAI(base_url=fleet.urls[1] + "/v1", api_key=other_key)
    with pytest.raises(openai.NotFoundError):
        stranger.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        stranger.responses.create(model="demo", previous_response_id=first.id, input="hi")
    with pytest.raises(openai.NotFoundError):
        stranger.responses.delete(first.id)

    # The span is a chat operation named by the response and its chain.
    span = gateway_span(spans_of(otlp, trace_id, 3))
    assert span.attributes[semconv.OPERATION_NAME] == "chat"
    assert span.attributes[semconv.RESPONSE_ID] == first.id
    assert span.attributes[semconv.CONVERSATION_ID] == first.id  # the chain's root

    # Its tokens are in the ledger, under its own endpoint.
    seconds_until(
        lambda: len([r for r in fleet.rows() if r.key_id == key_id]) == 2, 15, "two ledger rows"
    )
    rows = [row for row in fleet.rows() if row.key_id == key_id]
    assert {row.endpoint for row in rows} == {"/v1/responses"}
    assert sorted(row.prompt_tokens for row in rows) == sorted(
        [first.usage.input_tokens, second.usage.input_tokens]
    )


def test_a_background_response_is_cancelled_from_another_gateway(two_gateways, stack):
    fleet = two_gateways
    _, key = fleet.create_key()
    runner = openai.OpenAI(base_url=fleet.urls[0] + "/v1", api_key=key)
    other = openai.OpenAI(base_url=fleet.urls[1] + "/v1", api_key=key)
    response = runner.responses.create(
        model="demo", input="A long story.", background=True, max_output_tokens=4000
    )
    seconds_until(lambda: len(other.responses.retrieve(response.id).output_text) > 0, 30, "output")
    assert other.responses.cancel(response.id).status == "cancelled"
    seconds_until(lambda: running_on_engine(stack) == 0, 10, "the run stopped by its gateway")
    assert runner.responses.retrieve(response.id).status == "cancelled"


def test_a_background_response_whose_gateway_dies_is_failed_by_another(
    two_gateways, stack, otlp, tmp_path
):
    fleet = two_gateways
    doomed = start_fleet(stack, otlp, tmp_path, 1, **fleet.env)
    _, key = fleet.create_key()
    runner = openai.OpenAI(base_url=doomed.urls[0] + "/v1", api_key=key)
    survivor = openai.OpenAI(base_url=fleet.urls[0] + "/v1", api_key=key)
    try:
        response = runner.responses.create(
            model="demo", input="A long story.", background=True, max_output_tokens=4000
        )
        seconds_until(
            lambda: survivor.responses.retrieve(response.id).status == "in_progress", 30, "running"
        )
        doomed.processes[0].send_signal(signal.SIGKILL)  # the gateway crashes
        waited = seconds_until(
            lambda: survivor.responses.retrieve(response.id).status == "failed",
            4 * LOST_AFTER_S + 10,
            "the lost response failed",
        )
    finally:
        stop_process(doomed.processes[0])
    failed = survivor.responses.retrieve(response.id)
    assert failed.error.code == "gateway_lost"
    print(f"a lost background response was failed {waited:.1f} s after its gateway died")
    seconds_until(lambda: running_on_engine(stack) == 0, 30, "its engine request ended")


def test_sigterm_under_load_loses_no_response_the_client_saw(two_gateways, stack, otlp, tmp_path):
    """Responses in flight when a gateway is told to stop: each one its client got is in the
    store, from the other gateway."""
    fleet = two_gateways
    stopping = start_fleet(stack, otlp, tmp_path, 1, **fleet.env)
    _, key = fleet.create_key()
    client = openai.OpenAI(base_url=stopping.urls[0] + "/v1", api_key=key, max_retries=0)
    completed: list[str] = []
    lock = threading.Lock()

    def one(index: int) -> None:
        try:
            response = client.responses.create(
                model="demo", input=f"Question {index}", max_output_tokens=48
            )
        except openai.APIError:
            return  # refused or cut by the shutdown: the client knows it did not get it
        with lock:
            completed.append(response.id)

    try:
        with ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(one, index) for index in range(48)]
            time.sleep(1.0)
            stopping.processes[0].send_signal(signal.SIGTERM)
            for future in futures:
                future.result()
    finally:
        stop_process(stopping.processes[0])
    assert completed, "no response finished before the shutdown"
    survivor = openai.OpenAI(base_url=fleet.urls[0] + "/v1", api_key=key)
    for response_id in completed:
        assert survivor.responses.retrieve(response_id).id == response_id
    print(f"SIGTERM under load: {len(completed)} of 48 completed, all retrievable")


def test_a_conversation_is_continued_anywhere_and_only_by_its_key(two_gateways):
    fleet = two_gateways
    _, key = fleet.create_key()
    _, other_key = fleet.create_key()
    first_gateway = openai.OpenAI(base_url=fleet.urls[0] + "/v1", api_key=key)
    second_gateway = openai.OpenAI(base_url=fleet.urls[1] + "/v1", api_key=key)
    conversation = first_gateway.conversations.create(
        items=[{"type": "message", "role": "user", "content": "Remember: blue."}]
    )
    answered = second_gateway.responses.create(
        model="demo", conversation=conversation.id, input="What colour?", max_output_tokens=4
    )
    assert answered.conversation.id == conversation.id
    items = first_gateway.conversations.items.list(conversation.id).data
    assert len(items) == 3
    stranger = openai.OpenAI(base_url=fleet.urls[0] + "/v1", api_key=other_key)
    with pytest.raises(openai.NotFoundError):
        stranger.conversations.retrieve(conversation.id)
    with pytest.raises(openai.NotFoundError):
        stranger.conversations.items.list(conversation.id)
    with pytest.raises(openai.NotFoundError):
        stranger.responses.create(model="demo", conversation=conversation.id, input="hi")


def test_responses_count_against_the_keys_limits(two_gateways):
    fleet = two_gateways
    _, key = fleet.create_key("--rpm", "1")
    client = openai.OpenAI(base_url=fleet.urls[0] + "/v1", api_key=key, max_retries=0)
    client.responses.create(model="demo", input="One.", max_output_tokens=2)
    with pytest.raises(openai.RateLimitError) as refused:
        client.responses.create(model="demo", input="Two.", max_output_tokens=2)
    assert refused.value.response.headers["x-ratelimit-limit-requests"] == "1"
