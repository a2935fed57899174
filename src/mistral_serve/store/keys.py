"""API key records: create, read, list, change and revoke, as plain records (no SQL above)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime

from sqlalchemy import select

from mistral_serve.store.database import Store
from mistral_serve.store.models import ApiKey, WallClock, utc, utc_now

#: What ``update`` may change (the id, the secret and the dates are the store's own).
SETTABLE = frozenset(
    {
        "name",
        "expires_at",
        "rpm",
        "tpm",
        "max_concurrent",
        "tokens_per_day",
        "tokens_per_month",
        "models",
        "priority",
        "weight",
    }
)


@dataclass(frozen=True)
class KeyRecord:
    """One key as stored: the hash of its secret, never the secret."""

    id: str
    name: str
    secret_hash: str
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    tokens_per_day: int | None = None
    tokens_per_month: int | None = None
    models: tuple[str, ...] | None = None
    priority: int = 0
    #: Its share of its priority's turns relative to other keys (admission's fair queuing).
    weight: float = 1.0

    def usable(self, now: datetime) -> bool:
        """Not revoked and not expired at ``now``."""
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or now < self.expires_at

    def __repr__(self) -> str:  # the hash stays out of logs and tracebacks too
        return f"KeyRecord(id={self.id!r}, name={self.name!r})"


class KeyRecords:
    """The keys in ``store``; ``clock`` stamps when each was created, changed or revoked."""

    def __init__(self, store: Store, clock: WallClock = utc_now) -> None:
        self._sessions = store.sessions
        self._clock = clock

    async def create(
        self, key_id: str, name: str, secret_hash: str, **settings: object
    ) -> KeyRecord:
        _check_settable(settings)
        now = self._clock()
        row = ApiKey(
            id=key_id,
            name=name,
            secret_hash=secret_hash,
            created_at=now,
            updated_at=now,
            **_column_values(settings),
        )
        async with self._sessions.begin() as session:
            session.add(row)
        return _record(row)

    async def get(self, key_id: str) -> KeyRecord | None:
        async with self._sessions() as session:
            row = await session.get(ApiKey, key_id)
            return None if row is None else _record(row)

    async def list(self) -> list[KeyRecord]:
        async with self._sessions() as session:
            rows = await session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id))
            return [_record(row) for row in rows]

    async def update(self, key_id: str, **settings: object) -> KeyRecord | None:
        """Change the given settings (None clears a limit); None when there is no such key."""
        _check_settable(settings)
        async with self._sessions.begin() as session:
            row = await session.get(ApiKey, key_id, with_for_update=True)
            if row is None:
                return None
            for name, value in _column_values(settings).items():
                setattr(row, name, value)
            row.updated_at = self._clock()
        return _record(row)

    async def revoke(self, key_id: str) -> KeyRecord | None:
        """Revoke the key (kept, for the ledger's sake); None when there is no such key."""
        async with self._sessions.begin() as session:
            row = await session.get(ApiKey, key_id, with_for_update=True)
            if row is None:
                return None
            if row.revoked_at is None:
                row.revoked_at = row.updated_at = self._clock()
        return _record(row)

    async def changed_since(self, when: datetime) -> Sequence[KeyRecord]:
        """Keys created, changed or revoked after ``when`` (how gateways refresh their cache)."""
        async with self._sessions() as session:
            rows = await session.scalars(select(ApiKey).where(ApiKey.updated_at > when))
            return [_record(row) for row in rows]


def _check_settable(settings: dict[str, object]) -> None:
    unknown = set(settings) - SETTABLE
    if unknown:
        raise ValueError(f"not a key setting: {', '.join(sorted(unknown))}")


def _column_values(settings: dict[str, object]) -> dict[str, object]:
    values = dict(settings)
    if values.get("models") is not None:
        values["models"] = list(values["models"])  # type: ignore[call-overload]
    return values


def _record(row: ApiKey) -> KeyRecord:
    values = {field.name: getattr(row, field.name) for field in fields(KeyRecord)}
    for name in ("created_at", "updated_at", "expires_at", "revoked_at"):
        values[name] = utc(values[name])
    if values["models"] is not None:
        values["models"] = tuple(values["models"])
    return KeyRecord(**values)
