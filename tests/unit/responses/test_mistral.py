import pytest

from mistral_serve.errors import InvalidRequestError
from mistral_serve.protocol.mistral_conversations import CompletionArgs
from mistral_serve.responses.mistral import chat_of, entries_of, is_mistral, items_of_inputs


def test_bodies_tell_the_two_apis_apart():
    assert is_mistral({"inputs": "hi", "model": "demo"})
    assert is_mistral({"agent_id": "ag_1", "inputs": "hi"})
    assert not is_mistral({"items": [], "metadata": {}})
    assert not is_mistral({"metadata": {"a": "b"}})


def test_entries_round_trip_through_items():
    entries = [
        {"type": "message.input", "role": "user", "content": "Weather?"},
        {"type": "function.call", "tool_call_id": "abcDEF123", "name": "w", "arguments": {"c": 1}},
        {"type": "function.result", "tool_call_id": "abcDEF123", "result": "sunny"},
        {
            "type": "message.output",
            "role": "assistant",
            "content": [{"type": "text", "text": "Sunny."}],
        },
    ]
    items = items_of_inputs(entries)
    assert [i["type"] for i in items] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
    ]
    assert items[1]["arguments"] == '{"c":1}'
    back = entries_of(items, model="demo")
    assert [e["type"] for e in back] == [e["type"] for e in entries]
    assert back[3] == {
        "object": "entry",
        "id": items[3]["id"],
        "type": "message.output",
        "role": "assistant",
        "content": "Sunny.",
        "model": "demo",
    }
    assert back[2]["result"] == "sunny" and back[1]["tool_call_id"] == "abcDEF123"


def test_a_text_is_a_user_entry():
    [item] = items_of_inputs("Hello")
    assert item["role"] == "user" and item["content"][0]["text"] == "Hello"


def test_agent_entries_are_a_400():
    with pytest.raises(InvalidRequestError) as raised:
        items_of_inputs([{"type": "agent.handoff", "previous_agent_id": "a"}])
    assert raised.value.param == "inputs.0.type"


def test_a_turn_uses_the_conversations_settings_and_its_own_arguments():
    settings = {
        "model": "demo",
        "instructions": "Be brief.",
        "tools": [{"type": "function", "function": {"name": "w", "parameters": {}}}],
        "completion_args": {"temperature": 0.2, "max_tokens": 10},
    }
    chat = chat_of(
        settings,
        items_of_inputs("hi"),
        CompletionArgs(max_tokens=5, random_seed=3, tool_choice="any"),
    )
    assert chat["messages"][0] == {"role": "system", "content": "Be brief."}
    assert chat["temperature"] == 0.2 and chat["max_tokens"] == 5 and chat["seed"] == 3
    assert chat["tool_choice"] == "required" and chat["tools"] == settings["tools"]


def test_hosted_tools_are_a_400():
    with pytest.raises(InvalidRequestError) as raised:
        chat_of({"model": "demo", "tools": [{"type": "web_search"}]}, [], None)
    assert raised.value.param == "tools.0.type"
