"""A finished job's two files, written from its requests' rows: the output file (one line per
request that succeeded) and the error file (one per request that did not: the engine's or the
gateway's refusal, or ``batch_cancelled`` / ``batch_expired`` for what never ran).

OpenAI's line shape, which Mistral's batch output shares::

    {"id": "batch_req_…", "custom_id": "…", "response": {"status_code": 200,
     "request_id": "…", "body": {…}}, "error": null}

The lines are in the input's order and made only from the rows, so writing them twice (a
gateway that took over a finalization) gives the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from mistral_serve.store.batches import CANCELLED, EXPIRED, SUCCEEDED, EndedRequest

#: The error of a request that never ran, by how its job ended.
UNRUN_ERRORS = {
    CANCELLED: {"code": "batch_cancelled", "message": "The batch was cancelled before it ran."},
    EXPIRED: {
        "code": "batch_expired",
        "message": "The batch's completion window ended before it ran.",
    },
}

#: The error of every request of a job whose key was revoked or deleted before it ran.
KEY_GONE = {
    "code": "invalid_api_key",
    "message": "The batch's API key was revoked, expired or deleted.",
}


def request_id(job_id: str, line: int) -> str:
    """The id one batch request runs under (its spans', its ledger row's)."""
    return f"{job_id}-{line}"


def line_of(job_id: str, ended: EndedRequest) -> dict[str, Any]:
    """The output or error line of one ended request."""
    result = ended.result or {}
    response = None
    error = None
    if ended.status_code is not None:  # an answer: the engine's, or a refusal's error body
        response = {
            "status_code": ended.status_code,
            "request_id": request_id(job_id, ended.line),
            "body": result,
        }
    else:
        error = result or UNRUN_ERRORS.get(ended.state)
    return {
        "id": f"batch_req_{job_id.removeprefix('batch_')}_{ended.line}",
        "custom_id": ended.custom_id,
        "response": response,
        "error": error,
    }


@dataclass(frozen=True)
class JobFiles:
    """A job's output and error files' bytes (empty when no request belongs there)."""

    output: bytes
    errors: bytes
    output_lines: int
    error_lines: int


def job_files(job_id: str, ended: list[EndedRequest]) -> JobFiles:
    output: list[bytes] = []
    errors: list[bytes] = []
    for request in ended:
        line = orjson.dumps(line_of(job_id, request))
        (output if request.state == SUCCEEDED else errors).append(line)
    return JobFiles(
        b"".join(line + b"\n" for line in output),
        b"".join(line + b"\n" for line in errors),
        len(output),
        len(errors),
    )
