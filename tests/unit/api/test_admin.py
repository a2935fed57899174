"""The admin API: keys over HTTP, only for the holder of ADMIN_API_KEY."""

from __future__ import annotations

import time

import pytest
from starlette.testclient import TestClient

from mistral_serve.api.app import create_app
from mistral_serve.config import Settings
from mistral_serve.engines.supervisor import free_port

ADMIN = {"authorization": "Bearer admin-s3cret"}
JSON = "application/json"


def app(**settings):
    engine = f"http://127.0.0.1:{free_port()}"
    return create_app(Settings(_env_file=None, engine_urls=[engine], **settings))


@pytest.fixture
def http():
    with TestClient(app(admin_api_key="admin-s3cret", key_cache_ttl_s=0.1)) as client:
        yield client


def test_keys_made_listed_changed_and_revoked_over_http(http):
    made = http.post("/admin/keys", json={"name": "app", "models": ["demo"]}, headers=ADMIN)
    assert made.status_code == 201
    key, key_id = made.json()["key"], made.json()["id"]
    assert key.startswith(f"msk_{key_id}_") and made.json()["models"] == ["demo"]
    caller = {"authorization": f"Bearer {key}"}
    time.sleep(0.3)  # the gateway's cache picks it up within KEY_CACHE_TTL_S
    assert http.get("/v1/models", headers=caller).status_code == 200
    assert http.get("/v1/models").status_code == 401  # a key exists: AUTH=auto requires one

    listed = http.get("/admin/keys", headers=ADMIN).json()["data"]
    assert [entry["id"] for entry in listed] == [key_id]
    assert key.split("_")[2] not in str(listed)
    changed = http.patch(
        f"/admin/keys/{key_id}",
        json={"priority": 3, "models": None, "rpm": 60, "tokens_per_day": 10_000},
        headers=ADMIN,
    ).json()
    assert changed["priority"] == 3 and changed["models"] is None and changed["name"] == "app"
    assert changed["rpm"] == 60 and changed["tokens_per_day"] == 10_000 and changed["tpm"] is None
    cleared = http.patch(f"/admin/keys/{key_id}", json={"rpm": None}, headers=ADMIN).json()
    assert cleared["rpm"] is None and cleared["tokens_per_day"] == 10_000
    assert http.get(f"/admin/keys/{key_id}", headers=ADMIN).json() == cleared
    assert http.delete(f"/admin/keys/{key_id}", headers=ADMIN).json()["state"] == "revoked"
    time.sleep(0.3)
    assert http.get("/v1/models", headers=caller).status_code == 401


def test_only_the_admin_key_opens_it(http):
    for headers in ({}, {"authorization": "Bearer wrong"}):
        for body in (b'{"bad": "body"}', b"{not json"):
            response = http.post(
                "/admin/keys", content=body, headers={**headers, "content-type": JSON}
            )
            assert response.status_code == 401  # refused before the body is even judged
            assert response.json()["error"]["code"] == "invalid_api_key"
            assert "wrong" not in response.text


def test_bad_bodies_and_unknown_keys(http):
    assert http.post("/admin/keys", json={}, headers=ADMIN).status_code == 400
    garbled = http.post("/admin/keys", content=b"{no", headers={**ADMIN, "content-type": JSON})
    assert garbled.status_code == 400 and garbled.json()["error"]["param"] is None
    assert garbled.json()["error"]["message"].startswith("The request body is not valid JSON")
    bad = http.post("/admin/keys", json={"name": "x", "expires": "soon"}, headers=ADMIN)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "expires"
    zero = http.post("/admin/keys", json={"name": "x", "rpm": 0}, headers=ADMIN)
    assert zero.status_code == 400 and zero.json()["error"]["param"] == "rpm"
    assert http.post("/admin/keys", json={"name": "x", "rps": 5}, headers=ADMIN).status_code == 400
    missing = http.get("/admin/keys/nosuchkey", headers=ADMIN)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("settings", [{}, {"admin_api_key": "admin-s3cret", "auth": "off"}])
def test_without_admin_api_key_or_a_store_it_is_off(settings):
    with TestClient(app(**settings)) as client:
        response = client.get("/admin/keys", headers=ADMIN)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "admin_disabled"


def test_adapters_are_the_admins_to_add_and_a_bad_one_is_a_400(http):
    body = {"name": "sql", "base": "demo", "path": "/adapters/sql"}
    assert http.post("/admin/adapters", json=body).status_code == 401
    refused = http.post("/admin/adapters", json=body, headers=ADMIN)  # no engine serves demo
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "base"
    assert (
        http.post("/admin/adapters", json={**body, "name": "a b"}, headers=ADMIN).status_code == 400
    )
    assert http.get("/admin/adapters", headers=ADMIN).json() == {"object": "list", "data": []}
    missing = http.delete("/admin/adapters/sql", headers=ADMIN)
    assert missing.status_code == 404


def test_adapters_are_off_with_auth_off():
    with TestClient(app(auth="off", admin_api_key="admin-s3cret")) as client:
        answer = client.get("/admin/adapters", headers=ADMIN)
    assert answer.status_code == 403
