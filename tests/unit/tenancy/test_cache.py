"""The key cache: everything at start, then only changes; the known keys survive a store outage;
a key made since the last refresh is looked up, within bounds."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from mistral_serve.errors import KeyStoreUnavailableError
from mistral_serve.store import KeyRecords, Store
from mistral_serve.store.database import sqlite_url
from mistral_serve.tenancy.cache import LOOKUPS_PER_S, UNKNOWN_TTL_S, KeyCache
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


class Ticks:
    """The cache's monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountedRecords(KeyRecords):
    """The real records, counting the reads of one key."""

    def __init__(self, store) -> None:
        super().__init__(store)
        self.reads = 0

    async def get(self, key_id):
        self.reads += 1
        return await super().get(key_id)


async def test_a_key_made_after_the_load_is_read_once_when_first_presented(store):
    records = CountedRecords(store)
    cache = KeyCache(records, ttl_s=3600, clock=Ticks())
    await cache.load()
    issued = issue_key()
    await records.create(issued.key_id, "new", issued.secret_hash, priority=4)
    found = await asyncio.gather(*(cache.find(issued.key_id) for _ in range(5)))
    assert {record.priority for record in found} == {4} and records.reads == 1  # one read
    assert cache.get(issued.key_id) is found[0] and cache.any_keys()
    assert (await cache.find(issued.key_id)) is found[0] and records.reads == 1  # then known


async def test_an_unknown_id_is_remembered_as_unknown_for_a_while(store):
    records, ticks = CountedRecords(store), Ticks()
    cache = KeyCache(records, ttl_s=3600, clock=ticks)
    later = issue_key()
    for _ in range(3):
        assert await cache.find(later.key_id) is None
    assert records.reads == 1
    await records.create(later.key_id, "made since", later.secret_hash)
    assert await cache.find(later.key_id) is None  # still remembered as unknown
    ticks.now += UNKNOWN_TTL_S
    assert (await cache.find(later.key_id)).name == "made since" and records.reads == 2


async def test_made_up_ids_cannot_make_every_request_a_store_read(store):
    records, ticks = CountedRecords(store), Ticks()
    cache = KeyCache(records, ttl_s=3600, clock=ticks)
    for _ in range(3 * int(LOOKUPS_PER_S)):
        assert await cache.find(issue_key().key_id) is None
    assert records.reads == LOOKUPS_PER_S  # the second's budget, then no more reads
    ticks.now += 1
    await cache.find(issue_key().key_id)
    assert records.reads == LOOKUPS_PER_S + 1  # it refills with time


async def test_an_unreadable_store_is_a_503_for_a_key_not_known_yet(store):
    records = KeyRecords(store)
    known = issue_key()
    await records.create(known.key_id, "known", known.secret_hash)
    cache = KeyCache(records, ttl_s=3600, clock=Ticks())
    await cache.load()
    async with store.engine.begin() as connection:
        await connection.execute(text("DROP TABLE api_keys"))
    with pytest.raises(KeyStoreUnavailableError) as refused:
        await cache.find(issue_key().key_id)
    assert refused.value.status == 503 and refused.value.headers()["retry-after"] == "1"
    assert (await cache.find(known.key_id)).name == "known"  # the known keys are still served
    assert cache.failures == 1
