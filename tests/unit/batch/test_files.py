"""Uploads kept on disk with their records in a real store: sizes and lines, the limit, the
purpose, ownership, deletion."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest

from mistral_serve.batch.files import FileLimits, Files
from mistral_serve.errors import InvalidRequestError, NotFoundError, RequestTooLargeError
from mistral_serve.store.files import FileRecords

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.fixture
def files(store, tmp_path) -> Files:
    return Files(FileRecords(store), FileLimits(tmp_path / "files", 64), clock=lambda: NOW)


async def test_an_upload_is_kept_whole_with_its_size_and_lines(files, tmp_path):
    made = await files.upload("k1", io.BytesIO(b'{"a":1}\n{"b":2}'), "in.jsonl", "batch")
    assert (made["bytes"], made["num_lines"], made["filename"]) == (15, 2, "in.jsonl")
    assert made["created_at"] == int(NOW.timestamp()) and made["object"] == "file"
    path = await files.content("k1", made["id"])
    assert path.read_bytes() == b'{"a":1}\n{"b":2}'
    assert [p.name for p in (tmp_path / "files").iterdir()] == [made["id"]]  # no partial left


async def test_too_large_empty_or_for_another_purpose_is_refused_and_nothing_kept(files, tmp_path):
    with pytest.raises(RequestTooLargeError):
        await files.upload("k1", io.BytesIO(b"x" * 65), "big.jsonl", "batch")
    with pytest.raises(InvalidRequestError, match="empty"):
        await files.upload("k1", io.BytesIO(b""), "empty.jsonl", "batch")
    with pytest.raises(InvalidRequestError) as purpose:
        await files.upload("k1", io.BytesIO(b"{}"), "a.jsonl", "fine-tune")
    assert purpose.value.param == "purpose"
    assert list((tmp_path / "files").iterdir()) == []
    assert (await files.list("k1"))["data"] == []


async def test_a_file_is_its_keys_alone_and_deleting_removes_its_bytes(files):
    made = await files.upload("k1", io.BytesIO(b"{}\n"), None, "batch")
    for call in (files.retrieve, files.content, files.delete):
        with pytest.raises(NotFoundError):
            await call("k2", made["id"])
    listed = await files.list("k1", limit=1)
    assert (listed["total"], listed["has_more"], listed["first_id"]) == (1, False, made["id"])
    path = await files.content("k1", made["id"])
    assert (await files.delete("k1", made["id"]))["deleted"]
    assert not path.exists()
    with pytest.raises(NotFoundError):
        await files.retrieve("k1", made["id"])


async def test_a_file_whose_bytes_another_replica_holds_is_a_404_naming_files_dir(files, tmp_path):
    made = await files.upload("k1", io.BytesIO(b"{}"), "a.jsonl", "batch")
    (tmp_path / "files" / made["id"]).unlink()  # written by a replica with its own FILES_DIR
    for read in (files.content, files.read):
        with pytest.raises(NotFoundError, match="FILES_DIR"):
            await read("k1", made["id"])


async def test_a_batchs_output_is_kept_once_however_often_it_is_written(files):
    first = await files.keep("k1", "file-batch_x-output", "x.jsonl", b"{}\n{}\n", "batch_output")
    again = await files.keep("k1", "file-batch_x-output", "x.jsonl", b"{}\n{}\n", "batch_output")
    assert first.lines == again.lines == 2
    listed = await files.list("k1", purpose="batch_output")
    assert [each["id"] for each in listed["data"]] == ["file-batch_x-output"]
    assert listed["data"][0]["sample_type"] == "batch_result"
    assert await files.read("k1", "file-batch_x-output") == b"{}\n{}\n"
