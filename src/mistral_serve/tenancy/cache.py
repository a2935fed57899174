"""Every gateway's copy of the keys: read whole at start, then only what changed, every
KEY_CACHE_TTL_S. No request reads the database; a revocation reaches every gateway within the
TTL. When the store cannot be read, the keys already known keep being served (logged once per
outage, counted by the caller's telemetry)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from mistral_serve.store import KeyRecord, KeyRecords

log = logging.getLogger(__name__)

#: Rows are re-read this far behind the newest change seen: a transaction that committed late
#: with an earlier timestamp (another gateway's clock, a slow writer) is still picked up.
OVERLAP = timedelta(seconds=60)


class KeyCache:
    def __init__(self, records: KeyRecords, ttl_s: float) -> None:
        self._records = records
        self._ttl_s = ttl_s
        self._keys: dict[str, KeyRecord] = {}
        self._newest: datetime | None = None
        self._failing = False
        self.failures = 0

    def get(self, key_id: str) -> KeyRecord | None:
        return self._keys.get(key_id)

    def any_keys(self) -> bool:
        """Whether any key exists (revoked ones count: a deployment that made keys uses them)."""
        return bool(self._keys)

    async def load(self) -> None:
        """Read every key (at start; raises when the store cannot be read)."""
        self._take(await self._records.list())

    async def refresh(self) -> None:
        """Read what changed since the newest change seen; keep what is known on failure."""
        since = (self._newest or datetime.fromtimestamp(0, UTC)) - OVERLAP
        try:
            changed = await self._records.changed_since(since)
        except Exception as exc:  # any store failure: serve the known keys
            self.failures += 1
            if not self._failing:
                log.error(
                    "key store unreadable; serving the %d known keys: %s", len(self._keys), exc
                )
            self._failing = True
            return
        if self._failing:
            log.info("key store readable again")
            self._failing = False
        self._take(changed)

    async def run(self) -> None:
        """Refresh every TTL until cancelled."""
        while True:
            await asyncio.sleep(self._ttl_s)
            await self.refresh()

    def _take(self, records: Iterable[KeyRecord]) -> None:
        for record in records:
            self._keys[record.id] = record
            if self._newest is None or record.updated_at > self._newest:
                self._newest = record.updated_at
