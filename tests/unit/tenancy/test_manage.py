"""What `keys` accepts: expiries, model lists; what it shows: never the hash."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from mistral_serve.store import KeyRecord
from mistral_serve.tenancy.manage import describe, parse_expiry, parse_models, state, table

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", NOW + timedelta(days=30)),
        ("12h", NOW + timedelta(hours=12)),
        ("90m", NOW + timedelta(minutes=90)),
        ("2w", NOW + timedelta(weeks=2)),
        ("2027-01-01", datetime(2027, 1, 1, tzinfo=UTC)),
        ("2027-01-01T08:00:00+02:00", datetime(2027, 1, 1, 6, tzinfo=UTC)),
        ("never", None),
    ],
)
def test_expiries(text, expected):
    assert parse_expiry(text, NOW) == expected


def test_a_bad_expiry_is_refused():
    with pytest.raises(ValueError):
        parse_expiry("soon", NOW)


def test_model_lists():
    assert parse_models("a, b") == ("a", "b")
    assert parse_models("all") is None and parse_models("") is None


def test_what_is_shown_of_a_key():
    record = KeyRecord("abc", "app", "f" * 64, NOW, NOW, expires_at=NOW + timedelta(days=1))
    shown = describe(record, NOW)
    assert "f" * 64 not in str(shown) and "f" * 64 not in table([record], NOW)
    assert shown["state"] == "active" and "active" in table([record], NOW)
    later = NOW + timedelta(days=2)  # the state is the one at the time asked about
    assert state(record, later) == "expired" and describe(record, later)["state"] == "expired"
    assert state(replace(record, revoked_at=NOW), NOW) == "revoked"
