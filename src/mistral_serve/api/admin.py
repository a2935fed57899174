"""The admin API: the `keys` command over HTTP, for dashboards and automation, and the LoRA
adapters added at run time. Only with `Authorization: Bearer <ADMIN_API_KEY>`; off when that is
unset or AUTH=off (no store)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from mistral_serve.api.responses import json_response
from mistral_serve.errors import AdminDisabledError, InvalidRequestError, NotFoundError
from mistral_serve.gateway.adapters import AdapterKeeper
from mistral_serve.protocol.admin import KeySettings, NewAdapter, NewKey
from mistral_serve.store import KeyRecord, KeyRecords
from mistral_serve.tenancy import manage
from mistral_serve.tenancy.auth import check_admin


def _admitted(request: Request) -> KeyRecords:
    """The key store, once the caller proved to be the admin."""
    services = request.app.state.services
    if services.admin_key is None or services.keys is None:
        raise AdminDisabledError("The admin API is off: set ADMIN_API_KEY (and leave AUTH on).")
    check_admin(request.headers.get("authorization"), services.admin_key)
    return services.keys


class _AdminFirst(APIRoute):
    """Checks the admin key before anything else: FastAPI decodes a JSON body before it runs
    an endpoint's dependencies, so without this a stranger's malformed body got its 400."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def admitted_first(request: Request) -> Response:
            _admitted(request)
            return await handler(request)

        return admitted_first


def _now(request: Request) -> datetime:
    """The time by the app's wall clock (keys' states and expiries are judged by it)."""
    return request.app.state.services.clock()


def _adapters(request: Request) -> AdapterKeeper:
    keeper = request.app.state.services.adapters
    if keeper is None or not keeper.keeps:
        raise AdminDisabledError("The admin API is off: set ADMIN_API_KEY (and leave AUTH on).")
    return keeper


router = APIRouter(prefix="/admin", route_class=_AdminFirst)
Keys = Annotated[KeyRecords, Depends(_admitted)]
Adapters = Annotated[AdapterKeeper, Depends(_adapters)]
Now = Annotated[datetime, Depends(_now)]


def _settings(body: KeySettings, now: datetime) -> dict[str, Any]:
    given = body.model_dump(exclude_unset=True)
    try:
        if "expires" in given:
            expires = given.pop("expires")
            given["expires_at"] = manage.parse_expiry(expires, now) if expires is not None else None
    except ValueError as exc:
        raise InvalidRequestError(str(exc), param="expires") from None
    if given.get("models") is not None:
        given["models"] = tuple(given["models"])
    return given


def _found(record: KeyRecord | None, key_id: str, now: datetime) -> Response:
    if record is None:
        raise NotFoundError(f"No key `{key_id}`.")
    return json_response(manage.describe(record, now))


@router.post("/keys")
async def create_key(keys: Keys, now: Now, body: NewKey) -> Response:
    """Make a key; the answer holds its text, the only time it is shown. Every gateway
    accepts it at once (a key it does not know yet is looked up)."""
    settings = _settings(body, now)
    name = settings.pop("name")
    issued, record = await manage.create_key(keys, name, **settings)
    return json_response({**manage.describe(record, now), "key": issued.text}, 201)


@router.get("/keys")
async def list_keys(keys: Keys, now: Now) -> Response:
    records = await keys.list()
    return json_response({"object": "list", "data": [manage.describe(r, now) for r in records]})


@router.get("/keys/{key_id}")
async def show_key(key_id: str, keys: Keys, now: Now) -> Response:
    return _found(await keys.get(key_id), key_id, now)


@router.patch("/keys/{key_id}")
async def update_key(key_id: str, keys: Keys, now: Now, body: KeySettings) -> Response:
    return _found(await keys.update(key_id, **_settings(body, now)), key_id, now)


@router.delete("/keys/{key_id}")
async def revoke_key(key_id: str, keys: Keys, now: Now) -> Response:
    """Revoke (the key is kept, for the ledger); every gateway refuses it within the TTL."""
    return _found(await keys.revoke(key_id), key_id, now)


@router.post("/adapters")
async def add_adapter(adapters: Adapters, body: NewAdapter) -> Response:
    """Keep a LoRA adapter and load it on every ready engine of its base; every gateway, and
    every engine of the base that starts later, gets it within seconds."""
    return json_response(await adapters.add(body.name, body.base, body.path), 201)


@router.get("/adapters")
async def list_adapters(adapters: Adapters) -> Response:
    """The adapters added at run time, each with the engines that hold it."""
    return json_response({"object": "list", "data": await adapters.list()})


@router.delete("/adapters/{name:path}")
async def remove_adapter(name: str, adapters: Adapters) -> Response:
    """Unload it from every engine and forget it."""
    await adapters.remove(name)
    return json_response({"name": name, "deleted": True})
