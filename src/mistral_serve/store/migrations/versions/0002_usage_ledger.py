"""The usage ledger: one row per request, and totals per key, model and day. Token budgets
become 64-bit (a month of a busy GPU is billions of tokens; SQLite's integers already are).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        for column in ("tokens_per_day", "tokens_per_month"):
            op.alter_column("api_keys", column, type_=sa.BigInteger, existing_nullable=True)
    op.create_table(
        "usage",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("engine", sa.String(64), nullable=True),
        sa.Column("streamed", sa.Boolean, nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("usage_estimated", sa.Boolean, nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("error_type", sa.String(64), nullable=True),
        sa.Column("finish_reason", sa.String(32), nullable=True),
        sa.Column("duration_ms", sa.Integer, nullable=False),
        sa.Column("ttft_ms", sa.Integer, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_usage_key_created", "usage", ["key_id", "created_at"])
    op.create_index("ix_usage_created", "usage", ["created_at"])
    op.create_table(
        "usage_totals",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_usage_totals_day", "usage_totals", ["day"])


def downgrade() -> None:
    op.drop_table("usage_totals")
    op.drop_table("usage")
    if op.get_bind().dialect.name != "sqlite":
        for column in ("tokens_per_day", "tokens_per_month"):
            op.alter_column("api_keys", column, type_=sa.Integer, existing_nullable=True)
