"""Requests in flight per engine, shared by the gateway's worker processes (GATEWAY_WORKERS).

Gateway replicas on different machines learn each other's load from the engines' ``/metrics``,
a scrape interval late, and the concurrency target holds among them to within that interval.
Workers on one machine can do better, and must: every streamed token of the box passes through
one of them, and a target held only to within a second would let N workers send N times an
engine's batch at a burst. So they share a table in memory (a file in tmpfs, mapped by each):
one row per worker, one slot per engine; a worker writes only its own row (+1 when it leases a
request on an engine, −1 when the lease ends) and reads the others' for the engine's load.
The engine is chosen and leased under a lock held by one worker at a time (``flock`` on the
same file: two system calls a request), so no two workers can both take an engine's last free
place: the target holds exactly, as in one process.

An engine's slot is a hash of its URL, so workers that discover engines on their own (DNS) still
agree. Two engines sharing a slot only add up each other's load: their targets are then held
too strictly, never too loosely.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

#: Slots per worker row.
SLOTS = 1024
_WORD = 8  # one signed 64-bit count per slot


def create_table(path: Path, workers: int) -> None:
    """Make the (zeroed) table for ``workers`` at ``path``, before any worker starts."""
    with path.open("wb") as table:
        table.truncate(workers * SLOTS * _WORD)


def clear_row(path: Path, workers: int, worker: int) -> None:
    """A worker died, and its requests with it: zero its row before it starts again."""
    with path.open("r+b") as table:
        table.seek(worker * SLOTS * _WORD)
        table.write(bytes(SLOTS * _WORD))


def slot_of(url: str) -> int:
    return zlib.crc32(url.encode()) % SLOTS


class SharedLoad:
    """This worker's view of the table: its own row to write, the others' to read."""

    def __init__(self, path: Path, workers: int, worker: int) -> None:
        if not 0 <= worker < workers:
            raise ValueError(f"worker {worker} of {workers}")
        self.workers = workers
        self.worker = worker
        self._fd = os.open(path, os.O_RDWR)
        self._map = mmap.mmap(self._fd, workers * SLOTS * _WORD)
        self._counts = memoryview(self._map).cast("q")
        self._row = worker * SLOTS
        self._others = [w * SLOTS for w in range(workers) if w != worker]

    def add(self, slot: int, delta: int) -> None:
        """This worker's requests on the engine at ``slot`` changed by ``delta``."""
        self._counts[self._row + slot] += delta

    def others(self, slot: int) -> int:
        """The other workers' requests on the engine at ``slot``."""
        counts = self._counts
        return sum(counts[row + slot] for row in self._others)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Held while an engine is chosen and leased: one worker at a time."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self._counts.release()
        self._map.close()
        os.close(self._fd)
