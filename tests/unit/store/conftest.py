"""A real database per test: SQLite in a temporary folder, and PostgreSQL on this machine's
standard port (TEST_POSTGRES_URL to point elsewhere), in a throwaway database dropped after.
Never skipped: a PostgreSQL that does not answer is a failure."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mistral_serve.store import Store
from mistral_serve.store.database import sqlite_url
from tests.services import postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    async with postgres_database() as url:
        yield url


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    opened = await Store.open(database_url)
    yield opened
    await opened.close()
