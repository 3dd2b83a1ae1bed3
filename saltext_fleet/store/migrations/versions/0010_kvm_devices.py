"""PiKVM devices and their polls

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 14:00:00

``kvm_devices``: each PiKVM's name, client options (no credentials: those are Fernet tokens in
``secrets``, scope ``kvm``), the node it controls and its status after the last poll;
``kvm_polls``: every poll (online, power LED, HID, MSD, temperature, uptime), the history the
device's chart draws.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TZ = sa.DateTime(timezone=True)
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "kvm_devices",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("options", JSON, nullable=False),
        sa.Column("node", sa.String(255)),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("status", JSON, nullable=False),
        sa.Column("last_poll", JSON),
        sa.Column("polled_at", TZ),
    )
    op.create_index("ix_kvm_devices_node", "kvm_devices", ["node"])
    op.create_table(
        "kvm_polls",
        sa.Column("id", BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column(
            "device",
            sa.String(255),
            sa.ForeignKey("kvm_devices.name", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("polled_at", TZ, nullable=False),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("power", sa.Boolean()),
        sa.Column("hid_online", sa.Boolean()),
        sa.Column("msd_connected", sa.Boolean()),
        sa.Column("msd_image", sa.Text()),
        sa.Column("temperature", sa.Float()),
        sa.Column("uptime_s", sa.BigInteger()),
        sa.Column("throttled", sa.Boolean()),
        sa.Column("error", sa.Text()),
    )
    op.create_index("ix_kvm_polls_device", "kvm_polls", ["device", "polled_at"])


def downgrade() -> None:
    op.drop_index("ix_kvm_polls_device", table_name="kvm_polls")
    op.drop_table("kvm_polls")
    op.drop_index("ix_kvm_devices_node", table_name="kvm_devices")
    op.drop_table("kvm_devices")
