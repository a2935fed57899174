"""The HTTP surface, through the real app (Starlette's TestClient runs its lifespan)."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from mistral_serve.api.app import create_app, routing_policy
from mistral_serve.api.middleware import body_limit
from mistral_serve.config import Settings
from mistral_serve.engines.supervisor import free_port
from mistral_serve.routing import POLICIES


@pytest.fixture
def http() -> TestClient:
    # An engine address nothing listens on: the app must still answer everything clearly.
    settings = Settings(_env_file=None, engine_urls=[f"http://127.0.0.1:{free_port()}"])
    with TestClient(create_app(settings)) as client:
        yield client


def assert_openai_error(response, status: int, type_: str, code=None) -> dict:
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == type_
    assert error["code"] == code
    return error


def test_health_is_ok_even_without_engines(http):
    assert http.get("/health").json() == {"status": "ok"}


def test_ready_is_503_with_retry_after_without_a_ready_engine(http):
    response = http.get("/ready")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json()["engines"][0]["ready"] is False


def test_generation_without_a_ready_engine_is_503_with_retry_after(http):
    response = http.post(
        "/v1/chat/completions",
        json={"model": "demo", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert_openai_error(response, 503, "server_error", "no_ready_engine")
    assert response.headers["retry-after"] == "5"


def test_malformed_json_is_400_before_any_engine_is_involved(http):
    response = http.post("/v1/completions", content=b'{"model": ')
    error = assert_openai_error(response, 400, "invalid_request_error")
    assert "not valid JSON" in error["message"]


def test_unknown_route_is_an_openai_404(http):
    assert_openai_error(http.get("/v1/nothing"), 404, "invalid_request_error", "not_found")


def test_wrong_method_is_an_openai_405(http):
    response = http.get("/v1/chat/completions")
    assert_openai_error(response, 405, "invalid_request_error", "method_not_allowed")
    assert response.headers["allow"] == "POST"  # the framework's header is kept


def test_models_is_an_empty_list_without_ready_engines(http):
    assert http.get("/v1/models").json() == {"object": "list", "data": []}


def test_every_response_carries_a_request_id(http):
    for response in (http.get("/health"), http.get("/nope"), http.post("/v1/completions")):
        assert len(response.headers["x-request-id"]) == 32


def test_a_valid_incoming_request_id_is_echoed_and_a_bad_one_replaced(http):
    assert (
        http.get("/health", headers={"x-request-id": "abc-123.x"}).headers["x-request-id"]
        == "abc-123.x"
    )
    replaced = http.get("/health", headers={"x-request-id": "bad id\twith spaces"})
    assert replaced.headers["x-request-id"] != "bad id\twith spaces"
    too_long = http.get("/health", headers={"x-request-id": "a" * 200})
    assert len(too_long.headers["x-request-id"]) == 32


def test_an_unexpected_failure_is_an_openai_500_with_its_request_id():
    settings = Settings(_env_file=None)
    app = create_app(settings)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom", headers={"x-request-id": "trace-me"})
    error = assert_openai_error(response, 500, "server_error", "internal_error")
    assert "a bug" not in error["message"]  # internals stay in the log
    assert response.headers["x-request-id"] == "trace-me"


def test_with_api_key_set_generation_and_models_need_it_and_probes_do_not():
    settings = Settings(
        _env_file=None, engine_urls=[f"http://127.0.0.1:{free_port()}"], api_key="s3cret"
    )
    with TestClient(create_app(settings)) as client:
        for response in (
            client.get("/v1/models"),
            client.post("/v1/completions", json={"model": "demo", "prompt": "hi"}),
            client.get("/v1/models", headers={"authorization": "Bearer wrong"}),
        ):
            error = assert_openai_error(response, 401, "invalid_request_error", "invalid_api_key")
            assert "wrong" not in error["message"]
        authorized = {"authorization": "Bearer s3cret"}
        assert client.get("/v1/models", headers=authorized).status_code == 200
        answer = client.post(
            "/v1/completions", json={"model": "demo", "prompt": "hi"}, headers=authorized
        )
        assert answer.status_code == 503  # past auth: no engine is ready
        assert client.get("/health").status_code == 200
        assert client.get("/ready").status_code == 503  # no engine, but not a 401


def test_auth_off_ignores_keys_and_still_keeps_files(tmp_path, monkeypatch):
    monkeypatch.setenv("MISTRAL_SERVE_DATA_DIR", str(tmp_path / "data"))
    settings = Settings(_env_file=None, auth="off", api_key="s3cret", responses_store="off")
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/models").status_code == 200
        uploaded = client.post(
            "/v1/files", files={"file": ("in.jsonl", b'{"a": 1}\n')}, data={"purpose": "batch"}
        )
        assert uploaded.status_code == 200, uploaded.text
        assert uploaded.json()["num_lines"] == 1
    assert (tmp_path / "data" / "files" / uploaded.json()["id"]).exists()


def test_auth_off_still_opens_the_store_for_responses(tmp_path, monkeypatch):
    """Stored responses need the store whether or not keys are checked."""
    monkeypatch.setenv("MISTRAL_SERVE_DATA_DIR", str(tmp_path / "data"))
    settings = Settings(_env_file=None, auth="off")
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/models").status_code == 200
    assert (tmp_path / "data" / "mistral-serve.db").exists()


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_the_app_routes_with_the_policy_routing_policy_names(name):
    settings = Settings(_env_file=None, routing_policy=name, routing_balance_abs=9)
    policy = routing_policy(settings, stats_max_age_s=3.0)
    assert type(policy) is POLICIES[name]
    if name == "prefix-load":
        assert policy._balance.absolute == 9 and policy._stats_max_age_s == 3.0


def test_a_body_over_max_request_bytes_is_a_413_on_every_route():
    settings = Settings(
        _env_file=None, engine_urls=[f"http://127.0.0.1:{free_port()}"], max_request_bytes=2048
    )
    with TestClient(create_app(settings)) as http:
        big = b'{"model": "m", "messages": [], "pad": "' + b"x" * 4096 + b'"}'
        for path in ("/v1/chat/completions", "/v1/completions", "/admin/keys"):
            response = http.post(path, content=big)
            error = assert_openai_error(response, 413, "invalid_request_error", "request_too_large")
            assert "MAX_REQUEST_BYTES" in error["message"]
            assert response.headers["connection"] == "close"
            assert response.headers["x-request-id"]
        chunks = (b"x" * 1024 for _ in range(4))  # no Content-Length: chunked
        assert http.post("/v1/chat/completions", content=chunks).status_code == 413
        small = http.post("/v1/chat/completions", content=b"{not json")
        assert_openai_error(small, 400, "invalid_request_error")


def test_the_default_body_limit_follows_the_longest_context():
    assert body_limit(None, 0) == 8 * 1024 * 1024  # no engine has said yet
    assert body_limit(None, 32_768) == 8 * 1024 * 1024
    assert body_limit(None, 1_048_576) == 32 * 1_048_576  # a million-token context: 32 MiB
    assert body_limit(4096, 1_048_576) == 4096  # MAX_REQUEST_BYTES wins
