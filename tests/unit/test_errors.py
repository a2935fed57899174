import pytest

from mistral_serve import errors


@pytest.mark.parametrize(
    ("error", "status", "type_", "code"),
    [
        (errors.InvalidRequestError("bad"), 400, "invalid_request_error", None),
        (errors.ModelNotFoundError("m"), 404, "invalid_request_error", "model_not_found"),
        (errors.NotFoundError("no route"), 404, "invalid_request_error", "not_found"),
        (errors.NoReadyEngineError("wait"), 503, "server_error", "no_ready_engine"),
        (errors.EngineError("boom"), 502, "server_error", "engine_error"),
        (errors.EngineUnreachableError("gone"), 502, "server_error", "engine_unreachable"),
        (errors.EngineStalledError("stuck"), 502, "server_error", "engine_stalled"),
        (errors.EngineTimeoutError("slow"), 504, "server_error", "engine_timeout"),
        (errors.MistralServeError("bug"), 500, "server_error", "internal_error"),
    ],
)
def test_each_error_knows_its_status_and_openai_body(error, status, type_, code):
    assert error.status == status
    body = error.to_dict()
    assert set(body) == {"error"}
    assert body["error"] == {
        "message": error.message,
        "type": type_,
        "param": error.param,
        "code": code,
    }


def test_model_not_found_names_the_model_and_param():
    error = errors.ModelNotFoundError("mistral-huge")
    assert "mistral-huge" in error.message
    assert error.param == "model"


def test_no_ready_engine_asks_clients_to_retry_later():
    assert errors.NoReadyEngineError("x", retry_after_s=7).headers() == {"retry-after": "7"}
    assert errors.InvalidRequestError("x").headers() == {}


def test_labels_are_distinct_for_metrics():
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, Exception)]
    labels = [c.label for c in classes if c is not errors.MistralServeError]
    assert len(labels) == len(set(labels))
