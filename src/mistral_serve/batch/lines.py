"""A batch's input, checked line by line before anything runs: the first bad line is a 400
that names it and says why, so a job never starts on a file that would fail half way.

A line is OpenAI's request object, ``{"custom_id", "method": "POST", "url", "body"}``, or
Mistral's, ``{"custom_id", "body"}`` (its job names the endpoint and the model). Each line's
``custom_id`` is unique in the file, its ``url`` (when given) is the batch's endpoint, its body
passes the same type checks as that endpoint's requests (a field of the wrong type is named,
as for a live request), it is not streamed, and every line names the same model (OpenAI's
rule: one batch, one model; a Mistral job's ``model`` fills in lines that name none).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from mistral_serve.errors import InvalidRequestError
from mistral_serve.gateway.pipeline import Endpoint, validate_request
from mistral_serve.routing import route_key

#: The endpoints a batch may run, by the path its lines name.
ENDPOINTS = {
    endpoint.route: endpoint
    for endpoint in (
        Endpoint.CHAT,
        Endpoint.COMPLETIONS,
        Endpoint.FIM,
        Endpoint.EMBEDDINGS,
        Endpoint.RESPONSES,
    )
}
#: Most requests one batch holds (OpenAI's limit).
MAX_LINES = 50_000
#: Blocks of a prompt's routing key that order a job's requests, and hex digits kept of each.
ORDER_BLOCKS, ORDER_DIGITS = 12, 8


@dataclass(frozen=True)
class BatchLine:
    number: int  # 1 for the file's first line
    custom_id: str
    body: dict[str, Any]


def order_key(model: str, body: dict[str, Any], endpoint: Endpoint) -> str:
    """Where the request goes in its job's order: its prompt's first block hashes (each one
    chained over the blocks before it, routing/prefix.py), so sorting by it walks the
    prompts' prefix tree and requests that share a prefix (a long system prompt) run one
    after another, while the engines' prefix cache holds it."""
    document = body
    if endpoint is Endpoint.RESPONSES:  # its input read as a chat's messages would be
        given = body.get("input")
        messages = given if isinstance(given, list) else [{"role": "user", "content": given}]
        system = {"role": "system", "content": body.get("instructions") or ""}
        document = {"messages": [system, *messages]}
    key = route_key(model, document)
    return "".join(block.hex()[:ORDER_DIGITS] for block in key.blocks[:ORDER_BLOCKS])


def endpoint_of(url: str, *, param: str = "endpoint") -> Endpoint:
    endpoint = ENDPOINTS.get(url)
    if endpoint is None:
        served = ", ".join(ENDPOINTS)
        raise InvalidRequestError(f"{param}: {url!r} is not one of {served}.", param=param)
    return endpoint


def read_lines(
    data: bytes, url: str, *, model: str | None = None, param: str = "input_file_id"
) -> list[BatchLine]:
    """Every request of a batch input file for ``url`` (its endpoint), checked; ``model``: a
    Mistral job's, for lines that name none. A bad line is a 400 naming it (``param`` is the
    field that names the file)."""
    endpoint = endpoint_of(url)
    lines: list[BatchLine] = []
    seen: set[str] = set()
    models: set[str] = set()
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        if len(lines) >= MAX_LINES:
            raise _bad(param, number, f"a batch holds at most {MAX_LINES} requests")
        line = _decoded(raw, number, param)
        custom_id = line.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            raise _bad(param, number, "`custom_id` must be a non-empty string")
        if custom_id in seen:
            raise _bad(param, number, f"`custom_id` {custom_id!r} is used by an earlier line")
        seen.add(custom_id)
        if line.get("method", "POST") != "POST":
            raise _bad(param, number, "`method` must be POST")
        if line.get("url", url) != url:
            raise _bad(param, number, f"`url` must be the batch's endpoint, {url}")
        body = line.get("body")
        if not isinstance(body, dict):
            raise _bad(param, number, "`body` must be a JSON object")
        if model is not None and "model" not in body:
            body = {**body, "model": model}
        if body.get("stream"):
            raise _bad(param, number, "`body.stream`: a batch's requests are not streamed")
        _check_body(endpoint, body, number, param)
        models.add(str(body.get("model")))
        if len(models) > 1:
            raise _bad(param, number, "every request of a batch must name the same `model`")
        lines.append(BatchLine(number, custom_id, body))
    if not lines:
        raise InvalidRequestError(f"{param}: the file holds no requests.", param=param)
    return lines


def _decoded(raw: bytes, number: int, param: str) -> dict[str, Any]:
    try:
        line = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _bad(param, number, "not JSON") from None
    if not isinstance(line, dict):
        raise _bad(param, number, "not a JSON object")
    return line


def _check_body(endpoint: Endpoint, body: dict[str, Any], number: int, param: str) -> None:
    """The body as a live request to ``endpoint`` would be checked (the Responses API's is
    checked when it runs: it has its own reader)."""
    if endpoint is Endpoint.RESPONSES:
        if not isinstance(body.get("model"), str):
            raise _bad(param, number, "body.model: a string is required")
        return
    try:
        validate_request(endpoint, body)
    except InvalidRequestError as error:
        raise _bad(param, number, f"body.{error.message}") from None


def _bad(param: str, number: int, reason: str) -> InvalidRequestError:
    return InvalidRequestError(f"{param}: line {number}: {reason}.", param=param)
