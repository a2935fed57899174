"""Batch jobs (`/v1/batches`, `/v1/batch/jobs`): the jobs, one row per request with its claim
and result, and the ledger's batch id.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_MOMENTS = (
    "created_at",
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
    "expires_at",
    "updated_at",
)
_NULLABLE = frozenset(_MOMENTS) - {"created_at", "expires_at", "updated_at"}


def upgrade() -> None:
    op.create_table(
        "batch_jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("api", sa.String(8), nullable=False),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("input_files", sa.JSON(), nullable=False),
        sa.Column("completion_window", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("output_file_id", sa.String(64), nullable=True),
        sa.Column("error_file_id", sa.String(64), nullable=True),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("paused", sa.String(300), nullable=True),
        sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("trace_parent", sa.String(64), nullable=True),
        *(
            sa.Column(name, sa.DateTime(timezone=True), nullable=name in _NULLABLE)
            for name in _MOMENTS
        ),
    )
    op.create_index("ix_batch_jobs_key_id", "batch_jobs", ["key_id", "created_at"])
    op.create_index("ix_batch_jobs_status", "batch_jobs", ["status"])
    op.create_table(
        "batch_requests",
        sa.Column("job_id", sa.String(64), primary_key=True),
        sa.Column("line", sa.Integer(), primary_key=True),
        sa.Column("custom_id", sa.String(512), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("route_key", sa.String(96), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("claim", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "ix_batch_requests_work", "batch_requests", ["job_id", "state", "route_key", "line"]
    )
    # Across jobs, by state: what runs now (the share rule), what waits (the queue's depth).
    op.create_index("ix_batch_requests_state", "batch_requests", ["state", "job_id"])
    with op.batch_alter_table("usage") as table:
        table.add_column(sa.Column("batch_id", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage") as table:
        table.drop_column("batch_id")
    op.drop_index("ix_batch_requests_state", "batch_requests")
    op.drop_index("ix_batch_requests_work", "batch_requests")
    op.drop_table("batch_requests")
    op.drop_index("ix_batch_jobs_status", "batch_jobs")
    op.drop_index("ix_batch_jobs_key_id", "batch_jobs")
    op.drop_table("batch_jobs")
