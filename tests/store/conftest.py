"""Store tests: a migrated engine on each backend (SQLite and real PostgreSQL).

Each test gets a database of its own, copied from one migrated per run (a migration run costs
0.4 s on PostgreSQL, a copy of a migrated database 0.06 s); a test marked ``empty_db``
migrates an empty database itself.
"""

import shutil
import uuid

import pytest
from sqlalchemy.engine import make_url

from saltext_fleet.store import engine as store_engine
from tests.conftest import _pg_admin_execute


@pytest.fixture(scope="session")
def migrated_templates(pg_server_url, tmp_path_factory):
    """One migrated store of each backend for the run: a SQLite file and a PostgreSQL
    database that the tests' databases are created from (and dropped at the end)."""
    path = tmp_path_factory.mktemp("store-template") / "fleet.db"
    store_engine.ensure_schema(store_engine.get_engine(f"sqlite:///{path}"))
    name = f"fleet_test_tmpl_{uuid.uuid4().hex[:12]}"
    _pg_admin_execute(f'CREATE DATABASE "{name}"')
    url = make_url(pg_server_url).set(drivername="postgresql+psycopg", database=name)
    store_engine.ensure_schema(store_engine.get_engine(url.render_as_string(hide_password=False)))
    store_engine.dispose_all()  # no connection may stay on a template
    yield {"sqlite": path, "postgresql": name}
    _pg_admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path, migrated_templates):
    """A fresh database of each backend with the newest schema (empty, for ``empty_db``)."""
    empty = request.node.get_closest_marker("empty_db") is not None
    if request.param == "sqlite":
        path = tmp_path / "fleet.db"
        if not empty:
            shutil.copyfile(migrated_templates["sqlite"], path)
        yield f"sqlite:///{path}"
    else:
        template = None if empty else migrated_templates["postgresql"]
        yield request.getfixturevalue("pg_url_factory")(template)


@pytest.fixture
def engine(db_url):
    eng = store_engine.get_engine(db_url)
    store_engine.ensure_schema(eng)
    return eng


@pytest.fixture
def pg_engine(migrated_templates, pg_url_factory):
    """PostgreSQL only, migrated: races of concurrent masters (SQLite has one writer at a
    time)."""
    engine = store_engine.get_engine(pg_url_factory(migrated_templates["postgresql"]))
    store_engine.ensure_schema(engine)
    return engine
