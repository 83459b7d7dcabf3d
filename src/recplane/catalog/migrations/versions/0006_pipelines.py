"""Pipelines: versioned DAG specs, their runs, each step's run, and the content-addressed step cache.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "pipelines",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False, index=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("team", sa.String(128), nullable=False, index=True),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("schedule", sa.String(128), nullable=True),
        sa.Column("triggers", sa.JSON, nullable=False),
        sa.Column("trigger_baseline", sa.JSON, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.UniqueConstraint("name", "version", name="uq_pipelines_name_version"),
    )
    op.create_table(
        "pipeline_runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("pipeline", sa.String(128), nullable=False, index=True),
        sa.Column("pipeline_version", sa.Integer, nullable=False),
        sa.Column("team", sa.String(128), nullable=False, index=True),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("trigger_detail", sa.JSON, nullable=False),
        sa.Column("dedup_key", sa.String(512), nullable=True, unique=True),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", _TS, nullable=False, index=True),
        sa.Column("started_at", _TS, nullable=True),
        sa.Column("finished_at", _TS, nullable=True),
    )
    op.create_table(
        "step_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("pipeline_runs.id", ondelete="CASCADE"), nullable=False,
                  index=True),
        sa.Column("step", sa.String(128), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=True, index=True),
        sa.Column("cache_key", sa.String(64), nullable=True),
        sa.Column("cached_from", sa.String(32), nullable=True),
        sa.Column("inputs", sa.JSON, nullable=True),
        sa.Column("outputs", sa.JSON, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("submitted_at", _TS, nullable=True),
        sa.Column("started_at", _TS, nullable=True),
        sa.Column("finished_at", _TS, nullable=True),
        sa.UniqueConstraint("run_id", "step", name="uq_step_runs_run_step"),
    )
    op.create_table(
        "step_cache",
        sa.Column("cache_key", sa.String(64), primary_key=True),
        sa.Column("pipeline", sa.String(128), nullable=False, index=True),
        sa.Column("step", sa.String(128), nullable=False),
        sa.Column("outputs", sa.JSON, nullable=True),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("step_cache")
    op.drop_table("step_runs")
    op.drop_table("pipeline_runs")
    op.drop_table("pipelines")
