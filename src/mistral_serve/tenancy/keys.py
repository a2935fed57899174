"""API keys: their format, how they are made, and the one form that is stored.

A key reads ``msk_<id>_<secret>``:

- ``msk_`` makes it recognisable (secret scanners, logs reviewed by people), as ``sk-`` does
  for OpenAI's;
- ``<id>``, 12 lowercase base32 characters, names the key in the store, the ledger, spans and
  metrics: public, safe to show;
- ``<secret>``, 32 bytes from :mod:`secrets` (base32, 52 characters), is shown once, when the
  key is made. Only its SHA-256 is stored. A slow password hash buys nothing against 256 bits
  of entropy and would cost every request a millisecond.

Parsing never puts the presented text in an error message: a malformed or wrong key is
"invalid", whatever it was.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import NamedTuple

PREFIX = "msk_"
_ID_BYTES = 8  # base32 → 13 characters, trimmed to 12 (60 bits: ids are names, not secrets)
_ID_LENGTH = 12
_SECRET_BYTES = 32
_FORMAT = re.compile(r"^msk_([a-z2-7]{12})_([a-z2-7]{52})$")


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


@dataclass(frozen=True)
class IssuedKey:
    """A key as it is made: ``text`` is shown to its owner once and never stored."""

    key_id: str
    secret_hash: str
    text: str

    def __repr__(self) -> str:  # never the secret, even in a traceback or a debugger
        return f"IssuedKey(key_id={self.key_id!r})"


class PresentedKey(NamedTuple):  # made on every request: a tuple is the cheapest to make
    """A key as a client presented it, split into its id and the hash of its secret."""

    key_id: str
    secret_hash: str

    def matches(self, stored_hash: str) -> bool:
        return hmac.compare_digest(self.secret_hash, stored_hash)


def issue_key() -> IssuedKey:
    key_id = _b32(secrets.token_bytes(_ID_BYTES))[:_ID_LENGTH]
    secret = _b32(secrets.token_bytes(_SECRET_BYTES))
    return IssuedKey(key_id, hash_secret(secret), f"{PREFIX}{key_id}_{secret}")


def parse_key(text: str) -> PresentedKey | None:
    """The id and secret hash of a well-formed key; None for anything else."""
    found = _FORMAT.match(text.strip())
    if found is None:
        return None
    return PresentedKey(found.group(1), hash_secret(found.group(2)))


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()
