"""vulnerability matching state: match keys per snapshot, verdicts per key, per-node state

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 10:10:00

``vuln_keys`` is the dictionary of match keys (64-bit: inventory ecosystem, package, version
and the OSV ecosystem, name and version they are matched as); ``vuln_snapshot_index`` each
inventory snapshot's match keys (a packed blob) and its ecosystems OSV does not cover;
``vuln_key_hits`` the cached verdict of every key whose name some advisory names;
``vuln_node_state`` each node's last findings recompute (fingerprint, not-covered
ecosystems). ``advisories.imported_at`` gets an index: a recompute asks what changed since.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "vuln_keys",
        sa.Column("key", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("ecosystem", sa.String(64), nullable=False),
        sa.Column("package", sa.Text(), nullable=False),
        sa.Column("version", sa.Text(), nullable=False),
        sa.Column("osv_ecosystem", sa.String(64), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("osv_version", sa.Text(), nullable=False),
    )
    op.create_index("ix_vuln_keys_name", "vuln_keys", ["osv_ecosystem", "name"])
    op.create_table(
        "vuln_snapshot_index",
        sa.Column(
            "digest",
            sa.String(64),
            sa.ForeignKey("inventory_snapshots.digest", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("keys", sa.LargeBinary(), nullable=False),
        sa.Column("not_covered", JSON, nullable=False),
    )
    op.create_table(
        "vuln_key_hits",
        sa.Column("key", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("hits", JSON, nullable=False),
        sa.Column("matched_at", TZ, nullable=False),
    )
    op.create_table(
        "vuln_node_state",
        sa.Column("minion_id", sa.String(255), primary_key=True),
        sa.Column("inventory_digest", sa.String(64)),
        sa.Column("fingerprint", sa.BigInteger()),
        sa.Column("computed_at", TZ, nullable=False),
        sa.Column("not_covered", JSON, nullable=False),
        sa.Column("counts", JSON, nullable=False),
    )
    op.create_table(
        "vuln_match_state",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("advisories_seen_at", TZ),
    )
    op.create_index("ix_advisories_imported_at", "advisories", ["imported_at"])


def downgrade() -> None:
    op.drop_index("ix_advisories_imported_at", table_name="advisories")
    for table in (
        "vuln_match_state",
        "vuln_node_state",
        "vuln_key_hits",
        "vuln_snapshot_index",
        "vuln_keys",
    ):
        op.drop_table(table)
