"""Who is calling: AUTH modes, the static key, stored keys (revoked, expired, wrong model)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mistral_serve.errors import InvalidApiKeyError, ModelNotAllowedError
from mistral_serve.store import KeyRecord
from mistral_serve.tenancy.auth import ANYONE, Authenticator
from mistral_serve.tenancy.keys import issue_key, parse_key

NOW = datetime(2026, 11, 25, tzinfo=UTC)


class Cache:
    """The key cache as the authenticator sees it."""

    def __init__(self, *records: KeyRecord) -> None:
        self.records = {record.id: record for record in records}

    def get(self, key_id):
        return self.records.get(key_id)

    def any_keys(self):
        return bool(self.records)


def record(issued, **settings) -> KeyRecord:
    return KeyRecord(issued.key_id, "app", issued.secret_hash, NOW, NOW, **settings)


def test_auto_is_open_until_a_key_exists_or_api_key_is_set():
    assert Authenticator("auto", None, Cache()).authenticate(None) is ANYONE
    issued = issue_key()
    assert Authenticator("auto", None, Cache(record(issued))).required
    assert Authenticator("auto", "s3cret", Cache()).required
    assert not Authenticator("off", "s3cret", Cache(record(issued))).required
    assert Authenticator("required", None, Cache()).required


def test_the_static_key_is_accepted_as_a_bearer_token():
    auth = Authenticator("auto", "s3cret", Cache())
    assert auth.authenticate("Bearer s3cret").key_id == "static"
    assert auth.authenticate("bearer  s3cret ").key_id == "static"


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Basic s3cret", "Bearer wrong", "s3cret", "Bearer msk_nothing_here"],
)
def test_anything_else_is_401_and_never_echoed(header):
    auth = Authenticator("required", "s3cret", Cache(record(issue_key())))
    with pytest.raises(InvalidApiKeyError) as refused:
        auth.authenticate(header)
    assert refused.value.status == 401 and refused.value.code == "invalid_api_key"
    if header and len(header.split()) > 1:
        assert header.split()[-1] not in refused.value.message


def test_a_stored_key_is_accepted_until_revoked_or_expired():
    live, revoked, expired = issue_key(), issue_key(), issue_key()
    cache = Cache(
        record(live, priority=7),
        record(revoked, revoked_at=NOW),
        record(expired, expires_at=NOW - timedelta(seconds=1)),
    )
    auth = Authenticator("auto", None, cache)
    caller = auth.authenticate(f"Bearer {live.text}", NOW)
    assert caller.key_id == live.key_id and caller.priority == 7
    for refused in (revoked, expired):
        with pytest.raises(InvalidApiKeyError):
            auth.authenticate(f"Bearer {refused.text}", NOW)
    forged = live.text[:-4] + "aaaa"  # the right id, another secret
    with pytest.raises(InvalidApiKeyError):
        auth.authenticate(f"Bearer {forged}", NOW)


def test_a_key_limited_to_some_models_is_403_for_the_others():
    issued = issue_key()
    auth = Authenticator("auto", None, Cache(record(issued, models=("demo",))))
    caller = auth.authenticate(f"Bearer {issued.text}", NOW)
    Authenticator.check_model(caller, "demo")
    with pytest.raises(ModelNotAllowedError) as refused:
        Authenticator.check_model(caller, "other")
    assert refused.value.status == 403 and refused.value.code == "model_not_allowed"
    Authenticator.check_model(ANYONE, "other")  # auth off: every model


def test_a_header_that_passed_is_not_parsed_and_hashed_again(monkeypatch):
    issued = issue_key()
    auth = Authenticator("auto", None, Cache(record(issued)))
    parsed = []
    monkeypatch.setattr(
        "mistral_serve.tenancy.auth.parse_key", lambda text: parsed.append(text) or parse_key(text)
    )
    header = f"Bearer {issued.text}"
    callers = {auth.authenticate(header, NOW) for _ in range(3)}
    assert len(callers) == 1 and len(parsed) == 1
    for _ in range(2):  # a wrong key is checked every time: only keys that passed are kept
        with pytest.raises(InvalidApiKeyError):
            auth.authenticate(f"Bearer {issued.text[:-4]}aaaa", NOW)
    assert len(parsed) == 3


@pytest.mark.parametrize(
    "change",
    [{"revoked_at": NOW}, {"expires_at": NOW + timedelta(seconds=1)}, {"priority": 3}],
    ids=["revoked", "expires", "changed"],
)
def test_a_remembered_header_follows_its_keys_record(change):
    issued = issue_key()
    cache = Cache(record(issued))
    auth = Authenticator("auto", None, cache)
    header = f"Bearer {issued.text}"
    assert auth.authenticate(header, NOW).priority == 0
    cache.records[issued.key_id] = record(issued, **change)  # the cache's next refresh
    later = NOW + timedelta(seconds=2)
    if "priority" in change:
        assert auth.authenticate(header, later).priority == 3
    else:
        with pytest.raises(InvalidApiKeyError):
            auth.authenticate(header, later)
        cache.records[issued.key_id] = record(issued)  # back as it was: accepted again
        assert auth.authenticate(header, later).key_id == issued.key_id


def test_an_expiry_reaches_a_remembered_header_without_a_refresh():
    issued = issue_key()
    auth = Authenticator("auto", None, Cache(record(issued, expires_at=NOW + timedelta(hours=1))))
    header = f"Bearer {issued.text}"
    assert auth.authenticate(header, NOW).key_id == issued.key_id
    with pytest.raises(InvalidApiKeyError):
        auth.authenticate(header, NOW + timedelta(hours=2))


def test_the_memory_of_headers_is_bounded(monkeypatch):
    monkeypatch.setattr("mistral_serve.tenancy.auth.VERIFIED_MAX", 2)
    issued = [issue_key() for _ in range(5)]
    auth = Authenticator("auto", None, Cache(*(record(key) for key in issued)))
    for key in issued * 2:
        assert auth.authenticate(f"Bearer {key.text}", NOW).key_id == key.key_id
    assert len(auth._verified) <= 2
