import asyncio

from mistral_serve.responses.writer import ResponseWriter


class RecordsThatCount:
    """A stand-in for the store's records: how many writes, of how many responses each."""

    def __init__(self, fail: bool = False) -> None:
        self.groups: list[int] = []
        self.fail = fail

    async def put_many(self, records) -> None:
        await asyncio.sleep(0.01)  # a write takes a while
        if self.fail:
            raise OSError("the store is away")
        self.groups.append(len(records))


async def test_responses_ending_together_share_one_write():
    records = RecordsThatCount()
    writer = ResponseWriter(records)
    first = asyncio.create_task(writer.write("resp_0"))
    await asyncio.sleep(0.001)  # its write is under way
    await asyncio.gather(first, *(writer.write(f"resp_{n}") for n in range(1, 10)))
    # The first is written alone at once; the nine that came meanwhile, together next.
    assert records.groups == [1, 9]
    await writer.write("resp_alone")
    assert records.groups == [1, 9, 1]


async def test_a_failed_write_fails_each_of_its_responses():
    writer = ResponseWriter(RecordsThatCount(fail=True))
    results = await asyncio.gather(
        *(writer.write(f"resp_{n}") for n in range(3)), return_exceptions=True
    )
    assert all(isinstance(result, OSError) for result in results)
