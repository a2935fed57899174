"""Stored responses (the Responses API): each response's input items and the response object,
linked to the one before it in its chain; a background response's events, for a stream that
resumes.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "responses",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("previous_response_id", sa.String(64)),
        sa.Column("root_id", sa.String(64), nullable=False),
        sa.Column("conversation_id", sa.String(64)),
        sa.Column("input_items", sa.JSON, nullable=False),
        sa.Column("response", sa.JSON, nullable=False),
        sa.Column("runner", sa.String(64)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("responses_expires_at", "responses", ["expires_at"])
    op.create_index("responses_unfinished", "responses", ["status", "runner"])
    op.create_table(
        "response_events",
        sa.Column("response_id", sa.String(64), primary_key=True),
        sa.Column("sequence", sa.Integer, primary_key=True),
        sa.Column("event", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("response_events")
    op.drop_index("responses_unfinished", "responses")
    op.drop_index("responses_expires_at", "responses")
    op.drop_table("responses")
