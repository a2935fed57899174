"""Stored responses, as plain records: written when a response ends (or, in the background,
as it runs), read one at a time or as a whole chain, listed by their input items, expired.

Every read names the key that asks: another key's response is not found, as if it did not
exist. An expired response is not found either, before the sweep deletes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, insert, literal, select, update

from mistral_serve.store.database import Store
from mistral_serve.store.models import ResponseEventRow, StoredResponseRow, WallClock, utc, utc_now


@dataclass(frozen=True)
class StoredResponse:
    id: str
    key_id: str
    status: str
    model: str
    previous_response_id: str | None
    root_id: str
    conversation_id: str | None
    input_items: list[dict[str, Any]]
    response: dict[str, Any]
    expires_at: datetime
    runner: str | None = None


#: The states of a background response that is not over.
RUNNING = ("queued", "in_progress")
#: How many responses back a chain is followed (an agent's long loop is a few hundred).
MAX_CHAIN = 10_000


class ResponseRecords:
    def __init__(self, store: Store, clock: WallClock = utc_now) -> None:
        self._sessions = store.sessions
        self._engine = store.engine
        self._clock = clock

    async def put(self, record: StoredResponse) -> None:
        """Write a new response."""
        await self.put_many([record])

    async def put_many(self, records: Sequence[StoredResponse]) -> None:
        """Write new responses in one transaction, one multi-row INSERT (SQLAlchemy Core:
        the ORM's unit of work cost the gateway more CPU than the rest of a response)."""
        now = self._clock()
        async with self._engine.begin() as connection:
            await connection.execute(
                insert(StoredResponseRow), [_values(record, now) for record in records]
            )

    async def get(self, response_id: str, key_id: str) -> StoredResponse | None:
        async with self._sessions() as session:
            row = await session.get(StoredResponseRow, response_id)
        if row is None or row.key_id != key_id or utc(row.expires_at) <= self._clock():
            return None
        return _record(row)

    async def chain(self, response_id: str, key_id: str) -> list[StoredResponse] | None:
        """The response and every one before it, oldest first (None: not found). One query:
        the links are followed by the database (a recursive CTE)."""
        table = StoredResponseRow
        start = (
            select(table.id, table.previous_response_id, literal(0).label("depth"))
            .where(table.id == response_id, table.key_id == key_id)
            .cte("chain", recursive=True)
        )
        back = select(table.id, table.previous_response_id, (start.c.depth + 1).label("depth"))
        back = back.join(start, table.id == start.c.previous_response_id).where(
            table.key_id == key_id, start.c.depth < MAX_CHAIN
        )
        chain = start.union_all(back)
        query = select(table).join(chain, table.id == chain.c.id).order_by(chain.c.depth.desc())
        async with self._sessions() as session:
            rows = list(await session.scalars(query))
        now = self._clock()
        if not rows or rows[-1].id != response_id or utc(rows[-1].expires_at) <= now:
            return None
        return [_record(row) for row in rows]

    async def delete(self, response_id: str, key_id: str) -> bool:
        """Whether it was there (and the key's)."""
        async with self._sessions.begin() as session:
            result = await session.execute(
                delete(StoredResponseRow).where(
                    StoredResponseRow.id == response_id, StoredResponseRow.key_id == key_id
                )
            )
            await session.execute(
                delete(ResponseEventRow).where(ResponseEventRow.response_id == response_id)
            )
        return bool(result.rowcount)

    async def expire(self, limit: int = 1000) -> int:
        """Delete up to ``limit`` expired responses (and their events); how many went."""
        now = self._clock()
        async with self._sessions.begin() as session:
            ids = list(
                await session.scalars(
                    select(StoredResponseRow.id)
                    .where(StoredResponseRow.expires_at <= now)
                    .limit(limit)
                )
            )
            if ids:
                await session.execute(
                    delete(ResponseEventRow).where(ResponseEventRow.response_id.in_(ids))
                )
                await session.execute(
                    delete(StoredResponseRow).where(StoredResponseRow.id.in_(ids))
                )
        return len(ids)

    # -- background responses ----------------------------------------------------------------
    async def advance(
        self,
        response_id: str,
        status: str,
        response: dict[str, Any],
        events: Sequence[dict[str, Any]] = (),
        *,
        key_id: str | None = None,
    ) -> bool:
        """A background response's new state (and its new events), in one transaction, if it
        is still running (queued or in progress): False when it is not (it was cancelled, or
        given up as lost, meanwhile). Each write is also its runner's heartbeat."""
        conditions = [
            StoredResponseRow.id == response_id,
            StoredResponseRow.status.in_(RUNNING),
        ]
        if key_id is not None:
            conditions.append(StoredResponseRow.key_id == key_id)
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(StoredResponseRow)
                .where(*conditions)
                .values(status=status, response=response, updated_at=self._clock())
            )
            if not result.rowcount:
                return False
            session.add_all(
                ResponseEventRow(
                    response_id=response_id, sequence=event["sequence_number"], event=event
                )
                for event in events
            )
        return True

    async def events(self, response_id: str, after: int) -> list[dict[str, Any]]:
        """A background response's events with sequence numbers above ``after``."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(ResponseEventRow)
                .where(
                    ResponseEventRow.response_id == response_id,
                    ResponseEventRow.sequence > after,
                )
                .order_by(ResponseEventRow.sequence)
            )
            return [row.event for row in rows]

    async def stale(self, before: datetime) -> list[StoredResponse]:
        """Background responses still running whose runner has not written since ``before``:
        their gateway died (or lost the store) while running them."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(StoredResponseRow).where(
                    StoredResponseRow.status.in_(RUNNING),
                    StoredResponseRow.updated_at < before,
                )
            )
            return [_record(row) for row in rows]


def _values(record: StoredResponse, now: datetime) -> dict[str, Any]:
    return dict(
        id=record.id,
        key_id=record.key_id,
        status=record.status,
        model=record.model[:200],
        previous_response_id=record.previous_response_id,
        root_id=record.root_id,
        conversation_id=record.conversation_id,
        input_items=record.input_items,
        response=record.response,
        runner=record.runner,
        created_at=datetime.fromtimestamp(
            record.response.get("created_at") or now.timestamp(), UTC
        ),
        updated_at=now,
        expires_at=record.expires_at,
    )


def _record(row: StoredResponseRow) -> StoredResponse:
    expires = utc(row.expires_at)
    assert expires is not None
    return StoredResponse(
        id=row.id,
        key_id=row.key_id,
        status=row.status,
        model=row.model,
        previous_response_id=row.previous_response_id,
        root_id=row.root_id,
        conversation_id=row.conversation_id,
        input_items=row.input_items,
        response=row.response,
        expires_at=expires,
        runner=row.runner,
    )
