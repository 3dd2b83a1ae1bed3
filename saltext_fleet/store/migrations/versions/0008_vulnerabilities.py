"""vulnerabilities: OSV advisories, their imports, findings with history, triage

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 10:00:00

``advisories`` and ``advisory_packages`` hold the imported OSV records; ``vuln_imports``
each import's counts and rejected files; ``vuln_findings`` every (node, package, advisory)
exposure with its first-seen and resolved times (one open row per node, package and
advisory: a partial unique index); ``vuln_history`` each node's open findings over time;
``vuln_triage`` operators' decisions.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "advisories",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("modified", TZ, nullable=False),
        sa.Column("published", TZ),
        sa.Column("withdrawn", TZ),
        sa.Column("summary", sa.Text(), nullable=False, server_default=""),
        sa.Column("aliases", JSON, nullable=False),
        sa.Column("cvss_score", sa.Float()),
        sa.Column("severity", sa.String(16), nullable=False, server_default="unknown"),
        sa.Column("record", JSON, nullable=False),
        sa.Column("source", sa.Text()),
        sa.Column("imported_at", TZ, nullable=False),
    )
    op.create_index("ix_advisories_severity", "advisories", ["severity"])
    op.create_table(
        "advisory_packages",
        sa.Column(
            "advisory_id",
            sa.String(128),
            sa.ForeignKey("advisories.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("ecosystem", sa.String(64), primary_key=True),
        sa.Column("name", sa.Text(), primary_key=True),
    )
    op.create_index("ix_advisory_packages_name", "advisory_packages", ["ecosystem", "name"])
    op.create_table(
        "vuln_imports",
        sa.Column("id", BIGPK, primary_key=True, autoincrement=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("finished_at", TZ),
        sa.Column("counts", JSON, nullable=False),
        sa.Column("rejected", JSON, nullable=False),
        sa.Column("actor", sa.String(255)),
    )
    op.create_table(
        "vuln_findings",
        sa.Column("id", BIGPK, primary_key=True, autoincrement=True),
        sa.Column("minion_id", sa.String(255), nullable=False),
        sa.Column("ecosystem", sa.String(64), nullable=False),
        sa.Column("package", sa.Text(), nullable=False),
        sa.Column("version", sa.Text(), nullable=False),
        sa.Column("advisory_id", sa.String(128), nullable=False),
        sa.Column("fixed", sa.Text()),
        sa.Column("severity", sa.String(16), nullable=False, server_default="unknown"),
        sa.Column("cvss_score", sa.Float()),
        sa.Column("first_seen", TZ, nullable=False),
        sa.Column("last_seen", TZ, nullable=False),
        sa.Column("resolved_at", TZ),
    )
    op.create_index(
        "ux_vuln_findings_open",
        "vuln_findings",
        ["minion_id", "ecosystem", "package", "advisory_id"],
        unique=True,
        postgresql_where=sa.text("resolved_at IS NULL"),
        sqlite_where=sa.text("resolved_at IS NULL"),
    )
    op.create_index("ix_vuln_findings_advisory", "vuln_findings", ["advisory_id", "resolved_at"])
    op.create_index("ix_vuln_findings_node", "vuln_findings", ["minion_id", "resolved_at"])
    op.create_table(
        "vuln_history",
        sa.Column("minion_id", sa.String(255), primary_key=True),
        sa.Column("computed_at", TZ, primary_key=True),
        *(
            sa.Column(name, sa.Integer(), nullable=False)
            for name in ("open", "critical", "high", "medium", "low", "unknown", "triaged")
        ),
    )
    op.create_table(
        "vuln_triage",
        sa.Column("id", BIGPK, primary_key=True, autoincrement=True),
        sa.Column("advisory_id", sa.String(128), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("target", sa.String(255)),
        sa.Column("package", sa.Text()),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("justification", sa.String(64)),
        sa.Column("detail", sa.Text(), nullable=False, server_default=""),
        sa.Column("expires_at", TZ),
        sa.Column("decided_by", sa.String(255), nullable=False),
        sa.Column("decided_at", TZ, nullable=False),
        sa.Column("revoked_at", TZ),
        sa.Column("revoked_by", sa.String(255)),
    )
    op.create_index("ix_vuln_triage_advisory", "vuln_triage", ["advisory_id", "scope", "target"])


def downgrade() -> None:
    for table in (
        "vuln_triage",
        "vuln_history",
        "vuln_findings",
        "vuln_imports",
        "advisory_packages",
        "advisories",
    ):
        op.drop_table(table)
