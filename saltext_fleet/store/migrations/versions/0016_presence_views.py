"""presence_views: each master's view of which nodes are connected to it

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 22:40:00

With hot-hot masters each master's ``presence_events`` see only the minions connected to that
master. ``presence_views`` keeps, per (node, master), whether that master last saw the node
connected and when it said so; ``presence_masters`` keeps when each master last reported its
view (a master that stopped reporting no longer counts). A node is offline for the fleet only
when no master whose view is live sees it connected (see ``saltext_fleet.store.presence``).
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "presence_views",
        sa.Column("minion_id", sa.String(255), primary_key=True),
        sa.Column("master", sa.String(255), primary_key=True),
        sa.Column("connected", sa.Boolean(), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "presence_masters",
        sa.Column("master", sa.String(255), primary_key=True),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("presence_masters")
    op.drop_table("presence_views")
