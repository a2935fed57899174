"""Files (`/v1/files`) with both official SDKs, as users call them: upload, list, retrieve,
download, delete; a file is its uploading key's (another key gets 404s); an upload past
FILES_MAX_BYTES is refused whole. One gateway over the session's engines, keys and files in
its own store and folder."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
from mistralai.client import Mistral
from mistralai.client.errors import MistralError

from tests.support import stop_process

from .conftest import Fleet, Stack, start_fleet

pytestmark = pytest.mark.integration

LINES = b"".join(
    b'{"custom_id": "r%d", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n' % n
    for n in range(3)
)
MAX_BYTES = 4096


@pytest.fixture(scope="module")
def fleet(stack: Stack, otlp, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    folder = tmp_path_factory.mktemp("files")
    fleet = start_fleet(
        stack, otlp, folder, 1, MISTRAL_SERVE_DATA_DIR=str(folder), FILES_MAX_BYTES=str(MAX_BYTES)
    )
    try:
        yield fleet
    finally:
        for process in fleet.processes:
            stop_process(process)


def test_openai_files_round_trip_and_stay_their_keys(fleet: Fleet):
    _, key = fleet.create_key()
    _, other_key = fleet.create_key()
    client = openai.OpenAI(base_url=fleet.urls[0] + "/v1", api_key=key, max_retries=0)
    other = openai.OpenAI(base_url=fleet.urls[0] + "/v1", api_key=other_key, max_retries=0)
    made = client.files.create(file=("requests.jsonl", LINES), purpose="batch")
    assert (made.filename, made.bytes, made.purpose, made.status) == (
        "requests.jsonl",
        len(LINES),
        "batch",
        "processed",
    )
    assert client.files.retrieve(made.id).id == made.id
    assert made.id in [listed.id for listed in client.files.list(purpose="batch")]
    assert client.files.content(made.id).read() == LINES
    # Another key sees none of it.
    assert made.id not in [listed.id for listed in other.files.list()]
    for call in (other.files.retrieve, other.files.content, other.files.delete):
        with pytest.raises(openai.NotFoundError):
            call(made.id)
    assert client.files.delete(made.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(made.id)


def test_mistral_files_round_trip(fleet: Fleet):
    _, key = fleet.create_key()
    mistral = Mistral(api_key=key, server_url=fleet.urls[0])
    made = mistral.files.upload(
        file={"file_name": "requests.jsonl", "content": LINES}, purpose="batch"
    )
    assert (made.size_bytes, made.num_lines, made.purpose) == (len(LINES), 3, "batch")
    listed = mistral.files.list(purpose="batch")
    assert [file.id for file in listed.data] == [made.id] and listed.total == 1
    assert mistral.files.retrieve(file_id=made.id).filename == "requests.jsonl"
    assert mistral.files.download(file_id=made.id).read() == LINES
    assert mistral.files.delete(file_id=made.id).deleted
    with pytest.raises(MistralError) as missing:
        mistral.files.retrieve(file_id=made.id)
    assert missing.value.status_code == 404


def test_an_upload_past_the_limit_is_refused_and_nothing_kept(fleet: Fleet):
    _, key = fleet.create_key()
    client = openai.OpenAI(base_url=fleet.urls[0] + "/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.APIStatusError) as refused:
        client.files.create(file=("big.jsonl", b"x" * (MAX_BYTES * 20)), purpose="batch")
    assert refused.value.status_code == 413
    # A file just past the limit within the multipart framing allowance is refused too.
    with pytest.raises(openai.APIStatusError) as refused:
        client.files.create(file=("big.jsonl", b"x" * (MAX_BYTES + 1)), purpose="batch")
    assert refused.value.status_code == 413
    assert client.files.list().data == []
    answer = httpx.post(
        fleet.urls[0] + "/v1/files",
        headers={"authorization": f"Bearer {key}"},
        files={"file": ("in.jsonl", b"{}\n")},
        data={"purpose": "fine-tune"},
    )
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "purpose"
