"""Conversations against real engines: OpenAI's (`openai` SDK: conversations and their items,
and `conversation` on responses) and Mistral's (`mistralai` SDK: `beta.conversations`), on
the same paths and store."""

from __future__ import annotations

import openai
import pytest
from mistralai.client import Mistral
from mistralai.client.errors import SDKError

from .conftest import Stack

pytestmark = pytest.mark.integration

SHORT = {"max_tokens": 8}


def mistral(stack: Stack) -> Mistral:
    return Mistral(api_key="unused", server_url=stack.gateway_url)


def test_openai_conversations_hold_the_responses_made_in_them(stack: Stack):
    client = stack.client()
    conversation = client.conversations.create(
        items=[{"type": "message", "role": "user", "content": "My name is Ann."}],
        metadata={"topic": "names"},
    )
    assert conversation.id.startswith("conv_") and conversation.metadata == {"topic": "names"}
    first = client.responses.create(
        model="demo", conversation=conversation.id, input="What is my name?", max_output_tokens=8
    )
    assert first.conversation.id == conversation.id
    items = client.conversations.items.list(conversation.id, order="asc").data
    assert [(item.type, item.role) for item in items] == [
        ("message", "user"),
        ("message", "user"),
        ("message", "assistant"),
    ]
    assert items[2].id == first.output[0].id
    second = client.responses.create(
        model="demo", conversation=conversation.id, input="Again?", max_output_tokens=8
    )
    assert second.usage.input_tokens > first.usage.input_tokens  # it read the first exchange

    updated = client.conversations.update(conversation.id, metadata={"topic": "other"})
    assert updated.metadata == {"topic": "other"}
    added = client.conversations.items.create(
        conversation.id, items=[{"type": "message", "role": "user", "content": "Noted."}]
    )
    [note] = added.data
    assert (
        client.conversations.items.retrieve(note.id, conversation_id=conversation.id).id == note.id
    )
    client.conversations.items.delete(note.id, conversation_id=conversation.id)
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.retrieve(note.id, conversation_id=conversation.id)

    with pytest.raises(openai.BadRequestError) as both:
        client.responses.create(
            model="demo", conversation=conversation.id, previous_response_id=first.id, input="x"
        )
    assert both.value.body["param"] == "conversation"
    assert client.conversations.delete(conversation.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(conversation.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="demo", conversation=conversation.id, input="hi")


def test_a_streamed_response_in_a_conversation_is_kept_in_it(stack: Stack):
    client = stack.client()
    conversation = client.conversations.create()
    with client.responses.stream(
        model="demo", conversation=conversation.id, input="Hi", max_output_tokens=6
    ) as stream:
        final = list(stream)[-1].response
    items = client.conversations.items.list(conversation.id, order="asc").data
    assert [item.id for item in items][1:] == [item.id for item in final.output]


def test_mistral_conversations_start_append_history_restart(stack: Stack):
    client = mistral(stack)
    started = client.beta.conversations.start(
        model="demo", inputs="Hello there", instructions="Be nice.", completion_args=SHORT
    )
    assert started.object == "conversation.response"
    assert [output.type for output in started.outputs] == ["message.output"]
    assert started.usage.completion_tokens <= 8 and started.usage.prompt_tokens > 0
    appended = client.beta.conversations.append(
        conversation_id=started.conversation_id, inputs="And then?", completion_args=SHORT
    )
    assert appended.conversation_id == started.conversation_id
    assert appended.usage.prompt_tokens > started.usage.prompt_tokens  # it read the first turn

    history = client.beta.conversations.get_history(conversation_id=started.conversation_id)
    kinds = [entry.type for entry in history.entries]
    assert kinds == ["message.input", "message.output", "message.input", "message.output"]
    assert history.entries[1].content == started.outputs[0].content
    messages = client.beta.conversations.get_messages(conversation_id=started.conversation_id)
    assert len(messages.messages) == 4
    conversation = client.beta.conversations.get(conversation_id=started.conversation_id)
    assert conversation.model == "demo" and conversation.instructions == "Be nice."

    restarted = client.beta.conversations.restart(
        conversation_id=started.conversation_id,
        from_entry_id=history.entries[1].id,
        inputs="Another way?",
        completion_args=SHORT,
    )
    assert restarted.conversation_id != started.conversation_id
    branch = client.beta.conversations.get_history(conversation_id=restarted.conversation_id)
    assert [entry.id for entry in branch.entries[:2]] == [e.id for e in history.entries[:2]]
    assert len(branch.entries) == 4
    listed = {each.id for each in client.beta.conversations.list(page_size=100)}
    assert {started.conversation_id, restarted.conversation_id} <= listed

    client.beta.conversations.delete(conversation_id=restarted.conversation_id)
    with pytest.raises(SDKError) as gone:
        client.beta.conversations.get(conversation_id=restarted.conversation_id)
    assert gone.value.status_code == 404


def test_mistral_conversations_stream(stack: Stack):
    client = mistral(stack)
    events = list(
        client.beta.conversations.start_stream(model="demo", inputs="Stream", completion_args=SHORT)
    )
    kinds = [event.event for event in events]
    assert kinds[0] == "conversation.response.started" and kinds[-1] == "conversation.response.done"
    assert "message.output.delta" in kinds
    conversation_id = events[0].data.conversation_id
    text = "".join(e.data.content for e in events if e.event == "message.output.delta")
    appended = list(
        client.beta.conversations.append_stream(
            conversation_id=conversation_id, inputs="More", completion_args=SHORT
        )
    )
    assert appended[-1].event == "conversation.response.done"
    history = client.beta.conversations.get_history(conversation_id=conversation_id)
    assert history.entries[1].content == text
    assert len(history.entries) == 4


def test_agents_are_not_served(stack: Stack):
    with pytest.raises(SDKError) as refused:
        mistral(stack).beta.conversations.start(agent_id="ag_123", inputs="hi")
    assert refused.value.status_code == 404 and "agent" in refused.value.body
