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
