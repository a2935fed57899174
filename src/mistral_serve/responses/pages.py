"""OpenAI's cursor pagination of a list (input items, conversation items): ``after`` an
item's id, ``limit`` items (1–100, 20 by default), ``order`` ``asc`` or ``desc`` (newest first,
the default); the answer says ``first_id``, ``last_id`` and whether there is more."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mistral_serve.errors import InvalidRequestError

MAX_LIMIT = 100


@dataclass(frozen=True)
class Page:
    after: str | None = None
    limit: int = 20
    order: Literal["asc", "desc"] = "desc"

    @classmethod
    def of(cls, query: Mapping[str, str]) -> Page:
        """A page from a request's query string; bad values are a 400 naming them."""
        limit_text = query.get("limit", "20")
        try:
            limit = int(limit_text)
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidRequestError(f"limit: an integer from 1 to {MAX_LIMIT}.", param="limit")
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise InvalidRequestError("order: asc or desc.", param="order")
        return cls(query.get("after") or None, limit, order)  # type: ignore[arg-type]


def page_of(items: Sequence[dict[str, Any]], page: Page) -> dict[str, Any]:
    """One page of ``items`` (oldest first as given) as OpenAI's list object."""
    ordered = list(items) if page.order == "asc" else list(reversed(items))
    start = 0
    if page.after is not None:
        ids = [item.get("id") for item in ordered]
        if page.after not in ids:
            raise InvalidRequestError(f"after: no item `{page.after}` in this list.", param="after")
        start = ids.index(page.after) + 1
    data = ordered[start : start + page.limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0].get("id") if data else None,
        "last_id": data[-1].get("id") if data else None,
        "has_more": start + page.limit < len(ordered),
    }
