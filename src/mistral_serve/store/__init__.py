"""The store: SQLAlchemy 2 (async) models and Alembic migrations, applied when it opens.

SQLite (aiosqlite, WAL) by default, PostgreSQL (asyncpg) for fleets. Nothing above this package
speaks SQL: it hands out plain records: API keys, the usage ledger's rows and totals, and the
LoRA adapters added at run time.
"""

from mistral_serve.store.adapters import AdapterExistsError, AdapterRecord, AdapterRecords
from mistral_serve.store.database import Store
from mistral_serve.store.keys import KeyRecord, KeyRecords
from mistral_serve.store.models import WallClock, utc_now
from mistral_serve.store.usage import EncodedRow, UsageRecords, UsageRow, UsageSummary

__all__ = [
    "AdapterExistsError",
    "AdapterRecord",
    "AdapterRecords",
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
