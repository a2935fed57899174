"""The store: SQLAlchemy 2 (async) models and Alembic migrations, applied when it opens.

SQLite (aiosqlite, WAL) by default, PostgreSQL (asyncpg) for fleets. Nothing above this package
speaks SQL: it hands out plain records: API keys, and the usage ledger's rows and totals.
"""

from mistral_serve.store.database import Store
from mistral_serve.store.keys import KeyRecord, KeyRecords
from mistral_serve.store.models import WallClock, utc_now
from mistral_serve.store.usage import EncodedRow, UsageRecords, UsageRow, UsageSummary

__all__ = [
    "EncodedRow",
    "KeyRecord",
    "KeyRecords",
    "Store",
    "UsageRecords",
    "UsageRow",
    "UsageSummary",
    "WallClock",
    "utc_now",
]
