"""Scheduler: jobs and their status history, queues with quotas, and the usage ledger.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False, index=True),
        sa.Column("team", sa.String(128), nullable=False, index=True),
        sa.Column("queue", sa.String(128), nullable=False, index=True),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("cpu", sa.Float, nullable=False),
        sa.Column("memory_gb", sa.Float, nullable=False),
        sa.Column("gpu", sa.Float, nullable=False),
        sa.Column("workers", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("max_retries", sa.Integer, nullable=False),
        sa.Column("backoff_seconds", sa.Float, nullable=False),
        sa.Column("timeout_seconds", sa.Float, nullable=True),
        sa.Column("entrypoint", sa.Text, nullable=True),
        sa.Column("env", sa.JSON, nullable=False),
        sa.Column("pipeline", sa.String(256), nullable=True, index=True),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("admitted_at", _TS, nullable=True),
        sa.Column("started_at", _TS, nullable=True),
        sa.Column("finished_at", _TS, nullable=True),
        sa.Column("not_before", _TS, nullable=True),
        sa.Column("exit_code", sa.Integer, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("checkpoint", sa.Text, nullable=True),
        sa.Column("result", sa.JSON, nullable=True),
        sa.Column("backend", sa.String(32), nullable=True),
        sa.Column("pid", sa.Integer, nullable=True),
        sa.Column("handle", sa.JSON, nullable=True),
        sa.Column("borrowed", sa.Boolean, nullable=False),
        sa.Column("preempted_count", sa.Integer, nullable=False),
        sa.Column("stop_requested", sa.String(16), nullable=True),
        sa.Column("stop_requested_at", _TS, nullable=True),
    )
    op.create_table(
        "job_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("from_status", sa.String(16), nullable=True),
        sa.Column("to_status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("at", _TS, nullable=False),
    )
    op.create_table(
        "queues",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("team", sa.String(128), nullable=False, index=True),
        sa.Column("cohort", sa.String(128), nullable=True, index=True),
        sa.Column("nominal_cpu", sa.Float, nullable=False),
        sa.Column("nominal_memory_gb", sa.Float, nullable=False),
        sa.Column("nominal_gpu", sa.Float, nullable=False),
        sa.Column("borrowing_limit_cpu", sa.Float, nullable=True),
        sa.Column("borrowing_limit_memory_gb", sa.Float, nullable=True),
        sa.Column("borrowing_limit_gpu", sa.Float, nullable=True),
        sa.Column("backend", sa.String(32), nullable=False),
        sa.Column("strict_fifo", sa.Boolean, nullable=False),
        sa.Column("budget", sa.JSON, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
    )
    op.create_table(
        "job_usage",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), nullable=False, index=True),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("team", sa.String(128), nullable=False, index=True),
        sa.Column("queue", sa.String(128), nullable=False, index=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("pipeline", sa.String(256), nullable=True, index=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("cpu_seconds", sa.Float, nullable=False),
        sa.Column("gpu_seconds", sa.Float, nullable=False),
        sa.Column("memory_gb_seconds", sa.Float, nullable=False),
        sa.Column("wall_seconds", sa.Float, nullable=False),
        sa.Column("peak_memory_gb", sa.Float, nullable=False),
        sa.Column("at", _TS, nullable=False, index=True),
    )


def downgrade() -> None:
    op.drop_table("job_usage")
    op.drop_table("queues")
    op.drop_table("job_events")
    op.drop_table("jobs")
