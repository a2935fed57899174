"""Per-key limits and the usage ledger, as the pipeline uses them.

Before admission a request reserves its prompt estimate plus max_tokens from its key's limits.
When it ends (answered, refused, failed, or left by its client; streams included), the
reservation settles to its usage and its row goes to the ledger. The usage is what the engine
reported; a request cut short before the engine's usage event (its client left) is charged
what it worked on: the prompt estimate and one token per streamed event after the first,
marked as estimated in the ledger.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from mistral_serve.errors import CLIENT_CLOSED_STATUS
from mistral_serve.protocol.openai import GenerationRequest
from mistral_serve.store import UsageRow, WallClock, utc_now
from mistral_serve.telemetry.genai import Generation
from mistral_serve.tenancy.auth import Caller
from mistral_serve.tenancy.ledger import Ledger
from mistral_serve.tenancy.limiter import Limits, Reservation
from mistral_serve.tenancy.limits import prompt_estimate, reservation


class Usage(NamedTuple):  # made on every request: a tuple is the cheapest to make
    prompt_tokens: int
    completion_tokens: int
    estimated: bool  # the engine did not report it

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def usage_of(generation: Generation, prompt_bytes: int) -> Usage:
    """What an ended request used: the engine's count, else the gateway's estimate."""
    timings = generation.timings
    prompt, completion = timings.input_tokens, timings.output_tokens
    if prompt is not None and completion is not None:
        return Usage(prompt, completion, estimated=False)
    worked = timings.sent is not None and (
        generation.status in (200, CLIENT_CLOSED_STATUS) or timings.events > 0
    )
    if not worked:
        return Usage(prompt or 0, completion or 0, estimated=False)
    return Usage(
        prompt if prompt is not None else prompt_estimate(prompt_bytes),
        completion if completion is not None else max(0, timings.events - 1),
        estimated=True,
    )


@dataclass(frozen=True)
class Accounting:
    """Per-key limits and the usage ledger (either may be off)."""

    limits: Limits | None = None
    ledger: Ledger | None = None
    #: Output tokens reserved for a request without max_tokens (LIMITS_RESERVE_OUTPUT_TOKENS).
    reserve_output_tokens: int = 1024
    #: When a ledger row says its request ended.
    clock: WallClock = utc_now

    @property
    def active(self) -> bool:
        """Whether a request's end has anything to settle or record (not with AUTH=off)."""
        return self.limits is not None or self.ledger is not None

    async def reserve(
        self, caller: Caller, request: GenerationRequest, request_id: str, prompt_bytes: int
    ) -> Reservation | None:
        """Take the request's share of its key's limits (raises the 429 when over one)."""
        limits = self.limits
        if limits is None or caller.limits is None:  # a key without limits reserves nothing
            return None
        return await limits.reserve(caller, request_id, self.reserved_tokens(request, prompt_bytes))

    def reserved_tokens(self, request: GenerationRequest, prompt_bytes: int) -> int:
        """What the request may use: its prompt estimate plus its output limit (or
        LIMITS_RESERVE_OUTPUT_TOKENS) per choice; also its weight in admission's fair queue."""
        return reservation(
            prompt_bytes, request.output_limit, request.n or 1, self.reserve_output_tokens
        )

    def ended(
        self,
        generation: Generation,
        caller: Caller,
        request: GenerationRequest,
        prompt_bytes: int,
        held: Reservation | None,
    ) -> None:
        """The request is over: settle its reservation and write its ledger row."""
        usage = usage_of(generation, prompt_bytes)
        if held is not None:
            held.end(usage.total)
        if self.ledger is not None:
            row = ledger_row(self.ledger.row_id(), generation, caller, request, usage, self.clock())
            self.ledger.add(row)


def ledger_row(
    row_id: str,
    generation: Generation,
    caller: Caller,
    request: GenerationRequest,
    usage: Usage,
    ended_at: datetime,
) -> UsageRow:
    timings = generation.timings
    finished = timings.finished or time.perf_counter()
    ttft = timings.time_to_first_chunk_s
    return UsageRow(
        id=row_id,
        request_id=generation.request_id[:128],
        key_id=caller.owner,
        model=request.model[:200],
        endpoint=generation.route,
        engine=generation.engine_name,
        streamed=request.is_stream,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        usage_estimated=usage.estimated,
        status=generation.status or 500,
        error_type=generation.error_type,
        finish_reason=generation.first_finish_reason,
        duration_ms=round((finished - timings.started) * 1000),
        ttft_ms=None if ttft is None else round(ttft * 1000),
        created_at=ended_at,
        batch_id=generation.batch_id,
    )
