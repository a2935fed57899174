import pytest

from mistral_serve.errors import InvalidRequestError
from mistral_serve.responses.items import chat_messages, engine_call_id, input_items


def test_a_text_is_one_user_message_with_an_id():
    [item] = input_items("Hello")
    assert item["type"] == "message" and item["role"] == "user"
    assert item["id"].startswith("msg_")
    assert item["content"] == [{"type": "input_text", "text": "Hello"}]


def test_items_become_chat_messages_in_order():
    items = input_items(
        [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
            {"type": "function_call", "call_id": "abcDEF123", "name": "weather", "arguments": "{}"},
            {"type": "function_call", "call_id": "call_2", "name": "time", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "abcDEF123", "output": "sunny"},
            {"type": "function_call_output", "call_id": "call_2", "output": "noon"},
            {"role": "assistant", "content": "Sunny at noon."},
            {"type": "reasoning", "summary": []},
        ]
    )
    messages = chat_messages(items, instructions="You are a weather bot.")
    assert [m["role"] for m in messages] == [
        "system",
        "system",
        "user",
        "assistant",
        "tool",
        "tool",
        "assistant",
    ]
    assert messages[0]["content"] == "You are a weather bot."
    calls = messages[3]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["weather", "time"]
    assert calls[0]["id"] == "abcDEF123"  # already Mistral's shape: kept
    hashed = calls[1]["id"]
    assert hashed != "call_2" and len(hashed) == 9 and hashed.isalnum()
    assert messages[5]["tool_call_id"] == hashed  # the output names the same call
    assert messages[6]["content"] == "Sunny at noon."


def test_call_ids_hash_the_same_way_every_time():
    assert engine_call_id("call_xyz") == engine_call_id("call_xyz")
    assert engine_call_id("call_xyz") != engine_call_id("call_xyw")


def test_an_assistant_text_and_its_tool_calls_are_separate_turns():
    """Mistral's tokenizers before v11 take content or tool calls in one message, not both."""
    items = input_items(
        [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Let me look."},
            {"type": "function_call", "call_id": "abcDEF123", "name": "f", "arguments": "{}"},
        ]
    )
    messages = chat_messages(items)
    assert messages[1] == {"role": "assistant", "content": "Let me look."}
    assert messages[2]["content"] is None and messages[2]["tool_calls"]


def test_images_keep_chat_parts():
    [item] = input_items(
        [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is it?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
                ],
            }
        ]
    )
    [message] = chat_messages([item])
    assert message["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,AAAA"},
    }


@pytest.mark.parametrize(
    ("given", "param"),
    [
        ([{"type": "web_search_call", "id": "ws_1"}], "input.0.type"),
        ([{"type": "item_reference", "id": "msg_1"}], "input.0.type"),
        ([{"role": "robot", "content": "x"}], "input.0.role"),
        (
            [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}],
            "input.0.content.0.type",
        ),
        (
            [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}],
            "input.0.content.0.image_url",
        ),
        ([{"type": "function_call", "name": "f", "arguments": "{}"}], "input.0.call_id"),
        ([{"type": "function_call_output", "call_id": "c", "output": 3}], "input.0.output"),
        ([{"content": "no role or type"}], "input.0"),
    ],
)
def test_bad_items_are_a_400_naming_the_field(given, param):
    with pytest.raises(InvalidRequestError) as raised:
        input_items(given)
    assert raised.value.param == param
