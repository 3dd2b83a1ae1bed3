"""ui_ended_sessions: web UI sessions ended by a logout, for every master's UI

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 21:00:00

Each master's ``fleet`` engine serves the web UI with the fleet's session key (kept in
``secrets``), so a session cookie made through one master opens the others. A logout through
one master must then end the session on all of them: the logged-out session ids are kept
here until their cookies would have expired anyway (``expires_at``), and every master's UI
refuses a cookie whose session id is here (see ``saltext_fleet.store.users.end_session``).
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ui_ended_sessions",
        sa.Column("sid", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_ui_ended_sessions_expires_at", "ui_ended_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_ui_ended_sessions_expires_at", table_name="ui_ended_sessions")
    op.drop_table("ui_ended_sessions")
