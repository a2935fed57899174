"""Opening the store: the engine for DATABASE_URL, brought to the latest schema at once."""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from mistral_serve.config import Settings

MIGRATIONS = Path(__file__).with_name("migrations")
#: The asyncio driver of each database, for URLs that name none (`postgresql://…`).
_ASYNC_DRIVERS = {"postgresql": "asyncpg", "sqlite": "aiosqlite"}


def sqlite_url(folder: Path) -> str:
    """The default database: one SQLite file in ``folder``."""
    return f"sqlite+aiosqlite:///{folder / 'mistral-serve.db'}"


def configured_url(settings: Settings) -> str:
    """DATABASE_URL with its asyncio driver, or SQLite in MISTRAL_SERVE_DATA_DIR."""
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        return sqlite_url(settings.data_dir)
    url = make_url(settings.database_url.get_secret_value())
    driver = _ASYNC_DRIVERS.get(url.get_backend_name())
    if driver is not None and url.drivername == url.get_backend_name():
        url = url.set(drivername=f"{url.drivername}+{driver}")
    return url.render_as_string(hide_password=False)


class Store:
    """One database, at the latest schema. ``await Store.open(url)``; ``await store.close()``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)

    @classmethod
    async def open(cls, url: str) -> Store:
        sqlite = url.startswith("sqlite")
        engine = create_async_engine(
            url,
            pool_pre_ping=not sqlite,  # a file has no connection to lose
            # JSON columns (stored responses, conversations) through orjson, not the stdlib's.
            json_serializer=_json_text,
            json_deserializer=orjson.loads,
        )
        if sqlite:
            # WAL: readers do not block the writer (the ledger writes while keys are read).
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        store = cls(engine)
        try:
            async with _sqlite_migration_lock(url), engine.begin() as connection:
                await connection.run_sync(_upgrade)
        except BaseException:
            await engine.dispose()
            raise
        return store

    async def close(self) -> None:
        await self.engine.dispose()


@asynccontextmanager
async def _sqlite_migration_lock(url: str) -> AsyncIterator[None]:
    """SQLite: gateway workers starting at once on a new file take turns migrating it (a
    lock file beside it), as PostgreSQL's replicas do with an advisory lock (below); else the
    second one fails creating a table the first just made."""
    database = make_url(url).database if url.startswith("sqlite") else None
    if not database or database == ":memory:":
        yield
        return
    descriptor = os.open(f"{database}.migrate-lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing it releases the lock


#: Held (per transaction) while PostgreSQL is migrated: replicas starting at once on a new
#: database take turns instead of racing to create the same tables.
_MIGRATION_LOCK = 0x6D73_7276  # "msrv"


def _upgrade(connection: Connection) -> None:
    """Alembic's ``upgrade head`` on this connection (migrations are idempotent by revision)."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _json_text(value: object) -> str:
    return orjson.dumps(value).decode()


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    # In WAL mode, NORMAL is safe against the process dying (what a gateway does); only the
    # machine losing power may lose the last commits. FULL's fsync per commit cost a stored
    # response more CPU than the response itself.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
