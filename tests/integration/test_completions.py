"""Text completions and the model list through the gateway."""

from __future__ import annotations

import httpx
import openai
import pytest
from mistral_common.protocol.fim.request import FIMRequest
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

pytestmark = pytest.mark.integration

CODE_BEFORE, CODE_AFTER = "def add(a, b):\n    return ", "\n\nprint(add(1, 2))"


def test_completion(stack):
    response = stack.client().completions.create(
        model="demo", prompt="The capital of France is", max_tokens=6, seed=2
    )
    assert response.object == "text_completion"
    assert response.choices[0].text
    assert response.usage.completion_tokens <= 6


def test_completion_stream_matches_non_streamed(stack):
    client = stack.client()
    plain = client.completions.create(model="demo", prompt="Once upon", max_tokens=10, seed=9)
    streamed = client.completions.create(
        model="demo", prompt="Once upon", max_tokens=10, seed=9, stream=True
    )
    text = "".join(chunk.choices[0].text for chunk in streamed if chunk.choices)
    assert text == plain.choices[0].text


def test_a_suffix_makes_a_completion_fill_in_the_middle(stack):
    """The openai SDK's completions.create(suffix=…), which vLLM refuses, encoded as FIM on a
    model whose tokenizer has FIM tokens; the answer stays a text completion."""
    client = stack.client()

    def fill(**fields: object):
        return client.completions.create(
            model="demo", prompt=CODE_BEFORE, suffix=CODE_AFTER, max_tokens=5, seed=3, **fields
        )

    answer = fill()
    assert answer.object == "text_completion" and answer.choices[0].text
    # [BOS] [SUFFIX] suffix [PREFIX] prompt, in the served tokenizer's ids
    expected = MistralTokenizer.v3().encode_fim(FIMRequest(prompt=CODE_BEFORE, suffix=CODE_AFTER))
    assert answer.usage.prompt_tokens == len(expected.tokens)
    streamed = fill(stream=True)
    assert "".join(chunk.choices[0].text for chunk in streamed if chunk.choices) == (
        answer.choices[0].text
    )
    without = client.completions.create(model="demo", prompt=CODE_BEFORE, max_tokens=5)
    assert without.usage.prompt_tokens < answer.usage.prompt_tokens


def test_a_suffix_elsewhere_is_a_400_naming_what_is_wrong(stack):
    client = stack.client()
    with pytest.raises(openai.BadRequestError) as no_fim:
        client.completions.create(model="demo-v1", prompt="x", suffix="y", max_tokens=2)
    error = no_fim.value.body
    assert "`demo-v1` does not support fill-in-the-middle" in error["message"]
    assert error["param"] == "model"
    with pytest.raises(openai.BadRequestError) as tokens:
        client.completions.create(model="demo", prompt=[1, 2, 3], suffix="y", max_tokens=2)
    assert tokens.value.body["param"] == "prompt"


def test_models_lists_every_ready_engine(stack):
    models = stack.client().models.list()
    ids = {model.id for model in models.data}
    assert {"demo", "demo-v1"} <= ids


def test_health_and_ready(stack):
    assert httpx.get(stack.gateway_url + "/health").json() == {"status": "ok"}
    ready = httpx.get(stack.gateway_url + "/ready")
    assert ready.status_code == 200
    assert all(engine["ready"] for engine in ready.json()["engines"])


@pytest.mark.parametrize("model", ["demo", "demo-v1"])
def test_tokenize_and_detokenize_by_each_models_own_tokenizer(stack, model):
    url = stack.gateway_url
    text = "The harbour at dawn"
    tokens = httpx.post(url + "/tokenize", json={"model": model, "prompt": text}, timeout=30)
    assert tokens.status_code == 200, tokens.text
    ids = tokens.json()["tokens"]
    assert tokens.json()["count"] == len(ids) > 0
    back = httpx.post(url + "/detokenize", json={"model": model, "tokens": ids}, timeout=30)
    # vLLM's mistral tokenizer mode decodes with SentencePiece's word marks kept ("▁The")
    assert back.json()["prompt"].replace("\u2581", " ").strip().endswith(text)
    # a conversation counts what a chat request with it is charged
    messages = [{"role": "user", "content": text}]
    counted = httpx.post(url + "/tokenize", json={"model": model, "messages": messages}, timeout=30)
    chat = stack.client().chat.completions.create(model=model, messages=messages, max_tokens=1)
    assert counted.json()["count"] == chat.usage.prompt_tokens


def test_tokenize_refuses_what_it_cannot_answer(stack):
    url = stack.gateway_url
    unknown = httpx.post(url + "/tokenize", json={"model": "nope", "prompt": "x"}, timeout=30)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    neither = httpx.post(url + "/tokenize", json={"model": "demo"}, timeout=30)
    assert neither.status_code == 400 and "prompt or messages" in neither.json()["error"]["message"]
    words = httpx.post(url + "/detokenize", json={"model": "demo", "tokens": ["a"]}, timeout=30)
    assert words.status_code == 400 and words.json()["error"]["param"] == "tokens.0"
