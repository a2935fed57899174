"""Who is calling: AUTH modes, the static key, stored keys (revoked, expired, wrong model),
and keys made since the cache's last refresh. Expiries are judged by a clock the test sets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mistral_serve.errors import InvalidApiKeyError, ModelNotAllowedError
from mistral_serve.store import KeyRecord
from mistral_serve.tenancy.auth import ANYONE, STATIC_CALLER, Authenticator, Caller
from mistral_serve.tenancy.keys import issue_key, parse_key

NOW = datetime(2026, 11, 25, tzinfo=UTC)


class Cache:
    """The key cache as the authenticator sees it; ``stored`` holds keys it does not know yet
    (made since its last refresh), which :meth:`find` looks up."""

    def __init__(self, *records: KeyRecord) -> None:
        self.records = {record.id: record for record in records}
        self.stored: dict[str, KeyRecord] = {}
        self.lookups: list[str] = []

    def get(self, key_id):
        return self.records.get(key_id)

    async def find(self, key_id):
        if key_id not in self.records:
            self.lookups.append(key_id)
            if key_id in self.stored:
                self.records[key_id] = self.stored[key_id]
        return self.records.get(key_id)

    def any_keys(self):
        return bool(self.records)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def authenticator(mode, static, cache, clock=None) -> Authenticator:
    return Authenticator(mode, static, cache, clock or Clock())


def record(issued, **settings) -> KeyRecord:
    return KeyRecord(issued.key_id, "app", issued.secret_hash, NOW, NOW, **settings)


async def test_auto_is_open_until_a_key_exists_or_api_key_is_set():
    assert await authenticator("auto", None, Cache()).authenticate(None) is ANYONE
    issued = issue_key()
    assert authenticator("auto", None, Cache(record(issued))).required
    assert authenticator("auto", "s3cret", Cache()).required
    assert not authenticator("off", "s3cret", Cache(record(issued))).required
    assert authenticator("required", None, Cache()).required


async def test_the_static_key_is_accepted_as_a_bearer_token():
    auth = authenticator("auto", "s3cret", Cache())
    assert (await auth.authenticate("Bearer s3cret")).key_id == "static"
    assert (await auth.authenticate("bearer  s3cret ")).key_id == "static"


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Basic s3cret", "Bearer wrong", "s3cret", "Bearer msk_nothing_here"],
)
async def test_anything_else_is_401_and_never_echoed(header):
    auth = authenticator("required", "s3cret", Cache(record(issue_key())))
    with pytest.raises(InvalidApiKeyError) as refused:
        await auth.authenticate(header)
    assert refused.value.status == 401 and refused.value.code == "invalid_api_key"
    if header and len(header.split()) > 1:
        assert header.split()[-1] not in refused.value.message


async def test_a_stored_key_is_accepted_until_revoked_or_expired():
    live, revoked, expired = issue_key(), issue_key(), issue_key()
    cache = Cache(
        record(live, priority=7),
        record(revoked, revoked_at=NOW),
        record(expired, expires_at=NOW - timedelta(seconds=1)),
    )
    auth = authenticator("auto", None, cache)
    caller = await auth.authenticate(f"Bearer {live.text}")
    assert caller.key_id == live.key_id and caller.priority == 7
    for refused in (revoked, expired):
        with pytest.raises(InvalidApiKeyError):
            await auth.authenticate(f"Bearer {refused.text}")
    forged = live.text[:-4] + "aaaa"  # the right id, another secret
    with pytest.raises(InvalidApiKeyError):
        await auth.authenticate(f"Bearer {forged}")


async def test_a_key_limited_to_some_models_is_403_for_the_others():
    issued = issue_key()
    auth = authenticator("auto", None, Cache(record(issued, models=("demo",))))
    caller = await auth.authenticate(f"Bearer {issued.text}")
    Authenticator.check_model(caller, "demo")
    with pytest.raises(ModelNotAllowedError) as refused:
        Authenticator.check_model(caller, "other")
    assert refused.value.status == 403 and refused.value.code == "model_not_allowed"
    Authenticator.check_model(ANYONE, "other")  # auth off: every model


async def test_a_header_that_passed_is_not_parsed_and_hashed_again(monkeypatch):
    issued = issue_key()
    auth = authenticator("auto", None, Cache(record(issued)))
    parsed = []
    monkeypatch.setattr(
        "mistral_serve.tenancy.auth.parse_key", lambda text: parsed.append(text) or parse_key(text)
    )
    header = f"Bearer {issued.text}"
    callers = {await auth.authenticate(header) for _ in range(3)}
    assert len(callers) == 1 and len(parsed) == 1
    for _ in range(2):  # a wrong key is checked every time: only keys that passed are kept
        with pytest.raises(InvalidApiKeyError):
            await auth.authenticate(f"Bearer {issued.text[:-4]}aaaa")
    assert len(parsed) == 3


@pytest.mark.parametrize(
    "change",
    [{"revoked_at": NOW}, {"expires_at": NOW + timedelta(seconds=1)}, {"priority": 3}],
    ids=["revoked", "expires", "changed"],
)
async def test_a_remembered_header_follows_its_keys_record(change):
    issued = issue_key()
    cache = Cache(record(issued))
    clock = Clock()
    auth = authenticator("auto", None, cache, clock)
    header = f"Bearer {issued.text}"
    assert (await auth.authenticate(header)).priority == 0
    cache.records[issued.key_id] = record(issued, **change)  # the cache's next refresh
    clock.now = NOW + timedelta(seconds=2)
    if "priority" in change:
        assert (await auth.authenticate(header)).priority == 3
    else:
        with pytest.raises(InvalidApiKeyError):
            await auth.authenticate(header)
        cache.records[issued.key_id] = record(issued)  # back as it was: accepted again
        assert (await auth.authenticate(header)).key_id == issued.key_id


async def test_an_expiry_reaches_a_remembered_header_without_a_refresh():
    issued = issue_key()
    clock = Clock()
    expiring = Cache(record(issued, expires_at=NOW + timedelta(hours=1)))
    auth = authenticator("auto", None, expiring, clock)
    header = f"Bearer {issued.text}"
    assert (await auth.authenticate(header)).key_id == issued.key_id
    clock.now = NOW + timedelta(hours=2)
    with pytest.raises(InvalidApiKeyError):
        await auth.authenticate(header)


async def test_the_memory_of_headers_is_bounded(monkeypatch):
    monkeypatch.setattr("mistral_serve.tenancy.auth.VERIFIED_MAX", 2)
    issued = [issue_key() for _ in range(5)]
    auth = authenticator("auto", None, Cache(*(record(key) for key in issued)))
    for key in issued * 2:
        assert (await auth.authenticate(f"Bearer {key.text}")).key_id == key.key_id
    assert len(auth._verified) <= 2


async def test_a_key_made_since_the_last_refresh_is_looked_up_once():
    known, new = issue_key(), issue_key()
    cache = Cache(record(known))
    cache.stored[new.key_id] = record(new, priority=2)
    auth = authenticator("required", None, cache)
    for _ in range(3):
        assert (await auth.authenticate(f"Bearer {new.text}")).priority == 2
    assert cache.lookups == [new.key_id]  # then it is known
    with pytest.raises(InvalidApiKeyError):  # a made-up id is looked up, and refused
        await auth.authenticate(f"Bearer {issue_key().text}")
    with pytest.raises(InvalidApiKeyError):  # what is not a key is never looked up
        await auth.authenticate("Bearer msk_nothing_here")
    assert len(cache.lookups) == 2


async def test_under_auto_the_first_key_turns_authentication_on_at_once():
    first = issue_key()
    cache = Cache()
    cache.stored[first.key_id] = record(first)
    auth = authenticator("auto", None, cache)
    assert await auth.authenticate("Bearer unused") is ANYONE  # no key yet: open
    assert await auth.authenticate(f"Bearer {issue_key().text}") is ANYONE  # in no store
    assert (await auth.authenticate(f"Bearer {first.text}")).key_id == first.key_id
    assert auth.required
    with pytest.raises(InvalidApiKeyError):
        await auth.authenticate(None)
    off = authenticator("off", None, Cache())
    assert await off.authenticate(f"Bearer {first.text}") is ANYONE


def test_a_request_takes_its_turn_as_its_key_or_else_its_user_or_address():
    issued = issue_key()
    keyed = Caller(issued.key_id, record(issued, weight=2.0))
    assert keyed.tenant("someone", "10.0.0.7") == issued.key_id and keyed.weight == 2.0
    for caller in (ANYONE, STATIC_CALLER):  # nobody's own key: each user, else each address
        by_user, by_address = caller.tenant("alice", "10.0.0.7"), caller.tenant(None, "10.0.0.7")
        assert by_user.startswith("user:") and by_address.startswith("client:")
        assert "alice" not in by_user and "10.0.0.7" not in by_address  # shown hashed
        assert by_address != caller.tenant(None, "10.0.0.8")
        assert caller.weight == 1.0
