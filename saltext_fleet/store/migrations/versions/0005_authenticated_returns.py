"""returns: which were stored by the master from its job cache (authenticated minion id)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 04:30:00

Returns stored before this revision were written by the master's job cache or, on some sites,
by minions holding the master's own database URL (which this release no longer allows): they
cannot be told apart, so they are all marked as the master's.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "returns",
        sa.Column("authenticated", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.execute("UPDATE returns SET authenticated = TRUE")


def downgrade() -> None:
    with op.batch_alter_table("returns") as batch:
        batch.drop_column("authenticated")
