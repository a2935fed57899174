"""/openapi.json documents the bodies the generation routes read themselves."""

from __future__ import annotations

import schemathesis

from mistral_serve.api.app import create_app
from mistral_serve.config import Settings


def document() -> dict:
    return create_app(Settings(_env_file=None, engine_urls="http://127.0.0.1:9")).openapi()


def test_every_generation_route_has_its_request_and_answer():
    paths = document()["paths"]
    for path, request, answer in (
        ("/v1/chat/completions", "ChatCompletionRequest", "ChatCompletion"),
        ("/v1/completions", "CompletionRequest", "Completion"),
        ("/v1/fim/completions", "FIMCompletionRequest", "ChatCompletion"),
    ):
        post = paths[path]["post"]
        body = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert body == f"#/components/schemas/{request}"
        ok = post["responses"]["200"]["content"]
        assert ok["application/json"]["schema"]["$ref"].endswith(f"/{answer}")
        assert "text/event-stream" in ok
        assert {"400", "401", "403", "404", "429", "502", "503"} <= post["responses"].keys()


def test_both_dialects_and_their_ranges_are_in_the_request_schemas():
    schemas = document()["components"]["schemas"]
    chat = schemas["ChatCompletionRequest"]
    assert {"random_seed", "safe_prompt", "prompt_mode", "seed", "top_logprobs"} <= set(
        chat["properties"]
    )
    top_p = chat["properties"]["top_p"]["anyOf"][0]
    assert (top_p["minimum"], top_p["maximum"]) == (0.0, 1.0)
    assert "structured_outputs" in chat["x-passed-through"]
    assert chat.get("additionalProperties", True) is not False  # vLLM's fields pass through
    assert {"prompt", "suffix"} <= set(schemas["FIMCompletionRequest"]["properties"])


def test_the_document_is_a_valid_openapi_schema():
    loaded = schemathesis.openapi.from_dict(document())
    labels = {result.ok().label for result in loaded.get_all_operations()}
    assert "POST /v1/fim/completions" in labels and "GET /v1/models/{model_id}" in labels
