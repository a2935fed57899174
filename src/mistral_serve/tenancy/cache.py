"""Every gateway's copy of the keys: read whole at start, then only what changed, every
KEY_CACHE_TTL_S. A revocation reaches every gateway within the TTL. When the store cannot be
read, the keys already known keep being served (logged once per outage, counted by the
caller's telemetry).

A key made since the last refresh is not refused until the next one: a well-formed key whose
id the copy does not know costs one store read (:meth:`KeyCache.find`), and from then on it is
known. So that made-up ids cannot turn requests into store reads, an id the store does not
know is remembered as unknown for :data:`UNKNOWN_TTL_S` (a client retrying a wrong key costs
one read per id and period), and at most :data:`LOOKUPS_PER_S` ids a second are looked up at
all (beyond that, an unknown id is refused until a refresh or the next second's reads)."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from mistral_serve.errors import KeyStoreUnavailableError
from mistral_serve.store import KeyRecord, KeyRecords

log = logging.getLogger(__name__)

#: Rows are re-read this far behind the newest change seen: a transaction that committed late
#: with an earlier timestamp (another gateway's clock, a slow writer) is still picked up.
OVERLAP = timedelta(seconds=60)
#: How long an id the store did not know is answered "unknown" without asking it again.
UNKNOWN_TTL_S = 10.0
#: At most this many unknown ids are remembered (then they start again).
UNKNOWN_MAX = 10_000
#: Store reads for ids the copy does not know, at most, per second (a token bucket).
LOOKUPS_PER_S = 20.0


class KeyCache:
    def __init__(
        self, records: KeyRecords, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._records = records
        self._ttl_s = ttl_s
        self._clock = clock  # for the unknown ids and the lookup budget
        self._keys: dict[str, KeyRecord] = {}
        self._newest: datetime | None = None
        self._failing = False
        self.failures = 0
        self._unknown: dict[str, float] = {}  # key id → until when it is known to be unknown
        self._finding: dict[str, asyncio.Future[KeyRecord | None]] = {}
        self._lookups_left = LOOKUPS_PER_S
        self._lookups_at = clock()

    def get(self, key_id: str) -> KeyRecord | None:
        return self._keys.get(key_id)

    def any_keys(self) -> bool:
        """Whether any key exists (revoked ones count: a deployment that made keys uses them)."""
        return bool(self._keys)

    async def find(self, key_id: str) -> KeyRecord | None:
        """The record of ``key_id``: the copy's, else (a key made since the last refresh) the
        store's, read once however many requests ask at the same time. None for an id the
        store does not know, or one that is not looked up now (see the module's docstring).
        Raises KeyStoreUnavailableError when the store cannot be read."""
        record = self._keys.get(key_id)
        if record is not None:
            return record
        if self._clock() < self._unknown.get(key_id, 0.0):
            return None
        finding = self._finding.get(key_id)
        if finding is None:
            if not self._may_look_up():
                return None
            finding = asyncio.ensure_future(self._read(key_id))
            self._finding[key_id] = finding
            finding.add_done_callback(functools.partial(self._found, key_id))
        return await asyncio.shield(finding)

    def _found(self, key_id: str, finding: asyncio.Future[KeyRecord | None]) -> None:
        """A read is over: later requests for the id go by what it found. Its failure is
        taken here too, so that one whose requests all left (their clients gone) is not
        reported as never retrieved."""
        del self._finding[key_id]
        if not finding.cancelled():
            finding.exception()

    def _may_look_up(self) -> bool:
        now = self._clock()
        self._lookups_left = min(
            LOOKUPS_PER_S, self._lookups_left + (now - self._lookups_at) * LOOKUPS_PER_S
        )
        self._lookups_at = now
        if self._lookups_left < 1:
            return False
        self._lookups_left -= 1
        return True

    async def _read(self, key_id: str) -> KeyRecord | None:
        try:
            record = await self._records.get(key_id)
        except Exception as exc:  # any store failure: the key may well exist
            self._store_failed(exc)
            raise KeyStoreUnavailableError(
                "The key store cannot be read now; try again shortly.", retry_after_s=1
            ) from None
        if record is None:
            if len(self._unknown) >= UNKNOWN_MAX:
                self._unknown.clear()
            self._unknown[key_id] = self._clock() + UNKNOWN_TTL_S
            return None
        # Not a refresh: the newest change seen stays as it was, so no change is skipped.
        known = self._keys.get(key_id)
        if known is None or record.updated_at > known.updated_at:
            self._keys[key_id] = record
        return self._keys[key_id]

    async def load(self) -> None:
        """Read every key (at start; raises when the store cannot be read)."""
        self._take(await self._records.list())

    async def refresh(self) -> None:
        """Read what changed since the newest change seen; keep what is known on failure."""
        since = (self._newest or datetime.fromtimestamp(0, UTC)) - OVERLAP
        try:
            changed = await self._records.changed_since(since)
        except Exception as exc:  # any store failure: serve the known keys
            self._store_failed(exc)
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

    def _store_failed(self, exc: Exception) -> None:
        self.failures += 1
        if not self._failing:
            log.error("key store unreadable; serving the %d known keys: %s", len(self._keys), exc)
        self._failing = True

    def _take(self, records: Iterable[KeyRecord]) -> None:
        for record in records:
            self._keys[record.id] = record
            self._unknown.pop(record.id, None)
            if self._newest is None or record.updated_at > self._newest:
                self._newest = record.updated_at
