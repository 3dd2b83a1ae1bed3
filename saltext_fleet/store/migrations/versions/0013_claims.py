"""claims: reactor work done once for the fleet, whichever master heard the event

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 20:40:00

Hot-hot masters that share the store each hear a minion's start, run their scheduled presence
check, and so on. ``claims`` holds one row per (kind, subject): the master that took the work
last, with a token (for onboarding, the start time the node reported) and when. A master does
the work only when its conditional insert-or-update of that row wins (see
``saltext_fleet.store.claims``).

Returns already stored twice by two masters (before their record ids were derived from the
return) are left as they are: their rids differ, and the rows cannot be told from two real
returns of the same job by a key the database checks.
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "claims",
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("subject", sa.String(255), primary_key=True),
        sa.Column("token", sa.String(64), nullable=False, server_default=""),
        sa.Column("master", sa.String(255)),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("claims")
