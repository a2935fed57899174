"""Chat completions through the gateway to a real vLLM engine, with the official openai client."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

pytestmark = pytest.mark.integration

#: A tool the demo model can call in a few tokens (random weights write strings of any length;
#: an enum keeps the call short).
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Paris", "Lyon"]}},
            "required": ["city"],
        },
    },
}
USER = [{"role": "user", "content": "Write a short poem about machine learning."}]


def test_chat(stack):
    response = stack.client().chat.completions.create(
        model="demo", messages=USER, max_tokens=8, seed=1
    )
    assert response.object == "chat.completion"
    assert response.model == "demo"
    assert response.choices[0].message.role == "assistant"
    assert response.choices[0].message.content
    assert response.usage.completion_tokens <= 8
    assert response.usage.prompt_tokens > 0


def test_stream_with_usage_matches_non_streamed(stack):
    client = stack.client()
    plain = client.chat.completions.create(
        model="demo", messages=USER, max_tokens=12, seed=7, temperature=1.0
    )
    chunks = list(
        client.chat.completions.create(
            model="demo",
            messages=USER,
            max_tokens=12,
            seed=7,
            temperature=1.0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = chunks[-1].usage
    assert usage is not None, "include_usage must yield a final usage chunk"
    assert text == plain.choices[0].message.content
    assert usage.completion_tokens == plain.usage.completion_tokens
    assert usage.prompt_tokens == plain.usage.prompt_tokens


def test_same_seed_same_text(stack):
    client = stack.client()

    def ask() -> str:
        response = client.chat.completions.create(
            model="demo", messages=USER, max_tokens=16, seed=1234, temperature=1.0
        )
        return response.choices[0].message.content

    assert ask() == ask()


def test_stop_sequence_ends_generation(stack):
    client = stack.client()
    free = (
        client.chat.completions.create(
            model="demo", messages=USER, max_tokens=16, seed=5, temperature=1.0
        )
        .choices[0]
        .message.content
    )
    # Stop at a piece of text the model is known to produce with this seed.
    stop_word = free.strip().split()[1] if len(free.split()) > 1 else free.strip()[:2]
    stopped = client.chat.completions.create(
        model="demo", messages=USER, max_tokens=16, seed=5, temperature=1.0, stop=[stop_word]
    )
    assert stopped.choices[0].finish_reason == "stop"
    assert stop_word not in stopped.choices[0].message.content
    assert free.startswith(stopped.choices[0].message.content)


def test_max_tokens_finishes_with_length(stack):
    response = stack.client().chat.completions.create(
        model="demo", messages=USER, max_tokens=5, extra_body={"ignore_eos": True}
    )
    assert response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens == 5


def test_n_two_choices(stack):
    response = stack.client().chat.completions.create(
        model="demo", messages=USER, max_tokens=6, n=2, seed=3, temperature=1.0
    )
    assert [choice.index for choice in response.choices] == [0, 1]


def test_vllm_extra_fields_pass_through(stack):
    # top_k / min_p / repetition_penalty / ignore_eos are vLLM's, not OpenAI's.
    response = stack.client().chat.completions.create(
        model="demo",
        messages=USER,
        max_tokens=7,
        extra_body={"top_k": 5, "min_p": 0.05, "repetition_penalty": 1.1, "ignore_eos": True},
    )
    assert response.usage.completion_tokens == 7  # ignore_eos reached the engine


def test_json_schema_output_is_valid_json(stack):
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    response = stack.client().chat.completions.create(
        model="demo",
        messages=USER,
        max_tokens=40,
        response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": schema}},
    )
    assert isinstance(json.loads(response.choices[0].message.content)["ok"], bool)


def test_system_message_on_v1_model(stack):
    client = stack.client()
    with_system = client.chat.completions.create(
        model="demo-v1",
        messages=[{"role": "system", "content": "You are a helpful AI assistant."}, *USER],
        max_tokens=4,
    )
    without = client.chat.completions.create(model="demo-v1", messages=USER, max_tokens=4)
    # The system text is folded into the first user turn: more prompt tokens, same request.
    assert with_system.usage.prompt_tokens > without.usage.prompt_tokens


def test_roles_that_do_not_alternate_are_a_400_on_v1(stack):
    with pytest.raises(openai.BadRequestError) as caught:
        stack.client().chat.completions.create(
            model="demo-v1",
            messages=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
            max_tokens=4,
        )
    assert "roles must alternate" in caught.value.message


def test_unknown_model_is_404(stack):
    with pytest.raises(openai.NotFoundError) as caught:
        stack.client().chat.completions.create(model="no-such-model", messages=USER)
    assert caught.value.code == "model_not_found"


def test_invalid_body_is_400(stack):
    client = stack.client()
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="demo", messages="not a list")  # type: ignore[arg-type]
    assert caught.value.param == "messages"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="demo", messages=USER, max_tokens="many")  # type: ignore[arg-type]
    raw = httpx.post(
        stack.gateway_url + "/v1/chat/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert raw.status_code == 400
    assert raw.json()["error"]["type"] == "invalid_request_error"


def test_engine_4xx_reaches_client_intact(stack):
    # In every documented range, but more than the engine's context holds: only it can say.
    body = {"model": "demo", "messages": USER, "max_tokens": 10**6}
    direct = httpx.post(stack.engine_urls["demo"] + "/v1/chat/completions", json=body)
    through = httpx.post(stack.gateway_url + "/v1/chat/completions", json=body)
    assert direct.status_code == through.status_code == 400
    assert through.json()["error"]["message"] == direct.json()["error"]["message"]


def test_request_id_is_echoed(stack):
    response = httpx.post(
        stack.gateway_url + "/v1/chat/completions",
        json={"model": "demo", "messages": USER, "max_tokens": 2},
        headers={"x-request-id": "client-chosen-42"},
    )
    assert response.headers["x-request-id"] == "client-chosen-42"
    generated = httpx.get(stack.gateway_url + "/v1/models").headers["x-request-id"]
    assert len(generated) >= 16


def test_concurrent_requests_may_share_a_request_id(stack):
    """Clients reuse ids (retries, fan-out); the engine must not see them as duplicates."""
    from concurrent.futures import ThreadPoolExecutor

    def ask(_: int) -> int:
        return httpx.post(
            stack.gateway_url + "/v1/chat/completions",
            json={"model": "demo", "messages": USER, "max_tokens": 64, "ignore_eos": True},
            headers={"x-request-id": "same-id"},
            timeout=60,
        ).status_code

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(ask, range(4))) == [200, 200, 200, 200]


def test_vllm_structured_outputs_field_passes_through(stack):
    response = stack.client().chat.completions.create(
        model="demo",
        messages=USER,
        max_tokens=8,
        extra_body={"structured_outputs": {"choice": ["yes", "no"]}},
    )
    assert response.choices[0].message.content in ("yes", "no")


def test_forced_tool_call_on_the_mistral_tokenizer_model(stack):
    response = stack.client().chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=60,
    )
    call = response.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] in ("Paris", "Lyon")
