"""Validation, routing decisions and engine failures before the first byte."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiohttp import web
from opentelemetry.trace import SpanKind

from mistral_serve.admission import AdmissionLimits
from mistral_serve.engines.registry import EngineRegistry
from mistral_serve.engines.supervisor import free_port
from mistral_serve.errors import (
    EngineError,
    EngineUnreachableError,
    InvalidRequestError,
    ModelNotFoundError,
    NoReadyEngineError,
    RateLimitExceededError,
    ServerOverloadedError,
)
from mistral_serve.gateway.accounting import Accounting
from mistral_serve.gateway.pipeline import Endpoint, Gateway, decode_body, validate_request
from mistral_serve.routing import LeastOutstanding, PrefixLoad
from mistral_serve.store import KeyRecords, Store
from mistral_serve.store.database import sqlite_url
from mistral_serve.telemetry import semconv
from mistral_serve.telemetry.genai import GenAIObserver
from mistral_serve.tenancy.auth import Authenticator
from mistral_serve.tenancy.cache import KeyCache
from mistral_serve.tenancy.keys import issue_key
from mistral_serve.tenancy.limiter import Limits, MemoryLimiter
from mistral_serve.tenancy.limits import text_headers
from tests.support import until

from ..conftest import capture_telemetry, probed

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}


def parse_request(endpoint: Endpoint, body: bytes):
    """Decode then type-check, as the gateway does."""
    return validate_request(endpoint, decode_body(body))


# -- decode and validate -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{nope", None),
        (b"[1, 2]", None),
        (orjson.dumps({"messages": CHAT["messages"]}), "model"),
        (orjson.dumps({**CHAT, "messages": "hi"}), "messages"),
        (orjson.dumps({**CHAT, "messages": []}), "messages"),
        (orjson.dumps({**CHAT, "messages": [{"content": "x"}]}), "messages.0.role"),
        (orjson.dumps({**CHAT, "stream": "yes"}), "stream"),
        (orjson.dumps({**CHAT, "max_tokens": "10"}), "max_tokens"),
        (orjson.dumps({**CHAT, "temperature": "hot"}), "temperature"),
        (orjson.dumps({**CHAT, "n": 1.5}), "n"),
        (orjson.dumps({**CHAT, "stop": 3}), "stop"),
        (orjson.dumps({**CHAT, "stream_options": {"include_usage": "yes"}}), "stream_options"),
    ],
)
def test_malformed_bodies_and_wrong_types_are_400(body, param):
    with pytest.raises(InvalidRequestError) as caught:
        parse_request(Endpoint.CHAT, body)
    assert caught.value.status == 400
    if param:
        assert caught.value.param.startswith(param)


def test_vllm_extensions_and_unknown_fields_are_accepted():
    body = {**CHAT, "top_k": 5, "min_p": 0.1, "ignore_eos": True, "structured_outputs": {}}
    request = parse_request(Endpoint.CHAT, orjson.dumps(body))
    assert request.model == "fake-model"
    assert request.model_extra["top_k"] == 5


def test_completions_prompt_shapes():
    for prompt in ("text", ["a", "b"], [1, 2, 3], [[1, 2], [3]]):
        parse_request(Endpoint.COMPLETIONS, orjson.dumps({"model": "m", "prompt": prompt}))
    with pytest.raises(InvalidRequestError):
        parse_request(Endpoint.COMPLETIONS, orjson.dumps({"model": "m", "prompt": {"x": 1}}))


def test_int_where_float_belongs_is_fine():
    assert parse_request(Endpoint.CHAT, orjson.dumps({**CHAT, "temperature": 1})).temperature == 1


# -- routing and engine failures -----------------------------------------------------------------
async def make_gateway(client, *urls: str) -> tuple[Gateway, EngineRegistry]:
    registry, _ = await probed(client, *urls)
    return Gateway(registry, client, LeastOutstanding()), registry


async def test_unknown_model_is_404(fake_engine, client):
    gateway, _ = await make_gateway(client, fake_engine.url)
    with pytest.raises(ModelNotFoundError):
        await gateway.generate(Endpoint.CHAT, orjson.dumps({**CHAT, "model": "other"}), "r")


async def test_no_ready_engine_is_503_with_retry_after(client):
    gateway, _ = await make_gateway(client, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(NoReadyEngineError) as caught:
        await gateway.generate(Endpoint.CHAT, orjson.dumps(CHAT), "r")
    assert caught.value.headers()["retry-after"] == "5"


async def test_a_known_model_whose_engines_are_down_is_503_not_404(fake_engine, client):
    registry, monitor = await probed(client, fake_engine.url)
    gateway = Gateway(registry, client, LeastOutstanding())
    fake_engine.healthy = False
    await monitor.probe_all()
    with pytest.raises(NoReadyEngineError):
        await gateway.generate(Endpoint.CHAT, orjson.dumps(CHAT), "r")


async def test_unreachable_engine_is_502_and_marked_down(fake_engine, client):
    gateway, registry = await make_gateway(client, fake_engine.url)
    await fake_engine.stop()
    with pytest.raises(EngineUnreachableError) as caught:
        await gateway.generate(Endpoint.CHAT, orjson.dumps(CHAT), "r")
    assert caught.value.status == 502
    assert not registry.engines[0].ready
    assert registry.engines[0].outstanding == 0


async def test_a_refused_connection_moves_the_request_to_another_engine(
    fake_engine, second_fake_engine, client
):
    gateway, registry = await make_gateway(client, fake_engine.url, second_fake_engine.url)
    await fake_engine.stop()  # the registry still believes it is ready
    for _ in range(2):  # whichever the policy picks first, the request lands
        result = await gateway.generate(Endpoint.CHAT, orjson.dumps(CHAT), "r")
        assert result.status == 200
    assert len(second_fake_engine.requests) == 2
    assert [e.ready for e in registry.engines] == [False, True]


async def test_engine_5xx_is_502_with_the_engines_message(fake_engine, client):
    async def boom(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "CUDA out of memory"}}, status=500)

    fake_engine.handlers["/v1/chat/completions"] = boom
    gateway, registry = await make_gateway(client, fake_engine.url)
    with pytest.raises(EngineError) as caught:
        await gateway.generate(Endpoint.CHAT, orjson.dumps(CHAT), "r")
    assert caught.value.status == 502
    assert "CUDA out of memory" in caught.value.message
    assert registry.engines[0].outstanding == 0


async def test_engine_4xx_passes_through_intact(fake_engine, client):
    error = {"error": {"message": "max_tokens is too large", "type": "BadRequestError"}}

    async def refuse(request: web.Request) -> web.Response:
        return web.json_response(error, status=400)

    fake_engine.handlers["/v1/completions"] = refuse
    gateway, _ = await make_gateway(client, fake_engine.url)
    body = orjson.dumps({"model": "fake-model", "prompt": "x"})
    result = await gateway.generate(Endpoint.COMPLETIONS, body, "r")
    assert result.status == 400
    assert orjson.loads(result.body) == error


async def test_stale_pooled_connection_is_retried_once(fake_engine, client):
    """A keep-alive connection the engine has closed is retried on a fresh one (DESIGN.md)."""
    calls = 0

    async def close_first(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        if calls == 1:
            request.transport.close()  # what a server does to an idle keep-alive connection
            return web.Response()
        return web.json_response({"ok": True})

    fake_engine.handlers["/v1/chat/completions"] = close_first
    gateway, _ = await make_gateway(client, fake_engine.url)
    result = await gateway.generate(Endpoint.CHAT, orjson.dumps(CHAT), "r")
    assert result.status == 200
    assert calls == 2


# -- admission -----------------------------------------------------------------------------------
def held_answers(engine) -> asyncio.Event:
    """Make ``engine`` hold every chat answer until the returned event is set."""
    release = asyncio.Event()

    async def hold(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({"id": "x", "choices": []})

    engine.handlers["/v1/chat/completions"] = hold
    return release


async def test_past_the_target_requests_wait_then_start_and_past_the_queue_get_429(
    fake_engine, client
):
    registry, _ = await probed(client, fake_engine.url)
    registry.engines[0].max_inflight = 1
    gateway = Gateway(
        registry, client, PrefixLoad(), admission=AdmissionLimits(max_waiting=1, timeout_s=5)
    )
    release = held_answers(fake_engine)
    body = orjson.dumps(CHAT)
    first = asyncio.create_task(gateway.generate(Endpoint.CHAT, body, "r1"))
    await until(lambda: len(fake_engine.requests) == 1)
    second = asyncio.create_task(gateway.generate(Endpoint.CHAT, body, "r2"))
    await until(lambda: gateway.admission.depths() == {"fake-model": 1})
    with pytest.raises(ServerOverloadedError) as refused:
        await gateway.generate(Endpoint.CHAT, body, "r3")
    assert refused.value.status == 429 and refused.value.code == "server_overloaded"
    assert len(fake_engine.requests) == 1  # the engine never saw more than its target
    release.set()
    assert (await first).status == 200
    assert (await second).status == 200
    assert len(fake_engine.requests) == 2
    assert registry.engines[0].outstanding == 0


async def test_draining_lets_waiting_requests_go_with_503(fake_engine, client):
    registry, _ = await probed(client, fake_engine.url)
    registry.engines[0].max_inflight = 1
    gateway = Gateway(registry, client, PrefixLoad())
    release = held_answers(fake_engine)
    body = orjson.dumps(CHAT)
    running = asyncio.create_task(gateway.generate(Endpoint.CHAT, body, "r1"))
    await until(lambda: len(fake_engine.requests) == 1)
    waiting = asyncio.create_task(gateway.generate(Endpoint.CHAT, body, "r2"))
    await until(lambda: gateway.admission.depths() == {"fake-model": 1})
    gateway.drain()
    with pytest.raises(NoReadyEngineError) as refused:
        await waiting
    assert refused.value.code == "shutting_down" and refused.value.status == 503
    release.set()
    assert (await running).status == 200  # what was on an engine finishes


async def test_a_named_session_stays_on_one_engine(fake_engine, second_fake_engine, client):
    registry, _ = await probed(client, fake_engine.url, second_fake_engine.url)
    gateway = Gateway(registry, client, PrefixLoad())
    for index in range(6):
        chat = {**CHAT, "messages": [{"role": "user", "content": f"question {index}"}]}
        await gateway.generate(Endpoint.CHAT, orjson.dumps(chat), "r", session="s-1")
    counts = sorted([len(fake_engine.requests), len(second_fake_engine.requests)])
    assert counts == [0, 6]


async def test_the_user_field_and_prompt_cache_key_name_a_session_too(
    fake_engine, second_fake_engine, client
):
    registry, _ = await probed(client, fake_engine.url, second_fake_engine.url)
    gateway = Gateway(registry, client, PrefixLoad())
    for field in ("user", "prompt_cache_key"):
        before = [len(fake_engine.requests), len(second_fake_engine.requests)]
        for index in range(4):
            chat = {
                **CHAT,
                field: "tenant-7",
                "messages": [{"role": "user", "content": str(index)}],
            }
            await gateway.generate(Endpoint.CHAT, orjson.dumps(chat), "r")
        after = [len(fake_engine.requests), len(second_fake_engine.requests)]
        assert sorted(a - b for a, b in zip(after, before, strict=True)) == [0, 4]


# -- per-key limits --------------------------------------------------------------------------------
async def limited_gateway(client, engine_url: str, tmp_path, **limits: int):
    """A gateway whose one stored key (its text returned) has ``limits``, counted in memory."""
    store = await Store.open(sqlite_url(tmp_path))
    records = KeyRecords(store)
    issued = issue_key()
    await records.create(issued.key_id, "limited", issued.secret_hash, **limits)
    cache = KeyCache(records, ttl_s=60)
    await cache.load()
    registry, _ = await probed(client, engine_url)
    gateway = Gateway(
        registry,
        client,
        LeastOutstanding(),
        authenticator=Authenticator("required", None, cache),
        accounting=Accounting(Limits(MemoryLimiter()), reserve_output_tokens=100),
    )
    return gateway, f"Bearer {issued.text}", store


async def test_a_limited_keys_answers_all_carry_its_headers(fake_engine, client, tmp_path):
    gateway, bearer, store = await limited_gateway(
        client, fake_engine.url, tmp_path, rpm=3, tpm=100_000
    )
    ok = await gateway.generate(Endpoint.CHAT, orjson.dumps(CHAT), "r1", authorization=bearer)
    headers = text_headers(ok.raw_headers)
    assert headers["x-ratelimit-limit-requests"] == "3"
    assert headers["x-ratelimit-remaining-requests"] == "2"
    assert headers["x-ratelimit-limit-tokens"] == "100000"

    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "too long"}}, status=400)

    fake_engine.handlers["/v1/chat/completions"] = refuse  # the engine's 4xx passes through
    refused = await gateway.generate(Endpoint.CHAT, orjson.dumps(CHAT), "r2", authorization=bearer)
    assert refused.status == 400
    assert text_headers(refused.raw_headers)["x-ratelimit-remaining-requests"] == "1"

    async def boom(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "broken"}}, status=500)

    fake_engine.handlers["/v1/chat/completions"] = boom
    with pytest.raises(EngineError) as failed:
        await gateway.generate(Endpoint.CHAT, orjson.dumps(CHAT), "r3", authorization=bearer)
    assert failed.value.headers()["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(RateLimitExceededError) as limited:
        await gateway.generate(Endpoint.CHAT, orjson.dumps(CHAT), "r4", authorization=bearer)
    assert limited.value.headers()["retry-after"] == "20"  # 1 request refills in 60/3 s
    await store.close()


async def test_a_concurrency_slot_frees_when_the_request_ends(fake_engine, client, tmp_path):
    gateway, bearer, store = await limited_gateway(
        client, fake_engine.url, tmp_path, max_concurrent=1
    )
    for n in range(3):  # one at a time: each settles before the next
        answer = await gateway.generate(
            Endpoint.CHAT, orjson.dumps(CHAT), f"r{n}", authorization=bearer
        )
        assert answer.status == 200
        await asyncio.sleep(0.01)  # the settlement runs in the background
    await store.close()


async def test_a_fim_prompt_is_traced_as_its_text_not_as_the_token_ids_sent(
    fake_engine, client, built
):
    """With content capture on, the span holds what the client sent: a prompt and a suffix
    (the engine is sent their token ids, which are not the request's text)."""
    model = str(built["v3"])  # served from the demo checkpoint's folder: its tokenizer has FIM
    fake_engine.models = [model]
    registry, _ = await probed(client, fake_engine.url)
    capture = capture_telemetry(otel_instrumentation_genai_capture_message_content=True)
    gateway = Gateway(
        registry, client, LeastOutstanding(), observer=GenAIObserver(capture.telemetry)
    )
    fim = {"model": model, "prompt": "def add(a, b):", "suffix": "print(add(1, 2))", "seed": 1}
    with capture.telemetry.tracer.start_as_current_span("POST", kind=SpanKind.SERVER):
        await gateway.generate(Endpoint.FIM, orjson.dumps({**fim, "max_tokens": 2}), "r")
    [span] = [span for span in capture.finished_spans() if span.kind == SpanKind.SERVER]
    assert orjson.loads(span.attributes[semconv.INPUT_MESSAGES]) == [
        {
            "role": "user",
            "parts": [
                {"type": "text", "content": "def add(a, b):"},
                {"type": "suffix", "content": "print(add(1, 2))"},
            ],
        }
    ]
    assert span.attributes[semconv.REQUEST_SEED] == 1
    sent = orjson.loads(fake_engine.requests[0][1])
    assert all(isinstance(token, int) for token in sent["prompt"])  # token ids went out
    capture.telemetry.shutdown()


async def test_each_endpoint_goes_only_to_its_kind_of_model(fake_engine, client):
    """An embedding model asked to chat, or a chat model asked for embeddings: a 400 naming
    the model, and nothing sent to an engine."""
    fake_engine.roots = {"fake-model": "/models/e5"}
    registry, _ = await probed(client, fake_engine.url, kind_of={"/models/e5": "embed"}.get)
    gateway = Gateway(registry, client, LeastOutstanding())
    chat = orjson.dumps({"model": "fake-model", "messages": [{"role": "user", "content": "x"}]})
    with pytest.raises(InvalidRequestError, match="is an embedding model") as refused:
        await gateway.generate(Endpoint.CHAT, chat, "r1")
    assert refused.value.param == "model" and not fake_engine.requests
    fake_engine.handlers["/v1/embeddings"] = lambda request: _json(
        {"object": "list", "data": [], "usage": {"prompt_tokens": 1, "total_tokens": 1}}
    )
    embedding = orjson.dumps({"model": "fake-model", "input": ["a", "b"]})
    answer = await gateway.generate(Endpoint.EMBEDDINGS, embedding, "r2")
    assert answer.status == 200 and fake_engine.requests[0][0] == "/v1/embeddings"
    registry.engines[0].kind = "generate"
    with pytest.raises(InvalidRequestError, match="makes no embeddings"):
        await gateway.generate(Endpoint.EMBEDDINGS, embedding, "r3")


async def _json(document: dict) -> web.Response:
    return web.json_response(document)


async def test_tokens_go_to_an_engine_of_the_model_as_sent(fake_engine, client):
    registry, _ = await probed(client, fake_engine.url)
    gateway = Gateway(registry, client, LeastOutstanding())
    fake_engine.handlers["/tokenize"] = lambda request: _json({"count": 2, "tokens": [5, 6]})
    body = orjson.dumps({"model": "fake-model", "prompt": "hi", "add_special_tokens": False})
    answer = await gateway.tokens("/tokenize", body, "r1")
    assert (answer.status, orjson.loads(answer.body)["tokens"]) == (200, [5, 6])
    assert fake_engine.requests == [("/tokenize", body, fake_engine.requests[0][2])]
    assert registry.engines[0].outstanding == 0
    with pytest.raises(InvalidRequestError, match="give prompt or messages"):
        await gateway.tokens("/tokenize", orjson.dumps({"model": "fake-model"}), "r2")
    with pytest.raises(ModelNotFoundError):
        await gateway.tokens("/detokenize", orjson.dumps({"model": "x", "tokens": [1]}), "r3")
