"""job_carriers, returns.master_id, nodes.heard_by: which syndic carried a return, which
master heard it

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05 22:30:00

A master of masters hears the minions below a syndic only through the syndic. The syndic
announces each job's minions (its master's ``salt/job/<jid>/new`` event) over its own
authenticated connection, and Salt hands the list to the job cache with the syndic's id
(``save_minions(..., syndic_id=...)``): each announced (jid, minion) is a ``job_carriers``
row. ``returns.master_id`` and ``nodes.heard_by`` record the master whose job cache stored a
return (its own ``id``). Returns stored before this revision have neither: NULL.
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_carriers",
        sa.Column("jid", sa.String(64), primary_key=True),
        sa.Column("minion_id", sa.String(255), primary_key=True),
        sa.Column("syndic_id", sa.String(255), primary_key=True),
        sa.Column("master_id", sa.String(255), nullable=True),
        sa.Column("announced_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_job_carriers_minion_jid", "job_carriers", ["minion_id", "jid"])
    op.add_column("returns", sa.Column("master_id", sa.String(255), nullable=True))
    op.add_column("nodes", sa.Column("heard_by", sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("heard_by")
    with op.batch_alter_table("returns") as batch:
        batch.drop_column("master_id")
    op.drop_index("ix_job_carriers_minion_jid", table_name="job_carriers")
    op.drop_table("job_carriers")
