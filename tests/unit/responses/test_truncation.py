import pytest

from mistral_serve.errors import InvalidRequestError
from mistral_serve.responses.truncation import fitted


def counter(per_message: int):
    """A tokenizer's count: ``per_message`` tokens a message; records each count asked."""
    asked: list[int] = []

    async def count(document: dict) -> int:
        asked.append(len(document["messages"]))
        return per_message * len(document["messages"])

    return count, asked


def conversation(turns: int) -> list[dict]:
    messages = [{"role": "system", "content": "rules"}]
    for index in range(turns):
        messages += [
            {"role": "user", "content": f"question {index} " + "x" * 200},
            {"role": "assistant", "content": f"answer {index} " + "y" * 200},
        ]
    return messages


async def test_a_short_context_is_not_counted():
    count, asked = counter(10)
    document = {"messages": conversation(1), "max_tokens": 10}
    assert await fitted(document, 10_000, count, keep_first=True) == document["messages"]
    assert asked == []


async def test_the_oldest_messages_go_until_it_fits_keeping_the_instructions():
    count, asked = counter(100)
    messages = [*conversation(10), {"role": "user", "content": "last"}]  # 22 messages
    fitted_messages = await fitted(
        {"messages": messages, "max_tokens": 100}, 1000, count, keep_first=True
    )
    assert fitted_messages[0]["content"] == "rules"
    assert fitted_messages[-1]["content"] == "last"
    assert 100 * len(fitted_messages) <= 900
    assert len(asked) <= 3  # dropped by the share that is over, not one at a time


async def test_tool_answers_do_not_outlive_their_call():
    count, _ = counter(100)
    messages = [
        {"role": "user", "content": "a" * 500},
        {"role": "assistant", "tool_calls": [{"id": "abcDEF123"}], "content": None},
        {"role": "tool", "tool_call_id": "abcDEF123", "content": "b" * 500},
        {"role": "user", "content": "c" * 500},
    ]
    kept = await fitted({"messages": messages}, 250, count, keep_first=False)
    assert kept[0]["role"] != "tool"


async def test_an_input_that_cannot_fit_is_a_400():
    count, _ = counter(1000)
    with pytest.raises(InvalidRequestError) as raised:
        await fitted({"messages": conversation(2)}, 500, count, keep_first=True)
    assert raised.value.param == "input"
