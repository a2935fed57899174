"""Conversations, as plain records: a conversation's settings and metadata, and its items in
order. Every read and write names the key that asks (another key's conversation is not
found); an expired one is not found either, before the sweep deletes it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from mistral_serve.store.database import Store
from mistral_serve.store.models import (
    ConversationItemRow,
    ConversationRow,
    WallClock,
    utc,
    utc_now,
)

Item = dict[str, Any]
#: How many times an append is tried when another one took the same positions meanwhile.
_APPEND_TRIES = 10


@dataclass(frozen=True)
class ConversationRecord:
    id: str
    key_id: str
    dialect: str
    metadata: dict[str, Any]
    settings: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class ConversationRecords:
    def __init__(self, store: Store, clock: WallClock = utc_now) -> None:
        self._sessions = store.sessions
        self._clock = clock

    async def create(
        self,
        conversation_id: str,
        key_id: str,
        dialect: str,
        *,
        metadata: dict[str, Any],
        settings: dict[str, Any],
        items: Sequence[Item],
        expires_at: datetime,
    ) -> ConversationRecord:
        now = self._clock()
        row = ConversationRow(
            id=conversation_id,
            key_id=key_id,
            dialect=dialect,
            metadata_=metadata,
            settings=settings,
            created_at=now,
            updated_at=now,
            expires_at=expires_at,
        )
        async with self._sessions.begin() as session:
            session.add(row)
            session.add_all(_item_rows(conversation_id, 0, items))
        return _record(row)

    async def get(self, conversation_id: str, key_id: str) -> ConversationRecord | None:
        async with self._sessions() as session:
            row = await session.get(ConversationRow, conversation_id)
        if row is None or row.key_id != key_id or utc(row.expires_at) <= self._clock():
            return None
        return _record(row)

    async def list(
        self, key_id: str, offset: int, limit: int, *, dialect: str
    ) -> list[ConversationRecord]:
        """The key's conversations of one API (``dialect``), newest first."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(ConversationRow)
                .where(
                    ConversationRow.key_id == key_id,
                    ConversationRow.dialect == dialect,
                    ConversationRow.expires_at > self._clock(),
                )
                .order_by(ConversationRow.created_at.desc(), ConversationRow.id)
                .offset(offset)
                .limit(limit)
            )
            return [_record(row) for row in rows]

    async def update(
        self,
        conversation_id: str,
        key_id: str,
        *,
        metadata: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> ConversationRecord | None:
        values: dict[str, Any] = {"updated_at": self._clock()}
        if metadata is not None:
            values["metadata_"] = metadata
        if settings is not None:
            values["settings"] = settings
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(ConversationRow)
                .where(ConversationRow.id == conversation_id, ConversationRow.key_id == key_id)
                .values(**values)
            )
            if not result.rowcount:
                return None
        return await self.get(conversation_id, key_id)

    async def delete(self, conversation_id: str, key_id: str) -> bool:
        async with self._sessions.begin() as session:
            result = await session.execute(
                delete(ConversationRow).where(
                    ConversationRow.id == conversation_id, ConversationRow.key_id == key_id
                )
            )
            if result.rowcount:
                await session.execute(
                    delete(ConversationItemRow).where(
                        ConversationItemRow.conversation_id == conversation_id
                    )
                )
        return bool(result.rowcount)

    # -- items -----------------------------------------------------------------------------------
    async def items(self, conversation_id: str, *, upto: str | None = None) -> list[Item]:
        """Every item, oldest first (through the item ``upto``, when given)."""
        async with self._sessions() as session:
            rows = list(
                await session.scalars(
                    select(ConversationItemRow)
                    .where(ConversationItemRow.conversation_id == conversation_id)
                    .order_by(ConversationItemRow.position)
                )
            )
        items = [row.item for row in rows]
        if upto is not None:
            ids = [row.item_id for row in rows]
            items = items[: ids.index(upto) + 1] if upto in ids else []
        return items

    async def append(self, conversation_id: str, items: Sequence[Item]) -> None:
        """Add ``items`` after the last one."""
        if not items:
            return
        for attempt in range(_APPEND_TRIES):
            try:
                async with self._sessions.begin() as session:
                    # PostgreSQL: appends to one conversation take turns on its row (SQLite
                    # has one writer anyway; a collision there is tried again).
                    await session.execute(
                        select(ConversationRow.id)
                        .where(ConversationRow.id == conversation_id)
                        .with_for_update()
                    )
                    last = await session.scalar(
                        select(func.max(ConversationItemRow.position)).where(
                            ConversationItemRow.conversation_id == conversation_id
                        )
                    )
                    start = -1 if last is None else last
                    session.add_all(_item_rows(conversation_id, start + 1, items))
                    await session.execute(
                        update(ConversationRow)
                        .where(ConversationRow.id == conversation_id)
                        .values(updated_at=self._clock())
                    )
                return
            except IntegrityError:
                if attempt == _APPEND_TRIES - 1:
                    raise

    async def item(self, conversation_id: str, item_id: str) -> Item | None:
        async with self._sessions() as session:
            row = await session.scalar(
                select(ConversationItemRow).where(
                    ConversationItemRow.conversation_id == conversation_id,
                    ConversationItemRow.item_id == item_id,
                )
            )
        return row.item if row is not None else None

    async def delete_item(self, conversation_id: str, item_id: str) -> bool:
        async with self._sessions.begin() as session:
            result = await session.execute(
                delete(ConversationItemRow).where(
                    ConversationItemRow.conversation_id == conversation_id,
                    ConversationItemRow.item_id == item_id,
                )
            )
        return bool(result.rowcount)

    async def expire(self, limit: int = 1000) -> int:
        """Delete up to ``limit`` expired conversations (and their items); how many went."""
        async with self._sessions.begin() as session:
            ids = list(
                await session.scalars(
                    select(ConversationRow.id)
                    .where(ConversationRow.expires_at <= self._clock())
                    .limit(limit)
                )
            )
            if ids:
                await session.execute(
                    delete(ConversationItemRow).where(ConversationItemRow.conversation_id.in_(ids))
                )
                await session.execute(delete(ConversationRow).where(ConversationRow.id.in_(ids)))
        return len(ids)


def _item_rows(
    conversation_id: str, start: int, items: Sequence[Item]
) -> list[ConversationItemRow]:
    return [
        ConversationItemRow(
            conversation_id=conversation_id,
            position=start + offset,
            item_id=str(item.get("id") or "")[:64],
            item=item,
        )
        for offset, item in enumerate(items)
    ]


def _record(row: ConversationRow) -> ConversationRecord:
    created, updated = utc(row.created_at), utc(row.updated_at)
    assert created is not None and updated is not None
    return ConversationRecord(
        row.id, row.key_id, row.dialect, row.metadata_, row.settings, created, updated
    )
