"""Key records on SQLite and PostgreSQL: migrations at open, create/read/list/update/revoke."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import inspect

from mistral_serve.store import KeyRecords, Store
from mistral_serve.tenancy.keys import issue_key

START = datetime(2026, 11, 25, 12, tzinfo=UTC)


class Ticking:
    """A wall clock one second later at every reading."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


async def test_opening_applies_the_migrations_once(database_url):
    for _ in range(2):  # a second open finds the schema current
        store = await Store.open(database_url)
        async with store.engine.connect() as connection:
            tables = await connection.run_sync(lambda c: inspect(c).get_table_names())
        await store.close()
        assert {"api_keys", "alembic_version"} <= set(tables)


async def test_a_key_is_stored_with_its_hash_and_settings(store):
    keys = KeyRecords(store)
    issued = issue_key()
    created = await keys.create(
        issued.key_id, "batch jobs", issued.secret_hash, rpm=60, models=["demo"], priority=5
    )
    fetched = await keys.get(issued.key_id)
    assert fetched == created
    assert fetched.secret_hash == issued.secret_hash
    assert fetched.models == ("demo",) and fetched.rpm == 60 and fetched.priority == 5
    assert fetched.tpm is None  # unlimited
    assert fetched.created_at.tzinfo is not None
    assert issued.text.split("_")[2] not in repr(fetched)
    assert fetched.secret_hash not in repr(fetched)


async def test_keys_are_listed_in_creation_order(store):
    keys = KeyRecords(store)
    for name in ("a", "b", "c"):
        issued = issue_key()
        await keys.create(issued.key_id, name, issued.secret_hash)
    assert [record.name for record in await keys.list()] == ["a", "b", "c"]


async def test_update_changes_only_what_is_given_and_none_clears_a_limit(store):
    keys = KeyRecords(store, Ticking())
    issued = issue_key()
    created = await keys.create(issued.key_id, "app", issued.secret_hash, rpm=10, tpm=1000)
    updated = await keys.update(issued.key_id, rpm=None, priority=-1)
    assert updated.rpm is None and updated.tpm == 1000 and updated.priority == -1
    assert updated.updated_at > created.updated_at
    assert await keys.update("nosuchkey", rpm=1) is None
    with pytest.raises(ValueError, match="secret_hash"):
        await keys.update(issued.key_id, secret_hash="x")


async def test_revoked_and_expired_keys_are_not_usable(store):
    clock = Ticking()
    keys = KeyRecords(store, clock)
    now = START
    live, expiring = issue_key(), issue_key()
    await keys.create(live.key_id, "live", live.secret_hash)
    await keys.create(
        expiring.key_id, "soon", expiring.secret_hash, expires_at=now + timedelta(days=1)
    )
    assert (await keys.get(live.key_id)).usable(now)
    assert not (await keys.get(expiring.key_id)).usable(now + timedelta(days=2))
    revoked = await keys.revoke(live.key_id)
    assert revoked.revoked_at == clock.now and not revoked.usable(now)  # stamped by the clock
    assert (await keys.revoke(live.key_id)).revoked_at == revoked.revoked_at  # once
    assert await keys.revoke("nosuchkey") is None


async def test_changes_since_a_moment_are_what_a_cache_refresh_reads(store):
    clock = Ticking()
    keys = KeyRecords(store, clock)
    first, second = issue_key(), issue_key()
    await keys.create(first.key_id, "first", first.secret_hash)
    mark = clock.now
    await keys.create(second.key_id, "second", second.secret_hash)
    await keys.revoke(first.key_id)
    assert {record.id for record in await keys.changed_since(mark)} == {
        first.key_id,
        second.key_id,
    }


async def test_budgets_hold_billions_of_tokens(store) -> None:
    records = KeyRecords(store)
    await records.create("big", "batch", "0" * 64, tokens_per_month=50_000_000_000)
    assert (await records.get("big")).tokens_per_month == 50_000_000_000
