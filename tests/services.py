"""The real services tests use: PostgreSQL and Redis on this machine's standard ports
(TEST_POSTGRES_URL and TEST_REDIS_URL point elsewhere; scripts/test.sh starts throwaway ones
where none answers). Never skipped: a service that does not answer fails the test."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import asyncpg

#: The server's maintenance database; each test gets a database of its own beside it.
POSTGRES = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def _create(name: str) -> str:
    admin = await asyncpg.connect(POSTGRES)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = POSTGRES.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{name}"


async def _drop(name: str) -> None:
    admin = await asyncpg.connect(POSTGRES)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A throwaway PostgreSQL database (its SQLAlchemy asyncpg URL), dropped afterwards."""
    name = f"mistral_serve_test_{uuid.uuid4().hex[:12]}"
    try:
        yield await _create(name)
    finally:
        await _drop(name)


@contextmanager
def postgres_database_sync() -> Iterator[str]:
    """The same, for code outside an event loop (module fixtures of integration tests)."""
    name = f"mistral_serve_test_{uuid.uuid4().hex[:12]}"
    try:
        yield asyncio.run(_create(name))
    finally:
        asyncio.run(_drop(name))
