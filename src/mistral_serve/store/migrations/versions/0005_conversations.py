"""Conversations (OpenAI's and Mistral's): each one's settings and metadata, and its items in
order.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("dialect", sa.String(8), nullable=False),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("conversations_key", "conversations", ["key_id", "created_at"])
    op.create_index("conversations_expires_at", "conversations", ["expires_at"])
    op.create_table(
        "conversation_items",
        sa.Column("conversation_id", sa.String(64), primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("item_id", sa.String(64), nullable=False),
        sa.Column("item", sa.JSON, nullable=False),
    )
    op.create_index("conversation_items_id", "conversation_items", ["conversation_id", "item_id"])


def downgrade() -> None:
    op.drop_index("conversation_items_id", "conversation_items")
    op.drop_table("conversation_items")
    op.drop_index("conversations_expires_at", "conversations")
    op.drop_index("conversations_key", "conversations")
    op.drop_table("conversations")
