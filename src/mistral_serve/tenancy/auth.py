"""Who is calling: the `Authorization: Bearer` header checked against the static API_KEY and
the key cache. Nothing presented ever reaches a message: a wrong key and a malformed one get
the same answer."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from mistral_serve.errors import InvalidApiKeyError, ModelNotAllowedError
from mistral_serve.store import KeyRecord
from mistral_serve.tenancy.cache import KeyCache
from mistral_serve.tenancy.keys import parse_key

AuthMode = Literal["auto", "required", "off"]
#: The key id spans and logs show for the static API_KEY.
STATIC_KEY_ID = "static"


@dataclass(frozen=True)
class Caller:
    """Who a request is from: a stored key (``record``), the static key, or anyone (auth off)."""

    key_id: str | None = None
    record: KeyRecord | None = None

    @property
    def priority(self) -> int | None:
        return self.record.priority if self.record is not None else None

    def may_use(self, model: str) -> bool:
        models = self.record.models if self.record is not None else None
        return models is None or model in models


ANYONE = Caller()
STATIC_CALLER = Caller(STATIC_KEY_ID)


class Authenticator:
    def __init__(self, mode: AuthMode, static_key: str | None, cache: KeyCache | None) -> None:
        self._mode = mode
        self._static = static_key.encode() if static_key else None
        self._cache = cache
        #: The Caller of each stored key, made once per version of its record.
        self._callers: dict[str, Caller] = {}

    @property
    def required(self) -> bool:
        if self._mode == "auto":
            return self._static is not None or (self._cache is not None and self._cache.any_keys())
        return self._mode == "required"

    def authenticate(self, authorization: str | None, now: datetime | None = None) -> Caller:
        """The caller of a request with this Authorization header; raises InvalidApiKeyError."""
        if not self.required:
            return ANYONE
        token = _bearer(authorization)
        if token is None:
            raise InvalidApiKeyError(
                "You didn't provide an API key: send `Authorization: Bearer <key>`."
            )
        if self._static is not None and hmac.compare_digest(token.encode(), self._static):
            return STATIC_CALLER
        presented = parse_key(token)
        record = self._cache.get(presented.key_id) if presented and self._cache else None
        if (
            presented is None
            or record is None
            or not presented.matches(record.secret_hash)
            or not record.usable(now)
        ):
            raise InvalidApiKeyError("Incorrect, revoked or expired API key provided.")
        return self._caller(record)

    def _caller(self, record: KeyRecord) -> Caller:
        caller = self._callers.get(record.id)
        if caller is None or caller.record is not record:  # new, or its record changed
            caller = self._callers[record.id] = Caller(record.id, record)
        return caller

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
