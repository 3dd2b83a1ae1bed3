"""nodes.os_name: the ``os`` fact as an indexed, generated column

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 08:00:00

The overview filters and sorts by operating system and lists the fleet's operating systems for
its filter. Reading ``facts ->> 'os'`` decodes every node's facts: 35 ms at 100,000 nodes on
PostgreSQL for the list alone. ``os_name`` is generated from ``facts`` by the database (STORED on
PostgreSQL, VIRTUAL on SQLite, which cannot add a stored column), so no writer has to keep it
right, and ``ix_nodes_os_name`` serves the filter, the sort and the list (an index skip scan).
Existing rows get their value when the column is added.
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

# the expression of saltext_fleet.store.models.OS_NAME_SQL, frozen here as this revision made it
OS_NAME = {
    "postgresql": "left(facts ->> 'os', 128)",
    "sqlite": "substr(json_extract(facts, '$.os'), 1, 128)",
}


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    # STORED on PostgreSQL (whose virtual columns, from version 18, cannot be indexed); SQLite
    # adds only VIRTUAL columns to an existing table, and indexes them
    generated = sa.Computed(OS_NAME[dialect], persisted=True if dialect == "postgresql" else None)
    op.add_column("nodes", sa.Column("os_name", sa.String(128), generated, nullable=True))
    op.create_index("ix_nodes_os_name", "nodes", ["os_name", "minion_id"])


def downgrade() -> None:
    op.drop_index("ix_nodes_os_name", table_name="nodes")
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("os_name")
