"""Tenancy's own work per request, measured alone (no server, no network): what the gateway does
for a request's key between reading its Authorization header and handing its answer to
Starlette, and when it ends.

    .venv/bin/python bench/tenancy_path.py [--requests 20000] [--rounds 7]

Four ways, as bench/tenancy_cost.py runs the gateway: AUTH=off; the static API_KEY with the
ledger; a stored key without limits with the ledger; a stored key with every limit (none
binding) counted in the process, with the ledger. Each request is authenticated, checked for
its model, reserves, gets its answer's headers (the timing headers every answer has, plus
x-ratelimit-*) turned into a Starlette Response, then ends: settled, and its ledger row made
and encoded. The key cache and the ledger's queue are stand-ins (a dictionary, a list): the
database and its writer are measured by tenancy_cost.py. Prints the median CPU per request
over the rounds and each way's cost above AUTH=off. The gateway spends two to three times
these figures on the same work (it runs between thousands of other lines, with cold caches).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from datetime import UTC, datetime
from types import SimpleNamespace

from starlette.responses import Response

from mistral_serve.gateway.accounting import Accounting
from mistral_serve.protocol.openai import ChatCompletionRequest
from mistral_serve.store import KeyRecord, UsageRow
from mistral_serve.tenancy.auth import Authenticator, Caller
from mistral_serve.tenancy.budgets import BudgetSeeds
from mistral_serve.tenancy.keys import issue_key
from mistral_serve.tenancy.limiter import Limits, MemoryLimiter

STATIC_KEY = "bench-static-key-0123456789"
UNBINDING = {
    "rpm": 1_000_000,
    "tpm": 1_000_000_000,
    "max_concurrent": 100_000,
    "tokens_per_day": 10**12,
    "tokens_per_month": 10**12,
}
REQUEST = ChatCompletionRequest.model_validate(
    {"model": "demo", "messages": [{"role": "user", "content": "Hello there."}], "max_tokens": 8}
)
PROMPT_BYTES = 60
#: The timing headers every answer carries (gateway/timing.py).
TIMING = {
    "x-queue-time": "0",
    "x-total-time": "1",
    "x-inference-time": "1",
    "x-time-per-token": "0",
    "x-prompt-tokens": "12",
    "x-generated-tokens": "8",
}


class KeysStandIn:
    """The key cache, without its store."""

    def __init__(self, records: list[KeyRecord]) -> None:
        self._keys = {record.id: record for record in records}

    def get(self, key_id: str) -> KeyRecord | None:
        return self._keys.get(key_id)

    async def find(self, key_id: str) -> KeyRecord | None:
        return self._keys.get(key_id)

    def any_keys(self) -> bool:
        return True


class LedgerStandIn:
    """The ledger's queue, without its writer: rows are encoded, as Ledger.add does."""

    def __init__(self) -> None:
        self._count = 0
        self._rows: list[bytes] = []

    def row_id(self) -> str:
        self._count += 1
        return f"0123456789abcdef-{self._count}"

    def add(self, row: UsageRow) -> None:
        self._rows.append(row.encode())
        if len(self._rows) >= 500:  # a flush
            self._rows.clear()


async def nothing_spent(key_id: str, day: str, month: str) -> tuple[int, int]:
    """The ledger's totals for a key's day and month (read once a day per key)."""
    return 0, 0


def ended_generation(request_id: str) -> SimpleNamespace:
    """What a Generation tells the accounting about an answered request."""
    timings = SimpleNamespace(
        input_tokens=12,
        output_tokens=8,
        sent=1.0,
        events=0,
        finished=2.0,
        started=0.5,
        time_to_first_chunk_s=None,
    )
    return SimpleNamespace(
        timings=timings,
        status=200,
        request_id=request_id,
        operation="chat",
        engine_name="engine-0",
        error_type=None,
        first_finish_reason="length",
    )


def stored_key(limits: dict[str, int]) -> tuple[str, KeyRecord]:
    issued, now = issue_key(), datetime.now(UTC)
    return issued.text, KeyRecord(issued.key_id, "bench", issued.secret_hash, now, now, **limits)


def ways() -> dict[str, tuple[Authenticator, Accounting, str | None]]:
    plain, plain_record = stored_key({})
    limited, limited_record = stored_key(UNBINDING)
    keys = KeysStandIn([plain_record, limited_record])
    return {
        "AUTH=off": (Authenticator("off", None, None), Accounting(), None),
        "API_KEY + ledger": (
            Authenticator("required", STATIC_KEY, keys),  # type: ignore[arg-type]
            Accounting(None, LedgerStandIn()),  # type: ignore[arg-type]
            f"Bearer {STATIC_KEY}",
        ),
        "stored key, no limits + ledger": (
            Authenticator("required", None, keys),  # type: ignore[arg-type]
            Accounting(None, LedgerStandIn()),  # type: ignore[arg-type]
            f"Bearer {plain}",
        ),
        "stored key, every limit in the process + ledger": (
            Authenticator("required", None, keys),  # type: ignore[arg-type]
            Accounting(
                Limits(MemoryLimiter(), budgets=BudgetSeeds(nothing_spent)),
                LedgerStandIn(),  # type: ignore[arg-type]
            ),
            f"Bearer {limited}",
        ),
    }


async def one_request(
    authenticator: Authenticator, accounting: Accounting, authorization: str | None, n: int
) -> None:
    request_id = f"{n:032x}"
    caller: Caller = await authenticator.authenticate(authorization)
    Authenticator.check_model(caller, REQUEST.model)
    held = None
    if accounting.active:
        held = await accounting.reserve(caller, REQUEST, request_id, PROMPT_BYTES)
    response = Response(b"{}", 200, TIMING, media_type="application/json")
    if held is not None and held.headers:  # as api/routes.py adds them: already encoded
        response.raw_headers.extend(held.headers)
    if accounting.active:
        generation = ended_generation(request_id)
        accounting.ended(generation, caller, REQUEST, PROMPT_BYTES, held)  # type: ignore[arg-type]


async def measure(requests: int, rounds: int) -> None:
    measured = ways()
    cpu: dict[str, list[float]] = {name: [] for name in measured}
    for _ in range(rounds):  # the ways take turns, so a drift in the machine's speed hits all
        for name, (authenticator, accounting, authorization) in measured.items():
            started = time.process_time()
            for n in range(requests):
                await one_request(authenticator, accounting, authorization, n)
            cpu[name].append((time.process_time() - started) / requests * 1e6)
    base = statistics.median(cpu["AUTH=off"])
    print("| way | CPU per request (median) | above AUTH=off |")
    print("|---|---|---|")
    for name, values in cpu.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.1f} µs | {median - base:+.1f} µs |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    asyncio.run(measure(args.requests, args.rounds))


if __name__ == "__main__":
    main()
