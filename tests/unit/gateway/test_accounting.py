"""What an ended request is charged, and what the ledger records of it."""

from __future__ import annotations

from datetime import UTC, datetime

from mistral_serve.errors import EngineUnreachableError, RateLimitExceededError
from mistral_serve.gateway.accounting import ledger_row, usage_of
from mistral_serve.protocol.openai import ChatCompletionRequest
from mistral_serve.telemetry.genai import GenAIObserver, Generation
from mistral_serve.telemetry.setup import disabled_telemetry
from mistral_serve.tenancy.auth import Caller

ENDED = datetime(2026, 11, 25, 12, tzinfo=UTC)
REQUEST = ChatCompletionRequest.model_validate(
    {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "stream": True}
)


def generation() -> Generation:
    started = GenAIObserver(disabled_telemetry()).start("chat", "req-1")
    started.request(REQUEST)
    return started


def test_the_engines_usage_is_charged() -> None:
    done = generation()
    done.upstream_started("engine-0", "http://e/v1/chat/completions")
    done.usage(12, 30)
    done.finish_reason(0, "stop")
    done.succeeded()
    usage = usage_of(done, prompt_bytes=400)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.estimated) == (12, 30, False)
    row = ledger_row("r" * 32, done, Caller("k1"), REQUEST, usage, ENDED)
    assert (row.key_id, row.model, row.engine, row.status) == ("k1", "demo", "engine-0", 200)
    assert row.created_at == ENDED  # the accounting's clock, not the wall's
    assert row.streamed and row.finish_reason == "stop" and row.error_type is None


def test_a_stream_cut_short_is_charged_what_it_worked_on() -> None:
    left = generation()
    left.upstream_started("engine-0", "http://e/v1/chat/completions")
    left.timings.events = 6  # the role event, then five tokens
    left.client_left()
    usage = usage_of(left, prompt_bytes=400)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.estimated) == (108, 5, True)
    assert ledger_row("r" * 32, left, Caller(), REQUEST, usage, ENDED).status == 499


def test_requests_that_never_reached_an_engine_cost_nothing() -> None:
    refused = generation()
    refused.failed(RateLimitExceededError("over", kind="requests", retry_after_s=1))
    assert usage_of(refused, prompt_bytes=400).total == 0
    broken = generation()
    broken.upstream_started("engine-0", "http://e/v1/chat/completions")
    broken.failed(EngineUnreachableError("refused"))  # nothing streamed: no work done
    usage = usage_of(broken, prompt_bytes=400)
    assert usage.total == 0 and not usage.estimated
    row = ledger_row("r" * 32, broken, Caller("k1"), REQUEST, usage, ENDED)
    assert row.status == 502 and row.error_type == "engine_unreachable"
