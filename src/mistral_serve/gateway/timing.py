"""Timing headers on completion answers, in the spirit of TGI's ``x-*-time`` headers.

Only what is known when the headers go out: a streamed answer's headers leave with its first
event, so they carry the queue time and the time to first token; a whole answer's carry the
token counts and the times of the complete request. Times are whole milliseconds.
"""

from __future__ import annotations

from mistral_serve.telemetry.genai import Timings

QUEUE_TIME = "x-queue-time"  # arrival → sent to an engine (routing, admission)
TIME_TO_FIRST_TOKEN = "x-time-to-first-token"  # arrival → first streamed event
INFERENCE_TIME = "x-inference-time"  # sent to an engine → its whole answer read
TOTAL_TIME = "x-total-time"
TIME_PER_TOKEN = "x-time-per-token"  # inference time / generated tokens
PROMPT_TOKENS = "x-prompt-tokens"
GENERATED_TOKENS = "x-generated-tokens"


def timing_headers(timings: Timings, *, streamed: bool) -> dict[str, str]:
    headers: dict[str, str] = {}
    if timings.queue_s is not None:
        headers[QUEUE_TIME] = _ms(timings.queue_s)
    if streamed:
        if timings.time_to_first_chunk_s is not None:
            headers[TIME_TO_FIRST_TOKEN] = _ms(timings.time_to_first_chunk_s)
        return headers
    if timings.finished is not None:
        headers[TOTAL_TIME] = _ms(timings.finished - timings.started)
        if timings.sent is not None:
            inference = timings.finished - timings.sent
            headers[INFERENCE_TIME] = _ms(inference)
            if timings.output_tokens:
                headers[TIME_PER_TOKEN] = _ms(inference / timings.output_tokens)
    if timings.input_tokens is not None:
        headers[PROMPT_TOKENS] = str(timings.input_tokens)
    if timings.output_tokens is not None:
        headers[GENERATED_TOKENS] = str(timings.output_tokens)
    return headers


def _ms(seconds: float) -> str:
    return str(round(seconds * 1000))
