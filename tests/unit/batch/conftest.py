"""The store's real databases (SQLite and PostgreSQL), as the store's own tests use them."""

from ..store.conftest import database_url, store  # noqa: F401
