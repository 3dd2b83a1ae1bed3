"""quarantine: one row per record (a unique key on ``rid``)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 07:00:00

A record quarantined, then replayed from the spool after a crash before its checkpoint, was
quarantined again. Rows without a record id get the key the writer now gives them
(``sha224:<hex>`` of kind and payload, see ``saltext_fleet.store.batch.quarantine_key``); then
every record keeps its first row only, and ``rid`` becomes unique.
"""

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

CHUNK = 500

quarantine = sa.table(
    "quarantine",
    sa.column("id", sa.BigInteger),
    sa.column("rid", sa.String),
    sa.column("kind", sa.String),
    sa.column("payload", sa.Text),
)


def upgrade() -> None:
    conn = op.get_bind()
    last = 0
    while True:  # in chunks: payloads may be up to a megabyte each
        rows = conn.execute(
            sa.select(quarantine.c.id, quarantine.c.kind, quarantine.c.payload)
            .where(quarantine.c.rid.is_(None), quarantine.c.id > last)
            .order_by(quarantine.c.id)
            .limit(CHUNK)
        ).all()
        if not rows:
            break
        for row_id, kind, payload in rows:
            key = "sha224:" + hashlib.sha224(f"{kind}\0{payload}".encode()).hexdigest()
            conn.execute(sa.update(quarantine).where(quarantine.c.id == row_id).values(rid=key))
        last = rows[-1][0]
    first = (
        sa.select(sa.func.min(quarantine.c.id))
        .where(quarantine.c.rid.is_not(None))
        .group_by(quarantine.c.rid)
    )
    conn.execute(
        sa.delete(quarantine).where(quarantine.c.rid.is_not(None), quarantine.c.id.not_in(first))
    )
    op.create_index("uq_quarantine_rid", "quarantine", ["rid"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_quarantine_rid", table_name="quarantine")
