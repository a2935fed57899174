"""The official `mistralai` SDK, unchanged, against the gateway and real engines: as against
Mistral's cloud, with `server_url` pointing here. The `openai` SDK's suite runs on the same
paths (test_chat_completions.py and the rest)."""

from __future__ import annotations

import json

import httpx
import pytest
from mistral_common.protocol.fim.request import FIMRequest
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
from mistralai.client import Mistral
from mistralai.client.errors import MistralError

from mistral_serve.protocol.mistral import SAFE_PROMPT

from .test_chat_completions import WEATHER

pytestmark = pytest.mark.integration

HELLO = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def mistral(stack) -> Mistral:
    return Mistral(api_key="unused", server_url=stack.gateway_url)


def test_models_list_and_retrieve(mistral, stack):
    listed = {card.id: card for card in mistral.models.list().data}
    demo, demo_v1 = listed["demo"], listed["demo-v1"]
    assert demo.type == "base" and demo_v1.type == "base"
    assert demo.capabilities.completion_chat and demo.capabilities.function_calling
    assert demo.capabilities.completion_fim  # the v3 tokenizer has FIM tokens
    assert not demo.capabilities.vision
    # The v1 demo is served in Hugging Face format: no tool parser, no FIM tokens.
    assert demo_v1.capabilities.completion_chat and not demo_v1.capabilities.function_calling
    engine_card = httpx.get(stack.engine_urls["demo"] + "/v1/models").json()["data"][0]
    assert demo.max_context_length == engine_card["max_model_len"]
    assert demo.aliases == []

    retrieved = mistral.models.retrieve(model_id="demo")
    assert retrieved.id == "demo" and retrieved.capabilities == demo.capabilities
    assert stack.client().models.retrieve("demo-v1").id == "demo-v1"  # the openai SDK's too
    with pytest.raises(MistralError) as missing:
        mistral.models.retrieve(model_id="no-such-model")
    assert missing.value.status_code == 404
    assert json.loads(missing.value.body)["error"]["code"] == "model_not_found"


def documented_loop(stream) -> tuple[str, list]:
    """Mistral's own streaming example, as its documentation writes it (``for chunk in
    stream: chunk.data.choices[0].delta.content``): the text, and the chunks seen."""
    text, chunks = "", []
    for chunk in stream:
        text += chunk.data.choices[0].delta.content or ""
        chunks.append(chunk.data)
    return text, chunks


def test_chat_complete_and_stream(mistral):
    answer = mistral.chat.complete(model="demo", messages=HELLO, max_tokens=6)
    assert answer.usage.completion_tokens == 6 and answer.choices[0].finish_reason == "length"
    assert answer.choices[0].message.role == "assistant"
    text, chunks = documented_loop(mistral.chat.stream(model="demo", messages=HELLO, max_tokens=6))
    assert text and chunks[-1].choices[-1].finish_reason == "length"


def test_a_stream_in_mistrals_dialect_ends_with_its_usage_on_the_last_chunk(mistral):
    """A request with Mistral's own fields is answered as Mistral's API answers: the last
    chunk has the finish reason and the usage, and every chunk has a choice."""
    stream = mistral.chat.stream(
        model="demo", messages=HELLO, max_tokens=6, random_seed=5, safe_prompt=True
    )
    text, chunks = documented_loop(stream)
    assert text and chunks[-1].choices[0].finish_reason == "length"
    assert chunks[-1].usage.completion_tokens == 6
    assert all(chunk.usage is None for chunk in chunks[:-1])


def test_random_seed_makes_sampling_repeatable(mistral):
    def sample(seed: int) -> str:
        answer = mistral.chat.complete(
            model="demo", messages=HELLO, max_tokens=12, temperature=1.0, random_seed=seed
        )
        return answer.choices[0].message.content

    first = sample(42)
    assert sample(42) == first
    assert {sample(seed) for seed in (43, 44, 45)} != {first}


def test_safe_prompt_is_in_the_prompt(mistral):
    def prompt_tokens(messages: list[dict] = HELLO, **fields: object) -> int:
        answer = mistral.chat.complete(model="demo", messages=messages, max_tokens=1, **fields)
        return answer.usage.prompt_tokens

    guardrail = MistralTokenizer.v3().instruct_tokenizer.tokenizer.encode(SAFE_PROMPT, False, False)
    added = prompt_tokens(safe_prompt=True) - prompt_tokens()
    assert abs(added - len(guardrail)) <= 3  # the guardrail, and the blank line joining it
    with_system = [{"role": "system", "content": "Be brief."}, *HELLO]
    merged = prompt_tokens(messages=with_system, safe_prompt=True)
    assert abs(merged - prompt_tokens(messages=with_system) - added) <= 1


def test_tool_choice_any_calls_a_tool(mistral):
    answer = mistral.chat.complete(
        model="demo",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER],
        tool_choice="any",
        max_tokens=80,
        # Greedy: sampled, the random demo weights may go on adding calls to the required
        # array until max_tokens (seen in 2 of 4 sampled tries); greedy makes one, always.
        temperature=0.0,
    )
    call = answer.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] in ("Paris", "Lyon")


