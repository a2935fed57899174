"""The gateway's own /openapi.json, turned against it with schemathesis on real engines: valid
and invalid requests generated from the documented schemas (a bounded number per endpoint)
get no 5xx, and every answer has a documented status, content type and shape."""

from __future__ import annotations

from collections import Counter, defaultdict

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.integration

#: What is checked. Not positive_data_acceptance: a body the gateway's schema allows may still
#: be refused by the engine with a documented 4xx (max_tokens beyond the context, a role the
#: chat template refuses), which is the right answer, not a failure.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
#: Keeps generated requests cheap on a CPU engine: short answers, few choices, a served model.
MAX_TOKENS, MAX_CHOICES = 8, 2
#: Cases per operation and mode.
EXAMPLES = 15


def bounded(case) -> None:
    """Cases made cheaper and likelier to reach an engine; a valid value stays valid (only
    sizes inside their range are made smaller, strings replaced by strings)."""
    body = case.body
    if not isinstance(body, dict):
        return
    if isinstance(body.get("model"), str) and body["model"]:
        body["model"] = "demo"  # most requests reach an engine, not the 404
    for field in ("max_tokens", "max_completion_tokens", "min_tokens", "max_output_tokens"):
        if type(body.get(field)) is int and body[field] > MAX_TOKENS:
            body[field] = MAX_TOKENS
    if "input" in body or "instructions" in body:  # a response (max_tokens is not its field)
        if body.get("max_output_tokens") is None:
            body["max_output_tokens"] = MAX_TOKENS
    elif "inputs" in body or "from_entry_id" in body:  # a Mistral conversation's turn
        if not isinstance(body.get("completion_args"), dict):
            body["completion_args"] = {}
        arguments = body["completion_args"]
        if type(arguments.get("max_tokens")) is not int or arguments["max_tokens"] > MAX_TOKENS:
            arguments["max_tokens"] = MAX_TOKENS
    elif body.get("max_tokens") is None and body.get("max_completion_tokens") is None:
        body["max_tokens"] = MAX_TOKENS  # unset, an engine writes up to the whole context
    for field in ("n", "best_of"):
        if type(body.get(field)) is int and MAX_CHOICES < body[field] <= 20:
            body[field] = MAX_CHOICES
    # Any string is a valid role and any list a valid content to the schema, but the engine's
    # chat format knows a few: those that are not are made a user's text.
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        if isinstance(message, dict) and isinstance(message.get("role"), str):
            if message["role"] not in ("system", "user", "assistant"):
                message["role"] = "user"
            if not isinstance(message.get("content"), str):
                message["content"] = "Hello"


def operations(stack) -> list:
    loaded = schemathesis.openapi.from_url(stack.gateway_url + "/openapi.json")
    return [result.ok() for result in loaded.get_all_operations()]


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda mode: mode.value)
def test_the_documented_api_holds(stack, mode):
    """Each operation, with valid (positive) or invalid (negative) requests. (Hypothesis
    drives the cases directly: schemathesis' pytest plugin does not run on pytest 9.)"""
    statuses: dict[str, Counter[int]] = defaultdict(Counter)
    for operation in operations(stack):
        seen = statuses[operation.label]

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,  # the same cases every run
            database=None,
        )
        def holds(case) -> None:
            bounded(case)
            response = case.call_and_validate(
                base_url=stack.gateway_url, checks=CHECKS, timeout=120
            )
            seen[response.status_code] += 1  # noqa: B023 - run before the loop moves on

        try:
            holds()
        except Unsatisfiable:  # nothing about it can be invalid (GET /health has no input)
            assert mode is GenerationMode.NEGATIVE and not operation.body, operation.label
    print(f"{mode.value}: " + "; ".join(f"{op} {dict(c)}" for op, c in sorted(statuses.items())))
    generation = ("POST /v1/chat/completions", "POST /v1/completions", "POST /v1/fim/completions")
    if mode is GenerationMode.POSITIVE:  # valid requests did reach an engine and were answered
        assert all(statuses[label][200] for label in generation), dict(statuses)
    else:  # and invalid ones were all refused at the door
        assert all(set(statuses[label]) == {400} for label in generation), dict(statuses)


def test_the_docs_page_and_the_bodies_are_served(stack):
    document = httpx.get(stack.gateway_url + "/openapi.json").json()
    chat = document["paths"]["/v1/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ChatCompletionRequest"
    )
    request = document["components"]["schemas"]["ChatCompletionRequest"]
    assert {"random_seed", "safe_prompt", "temperature", "messages"} <= request["properties"].keys()
    assert request["properties"]["temperature"]["anyOf"][0]["maximum"] == 2.0
    assert "top_k" in request["x-passed-through"]
    assert "text/event-stream" in chat["responses"]["200"]["content"]
    assert "/v1/fim/completions" in document["paths"]
    assert "swagger-ui" in httpx.get(stack.gateway_url + "/docs").text
