import pytest

from mistral_serve.errors import InvalidRequestError
from mistral_serve.protocol.openai_responses import ResponseRequest
from mistral_serve.responses.output import Frame, output_of, usage_of
from mistral_serve.responses.translate import chat_document

MESSAGES = [{"role": "user", "content": "hi"}]
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def chat(reasons: bool = False, **fields: object) -> dict:
    return chat_document(ResponseRequest(model="demo", **fields), MESSAGES, reasons=reasons)


def test_fields_map_to_chats():
    document = chat(
        temperature=0.5,
        top_p=0.9,
        max_output_tokens=32,
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
        text={
            "format": {
                "type": "json_schema",
                "name": "x",
                "schema": {"type": "object"},
                "strict": True,
            }
        },
        user="u1",
        seed=7,
        include=["message.output_text.logprobs"],
        top_logprobs=2,
        metadata={"team": "a"},  # kept with the response, not sent
        prompt_cache_key="session-1",  # the routing session, not sent
    )
    assert document == {
        "model": "demo",
        "messages": MESSAGES,
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Weather in a city",
                    "parameters": WEATHER["parameters"],
                },
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": True},
        },
        "temperature": 0.5,
        "top_p": 0.9,
        "seed": 7,
        "max_tokens": 32,
        "user": "u1",
        "logprobs": True,
        "top_logprobs": 2,
    }


@pytest.mark.parametrize("choice", ["auto", "none", "required"])
def test_tool_choice_words_pass(choice):
    assert chat(tool_choice=choice)["tool_choice"] == choice


def test_json_object_and_text_formats():
    assert chat(text={"format": {"type": "json_object"}})["response_format"] == {
        "type": "json_object"
    }
    assert "response_format" not in chat(text={"format": {"type": "text"}})


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools.0.type"),
        ({"tools": [{"type": "file_search", "vector_store_ids": ["v"]}]}, "tools.0.type"),
        ({"tools": [{"type": "function"}]}, "tools.0.name"),
        ({"tool_choice": {"type": "allowed_tools", "tools": []}}, "tool_choice"),
        ({"tool_choice": "any"}, "tool_choice"),
        ({"reasoning": {"effort": "high"}}, "reasoning"),
        ({"text": {"verbosity": "low"}}, "text.verbosity"),
        ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format"),
        ({"include": ["file_search_call.results"]}, "include.0"),
        ({"max_tool_calls": 3}, "max_tool_calls"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"service_tier": "flex"}, "service_tier"),
    ],
)
def test_what_has_no_meaning_here_is_a_400_naming_it(fields, param):
    with pytest.raises(InvalidRequestError) as raised:
        chat(**fields)
    assert raised.value.param == param


def test_reasoning_is_taken_by_a_model_that_reasons_but_not_an_effort():
    chat(reasons=True, reasoning={"summary": "auto"})
    with pytest.raises(InvalidRequestError) as raised:
        chat(reasons=True, reasoning={"effort": "low"})
    assert raised.value.param == "reasoning.effort"


def test_unknown_fields_are_a_400():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        ResponseRequest(model="demo", frobnicate=True)


def test_a_chat_answer_becomes_output_items():
    completion = {
        "choices": [
            {
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "reasoning_content": "thinking",
                    "content": "Calling.",
                    "tool_calls": [
                        {
                            "id": "abcDEF123",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
            }
        ],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 8},
        },
    }
    output, incomplete = output_of(completion)
    assert incomplete is None
    assert [item["type"] for item in output] == ["reasoning", "message", "function_call"]
    assert output[1]["content"][0]["text"] == "Calling."
    assert output[2]["call_id"] == "abcDEF123" and output[2]["status"] == "completed"
    assert usage_of(completion["usage"]) == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 8},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 15,
    }


def test_a_cut_answer_is_incomplete():
    output, incomplete = output_of(
        {"choices": [{"finish_reason": "length", "message": {"content": "abc"}}]}
    )
    assert incomplete == "max_output_tokens" and output[0]["status"] == "incomplete"


def test_the_response_object_echoes_the_request():
    request = ResponseRequest(
        model="demo", instructions="Be brief.", metadata={"a": "b"}, store=False
    )
    response = Frame("resp_1", 5, request, "resp_0").response("completed", [], None)
    assert response["id"] == "resp_1" and response["object"] == "response"
    assert response["instructions"] == "Be brief." and response["metadata"] == {"a": "b"}
    assert response["previous_response_id"] == "resp_0" and response["store"] is False
    assert response["text"] == {"format": {"type": "text"}} and response["tool_choice"] == "auto"
