"""initial schema: nodes, inventory, jobs, returns, events, quarantine

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-23 13:40:47.922070
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("rid", sa.String(length=64), nullable=False),
        sa.Column("tag", sa.Text(), nullable=False),
        sa.Column(
            "data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("master_id", sa.String(length=255), nullable=True),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("rid"),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_stored", ["stored_at"], unique=False)
        batch_op.create_index("ix_events_tag", ["tag"], unique=False)

    op.create_table(
        "inventory_snapshots",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column(
            "packages",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "sources",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "facts",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("package_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest"),
    )
    op.create_table(
        "jobs",
        sa.Column("jid", sa.String(length=64), nullable=False),
        sa.Column("fun", sa.String(length=255), nullable=True),
        sa.Column("tgt", sa.Text(), nullable=True),
        sa.Column("tgt_type", sa.String(length=32), nullable=True),
        sa.Column("user", sa.String(length=255), nullable=True),
        sa.Column(
            "load",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("publish", sa.Boolean(), nullable=False),
        sa.Column(
            "minions",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("endtime", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("jid"),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_fun", ["fun"], unique=False)
        batch_op.create_index("ix_jobs_started_at", ["started_at"], unique=False)

    op.create_table(
        "quarantine",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("rid", sa.String(length=64), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("payload_bytes", sa.BigInteger(), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.create_index("ix_quarantine_stored", ["stored_at"], unique=False)

    op.create_table(
        "returns",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("rid", sa.String(length=64), nullable=False),
        sa.Column("jid", sa.String(length=64), nullable=False),
        sa.Column("minion_id", sa.String(length=255), nullable=False),
        sa.Column("fun", sa.String(length=255), nullable=True),
        sa.Column("success", sa.Boolean(), nullable=True),
        sa.Column("retcode", sa.Integer(), nullable=True),
        sa.Column(
            "return",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "full_ret",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("rid"),
    )
    with op.batch_alter_table("returns", schema=None) as batch_op:
        batch_op.create_index("ix_returns_fun_stored", ["fun", "stored_at"], unique=False)
        batch_op.create_index("ix_returns_jid_minion", ["jid", "minion_id"], unique=False)
        batch_op.create_index("ix_returns_minion_stored", ["minion_id", "stored_at"], unique=False)

    op.create_table(
        "node_inventory",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("minion_id", sa.String(length=255), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("previous_digest", sa.String(length=64), nullable=True),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["digest"],
            ["inventory_snapshots.digest"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("node_inventory", schema=None) as batch_op:
        batch_op.create_index(
            "ix_node_inventory_minion_seen", ["minion_id", "seen_at"], unique=False
        )

    op.create_table(
        "nodes",
        sa.Column("minion_id", sa.String(length=255), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "facts",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "grains",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("inventory_digest", sa.String(length=64), nullable=True),
        sa.Column("inventory_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["inventory_digest"],
            ["inventory_snapshots.digest"],
        ),
        sa.PrimaryKeyConstraint("minion_id"),
    )
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.create_index("ix_nodes_last_seen", ["last_seen"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_index("ix_nodes_last_seen")

    op.drop_table("nodes")
    with op.batch_alter_table("node_inventory", schema=None) as batch_op:
        batch_op.drop_index("ix_node_inventory_minion_seen")

    op.drop_table("node_inventory")
    with op.batch_alter_table("returns", schema=None) as batch_op:
        batch_op.drop_index("ix_returns_minion_stored")
        batch_op.drop_index("ix_returns_jid_minion")
        batch_op.drop_index("ix_returns_fun_stored")

    op.drop_table("returns")
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.drop_index("ix_quarantine_stored")

    op.drop_table("quarantine")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_started_at")
        batch_op.drop_index("ix_jobs_fun")

    op.drop_table("jobs")
    op.drop_table("inventory_snapshots")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_tag")
        batch_op.drop_index("ix_events_stored")

    op.drop_table("events")
