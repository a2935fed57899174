"""The event sequence made from chat streams recorded from a real engine (the demo model
through the gateway: tests/unit/responses/recorded_chat_streams.json)."""

import json
from pathlib import Path

import orjson

from mistral_serve.protocol.openai_responses import ResponseRequest
from mistral_serve.responses.events import ResponseEvents, sse
from mistral_serve.responses.output import Frame
from mistral_serve.responses.stream import chat_chunks

RECORDED = json.loads(Path(__file__).with_name("recorded_chat_streams.json").read_text())


def replay(name: str, **request: object):
    frame = Frame("resp_1", 1_700_000_000, ResponseRequest(model="demo", **request))
    events = ResponseEvents(frame)
    made = [events.created(), *events.in_progress()]
    for chunk in chat_chunks(RECORDED[name].encode()):
        if chunk is not None:
            made += events.chunk(chunk)
    made += events.finished(1_700_000_001)
    return made, events


def test_a_text_stream_is_openais_event_sequence():
    made, events = replay("text", max_output_tokens=4)
    kinds = [event["type"] for event in made]
    deltas = kinds.count("response.output_text.delta")
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * deltas,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.incomplete",  # the recorded stream stopped at max_tokens
    ]
    assert [event["sequence_number"] for event in made] == list(range(len(made)))
    text = "".join(e["delta"] for e in made if e["type"] == "response.output_text.delta")
    assert made[-4]["text"] == text
    final = made[-1]["response"]
    assert final["status"] == "incomplete"
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["output"][0]["content"][0]["text"] == text
    assert final["usage"]["output_tokens"] == 4
    assert final["usage"]["input_tokens_details"] == {"cached_tokens": 0}
    assert final == events.final()


def test_a_tool_call_stream_is_a_function_call_item_with_its_arguments():
    made, _ = replay("tool_call")
    kinds = [event["type"] for event in made]
    assert "response.output_text.delta" not in kinds  # the empty first content is no message
    added = next(e for e in made if e["type"] == "response.output_item.added")
    assert added["item"]["type"] == "function_call"
    assert added["item"]["name"] == "get_weather" and added["item"]["status"] == "in_progress"
    arguments = "".join(
        e["delta"] for e in made if e["type"] == "response.function_call_arguments.delta"
    )
    done = next(e for e in made if e["type"] == "response.function_call_arguments.done")
    assert done["arguments"] == arguments and json.loads(arguments)["city"] in ("Paris", "Lyon")
    assert kinds[-2:] == ["response.output_item.done", "response.completed"]
    [item] = made[-1]["response"]["output"]
    assert item["call_id"] == added["item"]["call_id"] and item["status"] == "completed"


def test_a_failure_mid_stream_ends_with_response_failed():
    frame = Frame("resp_1", 1, ResponseRequest(model="demo"))
    events = ResponseEvents(frame)
    events.created()
    events.chunk({"choices": [{"index": 0, "delta": {"content": "Hel"}}]})
    [failed] = events.failed({"code": "engine_stalled", "message": "stalled"})
    assert failed["type"] == "response.failed"
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"] == {"code": "engine_stalled", "message": "stalled"}


def test_events_are_framed_with_their_type():
    event = {"type": "response.created", "sequence_number": 0}
    framed = sse(event)
    assert framed.startswith(b"event: response.created\ndata: ")
    assert orjson.loads(framed.split(b"data: ")[1]) == event