def test_the_sdks_tool_call_history_is_accepted(mistral):
    """The SDK sends a tool call's id as "null" and arguments as an object unless told."""
    answer = mistral.chat.complete(
        model="demo",
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
                ],
            },
            {"role": "tool", "name": "get_weather", "content": "12°C", "tool_call_id": "null"},
        ],
        tools=[WEATHER],
        max_tokens=4,
    )
    assert answer.usage.completion_tokens >= 1


def test_json_schema_output(mistral):
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    answer = mistral.chat.complete(
        model="demo",
        messages=HELLO,
        max_tokens=40,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "r", "schema": schema, "strict": True},
        },
    )
    assert isinstance(json.loads(answer.choices[0].message.content)["ok"], bool)


def test_a_prefixed_assistant_message_is_continued(mistral):
    prefix = "Once upon a time"
    messages = [*HELLO, {"role": "assistant", "content": prefix, "prefix": True}]
    plain = mistral.chat.complete(model="demo", messages=HELLO, max_tokens=3)
    prefixed = mistral.chat.complete(model="demo", messages=messages, max_tokens=3)
    # The prefix is in the prompt, continued rather than answered after an end of turn, and
    # the answer starts with it, as Mistral's API answers.
    assert prefixed.usage.prompt_tokens > plain.usage.prompt_tokens
    assert prefixed.usage.completion_tokens == 3
    content = prefixed.choices[0].message.content
    assert content.startswith(prefix) and len(content) > len(prefix)
    streamed, chunks = documented_loop(
        mistral.chat.stream(model="demo", messages=messages, max_tokens=3)
    )
    assert streamed.startswith(prefix) and len(streamed) > len(prefix)
    assert chunks[-1].usage.completion_tokens == 3


# -- fill-in-the-middle ----------------------------------------------------------------------
CODE_BEFORE, CODE_AFTER = "def add(a, b):\n    return ", "\n\nprint(add(1, 2))"


def test_fim_complete_fills_the_gap(mistral):
    def fill():
        return mistral.fim.complete(
            model="demo",
            prompt=CODE_BEFORE,
            suffix=CODE_AFTER,
            max_tokens=5,
            min_tokens=5,
            random_seed=3,
            temperature=1.0,
        )

    answer = fill()
    assert answer.object == "chat.completion" and answer.model == "demo"
    assert answer.usage.completion_tokens == 5  # min_tokens and max_tokens both honoured
    choice = answer.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == "length"
    # The prompt is [BOS] [SUFFIX] suffix [PREFIX] prompt, in the served tokenizer's ids.
    tokenizer = MistralTokenizer.v3()
    expected = tokenizer.encode_fim(FIMRequest(prompt=CODE_BEFORE, suffix=CODE_AFTER)).tokens
    assert answer.usage.prompt_tokens == len(expected)
    assert fill().choices[0].message.content == choice.message.content  # random_seed


def test_fim_stream(mistral):
    text, chunks = documented_loop(
        mistral.fim.stream(model="demo", prompt=CODE_BEFORE, suffix=CODE_AFTER, max_tokens=6)
    )
    assert text
    finished = [chunk.choices[0].finish_reason for chunk in chunks]
    assert finished[-1] == "length" and all(reason is None for reason in finished[:-1])
    # Mistral's streams end with their usage, on the chunk with the finish reason.
    assert chunks[-1].usage.completion_tokens == 6


def test_fim_stop_sequences_are_honoured(mistral):
    def fill(**fields: object):
        return mistral.fim.complete(
            model="demo", prompt=CODE_BEFORE, max_tokens=12, temperature=0.0, **fields
        )

    text = fill().choices[0].message.content  # greedy: the same text every time
    stop = text[len(text) // 2 :][:2] or text
    cut = fill(stop=[stop])
    assert cut.choices[0].finish_reason == "stop" and stop not in cut.choices[0].message.content


def test_fim_on_a_model_without_fim_tokens_is_a_400_naming_it(mistral):
    with pytest.raises(MistralError) as refused:
        mistral.fim.complete(model="demo-v1", prompt=CODE_BEFORE, suffix=CODE_AFTER)
    assert refused.value.status_code == 400
    error = json.loads(refused.value.body)["error"]
    assert "`demo-v1` does not support fill-in-the-middle" in error["message"]
    assert error["param"] == "model"
    with pytest.raises(MistralError) as unknown:
        mistral.fim.complete(model="no-such-model", prompt="x")
    assert unknown.value.status_code == 404


def test_errors_surface_as_the_sdks_exceptions(mistral):
    with pytest.raises(MistralError) as out_of_range:
        mistral.chat.complete(model="demo", messages=HELLO, temperature=5.0)
    assert out_of_range.value.status_code == 400
    error = json.loads(out_of_range.value.body)["error"]
    assert error["param"] == "temperature" and error["type"] == "invalid_request_error"
    with pytest.raises(MistralError) as unknown:
        mistral.chat.complete(model="no-such-model", messages=HELLO)
    assert unknown.value.status_code == 404
    with pytest.raises(MistralError) as misplaced:
        mistral.chat.complete(
            model="demo",
            messages=[{"role": "assistant", "content": "x", "prefix": True}, *HELLO],
        )
    assert misplaced.value.status_code == 400
