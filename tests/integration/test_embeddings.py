"""Embeddings through the gateway, from both SDKs, on the demo embedding engine (demo-embed:
last-token pooling, normalized), beside the stack's chat engine: one gateway for both kinds."""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Iterator

import httpx
import openai
import orjson
import pytest
from mistralai.client import Mistral
from mistralai.client.errors import MistralError

from mistral_serve.protocol.embeddings import converted
from mistral_serve.telemetry import semconv
from tests.support import engine_stats, stop_process, wait_for, wait_until_ok

from .conftest import ENGINE_START_TIMEOUT_S, Stack, demo_engine, start_gateway
from .test_telemetry import gateway_span, traceparent

pytestmark = pytest.mark.integration

TEXTS = ["The harbour at dawn", "A lantern in the storm", "def add(a, b): return a + b"]
DIMENSION = 64  # the demo network's width


@pytest.fixture(scope="module")
def gateway(stack: Stack, otlp) -> Iterator[str]:
    """A gateway over the stack's `demo` chat engine and a demo-embed engine of its own."""
    url, engine, log_path = demo_engine(
        "demo-embed", "127.0.0.3", stack.engine_port, stack.cache_dir, stack.log_dir, otlp.endpoint
    )
    gateway_process = None
    try:
        wait_until_ok(url + "/health", engine, log_path, ENGINE_START_TIMEOUT_S)
        urls = f"{stack.engine_urls['demo']},{url}"
        gateway_url, gateway_process = start_gateway(
            urls, otlp.endpoint, stack.log_dir / "gateway-embeddings.log"
        )
        yield gateway_url
    finally:
        if gateway_process is not None:
            stop_process(gateway_process)
        stop_process(engine)


def client(gateway: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway + "/v1", api_key="unused")


def norm(vector: list[float]) -> float:
    return math.sqrt(sum(value * value for value in vector))


def test_openai_sdk_embeds_a_batch_as_one_request(gateway):
    answer = client(gateway).embeddings.create(model="demo-embed", input=TEXTS)
    assert [item.index for item in answer.data] == [0, 1, 2]
    vectors = [item.embedding for item in answer.data]
    assert all(len(vector) == DIMENSION for vector in vectors)
    assert all(abs(norm(vector) - 1.0) < 1e-3 for vector in vectors)  # normalized
    assert vectors[0] != vectors[1]
    # one request, its tokens all the texts'
    single = [
        client(gateway).embeddings.create(model="demo-embed", input=text).usage.prompt_tokens
        for text in TEXTS
    ]
    assert answer.usage.prompt_tokens == sum(single)
    again = client(gateway).embeddings.create(model="demo-embed", input=TEXTS[0])
    assert again.data[0].embedding == pytest.approx(vectors[0], abs=1e-6)  # deterministic


def test_tokens_dimensions_and_base64(gateway):
    sdk = client(gateway)
    floats = sdk.embeddings.create(model="demo-embed", input=TEXTS[0]).data[0].embedding
    ids = sdk.embeddings.create(model="demo-embed", input=[[1, 415, 3300]]).data[0].embedding
    assert len(ids) == DIMENSION
    short = sdk.embeddings.create(model="demo-embed", input=TEXTS[0], dimensions=16)
    assert len(short.data[0].embedding) == 16
    # base64: the SDK decodes little-endian float32 itself when it asked for it
    raw = httpx.post(
        gateway + "/v1/embeddings",
        json={"model": "demo-embed", "input": TEXTS[0], "encoding_format": "base64"},
        timeout=30,
    ).json()
    decoded = struct.unpack(f"<{DIMENSION}f", base64.b64decode(raw["data"][0]["embedding"]))
    assert list(decoded) == pytest.approx(floats, abs=1e-6)


def test_mistral_sdk_and_its_output_types(gateway):
    with Mistral(api_key="unused", server_url=gateway) as mistral:
        floats = mistral.embeddings.create(model="demo-embed", inputs=TEXTS).data
        vector = floats[0].embedding
        assert len(floats) == 3 and len(vector) == DIMENSION
        for dtype in ("int8", "uint8", "binary", "ubinary"):
            answer = mistral.embeddings.create(model="demo-embed", inputs=TEXTS, output_dtype=dtype)
            for item, reference in zip(answer.data, floats, strict=True):
                assert item.embedding == converted(reference.embedding, dtype), dtype
        assert len(converted(vector, "binary")) == DIMENSION // 8
        cut = mistral.embeddings.create(
            model="demo-embed", inputs=TEXTS[0], output_dimension=32, output_dtype="int8"
        )
        assert len(cut.data[0].embedding) == 32
        assert all(-128 <= value <= 127 for value in cut.data[0].embedding)
        with pytest.raises(MistralError) as chat_model:
            mistral.embeddings.create(model="demo", inputs=TEXTS[0])
    assert chat_model.value.status_code == 400


