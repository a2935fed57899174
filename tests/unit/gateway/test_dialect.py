"""Mistral's chat dialect as an engine receives it."""

from __future__ import annotations

import orjson
import pytest
from mistralai.client.models import AssistantMessage, ChatCompletionRequest, ToolCall, ToolMessage

from mistral_serve.errors import InvalidRequestError
from mistral_serve.gateway.dialect import translate
from mistral_serve.protocol.mistral import SAFE_PROMPT

USER = {"role": "user", "content": "Hello"}


def for_engine(document: dict) -> dict | None:
    """The body the engine is sent (None: the client's own)."""
    translation = translate(document)
    return None if translation is None else translation.document


def chat(*messages: dict, **fields) -> dict:
    return {"model": "m", "messages": list(messages) or [USER], **fields}


def test_an_openai_request_is_left_alone():
    assert for_engine(chat(temperature=0.5, seed=3, tool_choice="required")) is None
    assert for_engine(chat({"role": "assistant", "content": "x", "tool_calls": []}, USER)) is None


def test_random_seed_is_the_engines_seed_and_both_is_a_400():
    assert for_engine(chat(random_seed=42)) == chat(seed=42)
    with pytest.raises(InvalidRequestError) as caught:
        for_engine(chat(random_seed=42, seed=42))
    assert caught.value.param == "random_seed"
    assert for_engine(chat(random_seed=None, seed=5)) == chat(seed=5)


def test_tool_choice_any_is_required():
    assert for_engine(chat(tool_choice="any"))["tool_choice"] == "required"


def test_fields_without_engine_meaning_are_dropped_others_kept():
    sent = chat(prompt_mode="reasoning", guardrails=[], prediction={"type": "content"},
                metadata={"a": "b"}, parallel_tool_calls=False, safe_prompt=False)  # fmt: skip
    assert for_engine(sent) == chat(metadata={"a": "b"}, parallel_tool_calls=False)


def test_safe_prompt_comes_first_merged_with_a_system_prompt_as_mistral_joins_them():
    alone = for_engine(chat(USER, safe_prompt=True))
    assert alone["messages"] == [{"role": "system", "content": SAFE_PROMPT}, USER]
    system = {"role": "system", "content": "Be brief."}
    merged = for_engine(chat(system, USER, safe_prompt=True))
    assert merged["messages"] == [
        {"role": "system", "content": f"{SAFE_PROMPT}\n\nBe brief."},
        USER,
    ]
    parts = {"role": "system", "content": [{"type": "text", "text": "Be brief."}]}
    merged = for_engine(chat(parts, USER, safe_prompt=True))["messages"][0]["content"]
    assert merged == [{"type": "text", "text": SAFE_PROMPT + "\n\n"}, parts["content"][0]]


def test_a_prefixed_last_assistant_message_is_continued_and_answered_after_its_prefix():
    start = {"role": "assistant", "content": "Once upon", "prefix": True}
    translation = translate(chat(USER, start))
    engine = translation.document
    assert engine["messages"] == [USER, {"role": "assistant", "content": "Once upon"}]
    assert engine["continue_final_message"] is True and engine["add_generation_prompt"] is False
    answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": " a time"}}]}
    assert translation.answer.reshapes_whole
    assert (
        translation.answer.whole(answer)["choices"][0]["message"]["content"] == "Once upon a time"
    )
    parts = {"role": "assistant", "content": [{"type": "text", "text": "Once"}], "prefix": True}
    assert (
        translate(chat(USER, parts)).answer.whole({"choices": [{"message": {"content": "!"}}]})[
            "choices"
        ][0]["message"]["content"]
        == "Once!"
    )
    assert not translate(chat(random_seed=1)).answer.reshapes_whole  # Mistral's, unchanged


def test_a_translated_stream_asks_the_engine_for_its_usage():
    """Mistral's streams end with their usage: the engine is asked for it, whatever else the
    client's stream options say."""
    options = {"stream_options": {"continuous_usage_stats": False}}
    engine = for_engine(chat(USER, stream=True, random_seed=1, **options))
    assert engine["stream_options"] == {"continuous_usage_stats": False, "include_usage": True}
    assert "stream_options" not in for_engine(chat(USER, random_seed=1))  # not streamed


def test_prefix_anywhere_else_is_a_400_and_prefix_false_is_dropped():
    early = {"role": "assistant", "content": "x", "prefix": True}
    with pytest.raises(InvalidRequestError) as caught:
        for_engine(chat(USER, early, USER))
    assert caught.value.param == "messages.1.prefix"
    with pytest.raises(InvalidRequestError):
        for_engine(chat({**USER, "prefix": True}))
    plain = for_engine(chat(USER, {"role": "assistant", "content": "x", "prefix": False}, USER))
    assert plain == chat(USER, {"role": "assistant", "content": "x"}, USER)
    assert "continue_final_message" not in plain


def test_the_sdks_tool_calls_become_what_the_engine_reads():
    """What mistralai's own models serialise: ids "null" and arguments as objects."""
    request = ChatCompletionRequest(
        model="m",
        messages=[
            USER,
            AssistantMessage(
                content="",
                tool_calls=[
                    ToolCall(function={"name": "f", "arguments": {"city": "Paris"}}),
                    ToolCall(function={"name": "g", "arguments": "{}"}),
                ],
            ),
            ToolMessage(content="12°C", tool_call_id="null", name="f"),
            ToolMessage(content="ok", tool_call_id="null", name="g"),
        ],
    )
    document = orjson.loads(request.model_dump_json(by_alias=True, exclude_none=True))
    engine = for_engine(document)
    assistant, first, second = engine["messages"][1:]
    assert "prefix" not in assistant
    calls = assistant["tool_calls"]
    assert [call["id"] for call in calls] == ["000000001", "000000002"]
    assert calls[0]["function"]["arguments"] == '{"city":"Paris"}'
    assert calls[1]["function"]["arguments"] == "{}"
    assert (first["tool_call_id"], second["tool_call_id"]) == ("000000001", "000000002")


def test_real_tool_call_ids_are_kept():
    call = {"id": "abcDEF123", "type": "function", "function": {"name": "f", "arguments": {}}}
    engine = for_engine(chat(USER, {"role": "assistant", "tool_calls": [call]}))
    assert engine["messages"][1]["tool_calls"][0]["id"] == "abcDEF123"


def test_vllms_own_continue_final_message_gets_no_prefix_in_front():
    """Only Mistral's `prefix: true` promises the prefix in the answer; vLLM's own field
    answers as vLLM does, even when something else in the request is translated."""
    start = {"role": "assistant", "content": "Once"}
    translation = translate(chat(USER, start, continue_final_message=True, random_seed=1))
    assert translation.document["continue_final_message"] is True
    assert not translation.answer.reshapes_whole
