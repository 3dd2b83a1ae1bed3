"""onboarding: minion keys, enrolments, node groups, secrets, bootstraps, the audit chain

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 01:00:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("status_at", TS, nullable=True))
        batch_op.add_column(sa.Column("node_group", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("onboarded_at", TS, nullable=True))

    op.create_table(
        "minion_keys",
        sa.Column("minion_id", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=128), nullable=False),
        sa.Column("pub", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("first_seen", TS, nullable=False),
        sa.Column("last_seen", TS, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("decided_by", sa.String(length=128), nullable=True),
        sa.Column("decided_at", TS, nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("minion_id", "fingerprint"),
    )
    with op.batch_alter_table("minion_keys", schema=None) as batch_op:
        batch_op.create_index("ix_minion_keys_state", ["state", "last_seen"], unique=False)

    op.create_table(
        "enrolments",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("minion_id", sa.String(length=255), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=128), nullable=True),
        sa.Column("node_group", sa.String(length=64), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("used_at", TS, nullable=True),
        sa.Column("used_fingerprint", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    with op.batch_alter_table("enrolments", schema=None) as batch_op:
        batch_op.create_index("ix_enrolments_minion", ["minion_id", "state"], unique=False)

    op.create_table(
        "node_groups",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("ssh_user", sa.String(length=64), nullable=False),
        sa.Column("ssh_port", sa.Integer(), nullable=False),
        sa.Column("credential_kind", sa.String(length=16), nullable=True),
        sa.Column("states", JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "secrets",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("scope", "owner", "name"),
    )
    op.create_table(
        "bootstraps",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("minion_id", sa.String(length=255), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("ssh_user", sa.String(length=64), nullable=False),
        sa.Column("node_group", sa.String(length=64), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("step", sa.String(length=64), nullable=False),
        sa.Column("steps", JSON, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("running_id", sa.String(length=255), nullable=True),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("running_id"),
    )
    with op.batch_alter_table("bootstraps", schema=None) as batch_op:
        batch_op.create_index("ix_bootstraps_minion", ["minion_id", "started_at"], unique=False)

    op.create_table(
        "audit_events",
        sa.Column("id", BIGID, autoincrement=False, nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=255), nullable=False),
        sa.Column("details", JSON, nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index("ix_audit_events_target", ["target", "id"], unique=False)
    op.create_table(
        "audit_head",
        sa.Column("one", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("one"),
    )
    op.execute(f"INSERT INTO audit_head (one, last_id, last_hash) VALUES (1, 0, '{'0' * 64}')")


def downgrade() -> None:
    op.drop_table("audit_head")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_target")
    op.drop_table("audit_events")
    with op.batch_alter_table("bootstraps", schema=None) as batch_op:
        batch_op.drop_index("ix_bootstraps_minion")
    op.drop_table("bootstraps")
    op.drop_table("secrets")
    op.drop_table("node_groups")
    with op.batch_alter_table("enrolments", schema=None) as batch_op:
        batch_op.drop_index("ix_enrolments_minion")
    op.drop_table("enrolments")
    with op.batch_alter_table("minion_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_minion_keys_state")
    op.drop_table("minion_keys")
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_column("onboarded_at")
        batch_op.drop_column("node_group")
        batch_op.drop_column("status_at")
        batch_op.drop_column("status")
