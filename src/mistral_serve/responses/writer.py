"""Stored responses written by group commit: every response that ends while a write is under
way goes into the next one, as one transaction.

A response's client is answered only once its response is written (a response the client saw
completed can be retrieved from any gateway, whatever happens next), so the write is on the
request path; grouping keeps its cost per response low under load without any timer: alone,
a response is written at once; with company, it waits at most for the write before its own.
"""

from __future__ import annotations

import asyncio
import logging

from mistral_serve.store.responses import ResponseRecords, StoredResponse

log = logging.getLogger(__name__)

#: The most responses one transaction writes (a burst is cut into writes of this size).
MAX_GROUP = 256


class ResponseWriter:
    def __init__(self, records: ResponseRecords) -> None:
        self._records = records
        self._waiting: list[tuple[StoredResponse, asyncio.Future[None]]] = []
        self._writing: asyncio.Task[None] | None = None

    async def write(self, record: StoredResponse) -> None:
        """Return once ``record`` is written (raise what the store raised)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((record, future))
        if self._writing is None:
            self._writing = asyncio.get_running_loop().create_task(self._write_all())
        await asyncio.shield(future)  # a client leaving does not take the write with it

    async def _write_all(self) -> None:
        try:
            while self._waiting:
                group, self._waiting = self._waiting[:MAX_GROUP], self._waiting[MAX_GROUP:]
                try:
                    await self._records.put_many([record for record, _ in group])
                except Exception as exc:
                    for _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for _, future in group:
                    if not future.done():
                        future.set_result(None)
        finally:
            self._writing = None
