from datetime import UTC, datetime, timedelta

from mistral_serve.store.files import FileRecord, FileRecords

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def record(file_id: str, key: str = "k1", minutes: int = 0, purpose: str = "batch") -> FileRecord:
    return FileRecord(
        file_id, key, f"{file_id}.jsonl", purpose, 10, 1, NOW + timedelta(minutes=minutes)
    )


async def test_a_keys_files_are_listed_newest_first_in_pages_and_only_its_own(store):
    records = FileRecords(store)
    for n in range(5):
        await records.add(record(f"file-{n}", minutes=n))
    await records.add(record("file-other", key="k2"))
    page = await records.page("k1", limit=2)
    assert [r.id for r in page] == ["file-4", "file-3"]
    after = await records.page("k1", after="file-3", limit=2)
    assert [r.id for r in after] == ["file-2", "file-1"]
    oldest = await records.page("k1", limit=2, newest_first=False, after="file-0")
    assert [r.id for r in oldest] == ["file-1", "file-2"]
    assert [r.id for r in await records.page("k1", limit=2, offset=4)] == ["file-0"]
    assert await records.count("k1") == 5 and await records.count("k2") == 1
    assert await records.get("file-other", "k1") is None
    assert (await records.get("file-2", "k1")) == record("file-2", minutes=2)


async def test_only_its_key_deletes_a_file(store):
    records = FileRecords(store)
    await records.add(record("file-1"))
    assert not await records.delete("file-1", "k2")
    assert await records.delete("file-1", "k1")
    assert await records.get("file-1", "k1") is None
