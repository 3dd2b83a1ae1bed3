"""Alert delivery: alerts, their conditions, routes, deliveries and attempts; certificate
threshold alerts

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 19:30:00

``alerts``: every ``fleet/alert/*`` event the alert worker accepted (signed by the master),
written before anything is sent; ``event_key`` makes a replayed event one row.
``alert_conditions``: one row per (kind, node, subject): its current condition, when it last
changed, the recent changes (flapping), the last sends (duplicate window) and the
acknowledgement that stops repeats until the condition changes. ``alert_routes``: routes that
admins made in the UI (the config's routes live in the master config; secrets of both are in
``secrets``, scope ``alert``). ``alert_deliveries``: one row per (alert, route), claimed by one
worker at a time (``claimed_by``/``claimed_until``) and retried with back-off (``next_at``).
``alert_attempts``: every attempt: status, latency, error. ``cert_alerts``: which expiry
thresholds (30, 7, 1 days, expired) of which node's signing certificate already fired.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TZ = sa.DateTime(timezone=True)
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
BIGINT_FK = sa.BigInteger()


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column("event_key", sa.String(64), nullable=False, unique=True),
        sa.Column("tag", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("node", sa.String(255)),
        sa.Column("subject", sa.String(255), nullable=False, server_default=""),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("condition", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.Column("raised_at", TZ, nullable=False),
        sa.Column("received_at", TZ, nullable=False),
        sa.Column("master", sa.String(255)),
        sa.Column("suppressed", sa.String(32)),
    )
    op.create_index("ix_alerts_node", "alerts", ["node", "raised_at"])
    op.create_index("ix_alerts_raised_at", "alerts", ["raised_at"])
    op.create_index("ix_alerts_kind", "alerts", ["kind", "node", "subject", "raised_at"])
    op.create_table(
        "alert_conditions",
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("node", sa.String(255), primary_key=True),
        sa.Column("subject", sa.String(255), primary_key=True, server_default=""),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("condition", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("changed_at", TZ, nullable=False),
        sa.Column("changes", JSON, nullable=False),
        sa.Column("flapping_since", TZ),
        sa.Column("last_alert_id", BIGINT_FK),
        sa.Column("last_sent", JSON, nullable=False),
        sa.Column("acked_by", sa.String(255)),
        sa.Column("acked_at", TZ),
        sa.Column("acked_condition", sa.String(64)),
        sa.Column("ack_comment", sa.Text()),
    )
    op.create_table(
        "alert_routes",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("destination", sa.String(16), nullable=False),
        sa.Column("match", JSON, nullable=False),
        sa.Column("target", JSON, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("created_by", sa.String(255)),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_table(
        "alert_deliveries",
        sa.Column("id", BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column(
            "alert_id",
            BIGINT_FK,
            sa.ForeignKey("alerts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("route", sa.String(80), nullable=False),
        sa.Column("destination", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_at", TZ),
        sa.Column("claimed_by", sa.String(255)),
        sa.Column("claimed_until", TZ),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("delivered_at", TZ),
        sa.Column("last_error", sa.Text()),
        sa.UniqueConstraint("alert_id", "route", name="uq_alert_deliveries_alert_route"),
    )
    op.create_index("ix_alert_deliveries_due", "alert_deliveries", ["status", "next_at"])
    op.create_index("ix_alert_deliveries_route", "alert_deliveries", ["route", "created_at"])
    op.create_table(
        "alert_attempts",
        sa.Column("id", BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column(
            "delivery_id",
            BIGINT_FK,
            sa.ForeignKey("alert_deliveries.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("at", TZ, nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("status_code", sa.Integer()),
        sa.Column("latency_ms", sa.Float()),
        sa.Column("error", sa.Text()),
        sa.Column("master", sa.String(255)),
    )
    op.create_index("ix_alert_attempts_delivery", "alert_attempts", ["delivery_id", "at"])
    op.create_table(
        "cert_alerts",
        sa.Column("node", sa.String(255), primary_key=True),
        sa.Column("sha1", sa.String(64), primary_key=True),
        sa.Column("threshold", sa.String(16), primary_key=True),
        sa.Column("not_after", TZ),
        sa.Column("fired_at", TZ, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cert_alerts")
    op.drop_table("alert_attempts")
    op.drop_table("alert_deliveries")
    op.drop_table("alert_routes")
    op.drop_table("alert_conditions")
    op.drop_table("alerts")
