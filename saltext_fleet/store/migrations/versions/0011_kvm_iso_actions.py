"""PiKVM ISO library and per-device action slots

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 16:00:00

``kvm_isos``: the master's ISO library, one row per image (its name, SHA-256 and size; the
file is ``<library dir>/<name>`` on the master that added it). ``kvm_action_slots``: one row
per (device, kind) where ``kind`` is ``power`` (the next time a power action is allowed) or
``media`` (the ISO mount or eject running on the device: who, which image, its progress and
when its hold lapses). A slot is taken by one conditional ``UPDATE`` whose ``WHERE`` says it is
free, so two processes never both take it (a row lock on PostgreSQL, the write lock on SQLite).
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "kvm_isos",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.Text()),
        sa.Column("added_at", TZ, nullable=False),
        sa.Column("added_by", sa.String(255)),
    )
    op.create_table(
        "kvm_action_slots",
        sa.Column(
            "device",
            sa.String(255),
            sa.ForeignKey("kvm_devices.name", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("token", sa.String(64)),
        sa.Column("actor", sa.String(255)),
        sa.Column("action", sa.String(64)),
        sa.Column("image", sa.String(255)),
        sa.Column("started_at", TZ),
        sa.Column("until", TZ),
        sa.Column("done_bytes", sa.BigInteger()),
        sa.Column("total_bytes", sa.BigInteger()),
    )


def downgrade() -> None:
    op.drop_table("kvm_action_slots")
    op.drop_table("kvm_isos")
