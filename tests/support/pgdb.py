"""A fresh PostgreSQL database for a module of tests (created, then dropped with its users)."""

import contextlib
import uuid

import psycopg
from sqlalchemy.engine import make_url

from saltext_fleet.store import engine as store_engine


@contextlib.contextmanager
def fresh_database(server_url: str, prefix: str, keep: bool = False):
    """Yield the SQLAlchemy URL of a new database on the server of ``server_url`` (an admin
    URL); afterwards every pooled engine is disposed and the database dropped (unless
    ``keep``: a benchmark's ``--keep``, to look at it afterwards)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield (
            make_url(server_url)
            .set(drivername="postgresql+psycopg", database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        store_engine.dispose_all()
        if not keep:
            with psycopg.connect(server_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
