"""The key cache: everything at start, then only changes; the known keys survive a store outage."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from mistral_serve.store import KeyRecords, Store
from mistral_serve.store.database import sqlite_url
from mistral_serve.tenancy.cache import KeyCache
from mistral_serve.tenancy.keys import issue_key


@pytest.fixture
async def store(tmp_path):
    opened = await Store.open(sqlite_url(tmp_path))
    yield opened
    await opened.close()


async def test_changes_reach_the_cache_at_the_next_refresh(store):
    records = KeyRecords(store)
    first = issue_key()
    await records.create(first.key_id, "first", first.secret_hash)
    cache = KeyCache(records, ttl_s=5)
    await cache.load()
    assert cache.get(first.key_id).revoked_at is None and cache.any_keys()
    second = issue_key()
    await records.create(second.key_id, "second", second.secret_hash)
    await records.revoke(first.key_id)
    assert cache.get(second.key_id) is None  # not before the refresh
    await cache.refresh()
    assert cache.get(second.key_id) is not None
    assert cache.get(first.key_id).revoked_at is not None


async def test_a_store_outage_keeps_the_known_keys(store, caplog):
    records = KeyRecords(store)
    issued = issue_key()
    await records.create(issued.key_id, "app", issued.secret_hash)
    cache = KeyCache(records, ttl_s=5)
    await cache.load()
    async with store.engine.begin() as connection:  # the store breaks under the cache
        await connection.execute(text("DROP TABLE api_keys"))
    for _ in range(2):
        await cache.refresh()
    assert cache.get(issued.key_id) is not None
    assert cache.failures == 2
    assert sum("key store unreadable" in r.message for r in caplog.records) == 1  # once
