"""The ledger's writer against a real SQLite store: flush on size, on time and on close; spool
when the database fails, replay when it answers, adopt the spool of a process that died.
The database failure is a switch on the records (a real database cannot be made to fail on
cue in a unit test); the integration tests run the ledger on real SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import fcntl
from collections.abc import AsyncIterator, Sequence

import pytest

from mistral_serve.store import EncodedRow, Store, UsageRecords
from mistral_serve.store.database import sqlite_url
from mistral_serve.tenancy.ledger import Ledger
from tests.support import ledger_rows, until
from tests.unit.store.test_usage import row


class SwitchableRecords(UsageRecords):
    """Real records whose database can be switched off."""

    down = False

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.store = store

    async def write(self, rows: Sequence[EncodedRow]) -> int:
        if self.down:
            raise ConnectionError("database down")
        return await super().write(rows)

    async def reachable(self) -> bool:
        return not self.down and await super().reachable()


@pytest.fixture
async def records(tmp_path) -> AsyncIterator[SwitchableRecords]:
    store = await Store.open(sqlite_url(tmp_path))
    yield SwitchableRecords(store)
    await store.close()


async def test_flushes_when_a_batch_is_full(records, tmp_path) -> None:
    ledger = Ledger(records, tmp_path / "spool", flush_interval_s=60, batch_rows=3)
    await ledger.start()
    for _ in range(3):
        ledger.add(row())
    await until(lambda: _count(records, 3))
    await ledger.close()


async def test_flushes_every_interval(records, tmp_path) -> None:
    ledger = Ledger(records, tmp_path / "spool", flush_interval_s=0.05, batch_rows=100)
    await ledger.start()
    ledger.add(row())
    await until(lambda: _count(records, 1))
    await ledger.close()


async def test_close_writes_everything_waiting(records, tmp_path) -> None:
    ledger = Ledger(records, tmp_path / "spool", flush_interval_s=60, batch_rows=7)
    await ledger.start()
    for _ in range(20):
        ledger.add(row())
    await ledger.close()
    assert await _count(records, 20) and ledger.written == 20 and ledger.pending == 0


class SlowRecords(SwitchableRecords):
    """Real records whose writes take a while (a busy database), so a close can come mid-write;
    they remember the size of every batch."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.batches: list[int] = []

    async def write(self, rows: Sequence[EncodedRow]) -> int:
        self.batches.append(len(rows))
        await asyncio.sleep(0.2)
        return await super().write(rows)


@pytest.fixture
async def slow_records(tmp_path) -> AsyncIterator[SlowRecords]:
    store = await Store.open(sqlite_url(tmp_path))
    yield SlowRecords(store)
    await store.close()


async def test_a_close_during_a_write_loses_no_row(slow_records, tmp_path) -> None:
    """SIGTERM while a batch is being written: the batch is not dropped with its write."""
    ledger = Ledger(slow_records, tmp_path / "spool", flush_interval_s=0.05, batch_rows=100)
    await ledger.start()
    for _ in range(30):
        ledger.add(row())
    await asyncio.sleep(0.1)  # the writer has taken the rows and is writing them
    assert ledger.pending == 0
    await ledger.close()
    assert await _count(slow_records, 30) and ledger.spooled == 0


async def test_rows_arriving_during_a_write_wait_for_a_full_batch(slow_records, tmp_path):
    """Under load the writer writes full batches: rows that arrive while one is written are
    not sent at once as a small batch of their own (a batch costs as much as many rows)."""
    ledger = Ledger(slow_records, tmp_path / "spool", flush_interval_s=60, batch_rows=10)
    await ledger.start()
    for _ in range(10):
        ledger.add(row())
    await asyncio.sleep(0.05)  # the full batch is being written
    for _ in range(4):
        ledger.add(row())
    await asyncio.sleep(0.4)  # well after that write
    assert slow_records.batches == [10] and ledger.pending == 4
    await ledger.close()  # what waits is written on the way out
    assert slow_records.batches == [10, 4] and await _count(slow_records, 14)


async def test_spools_while_the_database_is_down_then_replays(records, tmp_path) -> None:
    ledger = Ledger(records, tmp_path / "spool", flush_interval_s=0.05, batch_rows=2)
    await ledger.start()
    records.down = True
    for _ in range(5):
        ledger.add(row())
    await until(lambda: _spooled(ledger, 5))
    assert len(list((tmp_path / "spool").glob("*.jsonl"))) == 1
    records.down = False
    await until(lambda: _count(records, 5))
    await until(lambda: _no_spool_files(tmp_path / "spool"))
    await ledger.close()


async def test_close_spools_when_the_database_is_down(records, tmp_path) -> None:
    ledger = Ledger(records, tmp_path / "spool", flush_interval_s=60, batch_rows=10)
    await ledger.start()
    records.down = True
    for _ in range(4):
        ledger.add(row())
    await ledger.close()
    assert ledger.spooled == 4 and await _count(records, 0)
    records.down = False
    # The next process adopts the spool of this one (whose lock died with it) and replays it.
    successor = Ledger(records, tmp_path / "spool", flush_interval_s=60, batch_rows=10)
    await successor.start()
    assert await _count(records, 4) and await _no_spool_files(tmp_path / "spool")
    await successor.close()


async def test_a_living_process_keeps_its_spool(records, tmp_path) -> None:
    folder = tmp_path / "spool"
    folder.mkdir()
    held = folder / "ledger-spool-living.jsonl"
    held.write_bytes(row().encode() + b"\n")
    with open(held, "rb") as owner:  # noqa: ASYNC230 (a test holding a lock)
        fcntl.flock(owner, fcntl.LOCK_EX)
        ledger = Ledger(records, folder, flush_interval_s=60)
        await ledger.start()
        assert held.exists() and await _count(records, 0)
        await ledger.close()


async def test_rows_past_the_bound_go_to_the_spool(records, tmp_path) -> None:
    ledger = Ledger(records, tmp_path / "spool", flush_interval_s=60, batch_rows=2, max_pending=4)
    await ledger.start()
    for _ in range(4):
        ledger.add(row())
    assert ledger.pending == 0  # handed to the spool, not held in memory
    await ledger.close()
    assert ledger.spooled == 4


async def _count(records: UsageRecords, expected: int) -> bool:
    return len(await ledger_rows(records.store)) == expected


async def _spooled(ledger: Ledger, expected: int) -> bool:
    return ledger.spooled == expected


async def _no_spool_files(folder) -> bool:
    return not list(folder.glob("*.jsonl"))


def test_row_ids_are_unique_and_fit_the_column(tmp_path) -> None:
    first = Ledger(None, tmp_path)  # type: ignore[arg-type]
    second = Ledger(None, tmp_path)  # type: ignore[arg-type]
    ids = {first.row_id() for _ in range(1000)} | {second.row_id() for _ in range(1000)}
    assert len(ids) == 2000 and all(len(row_id) == 32 for row_id in ids)
