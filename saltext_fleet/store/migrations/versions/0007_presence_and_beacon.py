"""nodes: presence misses and why a node is offline, the fleet_pkgset beacon; no master rows

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 07:00:00

A node goes offline after it missed more than one presence check: ``presence_misses`` counts
them, ``status_since`` and ``status_reason`` say since when and why the status is what it is.
``beacon_interval``/``beacon_at``: the ``fleet_pkgset`` beacon as onboarding found it.

Runner and wheel jobs used to create a node row for the master that ran them (their returns
carry the master's id): rows that only such returns ever touched are removed.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

#: A node row made by the returns of a master's own runner/wheel jobs: never onboarded, no
#: inventory, no grains, no group, and no return of a minion job.
MASTER_ROWS = """
DELETE FROM nodes
WHERE onboarded_at IS NULL AND inventory_digest IS NULL AND grains IS NULL
  AND node_group IS NULL
  AND EXISTS (SELECT 1 FROM returns r WHERE r.minion_id = nodes.minion_id
              AND (r.fun LIKE 'runner.%' OR r.fun LIKE 'wheel.%'))
  AND NOT EXISTS (SELECT 1 FROM returns r WHERE r.minion_id = nodes.minion_id
                  AND (r.fun IS NULL OR (r.fun NOT LIKE 'runner.%' AND r.fun NOT LIKE 'wheel.%')))
"""


def upgrade() -> None:
    op.add_column("nodes", sa.Column("status_since", sa.DateTime(timezone=True), nullable=True))
    op.add_column("nodes", sa.Column("status_reason", sa.String(255), nullable=True))
    op.add_column(
        "nodes",
        sa.Column("presence_misses", sa.Integer(), nullable=False, server_default="0"),
    )
    op.add_column("nodes", sa.Column("beacon_interval", sa.Integer(), nullable=True))
    op.add_column("nodes", sa.Column("beacon_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE nodes SET status_since = status_at")
    op.execute(MASTER_ROWS)


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        for column in (
            "beacon_at",
            "beacon_interval",
            "presence_misses",
            "status_reason",
            "status_since",
        ):
            batch.drop_column(column)
