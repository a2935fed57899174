import asyncio
from datetime import UTC, datetime, timedelta

from mistral_serve.store.conversations import ConversationRecords

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def item(item_id: str) -> dict:
    return {"type": "message", "id": item_id, "role": "user", "content": []}


async def made(records: ConversationRecords, conversation_id: str = "conv_1", key: str = "k1"):
    return await records.create(
        conversation_id,
        key,
        "openai",
        metadata={"a": "1"},
        settings={},
        items=[item("m0"), item("m1")],
        expires_at=NOW + timedelta(days=30),
    )


async def test_items_keep_their_order_through_appends(store):
    records = ConversationRecords(store, Clock())
    await made(records)
    await records.append("conv_1", [item("m2"), item("m3")])
    assert [i["id"] for i in await records.items("conv_1")] == ["m0", "m1", "m2", "m3"]
    assert [i["id"] for i in await records.items("conv_1", upto="m1")] == ["m0", "m1"]
    assert (await records.item("conv_1", "m2"))["id"] == "m2"
    assert await records.delete_item("conv_1", "m2")
    assert [i["id"] for i in await records.items("conv_1")] == ["m0", "m1", "m3"]


async def test_concurrent_appends_all_land(store):
    records = ConversationRecords(store, Clock())
    await made(records)
    await asyncio.gather(*(records.append("conv_1", [item(f"x{n}")]) for n in range(8)))
    ids = [i["id"] for i in await records.items("conv_1")]
    assert len(ids) == 10 and sorted(ids[2:]) == sorted(f"x{n}" for n in range(8))


async def test_a_conversation_belongs_to_its_key(store):
    records = ConversationRecords(store, Clock())
    await made(records)
    assert await records.get("conv_1", "k2") is None
    assert await records.update("conv_1", "k2", metadata={"b": "2"}) is None
    assert not await records.delete("conv_1", "k2")
    updated = await records.update("conv_1", "k1", metadata={"b": "2"})
    assert updated.metadata == {"b": "2"}


async def test_list_by_dialect_newest_first_and_expiry(store):
    clock = Clock()
    records = ConversationRecords(store, clock)
    await made(records, "conv_a")
    clock.now += timedelta(seconds=1)
    await made(records, "conv_b")
    listed = await records.list("k1", 0, 10, dialect="openai")
    assert [r.id for r in listed] == ["conv_b", "conv_a"]
    assert await records.list("k1", 0, 10, dialect="mistral") == []
    clock.now = NOW + timedelta(days=31)
    assert await records.get("conv_a", "k1") is None
    assert await records.expire() == 2
    assert await records.items("conv_a") == []
