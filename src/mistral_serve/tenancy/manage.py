"""Managing keys, for the `keys` command and the admin API: issue, describe, change, revoke.
The key's text leaves only through :func:`create_key`'s return value, once. What a key's state
is depends on the time: every function that asks takes ``now`` from its caller's clock."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from mistral_serve.store import KeyRecord, KeyRecords
from mistral_serve.tenancy.keys import IssuedKey, issue_key

_DURATION = re.compile(r"^(\d+)\s*([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta | None:
    """``30d``, ``12h``, ``90m``, ``2w`` as a timedelta; None for anything else."""
    found = _DURATION.match(text.strip().lower())
    return timedelta(**{_UNITS[found.group(2)]: int(found.group(1))}) if found else None


def parse_expiry(text: str, now: datetime) -> datetime | None:
    """``30d``, ``12h``, ``90m``, ``2w`` from ``now``; an ISO date or time (UTC unless it
    says); ``never`` for no expiry. Raises ValueError."""
    text = text.strip().lower()
    if text == "never":
        return None
    span = parse_duration(text)
    if span is not None:
        return now + span
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not a duration (30d, 12h) or a date: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


#: The limits a key may have (KeyRecord's fields), as the `keys` flags name them.
LIMITS = ("rpm", "tpm", "max_concurrent", "tokens_per_day", "tokens_per_month")


def parse_limit(text: str) -> int | None:
    """A positive whole number, or ``none`` for no limit. Raises ValueError."""
    if text.strip().lower() in ("none", "unlimited"):
        return None
    value = int(text)
    if value < 1:
        raise ValueError(f"a limit is a positive number or none, not {text!r}")
    return value


def parse_models(text: str) -> tuple[str, ...] | None:
    """``a,b`` → those models; ``all`` (or nothing) → every model."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    return None if not names or names == ("all",) else names


async def create_key(
    records: KeyRecords, name: str, **settings: Any
) -> tuple[IssuedKey, KeyRecord]:
    issued = issue_key()
    record = await records.create(issued.key_id, name, issued.secret_hash, **settings)
    return issued, record


def state(record: KeyRecord, now: datetime) -> str:
    """``active``, ``expired`` or ``revoked`` at ``now``."""
    if record.revoked_at is not None:
        return "revoked"
    if record.expires_at is not None and now >= record.expires_at:
        return "expired"
    return "active"


def describe(record: KeyRecord, now: datetime) -> dict[str, Any]:
    """What may be shown of a key at ``now``: everything but the hash of its secret."""
    return {
        "id": record.id,
        "name": record.name,
        "state": state(record, now),
        "models": list(record.models) if record.models is not None else None,
        "priority": record.priority,
        "weight": record.weight,
        **{name: getattr(record, name) for name in LIMITS},
        "created_at": record.created_at.isoformat(),
        "expires_at": record.expires_at.isoformat() if record.expires_at else None,
        "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
    }


def table(records: Sequence[KeyRecord], now: datetime) -> str:
    """Keys as a fixed-width table for people (their states at ``now``)."""
    rows = [("ID", "NAME", "STATE", "MODELS", "PRIORITY", "WEIGHT", "LIMITS", "CREATED", "EXPIRES")]
    for record in records:
        limits = [f"{name}={getattr(record, name)}" for name in LIMITS if getattr(record, name)]
        rows.append(
            (
                record.id,
                record.name,
                state(record, now),
                ",".join(record.models) if record.models is not None else "all",
                str(record.priority),
                f"{record.weight:g}",
                " ".join(limits) or "none",
                record.created_at.strftime("%Y-%m-%d %H:%M"),
                record.expires_at.strftime("%Y-%m-%d %H:%M") if record.expires_at else "never",
            )
        )
    return fixed_width(rows)


def fixed_width(rows: Sequence[Sequence[str]], numbers: int = 0) -> str:
    """Rows as aligned columns for people; the last ``numbers`` columns right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    first_number = len(widths) - numbers
    return "\n".join(
        "  ".join(
            cell.rjust(width) if i >= first_number else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    )
