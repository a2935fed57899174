"""Uploaded files (``/v1/files``), as OpenAI's and Mistral's APIs know them: uploaded, listed,
read, downloaded, deleted, each owned by the key that uploaded it (another key's file is not
found).

A file's bytes are kept in FILES_DIR under its id (written to a temporary name, then renamed,
so a reader never sees half a file); its record (name, purpose, size, lines) in the store.
Copies and deletes of bytes run in a thread: no blocking I/O on the event loop. One answer
satisfies both SDKs: OpenAI's ``bytes``/``status`` and Mistral's ``sample_type``/``source``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from mistral_serve.errors import InvalidRequestError, NotFoundError, RequestTooLargeError
from mistral_serve.store.files import FileRecord, FileRecords
from mistral_serve.store.models import WallClock, utc_now

#: What an upload may be for: batch input (OpenAI's and Mistral's name alike).
PURPOSES = ("batch",)
#: The purpose of the files a batch writes (OpenAI's name).
OUTPUT_PURPOSE = "batch_output"
_COPY_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class FileLimits:
    folder: Path  # FILES_DIR
    max_bytes: int  # FILES_MAX_BYTES


def new_file_id() -> str:
    return f"file-{secrets.token_hex(12)}"


def file_object(record: FileRecord) -> dict[str, Any]:
    """A file as both APIs describe one."""
    return {
        "id": record.id,
        "object": "file",
        "bytes": record.bytes,
        "created_at": int(record.created_at.timestamp()),
        "filename": record.filename,
        "purpose": record.purpose,
        "status": "processed",
        "status_details": None,
        "expires_at": None,
        # Mistral's
        "sample_type": "batch_result" if record.purpose == OUTPUT_PURPOSE else "batch_request",
        "source": "upload",
        "num_lines": record.lines,
        "mimetype": "application/jsonl",
        "deleted": False,
    }


def not_found(file_id: str) -> NotFoundError:
    return NotFoundError(f"No file with id `{file_id}` was found.", param="file_id")


def _not_here(file_id: str) -> NotFoundError:
    return NotFoundError(
        f"The file `{file_id}` is known but its bytes are not in this gateway's FILES_DIR: "
        "gateway replicas must share FILES_DIR (a volume), as they share the database.",
        param="file_id",
    )


class Files:
    def __init__(
        self, records: FileRecords, limits: FileLimits, clock: WallClock = utc_now
    ) -> None:
        self._records = records
        self._limits = limits
        self._clock = clock

    async def upload(
        self, key_id: str, source: BinaryIO, filename: str | None, purpose: str | None
    ) -> dict[str, Any]:
        """Keep ``source`` (an upload's file part) as a new file of the key's."""
        if purpose not in PURPOSES:
            raise InvalidRequestError(
                f"purpose: {purpose!r} is not served here; files are for `batch`.",
                param="purpose",
            )
        name = (filename or "upload.jsonl").replace("/", "_")[:255]
        file_id = new_file_id()
        size, lines = await asyncio.to_thread(self._write, file_id, source)
        if size == 0:
            await asyncio.to_thread(self.path(file_id).unlink, True)
            raise InvalidRequestError("file: the file is empty.", param="file")
        record = FileRecord(file_id, key_id, name, purpose, size, lines, self._clock())
        try:
            await self._records.add(record)
        except BaseException:
            await asyncio.to_thread(self.path(file_id).unlink, True)
            raise
        return file_object(record)

    async def record(self, key_id: str, file_id: str) -> FileRecord:
        record = await self._records.get(file_id, key_id)
        if record is None:
            raise not_found(file_id)
        return record

    async def retrieve(self, key_id: str, file_id: str) -> dict[str, Any]:
        return file_object(await self.record(key_id, file_id))

    async def content(self, key_id: str, file_id: str) -> Path:
        """Where the key's file's bytes are (404 when it has no such file, or when its bytes
        are not in this gateway's FILES_DIR: replicas that do not share it)."""
        await self.record(key_id, file_id)
        path = self.path(file_id)
        if not await asyncio.to_thread(path.is_file):
            raise _not_here(file_id)
        return path

    async def read(self, key_id: str, file_id: str) -> bytes:
        """The key's file's bytes (a batch's input)."""
        path = await self.content(key_id, file_id)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:  # deleted in between
            raise not_found(file_id) from None

    async def keep(
        self, key_id: str, file_id: str, filename: str, data: bytes, purpose: str
    ) -> FileRecord:
        """Keep ``data`` as the key's file ``file_id`` (a batch's output): written whole, then
        recorded; writing the same file again changes nothing."""
        await asyncio.to_thread(self._write_whole, file_id, data)
        record = FileRecord(
            file_id, key_id, filename, purpose, len(data), data.count(b"\n"), self._clock()
        )
        await self._records.put(record)
        return record

    async def list(
        self,
        key_id: str,
        *,
        purpose: str | None = None,
        after: str | None = None,
        limit: int = 100,
        page: int = 0,
        newest_first: bool = True,
    ) -> dict[str, Any]:
        """One page of the key's files: OpenAI's (``after`` a file id, ``has_more``) and
        Mistral's (``page`` of ``limit``, ``total``) in one answer."""
        records = await self._records.page(
            key_id,
            purpose=purpose,
            after=after,
            limit=limit + 1,
            offset=page * limit,
            newest_first=newest_first,
        )
        shown = records[:limit]
        return {
            "object": "list",
            "data": [file_object(record) for record in shown],
            "first_id": shown[0].id if shown else None,
            "last_id": shown[-1].id if shown else None,
            "has_more": len(records) > limit,
            "total": await self._records.count(key_id, purpose),
        }

    async def delete(self, key_id: str, file_id: str) -> dict[str, Any]:
        if not await self._records.delete(file_id, key_id):
            raise not_found(file_id)
        await asyncio.to_thread(self.path(file_id).unlink, True)
        return {"id": file_id, "object": "file", "deleted": True}

    def path(self, file_id: str) -> Path:
        return self._limits.folder / file_id

    @contextmanager
    def _replacing(self, file_id: str) -> Iterator[BinaryIO]:
        """A file to write ``file_id``'s bytes to: a temporary name in the folder, renamed to
        ``file_id`` when the block ends (a reader never sees half a file), removed if it
        fails. The name is the writer's own: two gateways writing one file do not collide."""
        folder = self._limits.folder
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{file_id}.{secrets.token_hex(4)}.part"
        try:
            with partial.open("wb") as target:
                yield target
            os.replace(partial, folder / file_id)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise

    def _write_whole(self, file_id: str, data: bytes) -> None:
        with self._replacing(file_id) as target:
            target.write(data)

    def _write(self, file_id: str, source: BinaryIO) -> tuple[int, int]:
        """Copy ``source`` into the folder under ``file_id``: its size and its lines (a last
        line without a newline counts). More than FILES_MAX_BYTES is a 413, nothing kept."""
        size = lines = 0
        last = b"\n"
        with self._replacing(file_id) as target:
            while chunk := source.read(_COPY_CHUNK):
                size += len(chunk)
                if size > self._limits.max_bytes:
                    raise RequestTooLargeError(self._limits.max_bytes)
                lines += chunk.count(b"\n")
                last = chunk[-1:]
                target.write(chunk)
        return size, lines + (last != b"\n")