def test_each_kind_answers_only_its_own_endpoint(gateway):
    sdk = client(gateway)
    with pytest.raises(openai.BadRequestError) as chat_model:
        sdk.embeddings.create(model="demo", input="x")
    assert chat_model.value.body["param"] == "model"
    assert "`demo` generates text and makes no embeddings" in chat_model.value.body["message"]
    with pytest.raises(openai.BadRequestError) as embed_model:
        sdk.chat.completions.create(
            model="demo-embed", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    assert "`demo-embed` is an embedding model" in embed_model.value.body["message"]
    # the chat model still chats through the same gateway
    chat = sdk.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert chat.usage.completion_tokens == 2


def test_an_input_over_the_models_length_is_a_400(gateway):
    with pytest.raises(openai.BadRequestError) as too_long:
        client(gateway).embeddings.create(model="demo-embed", input="word " * 9000)
    error = too_long.value.body
    assert error["param"] == "input" and error["type"] == "invalid_request_error"
    assert "maximum context length is 8192 tokens" in error["message"]
    with pytest.raises(openai.BadRequestError) as streamed:
        client(gateway).embeddings.create(
            model="demo-embed", input="x", extra_body={"stream": True}
        )
    assert streamed.value.body["param"] == "stream"


def test_the_embedding_engine_proves_itself_with_embedding_canaries(gateway, stack):
    """Idle past the canary interval, the embedding engine is sent canaries that are embedding
    requests (its prompt-token counter moves with nobody else sending), and stays ready."""
    embed_url = next(
        engine["url"]
        for engine in httpx.get(gateway + "/ready", timeout=10).json()["engines"]
        if engine["url"].startswith("http://127.0.0.3")
    )
    before = engine_stats(embed_url).prompt_tokens
    wait_for(lambda: engine_stats(embed_url).prompt_tokens > before, 30, "a canary embedded")
    ready = httpx.get(gateway + "/ready", timeout=10).json()
    assert all(engine["ready"] for engine in ready["engines"]), ready
    log = (stack.log_dir / "gateway-embeddings.log").read_text()
    assert "canary failed" not in log


def test_an_embedding_request_is_traced_as_the_embeddings_operation(gateway, otlp):
    header, trace_id, _ = traceparent()
    answer = httpx.post(
        gateway + "/v1/embeddings",
        json={"model": "demo-embed", "input": TEXTS},
        headers={"traceparent": header},
        timeout=30,
    ).json()

    def gateway_spans() -> list | None:
        spans = [span for span in otlp.spans if span.trace_id == trace_id]
        return spans if any(span.service == "mistral-serve" for span in spans) else None

    server = gateway_span(otlp.wait_for(gateway_spans))
    assert server.name == "embeddings demo-embed"
    assert server.attributes[semconv.OPERATION_NAME] == "embeddings"
    assert server.attributes[semconv.HTTP_ROUTE] == "/v1/embeddings"
    assert server.attributes[semconv.USAGE_INPUT_TOKENS] == answer["usage"]["prompt_tokens"]


def test_a_batch_job_embeds_a_corpus_with_both_sdks(gateway):
    """OpenAI's batch of embeddings from a file; Mistral's job of them inline; a chat model
    named for embeddings is refused at creation."""
    openai_client = client(gateway)
    lines = b"".join(
        orjson.dumps(
            {
                "custom_id": f"doc-{n}",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"model": "demo-embed", "input": text},
            }
        )
        + b"\n"
        for n, text in enumerate(TEXTS)
    )
    upload = openai_client.files.create(file=("corpus.jsonl", lines), purpose="batch")
    batch = openai_client.batches.create(
        input_file_id=upload.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    wait_for(
        lambda: openai_client.batches.retrieve(batch.id).status == "completed", 120, "the batch"
    )
    done = openai_client.batches.retrieve(batch.id)
    output = [
        orjson.loads(line)
        for line in openai_client.files.content(done.output_file_id).read().splitlines()
    ]
    assert sorted(line["custom_id"] for line in output) == [f"doc-{n}" for n in range(3)]
    for line in output:
        [item] = line["response"]["body"]["data"]
        assert len(item["embedding"]) == DIMENSION and abs(norm(item["embedding"]) - 1) < 1e-3
    mistral = Mistral(api_key="unused", server_url=gateway)
    job = mistral.batch.jobs.create(
        endpoint="/v1/embeddings",
        model="demo-embed",
        requests=[{"custom_id": str(n), "body": {"input": text}} for n, text in enumerate(TEXTS)],
    )
    wait_for(
        lambda: mistral.batch.jobs.get(job_id=job.id).status == "SUCCESS", 120, "the Mistral job"
    )
    assert mistral.batch.jobs.get(job_id=job.id).succeeded_requests == 3
    with pytest.raises(MistralError) as refused:
        mistral.batch.jobs.create(
            endpoint="/v1/embeddings", model="demo", requests=[{"body": {"input": "x"}}]
        )
    assert refused.value.status_code == 400 and "embedding" in refused.value.message
