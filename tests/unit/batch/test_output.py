"""A finished job's files: one line per request, in the input's order, each in exactly one
file, the same bytes however often they are written."""

import orjson

from mistral_serve.batch.output import job_files
from mistral_serve.store.batches import EndedRequest


def test_every_request_is_in_exactly_one_file_in_input_order():
    ended = [
        EndedRequest(1, "a", "succeeded", 200, {"id": "chatcmpl-1"}),
        EndedRequest(2, "b", "failed", 400, {"error": {"message": "too long"}}),
        EndedRequest(3, "c", "failed", None, {"code": "engine_error", "message": "502"}),
        EndedRequest(4, "d", "cancelled", None, None),
        EndedRequest(5, "e", "succeeded", 200, {"id": "chatcmpl-5"}),
    ]
    files = job_files("batch_x", ended)
    output = [orjson.loads(line) for line in files.output.splitlines()]
    errors = [orjson.loads(line) for line in files.errors.splitlines()]
    assert [line["custom_id"] for line in output] == ["a", "e"]
    assert [line["custom_id"] for line in errors] == ["b", "c", "d"]
    assert output[0] == {
        "id": "batch_req_x_1",
        "custom_id": "a",
        "response": {"status_code": 200, "request_id": "batch_x-1", "body": {"id": "chatcmpl-1"}},
        "error": None,
    }
    assert errors[0]["response"]["status_code"] == 400 and errors[0]["error"] is None
    assert errors[1]["response"] is None and errors[1]["error"]["code"] == "engine_error"
    assert errors[2]["error"]["code"] == "batch_cancelled"
    assert job_files("batch_x", ended) == files
