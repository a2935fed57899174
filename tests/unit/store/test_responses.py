from datetime import UTC, datetime, timedelta

from mistral_serve.store.responses import ResponseRecords, StoredResponse

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def stored(
    response_id: str,
    previous: str | None = None,
    key: str = "k1",
    root: str = "r1",
    made: datetime = NOW,
):
    return StoredResponse(
        id=response_id,
        key_id=key,
        status="completed",
        model="demo",
        previous_response_id=previous,
        root_id=root,
        conversation_id=None,
        input_items=[{"type": "message", "id": f"msg_{response_id}"}],
        response={"id": response_id, "created_at": int(NOW.timestamp()), "output": []},
        expires_at=made + timedelta(days=30),
    )


async def test_a_chain_is_read_oldest_first_in_one_query(store):
    records = ResponseRecords(store, Clock())
    for index in range(5):
        await records.put(stored(f"resp_{index}", f"resp_{index - 1}" if index else None))
    chain = await records.chain("resp_3", "k1")
    assert [each.id for each in chain] == ["resp_0", "resp_1", "resp_2", "resp_3"]
    assert chain[1].input_items == [{"type": "message", "id": "msg_resp_1"}]


async def test_another_keys_response_is_not_found(store):
    records = ResponseRecords(store, Clock())
    await records.put(stored("resp_a", key="k1"))
    assert await records.get("resp_a", "k2") is None
    assert await records.chain("resp_a", "k2") is None
    assert not await records.delete("resp_a", "k2")
    assert (await records.get("resp_a", "k1")).id == "resp_a"


async def test_expired_responses_are_not_found_then_swept(store):
    clock = Clock()
    records = ResponseRecords(store, clock)
    await records.put(stored("resp_old"))
    clock.now = NOW + timedelta(days=31)
    await records.put(stored("resp_new", made=clock.now))
    assert await records.get("resp_old", "k1") is None
    assert await records.chain("resp_old", "k1") is None
    assert await records.expire() == 1
    assert await records.get("resp_new", "k1") is not None


async def test_a_running_response_advances_until_it_is_over(store):
    records = ResponseRecords(store, Clock())
    await records.put(StoredResponse(**{**stored("resp_a").__dict__, "status": "queued"}))
    event = {"type": "response.in_progress", "sequence_number": 0}
    assert await records.advance("resp_a", "in_progress", {"id": "resp_a"}, [event])
    assert await records.events("resp_a", after=-1) == [event]
    assert await records.advance("resp_a", "cancelled", {"id": "resp_a"})
    assert not await records.advance("resp_a", "completed", {"id": "resp_a"})  # over
    assert (await records.get("resp_a", "k1")).status == "cancelled"


async def test_deleted_is_gone(store):
    records = ResponseRecords(store, Clock())
    await records.put(stored("resp_a"))
    assert await records.delete("resp_a", "k1")
    assert await records.get("resp_a", "k1") is None
    assert not await records.delete("resp_a", "k1")
