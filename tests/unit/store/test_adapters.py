"""The runtime LoRA adapters kept in the store, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mistral_serve.store import AdapterExistsError, AdapterRecords

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


async def test_adapters_are_kept_listed_and_forgotten(store):
    records = AdapterRecords(store, lambda: NOW)
    await records.add("sql", "demo", "/adapters/sql")
    await records.add("support", "demo", "/adapters/support")
    with pytest.raises(AdapterExistsError):
        await records.add("sql", "other", "/x")
    listed = await records.list()
    assert [(a.name, a.base, a.path) for a in listed] == [
        ("sql", "demo", "/adapters/sql"),
        ("support", "demo", "/adapters/support"),
    ]
    assert listed[0].created_at == NOW
    assert await records.remove("sql") is True
    assert await records.remove("sql") is False
    assert [a.name for a in await records.list()] == ["support"]
