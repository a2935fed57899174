"""Creating, reading, listing and cancelling jobs through both APIs' shapes, on a real store:
what is refused before anything is stored, and what belongs to whom."""

from __future__ import annotations

import io

import orjson
import pytest

from mistral_serve.batch.files import FileLimits, Files
from mistral_serve.batch.service import Batches
from mistral_serve.errors import InvalidRequestError, NotFoundError
from mistral_serve.store.batches import BatchRecords
from mistral_serve.store.files import FileRecords
from mistral_serve.tenancy.auth import Caller

MINE, OTHERS = Caller("k1"), Caller("k2")


def line(n: int, **body) -> dict:
    return {
        "custom_id": f"c{n}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "demo", "messages": [{"role": "user", "content": f"hi {n}"}], **body},
    }


@pytest.fixture
async def service(store, tmp_path) -> tuple[Batches, Files]:
    files = Files(FileRecords(store), FileLimits(tmp_path / "files", 10**6))
    return Batches(BatchRecords(store), files), files


async def uploaded(files: Files, caller: Caller, lines: list[dict]) -> str:
    data = b"\n".join(orjson.dumps(each) for each in lines)
    made = await files.upload(caller.key_id or "", io.BytesIO(data), "in.jsonl", "batch")
    return made["id"]


async def test_an_openai_batch_is_made_read_listed_and_cancelled_by_its_key(service):
    batches, files = service
    file_id = await uploaded(files, MINE, [line(n) for n in range(3)])
    made = await batches.create_openai(
        MINE,
        {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "metadata": {"a": "b"}},
    )
    assert (made["status"], made["request_counts"]["total"], made["model"]) == (
        "validating",
        3,
        "demo",
    )
    assert (await batches.retrieve_openai(MINE, made["id"]))["metadata"] == {"a": "b"}
    for call in (batches.retrieve_openai, batches.cancel_openai):
        with pytest.raises(NotFoundError):
            await call(OTHERS, made["id"])
    with pytest.raises(NotFoundError):  # nor may another key run my file
        await batches.create_openai(
            OTHERS, {"input_file_id": file_id, "endpoint": "/v1/chat/completions"}
        )
    listed = await batches.list_openai(MINE, after=None, limit=10)
    assert [each["id"] for each in listed["data"]] == [made["id"]] and not listed["has_more"]
    assert (await batches.list_openai(OTHERS, after=None, limit=10))["data"] == []
    cancelled = await batches.cancel_openai(MINE, made["id"])
    assert cancelled["status"] == "cancelling" and cancelled["cancelling_at"] is not None


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"endpoint": "/v1/chat/completions"}, "input_file_id"),
        ({"input_file_id": 7, "endpoint": "/v1/chat/completions"}, "input_file_id"),
        ({"input_file_id": "f", "endpoint": "/v1/images"}, "endpoint"),
        (
            {"input_file_id": "f", "endpoint": "/v1/chat/completions", "completion_window": "1h"},
            "completion_window",
        ),
        (
            {"input_file_id": "f", "endpoint": "/v1/chat/completions", "metadata": {"k": 1}},
            "metadata",
        ),
    ],
)
async def test_a_bad_openai_batch_is_a_400_naming_the_field(service, body, named):
    batches, _ = service
    with pytest.raises(InvalidRequestError) as refused:
        await batches.create_openai(MINE, body)
    assert named in (refused.value.param or "") + refused.value.message


async def test_a_bad_line_is_refused_and_nothing_is_stored(service):
    batches, files = service
    file_id = await uploaded(files, MINE, [line(0), line(1, max_tokens="many")])
    with pytest.raises(InvalidRequestError) as refused:
        await batches.create_openai(
            MINE, {"input_file_id": file_id, "endpoint": "/v1/chat/completions"}
        )
    assert "line 2: body.max_tokens" in refused.value.message
    assert (await batches.list_openai(MINE, after=None, limit=10))["data"] == []


async def test_mistral_jobs_from_inline_requests_or_files(service):
    batches, files = service
    inline = await batches.create_mistral(
        MINE,
        {
            "endpoint": "/v1/chat/completions",
            "model": "demo",
            "requests": [
                {"body": {"messages": [{"role": "user", "content": "a"}]}},
                {"custom_id": "x", "body": {"messages": [{"role": "user", "content": "b"}]}},
            ],
            "metadata": {"run": "nightly"},
            "timeout_hours": 2,
        },
    )
    assert (inline["status"], inline["total_requests"], inline["input_files"]) == ("QUEUED", 2, [])
    first = await uploaded(files, MINE, [line(n) for n in range(2)])
    second = await uploaded(files, MINE, [line(n) for n in range(2, 5)])
    from_files = await batches.create_mistral(
        MINE, {"endpoint": "/v1/chat/completions", "input_files": [first, second]}
    )
    assert from_files["total_requests"] == 5 and from_files["input_files"] == [first, second]
    repeated = await uploaded(files, MINE, [line(1)])
    with pytest.raises(InvalidRequestError, match="used by an earlier line"):
        await batches.create_mistral(
            MINE, {"endpoint": "/v1/chat/completions", "input_files": [first, repeated]}
        )
    nightly = await batches.list_mistral(MINE, page=0, page_size=10, metadata={"run": "nightly"})
    assert [each["id"] for each in nightly["data"]] == [inline["id"]] and nightly["total"] == 1
    running = await batches.list_mistral(MINE, page=0, page_size=10, statuses=["QUEUED"])
    assert running["total"] == 2
    assert (await batches.list_mistral(OTHERS, page=0, page_size=10))["total"] == 0


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"endpoint": "/v1/chat/completions"}, "input_files"),
        (
            {"endpoint": "/v1/chat/completions", "input_files": ["f"], "requests": [{"body": {}}]},
            "input_files",
        ),
        (
            {"endpoint": "/v1/chat/completions", "requests": [{"body": {}}], "timeout_hours": 0},
            "timeout_hours",
        ),
        (
            {"endpoint": "/v1/chat/completions", "requests": [{"body": {}}], "agent_id": "a"},
            "agent_id",
        ),
        ({"endpoint": "/v1/chat/completions", "requests": [{"body": {}}]}, "model"),
    ],
)
async def test_a_bad_mistral_job_is_a_400_naming_the_field(service, body, named):
    batches, _ = service
    with pytest.raises(InvalidRequestError) as refused:
        await batches.create_mistral(MINE, body)
    assert named in (refused.value.param or "") + refused.value.message
