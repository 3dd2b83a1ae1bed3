"""The store schema: migrations run on SQLite and on real PostgreSQL and match the models."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from saltext_fleet.store import engine as store_engine
from saltext_fleet.store.models import Base

#: these tests migrate an empty database themselves
pytestmark = pytest.mark.empty_db

TABLES = {
    "baselines",
    "baseline_assignments",
    "package_keys",
    "snapshot_keys",
    "drift_current",
    "drift_history",
    "nodes",
    "inventory_snapshots",
    "node_inventory",
    "jobs",
    "returns",
    "events",
    "quarantine",
    "alembic_version",
}


def test_upgrade_creates_every_table_and_matches_the_models(db_url):
    engine = store_engine.get_engine(db_url)
    assert store_engine.current_revision(engine) is None
    store_engine.ensure_schema(engine)
    assert store_engine.current_revision(engine) == store_engine.head_revision()
    assert TABLES <= set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_engine_is_shared_per_process(db_url):
    assert store_engine.get_engine(db_url) is store_engine.get_engine(db_url)


def test_ensure_schema_is_idempotent(db_url):
    engine = store_engine.get_engine(db_url)
    store_engine.ensure_schema(engine)
    store_engine.dispose_all()  # forget the per-process "ready" mark
    engine = store_engine.get_engine(db_url)
    store_engine.ensure_schema(engine)
    assert store_engine.current_revision(engine) == store_engine.head_revision()


def test_bad_urls_are_clear_errors():
    import pytest

    with pytest.raises(store_engine.StoreError, match="unsupported database driver 'mysql'"):
        store_engine.normalise_url("mysql://x@y/z")
    with pytest.raises(store_engine.StoreError, match="not a database URL"):
        store_engine.normalise_url("::nonsense::")
    assert store_engine.normalise_url("postgresql://u@h/d").startswith("postgresql+psycopg://")


def test_cli_db_upgrade_and_status(db_url, capsys):
    from saltext_fleet import cli

    assert cli.main(["db", "status", "--db-url", db_url]) == 0
    assert "empty" in capsys.readouterr().out
    assert cli.main(["db", "upgrade", "--db-url", db_url]) == 0
    assert f"-> {store_engine.head_revision()}" in capsys.readouterr().out
    assert cli.main(["db", "status", "--db-url", db_url]) == 0
    assert "up to date" in capsys.readouterr().out
    assert cli.main(["db", "status", "--db-url", "mysql://x/y"]) == 2


def test_sqlite_file_is_private(tmp_path):
    import stat

    path = tmp_path / "sub" / "fleet.db"
    engine = store_engine.get_engine(f"sqlite:///{path}")
    store_engine.ensure_schema(engine)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def _upgrade_in_child(url, barrier):
    from saltext_fleet.store import engine as child_engine

    child_engine.dispose_all()
    barrier.wait()
    child_engine.upgrade(child_engine.get_engine(url))


def test_processes_upgrading_one_sqlite_file_at_once_do_not_collide(tmp_path):
    """Salt's master processes all reach for the schema at start (seen: 'table exists')."""
    import multiprocessing

    url = f"sqlite:///{tmp_path / 'race.db'}"
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(4)
    children = [ctx.Process(target=_upgrade_in_child, args=(url, barrier)) for _ in range(4)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
    assert [child.exitcode for child in children] == [0, 0, 0, 0]
    engine = store_engine.get_engine(url)
    assert store_engine.current_revision(engine) == store_engine.head_revision()
