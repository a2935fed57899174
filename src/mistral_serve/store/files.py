"""Uploaded files' records (their bytes are the batch layer's, on disk): made, read, listed
newest first, deleted. Every read names the key that asks: another key's file is not found."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from mistral_serve.store.database import Store
from mistral_serve.store.models import StoredFileRow, utc


@dataclass(frozen=True)
class FileRecord:
    id: str
    key_id: str
    filename: str
    purpose: str
    bytes: int
    lines: int
    created_at: datetime


class FileRecords:
    def __init__(self, store: Store) -> None:
        self._sessions = store.sessions

    async def add(self, record: FileRecord) -> None:
        async with self._sessions.begin() as session:
            session.add(StoredFileRow(**record.__dict__))

    async def put(self, record: FileRecord) -> None:
        """Add the record unless a file of that id exists (a batch's output file, written
        again by a gateway that took over its finalization)."""
        try:
            async with self._sessions.begin() as session:
                if await session.get(StoredFileRow, record.id) is None:
                    session.add(StoredFileRow(**record.__dict__))
        except IntegrityError:  # another gateway added it in between: the same file
            pass

    async def get(self, file_id: str, key_id: str) -> FileRecord | None:
        async with self._sessions() as session:
            row = await session.get(StoredFileRow, file_id)
        return _record(row) if row is not None and row.key_id == key_id else None

    async def page(
        self,
        key_id: str,
        *,
        purpose: str | None = None,
        after: str | None = None,
        limit: int = 100,
        offset: int = 0,
        newest_first: bool = True,
    ) -> list[FileRecord]:
        """Up to ``limit`` of the key's files in creation order (newest first by default),
        starting after the file ``after`` (OpenAI's cursor) or at ``offset`` (Mistral's
        pages)."""
        query = select(StoredFileRow).where(StoredFileRow.key_id == key_id)
        if purpose is not None:
            query = query.where(StoredFileRow.purpose == purpose)
        order = (StoredFileRow.created_at, StoredFileRow.id)
        if after is not None:
            async with self._sessions() as session:
                cursor = await session.get(StoredFileRow, after)
            if cursor is not None and cursor.key_id == key_id:
                mark = (cursor.created_at, cursor.id)
                if newest_first:
                    query = query.where(
                        (StoredFileRow.created_at < mark[0])
                        | ((StoredFileRow.created_at == mark[0]) & (StoredFileRow.id < mark[1]))
                    )
                else:
                    query = query.where(
                        (StoredFileRow.created_at > mark[0])
                        | ((StoredFileRow.created_at == mark[0]) & (StoredFileRow.id > mark[1]))
                    )
        if newest_first:
            query = query.order_by(*(column.desc() for column in order))
        else:
            query = query.order_by(*order)
        async with self._sessions() as session:
            rows = (await session.scalars(query.offset(offset).limit(limit))).all()
        return [_record(row) for row in rows]

    async def count(self, key_id: str, purpose: str | None = None) -> int:
        query = select(func.count()).select_from(StoredFileRow)
        query = query.where(StoredFileRow.key_id == key_id)
        if purpose is not None:
            query = query.where(StoredFileRow.purpose == purpose)
        async with self._sessions() as session:
            return int(await session.scalar(query) or 0)

    async def delete(self, file_id: str, key_id: str) -> bool:
        """Whether the key's file existed (and is now gone)."""
        async with self._sessions.begin() as session:
            result = await session.execute(
                delete(StoredFileRow).where(
                    StoredFileRow.id == file_id, StoredFileRow.key_id == key_id
                )
            )
        return bool(result.rowcount)


def _record(row: StoredFileRow) -> FileRecord:
    return FileRecord(
        row.id, row.key_id, row.filename, row.purpose, row.bytes, row.lines, utc(row.created_at)
    )
