"""The `usage` command's report: totals from the ledger, as a table, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Literal

from mistral_serve.store import UsageSummary
from mistral_serve.store.usage import GroupBy
from mistral_serve.tenancy.manage import fixed_width, parse_duration

Format = Literal["table", "csv", "json"]


def parse_since(text: str, now: datetime) -> date:
    """``7d``, ``24h``, ``2w`` back from ``now``, or an ISO date: the first UTC day reported."""
    span = parse_duration(text)
    if span is not None:
        return (now - span).astimezone(UTC).date()
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"not a duration (7d, 24h) or a date: {text!r}") from None


def render(
    summaries: Sequence[UsageSummary],
    by: GroupBy,
    form: Format,
    names: Mapping[str, str] | None = None,
) -> str:
    """``names``: key id → name, shown beside keys."""
    names = names or {}
    records = [
        {
            by: summary.group or "-",
            **({"name": names.get(summary.group, "")} if by == "key" else {}),
            "requests": summary.requests,
            "prompt_tokens": summary.prompt_tokens,
            "completion_tokens": summary.completion_tokens,
            "total_tokens": summary.total_tokens,
        }
        for summary in summaries
    ]
    if form == "json":
        return json.dumps(records, indent=2)
    columns = [by, *(["name"] if by == "key" else []), "requests", "prompt_tokens",
               "completion_tokens", "total_tokens"]  # fmt: skip
    if form == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        return out.getvalue().rstrip("\n")
    rows = [[column.upper() for column in columns]]
    rows += [[str(record[column]) for column in columns] for record in records]
    return fixed_width(rows, numbers=4)
