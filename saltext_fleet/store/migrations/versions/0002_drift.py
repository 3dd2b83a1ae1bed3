"""drift: baselines, assignments, snapshot and package keys, current drift, drift history

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 21:50:00

On PostgreSQL ``drift_history`` is a range-partitioned table (by ``computed_at``); partitions
are created month by month by :mod:`saltext_fleet.store.drift` when a point is written.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pending_states", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("pending_states_at", sa.DateTime(timezone=True), nullable=True)
        )
    op.create_table(
        "snapshot_keys",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("keys", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["digest"], ["inventory_snapshots.digest"]),
        sa.PrimaryKeyConstraint("digest"),
    )

    op.create_table(
        "baselines",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("spec", JSON, nullable=False),
        sa.Column("revision", sa.String(length=64), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "baseline_assignments",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("baseline", sa.String(length=128), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("tgt_type", sa.String(length=32), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["baseline"], ["baselines.name"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("baseline", "target", "tgt_type"),
    )
    op.create_table(
        "package_keys",
        sa.Column("key", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("ecosystem", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("version", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    with op.batch_alter_table("package_keys", schema=None) as batch_op:
        batch_op.create_index("ix_package_keys_name", ["ecosystem", "name"], unique=False)
    op.create_table(
        "drift_current",
        sa.Column("minion_id", sa.String(length=255), nullable=False),
        sa.Column("baseline", sa.String(length=128), nullable=True),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("missing", sa.Integer(), nullable=False),
        sa.Column("extra", sa.Integer(), nullable=False),
        sa.Column("changed", sa.Integer(), nullable=False),
        sa.Column("facts", sa.Integer(), nullable=False),
        sa.Column("pending_states", sa.Integer(), nullable=True),
        sa.Column("inventory_digest", sa.String(length=64), nullable=True),
        sa.Column("baseline_revision", sa.String(length=64), nullable=True),
        sa.Column("weights", sa.String(length=64), nullable=True),
        sa.Column("package_score", sa.Float(), nullable=True),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("minion_id"),
    )
    with op.batch_alter_table("drift_current", schema=None) as batch_op:
        batch_op.create_index("ix_drift_current_score", ["score"], unique=False)

    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE TABLE drift_history (
                minion_id VARCHAR(255) NOT NULL,
                computed_at TIMESTAMP WITH TIME ZONE NOT NULL,
                baseline VARCHAR(128),
                score FLOAT NOT NULL,
                missing INTEGER NOT NULL,
                extra INTEGER NOT NULL,
                changed INTEGER NOT NULL,
                facts INTEGER NOT NULL,
                pending_states INTEGER,
                trigger VARCHAR(32) NOT NULL,
                CONSTRAINT drift_history_pkey PRIMARY KEY (minion_id, computed_at)
            ) PARTITION BY RANGE (computed_at)
            """
        )
        op.execute("CREATE INDEX ix_drift_history_at ON drift_history (computed_at)")
    else:
        op.create_table(
            "drift_history",
            sa.Column("minion_id", sa.String(length=255), nullable=False),
            sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("baseline", sa.String(length=128), nullable=True),
            sa.Column("score", sa.Float(), nullable=False),
            sa.Column("missing", sa.Integer(), nullable=False),
            sa.Column("extra", sa.Integer(), nullable=False),
            sa.Column("changed", sa.Integer(), nullable=False),
            sa.Column("facts", sa.Integer(), nullable=False),
            sa.Column("pending_states", sa.Integer(), nullable=True),
            sa.Column("trigger", sa.String(length=32), nullable=False),
            sa.PrimaryKeyConstraint("minion_id", "computed_at"),
        )
        with op.batch_alter_table("drift_history", schema=None) as batch_op:
            batch_op.create_index("ix_drift_history_at", ["computed_at"], unique=False)


def downgrade() -> None:
    op.drop_table("drift_history")
    with op.batch_alter_table("drift_current", schema=None) as batch_op:
        batch_op.drop_index("ix_drift_current_score")
    op.drop_table("drift_current")
    with op.batch_alter_table("package_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_package_keys_name")
    op.drop_table("package_keys")
    op.drop_table("baseline_assignments")
    op.drop_table("baselines")
    op.drop_table("snapshot_keys")
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_column("pending_states_at")
        batch_op.drop_column("pending_states")
