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

from saltext_fleet.core import dburl
from saltext_fleet.core.errors import FleetError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_engines_pid = os.getpid()
_schema_ready: set[str] = set()
#: One Alembic command at a time in this process (see :func:`upgrade`).
_ALEMBIC = threading.RLock()

#: PostgreSQL advisory lock key for schema upgrades ("fleet" in ASCII).
_UPGRADE_LOCK_KEY = 0x666C656574


class StoreError(FleetError, RuntimeError):
    """The store cannot be used; the message says why (bad URL, unreachable, ...)."""


#: See :data:`saltext_fleet.core.dburl.AWAY_SQLSTATES`. The pool is dropped when one is seen,
#: so the next connection asks libpq again which host is the primary.
AWAY_SQLSTATES = dburl.AWAY_SQLSTATES


def normalise_url(url: str, option: str = "fleet:db_url", writable: bool = True) -> str:
    """``postgresql://`` means psycopg 3 here; libpq's multi-host forms are brought to one
    (``?host=h1,h2&port=p1,p2``, see :mod:`saltext_fleet.core.dburl`); with ``writable``,
    several hosts need ``target_session_attrs=read-write`` (or ``primary``)."""
    try:
        parsed = make_url(url)
    except Exception as exc:  # SQLAlchemy raises ArgumentError and friends
        raise StoreError(f"{option} is not a database URL: {dburl.redact(str(exc))}") from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername not in ("postgresql+psycopg", "sqlite"):
        raise StoreError(f"{option}: unsupported database driver {parsed.drivername!r}")
    if parsed.drivername == "postgresql+psycopg":
        try:
            found = dburl.endpoints(url)
            if writable:
                dburl.check_writable(found)
        except dburl.DbUrlError as exc:
            raise StoreError(f"{option}: {exc}") from exc
        if found is not None and found.in_query:
            query = {k: v for k, v in parsed.query.items() if k not in ("host", "port")}
            parsed = parsed.set(query={**dburl.canonical_query(found), **query})
    return parsed.render_as_string(hide_password=False)


def display_url(url) -> str:
    """A URL (or an engine's) fit for a log or a status: no password, in the user part or
    in ``?password=``."""
    if isinstance(url, Engine):
        url = url.url
    if not isinstance(url, str):
        url = url.render_as_string(hide_password=False)
    return dburl.redact(url)


def get_engine(url: str, writable: bool = True) -> Engine:
    """The process-wide pooled engine for ``url`` (``writable=False``: a reader's, which may
    name standbys without ``target_session_attrs=read-write``: ``fleet:db_read_url``)."""
    global _engines_pid
    url = normalise_url(url, "fleet:db_url" if writable else "fleet:db_read_url", writable)
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
    # pool_pre_ping: a pooled connection to a primary that died (a failover) is found dead
    # before use, and the whole pool is dropped with it (SQLAlchemy invalidates every
    # connection older than the failure); the next one is made by libpq, which tries the
    # URL's hosts in turn for the one that fits target_session_attrs.
    engine = create_engine(
        url,
        pool_size=5,
        max_overflow=5,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={"connect_timeout": 5},
    )

    @event.listens_for(engine, "handle_error")
    def _server_away(context):
        # A read-only standby or a server going down: the connection is worth nothing (a
        # standby stays read-only for its whole life), so treat it as a disconnect. SQLAlchemy
        # then drops the pool, and the error says connection_invalidated: the writer keeps
        # the batch spooled and tries again (batch.is_connection_error).
        sqlstate = getattr(context.original_exception, "sqlstate", None)
        if sqlstate in AWAY_SQLSTATES:
            context.is_disconnect = True

    return engine


def dispose_all() -> None:
    """Close every pooled connection of this process (tests, shutdown)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _schema_ready.clear()


def is_standby(engine: Engine) -> bool | None:
    """Whether the server behind ``engine`` is a standby (in recovery); None for SQLite.
    Raises what connecting raises."""
    with engine.connect() as conn:
        if engine.dialect.name != "postgresql":
            conn.execute(text("SELECT 1"))
            return None
        return bool(conn.execute(text("SELECT pg_is_in_recovery()")).scalar())


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolates "%": a URL's escapes (%2C between libpq's hosts, a password's
    # %40) must be doubled
    url = engine.url.render_as_string(hide_password=False).replace("%", "%%")
    cfg.set_main_option("sqlalchemy.url", url)
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
    # Alembic's migration context and ``op`` are module-level proxies: two threads of one
    # process migrating at once (a reactor's recorder threads, say) take each other's.
    with _ALEMBIC, _upgrade_lock(engine) as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return current_revision(engine)


def ensure_schema(engine: Engine) -> None:
    """Upgrade the schema to head once per process (cheap afterwards)."""
    key = engine.url.render_as_string(hide_password=False)
    if key in _schema_ready:
        return
    if current_revision(engine) != head_revision():
        log.info("saltext-fleet: upgrading the store schema of %s", display_url(engine))
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
