"""The usage ledger's writer: one row per request, written off the request path.

``add`` encodes the row (its JSON object, the form the database and the spool file take)
and appends it to a list. A background task wakes every LEDGER_FLUSH_INTERVAL_S, or as soon
as LEDGER_BATCH_ROWS wait, and writes the rows waiting then in batches of that size, one
multi-row insert each (:meth:`~mistral_serve.store.usage.UsageRecords.write`); rows that
arrive meanwhile wait for its next turn, so under load every batch is full. ``close`` writes
what is left, so a SIGTERM loses nothing.

When the database cannot take a batch, the rows go to a spool file (JSON lines, fsynced) in
the data folder, and are replayed once it answers again. Each process owns its spool file,
holding an exclusive ``flock`` on it while it lives; a file nobody holds belonged to a process
that died, and is replayed too (at start and after each recovery). Replays are safe to repeat:
the insert skips row ids already written. Rows pile up in memory only to a bound; past it they
go straight to the spool.
"""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import logging
import os
import uuid
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path
from typing import IO

from mistral_serve.store import EncodedRow, UsageRecords, UsageRow

log = logging.getLogger(__name__)

SPOOL_SUFFIX = ".jsonl"


class Spool:
    """This process's spool file, and the orphaned ones of processes that died."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / f"ledger-spool-{uuid.uuid4().hex}{SPOOL_SUFFIX}"
        self._file: IO[bytes] | None = None

    def append(self, rows: Iterable[EncodedRow]) -> None:
        """Write rows durably, one JSON object a line (blocking: call it in a thread)."""
        if self._file is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")  # held open (and locked) while it lives
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._file.write(b"".join(row + b"\n" for row in rows))
        self._file.flush()
        os.fsync(self._file.fileno())

    def claim(self) -> list[Path]:
        """Spool files to replay: this process's own, and those no living process holds."""
        if not self.folder.is_dir():
            return []
        claimed = []
        for path in sorted(self.folder.glob(f"ledger-spool-*{SPOOL_SUFFIX}")):
            if path == self.path:
                if self._file is not None:
                    claimed.append(path)
                continue
            with suppress(OSError), open(path, "rb") as probe:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises: its owner lives
                claimed.append(path)
        return claimed

    @staticmethod
    def read(path: Path) -> list[EncodedRow]:
        rows = []
        for line in path.read_bytes().splitlines():
            with suppress(ValueError, TypeError):  # a line cut short by a crash
                UsageRow.decode(line)
                rows.append(line)
        return rows

    def done(self, path: Path) -> None:
        """``path`` is replayed: remove it (our own file is reopened on the next append)."""
        if path == self.path and self._file is not None:
            self._file.close()
            self._file = None
        path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class Ledger:
    def __init__(
        self,
        records: UsageRecords,
        spool_folder: Path,
        *,
        flush_interval_s: float = 1.0,
        batch_rows: int = 500,
        max_pending: int | None = None,
    ) -> None:
        self._records = records
        self._spool = Spool(spool_folder)
        self._interval = flush_interval_s
        self._batch_rows = batch_rows
        self._max_pending = max_pending or batch_rows * 100
        self._pending: list[EncodedRow] = []
        self._id_prefix = uuid.uuid4().hex[:16]
        self._ids = itertools.count()
        self._wake = asyncio.Event()
        self._closing = False
        self._io = asyncio.Lock()  # one writer at a time: the database and the spool file
        self._task: asyncio.Task[None] | None = None
        self._spooling: set[asyncio.Task[None]] = set()
        self._spooled = False
        self._failing = False
        #: Counters for telemetry and tests.
        self.written = 0
        self.spooled = 0
        self.write_errors = 0

    def row_id(self) -> str:
        """A new row id, unique across processes: this writer's random prefix and a count
        (cheaper than a uuid4 per request, which reads the OS's random source)."""
        return f"{self._id_prefix}{next(self._ids):016x}"

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(self, row: UsageRow) -> None:
        """Record one request (never blocks, never fails the request)."""
        self._pending.append(row.encode())
        if len(self._pending) >= self._max_pending:  # the database cannot keep up: spool
            rows, self._pending = self._pending, []
            self._spawn_spool(rows)
        elif len(self._pending) >= self._batch_rows:
            self._wake.set()

    async def start(self) -> None:
        """Replay what earlier processes spooled, then write every interval."""
        await self._replay()
        self._task = asyncio.create_task(self._run(), name="usage-ledger")

    async def close(self) -> None:
        """Stop, and write every row still waiting (to the spool if the database is down).
        The writer is asked to stop, not cancelled: a batch it is writing is finished first."""
        if self._task is not None:
            self._closing = True
            self._wake.set()
            await self._task
            self._task = None
        if self._spooling:
            await asyncio.gather(*self._spooling, return_exceptions=True)
        await self.flush()
        async with self._io:
            await asyncio.to_thread(self._spool.close)

    async def flush(self) -> None:
        """Write every row waiting, batch by batch, until none waits."""
        while self._pending:
            await self._write_batch()

    async def _write_waiting(self) -> None:
        """Write the rows waiting now. Rows that arrive meanwhile wait for the next turn: a
        writer that drained them too would, under load, write one small batch after another
        (a batch costs the gateway as much as hundreds of rows)."""
        waiting = len(self._pending)
        while waiting > 0 and self._pending:
            waiting -= await self._write_batch()

    async def _write_batch(self) -> int:
        batch = self._pending[: self._batch_rows]
        del self._pending[: self._batch_rows]
        await self._write(batch)
        return len(batch)

    async def _run(self) -> None:
        while not self._closing:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            if self._closing:
                return
            try:
                await self._write_waiting()
                if self._spooled and await self._records.reachable():
                    await self._replay()
            except Exception:  # never let the writer die: the next interval tries again
                log.exception("usage ledger: flush failed")

    async def _write(self, batch: list[EncodedRow]) -> None:
        async with self._io:
            try:
                self.written += await self._records.write(batch)
            except asyncio.CancelledError:
                # Not written, or written and not known to be: it waits again (a second write
                # of a row adds nothing, the ids are unique), and the next flush takes it.
                self._pending[:0] = batch
                raise
            except Exception as exc:
                self.write_errors += 1
                if not self._failing:
                    log.error(
                        "usage ledger: database unwritable, spooling rows to %s: %s",
                        self._spool.path,
                        type(exc).__name__,
                    )
                self._failing = True
                await self._append_to_spool(batch)
                return
        if self._failing:
            log.info("usage ledger: database writable again; replaying the spool")
            self._failing = False

    def _spawn_spool(self, rows: list[EncodedRow]) -> None:
        async def spool() -> None:
            async with self._io:
                await self._append_to_spool(rows)

        task = asyncio.get_running_loop().create_task(spool(), name="usage-ledger-spool")
        self._spooling.add(task)
        task.add_done_callback(self._spooling.discard)

    async def _append_to_spool(self, rows: list[EncodedRow]) -> None:
        try:
            await asyncio.to_thread(self._spool.append, rows)
        except OSError:
            log.exception("usage ledger: %d rows could not be spooled", len(rows))
            return
        self.spooled += len(rows)
        self._spooled = True

    async def _replay(self) -> None:
        async with self._io:
            paths = await asyncio.to_thread(self._spool.claim)
            for path in paths:
                rows = await asyncio.to_thread(Spool.read, path)
                try:
                    for start in range(0, len(rows), self._batch_rows):
                        self.written += await self._records.write(
                            rows[start : start + self._batch_rows]
                        )
                except Exception as exc:
                    log.warning("usage ledger: replay of %s deferred: %s", path.name, exc)
                    return
                await asyncio.to_thread(self._spool.done, path)
                log.info("usage ledger: replayed %d spooled rows from %s", len(rows), path.name)
            self._spooled = self._failing = False
