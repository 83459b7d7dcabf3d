"""Training runs: one row per run (config, data versions, code version, outcome, artifacts) and its epochs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "training_runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("team", sa.String(128), nullable=False, index=True),
        sa.Column("model", sa.String(64), nullable=False, index=True),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("git_sha", sa.String(40), nullable=True),
        sa.Column("git_dirty", sa.Boolean, nullable=True),
        sa.Column("recplane_version", sa.String(64), nullable=False),
        sa.Column("dataset", sa.String(256), nullable=True, index=True),
        sa.Column("dataset_version", sa.BigInteger, nullable=True),
        sa.Column("item_features", sa.String(256), nullable=True),
        sa.Column("item_features_version", sa.BigInteger, nullable=True),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("artifacts_uri", sa.Text, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column(
            "parent_id",
            sa.String(32),
            sa.ForeignKey("training_runs.id", ondelete="SET NULL"),
            nullable=True,
            index=True,
        ),
        sa.Column("group", sa.String(256), nullable=True, index=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("started_at", _TS, nullable=True),
        sa.Column("finished_at", _TS, nullable=True),
    )
    op.create_table(
        "training_run_epochs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "run_id",
            sa.String(32),
            sa.ForeignKey("training_runs.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("loss", sa.Float, nullable=True),
        sa.Column("valid", sa.JSON, nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.UniqueConstraint("run_id", "epoch"),
    )


def downgrade() -> None:
    op.drop_table("training_run_epochs")
    op.drop_table("training_runs")
