"""One pooled SQLAlchemy engine per process and database URL, and the schema upgrade.

Never a connection per call: :func:`get_engine` hands out the same pooled engine for a URL
for the life of the process (re-created after a fork, since pooled connections must not be
shared between processes). :func:`ensure_schema` brings the database to the newest Alembic
revision once per process, under a lock so that several master processes starting together
do not race.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url

from saltext_fleet.core.errors import FleetError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_engines_pid = os.getpid()
_schema_ready: set[str] = set()

#: PostgreSQL advisory lock key for schema upgrades ("fleet" in ASCII).
_UPGRADE_LOCK_KEY = 0x666C656574


class StoreError(FleetError, RuntimeError):
    """The store cannot be used; the message says why (bad URL, unreachable, ...)."""


def normalise_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here; SQLite paths get their folder created."""
    try:
        parsed = make_url(url)
    except Exception as exc:  # SQLAlchemy raises ArgumentError and friends
        raise StoreError(f"fleet:db_url is not a database URL: {exc}") from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername not in ("postgresql+psycopg", "sqlite"):
        raise StoreError(f"fleet:db_url: unsupported database driver {parsed.drivername!r}")
    return parsed.render_as_string(hide_password=False)


def get_engine(url: str) -> Engine:
    """The process-wide pooled engine for ``url``."""
    global _engines_pid
    url = normalise_url(url)
    with _lock:
        if os.getpid() != _engines_pid:
            # Forked (Salt forks its workers): the parent's pooled connections are not ours.
            for engine in _engines.values():
                engine.dispose(close=False)
            _engines.clear()
            _schema_ready.clear()
            _engines_pid = os.getpid()
        engine = _engines.get(url)
        if engine is None:
            engine = _create(url)
            _engines[url] = engine
        return engine


def _create(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.drivername == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Returns can hold secrets: the database file is the master's alone.
            Path(parsed.database).touch(mode=0o600, exist_ok=True)
            os.chmod(parsed.database, 0o600)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=30000")
            # WAL: readers (runners, the UI) never block the writer, and commits are cheap.
            _sqlite_wal(cur)
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(
        url,
        pool_size=5,
        max_overflow=5,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={"connect_timeout": 5},
    )


def dispose_all() -> None:
    """Close every pooled connection of this process (tests, shutdown)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _schema_ready.clear()


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


def head_revision() -> str:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(cfg).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _sqlite_wal(cur, wait: float = 30.0) -> None:
    """Switch a SQLite file to WAL. Several processes opening a new file at once can get
    "database is locked" here without SQLite's busy handler ever waiting (seen with four
    master processes starting together): try again for up to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Run the Alembic migrations up to ``revision``; returns the revision reached."""
    cfg = alembic_config(engine)
    with _upgrade_lock(engine) as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return current_revision(engine)


def ensure_schema(engine: Engine) -> None:
    """Upgrade the schema to head once per process (cheap afterwards)."""
    key = engine.url.render_as_string(hide_password=False)
    if key in _schema_ready:
        return
    if current_revision(engine) != head_revision():
        log.info("saltext-fleet: upgrading the store schema of %s", engine.url.render_as_string())
        upgrade(engine)
    _schema_ready.add(key)


@contextlib.contextmanager
def _upgrade_lock(engine: Engine):
    """A connection holding a cross-process lock for the duration of an upgrade."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _UPGRADE_LOCK_KEY})
            conn.commit()
            try:
                yield conn
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _UPGRADE_LOCK_KEY})
                conn.commit()
        else:
            # pysqlite runs DDL outside a transaction: two processes upgrading at once would
            # both create the tables. A lock file next to the database serialises them;
            # Alembic reads the revision again once it holds the lock.
            path = engine.url.database
            if not path or path == ":memory:":
                yield conn
                return
            with open(f"{path}.upgrade-lock", "a", encoding="utf-8") as lock:
                os.chmod(lock.name, 0o600)
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    yield conn
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
