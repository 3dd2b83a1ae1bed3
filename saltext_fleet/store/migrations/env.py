"""Alembic environment for the saltext-fleet store.

Run through :func:`saltext_fleet.store.engine.upgrade` (``saltext-fleet db upgrade``, or
automatically on first use), which passes an open connection in ``config.attributes``.
"""

from alembic import context
from sqlalchemy import create_engine

from saltext_fleet.store.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: Alembic's batch mode recreates tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():  # pragma: no cover - offline SQL generation is not offered
    raise SystemExit("saltext-fleet migrations run online only")
run_migrations_online()
