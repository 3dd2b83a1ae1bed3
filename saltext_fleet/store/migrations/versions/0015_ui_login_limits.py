"""ui_login_limits: the web UI's failed-login counts and login rate, for every master

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 22:30:00

Each master's ``fleet`` engine serves the web UI over one store. Failed logins (per user and
per client address), the lockout of a client address and the login rate per address were
kept in each engine's memory, so failures spread over masters did not add up and an address
locked through one master could go on through another. They are kept here instead, one row
per (kind, key), changed under a row lock (see ``saltext_fleet.store.ui_limits``) and deleted
once ``expires_at`` has passed. A TOTP secret being enrolled moves into ``secrets``
(encrypted, no schema change).

``nodes.meta_at``: when an operator last changed a node's criticality, audited flag or
comment, so that every master's live hub (which polls the store for what changed since its
last look) shows an edit made through any master.
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ui_login_limits",
        sa.Column("kind", sa.String(8), primary_key=True),
        sa.Column("key", sa.String(80), primary_key=True),
        sa.Column("count", sa.Float(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True)),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_ui_login_limits_expires_at", "ui_login_limits", ["expires_at"])
    op.add_column("nodes", sa.Column("meta_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("meta_at")
    op.drop_index("ix_ui_login_limits_expires_at", table_name="ui_login_limits")
    op.drop_table("ui_login_limits")
