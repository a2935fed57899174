"""A client that walks away mid-stream must not leave the engine generating for nobody."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.support import engine_stats, wait_for

pytestmark = pytest.mark.integration

MAX_TOKENS = 8000  # with ignore_eos, about 10 s of generation here if nothing stops it


def assert_engine_aborted(engine: str, tokens_before: float) -> None:
    """No request left running shortly after, and it stopped early: a request left to run
    makes all its MAX_TOKENS (ignore_eos), so far fewer tokens is what an abort looks like."""
    with httpx.Client() as http:  # polled: one SSL context, not one per poll
        wait_for(
            lambda: engine_stats(engine, http).running == 0,
            15,
            "the engine stopped generating once the client left",
        )
    generated = engine_stats(engine).generation_tokens - tokens_before
    assert 0 < generated < MAX_TOKENS / 2, f"{generated} tokens made for a client that left"


def test_client_disconnect_aborts_engine_request(stack):
    engine = stack.engine_urls["demo"]
    tokens_before = engine_stats(engine).generation_tokens
    body = {
        "model": "demo",
        "messages": [{"role": "user", "content": "Talk forever."}],
        "max_tokens": MAX_TOKENS,
        "ignore_eos": True,
        "stream": True,
    }
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", stack.gateway_url + "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            for _ in range(5):
                next(lines)
        # leaving the block closes the connection mid-stream

    assert_engine_aborted(engine, tokens_before)


def test_client_disconnect_aborts_a_non_streamed_request(stack):
    engine = stack.engine_urls["demo"]
    tokens_before = engine_stats(engine).generation_tokens
    impatient = stack.client(timeout=1.0, max_retries=0)
    with pytest.raises(openai.APITimeoutError):  # it gives up and closes the connection
        impatient.chat.completions.create(
            model="demo",
            messages=[{"role": "user", "content": "Talk forever."}],
            max_tokens=MAX_TOKENS,
            extra_body={"ignore_eos": True},
        )

    assert_engine_aborted(engine, tokens_before)
