"""The job state machine (what a gateway does with a job next) and the two APIs' shapes."""

from dataclasses import replace
from datetime import timedelta

import pytest

from mistral_serve.batch.jobs import (
    Step,
    mistral_object,
    mistral_status,
    next_step,
    openai_object,
    statuses_of_mistral,
)
from mistral_serve.store.batches import RequestCounts
from tests.unit.store.test_batches import NOW, job

STALE = timedelta(seconds=30)
LATER = NOW + timedelta(minutes=1)


@pytest.mark.parametrize(
    ("status", "unfinished", "live", "now", "step"),
    [
        ("validating", True, 0, LATER, Step("start")),
        ("in_progress", True, 0, LATER, Step("run")),
        # Requests under lapsed claims are unfinished (claimable): run, not finished.
        ("in_progress", True, 0, LATER, Step("run")),
        ("in_progress", False, 0, LATER, Step("finish", "completed")),
        ("cancelling", True, 1, LATER, Step("wait")),
        ("cancelling", True, 0, LATER, Step("finish", "cancelled", "cancelled")),
        # Past its window nothing new starts; what runs finishes first.
        ("in_progress", True, 1, NOW + timedelta(hours=25), Step("wait")),
        ("in_progress", True, 0, NOW + timedelta(hours=25), Step("finish", "expired", "expired")),
        # Another gateway finalizes it; taken over once that went quiet.
        ("finalizing", False, 0, NOW + STALE / 2, Step("wait")),
        ("finalizing", False, 0, NOW + STALE, Step("finish", "completed")),
        ("completed", False, 0, LATER, Step("wait")),
    ],
)
def test_next_step(status, unfinished, live, now, step):
    assert next_step(replace(job(), status=status), unfinished, live, now, STALE) == step


def test_the_objects_count_requests_as_each_api_does():
    counts = RequestCounts(
        pending=1, succeeded=5, failed=1, cancelled=2, prompt_tokens=10, completion_tokens=40
    )
    made = replace(job(), total=9, in_progress_at=NOW)
    openai = openai_object(made, counts, NOW + timedelta(seconds=10))
    assert openai["request_counts"] == {"total": 9, "completed": 5, "failed": 3}
    assert openai["usage"]["total_tokens"] == 50
    assert openai["throughput"] == {
        "model": "demo",
        "requests_per_second": 0.8,
        "output_tokens_per_second": 4.0,
    }
    mistral = mistral_object(made, counts, NOW)
    assert (mistral["status"], mistral["total_requests"], mistral["completed_requests"]) == (
        "RUNNING",
        9,
        8,
    )
    assert (mistral["succeeded_requests"], mistral["failed_requests"]) == (5, 3)


def test_mistral_states_name_the_same_states_back():
    assert mistral_status("expired") == "TIMEOUT_EXCEEDED"
    assert statuses_of_mistral(["RUNNING"]) == ["in_progress", "finalizing"]
