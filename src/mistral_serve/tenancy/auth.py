"""Who is calling: the `Authorization: Bearer` header checked against the static API_KEY and
the key cache. Nothing presented ever reaches a message: a wrong key and a malformed one get
the same answer.

A header that passed is remembered with its Caller, so a client's next request costs a dict
lookup instead of a parse and a SHA-256 (clients send the same header on every request). The
memory holds only headers that passed, at most :data:`VERIFIED_MAX`, in this process only; an
entry counts only while its key's record is still the cache's current one and usable, so a
revocation, an expiry or a change reaches it exactly as before. The lookup compares strings
only when their hashes match, and Python's string hash is keyed per process, so timing it
tells a guesser no more than the constant-time comparison of the full check does.

A well-formed key whose id the cache does not know yet (made since its last refresh) is looked
up in the store once (:meth:`KeyCache.find`), so a new key works the moment it exists. Under
``AUTH=auto`` the same holds for the first key made: it turns authentication on for every
request at once, not at the next refresh."""

from __future__ import annotations

import functools
import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal

from mistral_serve.errors import InvalidApiKeyError, ModelNotAllowedError
from mistral_serve.store import KeyRecord, WallClock, utc_now
from mistral_serve.tenancy.cache import KeyCache
from mistral_serve.tenancy.keys import parse_key
from mistral_serve.tenancy.limits import KeyLimits

AuthMode = Literal["auto", "required", "off"]
#: The key id spans and logs show for the static API_KEY.
STATIC_KEY_ID = "static"
#: At most this many verified Authorization headers are remembered (then they start again):
#: only headers that passed get in, so a stranger's guesses cannot fill it.
VERIFIED_MAX = 4096


@dataclass(frozen=True)
class Caller:
    """Who a request is from: a stored key (``record``), the static key, or anyone (auth off).
    A stored key's Caller is made once per version of its record (:class:`Authenticator`), so
    what is read from the record is read once."""

    key_id: str | None = None
    record: KeyRecord | None = None

    @functools.cached_property
    def limits(self) -> KeyLimits | None:
        """The key's limits; None when it has none (nothing to reserve)."""
        if self.record is None:
            return None
        limits = KeyLimits.of(self.record)
        return limits if limits.any else None

    @property
    def priority(self) -> int | None:
        return self.record.priority if self.record is not None else None

    @property
    def owner(self) -> str:
        """Whose records (files, batches, stored responses, conversations, ledger rows) are
        this caller's: its key's id, "" when no key is required."""
        return self.key_id or ""

    @property
    def weight(self) -> float:
        return self.record.weight if self.record is not None else 1.0

    def tenant(self, user: str | None, client: str | None) -> str:
        """Whose turn a request takes in admission's fair queue: a stored key's id; without
        one (AUTH=off, or the one static key everyone shares), the request's ``user`` field,
        else the client's address, hashed (the queue's counts are shown in ``/ready``)."""
        if self.record is not None:
            return self.record.id
        if user:
            return "user:" + _short_hash(user)
        return "client:" + _short_hash(client or "")

    def may_use(self, model: str) -> bool:
        models = self.record.models if self.record is not None else None
        return models is None or model in models


ANYONE = Caller()
STATIC_CALLER = Caller(STATIC_KEY_ID)


class Authenticator:
    """``clock``: the wall clock keys' expiry is judged by."""

    def __init__(
        self,
        mode: AuthMode,
        static_key: str | None,
        cache: KeyCache | None,
        clock: WallClock = utc_now,
    ) -> None:
        self._mode = mode
        self._static = static_key.encode() if static_key else None
        self._cache = cache
        self._clock = clock
        #: The Caller of each stored key, made once per version of its record.
        self._callers: dict[str, Caller] = {}
        #: Authorization headers that passed, with their Caller (see the module's docstring).
        self._verified: dict[str, Caller] = {}

    @property
    def required(self) -> bool:
        if self._mode == "auto":
            return self._static is not None or (self._cache is not None and self._cache.any_keys())
        return self._mode == "required"

    async def authenticate(self, authorization: str | None) -> Caller:
        """The caller of a request with this Authorization header; raises InvalidApiKeyError."""
        if not self.required and (
            self._mode != "auto" or not await self._turns_auth_on(authorization)
        ):
            return ANYONE
        if authorization is None:
            return await self._verify(authorization)  # raises: no key
        known = self._verified.get(authorization)
        if known is not None:
            if self._still_valid(known):
                return known
            del self._verified[authorization]  # changed, revoked or expired: ask again
        caller = await self._verify(authorization)
        if len(self._verified) >= VERIFIED_MAX:
            self._verified.clear()
        self._verified[authorization] = caller
        return caller

    async def _turns_auth_on(self, authorization: str | None) -> bool:
        """AUTH=auto with no key known yet: whether this header holds a key made since (the
        first key: from now on every request needs one)."""
        if self._cache is None:
            return False
        token = _bearer(authorization)
        presented = parse_key(token) if token is not None else None
        return presented is not None and await self._cache.find(presented.key_id) is not None

    def _usable(self, record: KeyRecord) -> bool:
        """Not revoked, and not expired now (the clock is read only for keys that expire)."""
        if record.revoked_at is not None:
            return False
        return record.expires_at is None or record.usable(self._clock())

    def _still_valid(self, caller: Caller) -> bool:
        """Whether a remembered Caller still stands: the static key always does; a stored
        key while its record is the cache's current one and usable."""
        record = caller.record
        return record is None or (
            self._cache is not None
            and self._cache.get(record.id) is record
            and self._usable(record)
        )

    async def _verify(self, authorization: str | None) -> Caller:
        """The header's Caller, checked from scratch; raises InvalidApiKeyError."""
        token = _bearer(authorization)
        if token is None:
            raise InvalidApiKeyError(
                "You didn't provide an API key: send `Authorization: Bearer <key>`."
            )
        if self._static is not None and hmac.compare_digest(token.encode(), self._static):
            return STATIC_CALLER
        presented = parse_key(token)
        record = await self._cache.find(presented.key_id) if presented and self._cache else None
        if (
            presented is None
            or record is None
            or not presented.matches(record.secret_hash)
            or not self._usable(record)
        ):
            raise InvalidApiKeyError("Incorrect, revoked or expired API key provided.")
        return self._caller(record)

    def _caller(self, record: KeyRecord) -> Caller:
        caller = self._callers.get(record.id)
        if caller is None or caller.record is not record:  # new, or its record changed
            caller = self._callers[record.id] = Caller(record.id, record)
        return caller

    async def caller_of(self, key_id: str) -> Caller:
        """The Caller of the key with this id, for work it left to run later (a batch job);
        raises InvalidApiKeyError when the key is gone, revoked or expired since."""
        if not key_id:
            return ANYONE  # made without a key (AUTH=off)
        if key_id == STATIC_KEY_ID:
            return STATIC_CALLER
        record = await self._cache.find(key_id) if self._cache is not None else None
        if record is None or not self._usable(record):
            raise InvalidApiKeyError("The batch's API key was revoked, expired or deleted.")
        return self._caller(record)

    @staticmethod
    def check_model(caller: Caller, model: str) -> None:
        if not caller.may_use(model):
            raise ModelNotAllowedError(model)


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def check_admin(authorization: str | None, admin_key: str) -> None:
    """Only the holder of ADMIN_API_KEY may use the admin API."""
    token = _bearer(authorization)
    if token is None or not hmac.compare_digest(token.encode(), admin_key.encode()):
        raise InvalidApiKeyError("The admin API needs `Authorization: Bearer <ADMIN_API_KEY>`.")


def _short_hash(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()
