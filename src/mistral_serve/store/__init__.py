"""The store: SQLAlchemy 2 (async) models and Alembic migrations, applied when it opens.

SQLite (aiosqlite, WAL) by default, PostgreSQL (asyncpg) for fleets. Nothing above this package
speaks SQL: it hands out plain records. Built in steps for issue 11; so far API keys.
"""

from mistral_serve.store.database import Store
from mistral_serve.store.keys import KeyRecord, KeyRecords

__all__ = ["KeyRecord", "KeyRecords", "Store"]
