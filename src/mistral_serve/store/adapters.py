"""The LoRA adapters added at run time, as plain records."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from mistral_serve.store.database import Store
from mistral_serve.store.models import LoraAdapter, WallClock, utc, utc_now


@dataclass(frozen=True)
class AdapterRecord:
    name: str
    base: str
    path: str
    created_at: datetime


class AdapterExistsError(ValueError):
    """An adapter of that name is already kept."""


class AdapterRecords:
    def __init__(self, store: Store, clock: WallClock = utc_now) -> None:
        self._sessions = store.sessions
        self._clock = clock

    async def add(self, name: str, base: str, path: str) -> AdapterRecord:
        row = LoraAdapter(name=name, base=base, path=path, created_at=self._clock())
        try:
            async with self._sessions.begin() as session:
                session.add(row)
        except IntegrityError:
            raise AdapterExistsError(name) from None
        return _record(row)

    async def list(self) -> list[AdapterRecord]:
        async with self._sessions() as session:
            rows = await session.scalars(select(LoraAdapter).order_by(LoraAdapter.name))
            return [_record(row) for row in rows]

    async def remove(self, name: str) -> bool:
        """Whether it was kept."""
        async with self._sessions.begin() as session:
            result = await session.execute(delete(LoraAdapter).where(LoraAdapter.name == name))
            return bool(result.rowcount)


def _record(row: LoraAdapter) -> AdapterRecord:
    created = utc(row.created_at)
    assert created is not None
    return AdapterRecord(row.name, row.base, row.path, created)
