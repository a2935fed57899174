"""API keys against a real gateway and engine: the auth matrix, with keys made and revoked by
`mistral-serve keys` as an operator would, and no secret in the gateway's log."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from mistralai.client import Mistral
from mistralai.client.errors import MistralError

from tests.support import seconds_until, stop_process

from .conftest import Stack, created_key, mistral_serve, start_gateway

pytestmark = pytest.mark.integration

TTL_S = 1


@dataclass
class Secured:
    url: str
    data_dir: Path
    log_path: Path

    def keys(self, *args: str) -> str:
        """`mistral-serve keys …` on the gateway's store; its standard output."""
        return mistral_serve({"MISTRAL_SERVE_DATA_DIR": str(self.data_dir)}, "keys", *args)

    def create(self, *args: str) -> tuple[str, str]:
        """A new key: (id, the key's text)."""
        return created_key(self.keys("create", *args))


def secured_gateway(
    stack: Stack, otlp, tmp_path_factory, name: str, ttl_s: float
) -> Iterator[Secured]:
    """A gateway over the session's engines with a key store of its own (AUTH=auto), its key
    cache refreshed every ``ttl_s``."""
    log_dir = tmp_path_factory.mktemp(name)
    data_dir = log_dir / "data"
    log_path = log_dir / "gateway.log"
    url, process = start_gateway(
        ",".join(stack.engine_urls.values()),
        otlp.endpoint,
        log_path,
        MISTRAL_SERVE_DATA_DIR=str(data_dir),
        KEY_CACHE_TTL_S=str(ttl_s),
    )
    try:
        yield Secured(url, data_dir, log_path)
    finally:
        stop_process(process)


@pytest.fixture(scope="module")
def secured(stack: Stack, otlp, tmp_path_factory) -> Iterator[Secured]:
    """The gateway whose store the auth matrix fills."""
    yield from secured_gateway(stack, otlp, tmp_path_factory, "auth", TTL_S)


def chat(url: str, key: str | None, model: str = "demo") -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key is not None else {}
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    return httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def unrefreshed(stack: Stack, otlp, tmp_path_factory) -> Iterator[Secured]:
    """A gateway whose key cache refreshes once an hour: what it knows of a key made after its
    start it can only have looked up."""
    yield from secured_gateway(stack, otlp, tmp_path_factory, "auth-unrefreshed", 3600)


def test_a_new_key_works_the_moment_it_exists(unrefreshed: Secured):
    url = unrefreshed.url
    assert chat(url, None).status_code == 200  # no key yet: AUTH=auto is open
    _, first = unrefreshed.create("--name", "first")
    assert [chat(url, first).status_code for _ in range(6)] == [200] * 6
    assert chat(url, None).status_code == 401  # the first key turned authentication on
    _, second = unrefreshed.create("--name", "second", "--models", "demo-v1")
    assert [chat(url, second, "demo-v1").status_code for _ in range(6)] == [200] * 6
    assert chat(url, second, "demo").status_code == 403  # its record, as looked up
    made_up = "msk_" + "a" * 12 + "_" + "b" * 52  # well formed, in no store
    for _ in range(3):
        refused = chat(url, made_up)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"


def test_the_auth_matrix(secured: Secured):
    url = secured.url
    assert chat(url, None).status_code == 200  # no key exists yet: AUTH=auto is open
    key_id, key = secured.create("--name", "app")
    assert chat(url, key).status_code == 200  # a new key works at once (it is looked up)
    assert chat(url, None).status_code == 401  # and the first key closes the door

    client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
    reply = client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert reply.usage.completion_tokens == 2
    # Mistral's SDK sends the same Bearer header.
    mistral = Mistral(api_key=key, server_url=url)
    answer = mistral.chat.complete(
        model="demo", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert answer.usage.completion_tokens == 2
    with pytest.raises(MistralError) as refused:
        Mistral(api_key="msk_wrong", server_url=url).chat.complete(
            model="demo", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    assert refused.value.status_code == 401
    _, limited = secured.create("--name", "v1 only", "--models", "demo-v1")
    _, expired = secured.create("--name", "old", "--expires", "2020-01-01")
    revoked_id, revoked = secured.create("--name", "leaver")
    assert chat(url, revoked).status_code == 200
    wrong_secret = key[:-6] + ("a" if key[-6] != "a" else "b") + key[-5:]
    cases = {
        "no key": (None, 401, "invalid_api_key"),
        "malformed": ("not-a-key", 401, "invalid_api_key"),
        "wrong secret": (wrong_secret, 401, "invalid_api_key"),
        "expired": (expired, 401, "invalid_api_key"),
        "wrong model": (limited, 403, "model_not_allowed"),
    }
    for name, (presented, status, code) in cases.items():
        response = chat(url, presented)
        assert response.status_code == status, name
        error = response.json()["error"]
        assert error["code"] == code, name
        assert presented is None or presented not in error["message"], name
    listed = httpx.get(url + "/v1/models", headers={"authorization": f"Bearer {limited}"})
    assert [card["id"] for card in listed.json()["data"]] == ["demo-v1"]

    secured.keys("revoke", revoked_id)
    refused_after = seconds_until(
        lambda: chat(url, revoked).status_code == 401, 10 * TTL_S, "the revoked key refused"
    )
    assert refused_after <= 2 * TTL_S + 1, refused_after
    assert chat(url, key).status_code == 200  # the others are untouched

    shown = json.loads(secured.keys("list", "--json"))
    assert {entry["id"]: entry["state"] for entry in shown}[revoked_id] == "revoked"
    assert key_id in {entry["id"] for entry in shown}
    log = secured.log_path.read_text()
    for secret in (key, limited, expired, revoked, wrong_secret):
        assert secret.split("_")[2] not in log  # no secret, whole or in part, in the log
