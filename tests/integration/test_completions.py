"""Text completions and the model list through the gateway."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.integration


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


def test_models_lists_every_ready_engine(stack):
    models = stack.client().models.list()
    ids = {model.id for model in models.data}
    assert {"demo", "demo-v1"} <= ids


def test_health_and_ready(stack):
    assert httpx.get(stack.gateway_url + "/health").json() == {"status": "ok"}
    ready = httpx.get(stack.gateway_url + "/ready")
    assert ready.status_code == 200
    assert all(engine["ready"] for engine in ready.json()["engines"])
