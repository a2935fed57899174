"""The API key format: recognisable, an id that may be shown, a secret stored only as a hash."""

from __future__ import annotations

import re

from mistral_serve.tenancy.keys import hash_secret, issue_key, parse_key


def test_an_issued_key_has_the_prefix_an_id_and_a_high_entropy_secret():
    key = issue_key()
    prefix, key_id, secret = key.text.split("_")
    assert prefix == "msk"
    assert key_id == key.key_id and re.fullmatch(r"[a-z2-7]{12}", key_id)
    assert re.fullmatch(r"[a-z2-7]{52}", secret)  # 32 random bytes
    assert key.secret_hash == hash_secret(secret) != secret


def test_keys_are_unique():
    keys = [issue_key() for _ in range(200)]
    assert len({k.key_id for k in keys}) == len({k.text for k in keys}) == 200


def test_the_secret_never_shows_in_a_repr():
    key = issue_key()
    assert key.text.split("_")[2] not in repr(key)
    assert key.secret_hash not in repr(key)


def test_a_presented_key_matches_only_its_own_hash():
    key = issue_key()
    presented = parse_key(key.text)
    assert presented is not None and presented.key_id == key.key_id
    assert presented.matches(key.secret_hash)
    assert not presented.matches(issue_key().secret_hash)
    assert parse_key(f"  {key.text}\n") == presented  # surrounding whitespace is forgiven


def test_anything_malformed_is_no_key():
    key = issue_key().text
    for text in ("", "sk-abc", key[:-1], key + "a", key.upper(), key.replace("msk_", "mk_")):
        assert parse_key(text) is None
