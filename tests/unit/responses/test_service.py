"""The Responses service over a fake engine (named as one) and a real SQLite store: what the
engine is sent, what is stored, and the settings that turn storage off."""

from __future__ import annotations

import orjson
import pytest
from aiohttp import web

from mistral_serve.errors import InvalidRequestError, NotFoundError
from mistral_serve.gateway.pipeline import Gateway
from mistral_serve.responses.service import Responses, ResponsesOptions
from mistral_serve.routing import PrefixLoad
from mistral_serve.store import Store
from mistral_serve.store.database import sqlite_url
from mistral_serve.store.responses import ResponseRecords

from ..conftest import probed

ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 0,
    "model": "fake-model",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hi!"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
}


@pytest.fixture
async def store(tmp_path):
    opened = await Store.open(sqlite_url(tmp_path))
    yield opened
    await opened.close()


async def responses_over(
    fake_engine, client, store, options: ResponsesOptions | None = None
) -> Responses:
    async def chat(request: web.Request) -> web.Response:
        return web.json_response(ANSWER)

    fake_engine.handlers["/v1/chat/completions"] = chat
    registry, _ = await probed(client, fake_engine.url)
    gateway = Gateway(registry, client, PrefixLoad())
    return Responses(gateway, ResponseRecords(store), options or ResponsesOptions())


def create(responses: Responses, **fields):
    body = orjson.dumps({"model": "fake-model", **fields})
    return responses.create(body, "req-1", authorization=None)


def sent(fake_engine) -> dict:
    path, body, _ = fake_engine.requests[-1]
    assert path == "/v1/chat/completions"
    return orjson.loads(body)


async def test_a_chain_is_sent_whole_and_stored(fake_engine, client, store):
    responses = await responses_over(fake_engine, client, store)
    first = orjson.loads((await create(responses, input="Hello", instructions="Be brief")).body)
    assert first["status"] == "completed" and first["output"][0]["content"][0]["text"] == "Hi!"
    assert first["usage"]["input_tokens"] == 5
    second = orjson.loads(
        (await create(responses, input="Again", previous_response_id=first["id"])).body
    )
    # The earlier exchange, then the new input; the first instructions are not carried over.
    assert sent(fake_engine)["messages"] == [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi!"},
        {"role": "user", "content": "Again"},
    ]
    assert (await responses.retrieve(second["id"], authorization=None)) == second


async def test_store_false_keeps_nothing(fake_engine, client, store):
    responses = await responses_over(fake_engine, client, store)
    answer = orjson.loads((await create(responses, input="Hello", store=False)).body)
    with pytest.raises(NotFoundError):
        await responses.retrieve(answer["id"], authorization=None)


async def test_responses_store_off_makes_storing_a_400_naming_the_setting(
    fake_engine, client, store
):
    responses = await responses_over(fake_engine, client, store, ResponsesOptions(store=False))
    with pytest.raises(InvalidRequestError) as refused:
        await create(responses, input="Hello")  # store: true is OpenAI's default
    assert refused.value.param == "store" and "RESPONSES_STORE=off" in refused.value.message
    with pytest.raises(InvalidRequestError) as chained:
        await create(responses, input="Hi", store=False, previous_response_id="resp_1")
    assert chained.value.param == "previous_response_id"
    answer = orjson.loads((await create(responses, input="Hello", store=False)).body)
    assert answer["store"] is False and answer["status"] == "completed"


async def test_background_needs_the_store(fake_engine, client, store):
    responses = await responses_over(fake_engine, client, store)
    with pytest.raises(InvalidRequestError) as refused:
        await create(responses, input="Hello", background=True, store=False)
    assert refused.value.param == "background"
