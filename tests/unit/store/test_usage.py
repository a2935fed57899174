"""The ledger's statement on real SQLite and PostgreSQL: rows land once, totals add up."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, date, datetime, timedelta

import orjson

from mistral_serve.store import UsageRecords, UsageRow
from tests.support import ledger_rows

NOON = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def row(key_id: str = "k1", model: str = "m", at: datetime = NOON, **values) -> UsageRow:
    defaults = dict(
        id=uuid.uuid4().hex,
        request_id="req",
        key_id=key_id,
        model=model,
        endpoint="/v1/chat/completions",
        engine="engine-0",
        streamed=False,
        prompt_tokens=10,
        completion_tokens=5,
        usage_estimated=False,
        status=200,
        error_type=None,
        finish_reason="length",
        duration_ms=12,
        ttft_ms=3,
        created_at=at,
    )
    return UsageRow(**{**defaults, **values})


def encoded(rows: list[UsageRow]) -> list[bytes]:
    return [each.encode() for each in rows]


def test_a_row_round_trips_through_its_encoding() -> None:
    """The encoding is the row's JSON object, as spool files written before it hold them."""
    original = row(engine=None, ttft_ms=None)
    assert UsageRow.decode(original.encode()) == original
    earlier = orjson.dumps({**dataclasses.asdict(original), "created_at": NOON.isoformat()})
    assert UsageRow.decode(earlier) == original


async def test_rows_and_totals(store) -> None:
    records = UsageRecords(store)
    rows = [row(), row(), row(model="other"), row(key_id="k2", at=NOON + timedelta(days=1))]
    assert await records.write(encoded(rows)) == 4
    assert await ledger_rows(store) == sorted(rows, key=lambda r: (r.created_at, r.id))
    by_day = await records.totals(date(2026, 11, 1))
    assert [(s.group, s.requests, s.total_tokens) for s in by_day] == [
        ("2026-11-25", 3, 45),
        ("2026-11-26", 1, 15),
    ]
    by_model = await records.totals(date(2026, 11, 1), by="model", key_id="k1")
    assert [(s.group, s.requests) for s in by_model] == [("m", 2), ("other", 1)]
    by_key = await records.totals(date(2026, 11, 26), by="key")
    assert [(s.group, s.requests) for s in by_key] == [("k2", 1)]


async def test_writing_a_row_twice_counts_it_once(store) -> None:
    records = UsageRecords(store)
    first = [row(), row()]
    assert await records.write(encoded(first)) == 2
    assert await records.write(encoded([*first, row()])) == 1  # a replayed batch, plus one new row
    (total,) = await records.totals(date(2026, 11, 25))
    assert total.requests == 3 and total.prompt_tokens == 30
    assert len(await ledger_rows(store)) == 3


async def test_reachable(store) -> None:
    assert await UsageRecords(store).reachable()


async def test_any_text_and_missing_values_round_trip(store) -> None:
    """The PostgreSQL write sends a batch as one JSON document: quotes, backslashes, non-ASCII
    and nulls come back as they went in, and a row a microsecond before midnight UTC counts
    on its own day."""
    records = UsageRecords(store)
    odd = row(
        model='mistral "7b" \\ ünïcode ✓',
        request_id="it's; DROP TABLE usage; --",
        engine=None,
        error_type=None,
        finish_reason=None,
        ttft_ms=None,
        usage_estimated=True,
        streamed=True,
        at=datetime(2026, 11, 25, 23, 59, 59, 999999, tzinfo=UTC),
    )
    assert await records.write([odd.encode()]) == 1
    assert await ledger_rows(store) == [odd]
    (total,) = await records.totals(date(2026, 11, 25), by="day")
    assert (total.group, total.requests) == ("2026-11-25", 1)
