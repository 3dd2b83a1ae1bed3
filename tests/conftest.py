"""Shared test fixtures.

Salt daemons and loaders are set up by pytest-salt-factories; every daemon's root_dir lives
under one short temporary folder of the run (``short_tmp``), removed at its end.
"""

import logging
import os
import pathlib
import shutil
import sys
import tempfile

import pytest

log = logging.getLogger(__name__)

CODE_DIR = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    """Keep salt-factories' log server on loopback (its default is every interface)."""
    log_server = session.config.pluginmanager.get_plugin("saltfactories-log-server")
    if log_server is not None:
        log_server.log_host = "127.0.0.1"


@pytest.fixture(scope="session")
def event_listener():
    """salt-factories' event listener, bound to loopback instead of every interface."""
    from saltfactories.plugins.event_listener import EventListener

    listener = EventListener()
    listener.host = "127.0.0.1"
    listener.address = f"tcp://127.0.0.1:{listener.port}"
    with listener:
        yield listener


@pytest.fixture(scope="session")
def short_tmp():
    """A temporary folder of this test run (of this worker, under pytest-xdist) with a short
    path, removed at the end: a daemon's unix sockets live under its root_dir, and a socket's
    path may be at most 107 bytes, which pytest's own folders (``/tmp/pytest-of-root/
    pytest-N/popen-gw0/...``) leave too little room for."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="fleet-t-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def salt_factories_config(short_tmp):
    """Tell pytest-salt-factories where the code is and how long daemons may take to start.

    Every daemon's root_dir goes under one temporary folder of this test run.
    """
    root = short_tmp / "salt"
    root.mkdir()
    return {
        "root_dir": root,
        "code_dir": str(CODE_DIR),
        "inject_sitecustomize": "COVERAGE_PROCESS_START" in os.environ,
        "start_timeout": 120 if os.environ.get("CI") else 60,
    }


@pytest.fixture(scope="session")
def fixtures_dir():
    return FIXTURES


# -- running on every core (pytest-xdist) ------------------------------------------------------
#
# A worker runs whole scopes, in collection order: the modules of tests/integration that use its
# package-scoped master are one scope (the master is started once) and go first, since it is
# the longest; every other test module is a scope of its own (functional modules start
# module-scoped daemons once), and so are the integration modules that start daemons (or a
# venv) of their own: they need not wait behind the package's master. The other workers share
# the rest meanwhile. (xdist's own ``loadgroup`` marks groups by editing ``item._nodeid``,
# which pytest 9.2 no longer reads.)

INTEGRATION = "tests/integration/"
#: Integration modules that never use the package's master (tests/unit/test_suite_layout.py
#: checks it).
SELF_CONTAINED = frozenset(
    INTEGRATION + name
    for name in (
        "test_fresh_install.py",
        "test_job_cache.py",
        "test_secrets.py",
        "test_store_outage.py",
        "test_store_replica.py",
    )
)


def _scope(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    if path.startswith(INTEGRATION) and path not in SELF_CONTAINED:
        return INTEGRATION
    return path


def _first(scope: str) -> int:
    # the package's master first, then the self-contained integration modules (long ones)
    if scope == INTEGRATION:
        return 0
    return 1 if scope.startswith(INTEGRATION) else 2


def pytest_collection_modifyitems(config, items):
    # stable: the integration tests first, every other test in its collected order
    items.sort(key=lambda item: _first(_scope(item.nodeid)))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ByDaemonScope(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _scope(nodeid)

    return ByDaemonScope(config, log)


def pytest_unconfigure(config):
    # salt-factories logs its manager's repr after pytest has closed the capture streams;
    # that is noise, not a failure.
    logging.raiseExceptions = False


# -- databases ---------------------------------------------------------------------------------

#: The PostgreSQL server the tests use (a superuser that may create databases).
PG_ADMIN_URL = os.environ.get("FLEET_TEST_DB_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_admin_execute(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)


@pytest.fixture(scope="session")
def pg_server_url():
    """The admin URL of the real PostgreSQL server; fails (never skips) when it is down."""
    try:
        _pg_admin_execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is not reachable ({exc}); start it first")
    return PG_ADMIN_URL


@pytest.fixture
def pg_url_factory(pg_server_url):
    """Create fresh PostgreSQL databases for one test; every one is dropped afterwards."""
    import uuid

    from sqlalchemy.engine import make_url

    created = []

    def make(template: str | None = None) -> str:
        name = f"fleet_test_{uuid.uuid4().hex[:12]}"
        copy = f' TEMPLATE "{template}"' if template else ""
        _pg_admin_execute(f'CREATE DATABASE "{name}"{copy}')
        created.append(name)
        url = make_url(pg_server_url).set(drivername="postgresql+psycopg", database=name)
        return url.render_as_string(hide_password=False)

    yield make
    from saltext_fleet.store import engine as store_engine

    store_engine.dispose_all()
    for name in created:
        _pg_admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A fresh, empty database of each backend: SQLite in tmp_path, and real PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fleet.db'}"
    else:
        yield request.getfixturevalue("pg_url_factory")()


@pytest.fixture(autouse=True)
def _no_salt_user_left_in_the_runner_module():
    """No test acts as a user an earlier test's Salt call left behind.

    Salt's ``RunnerClient`` writes ``__user__`` into the loaded runner module's globals
    (salt/client/mixins.py) and leaves it there, and every later loader of the process gets
    that same module (``sys.modules["salt.loaded.ext.runners.fleet"]``). A runner called
    straight from a loader, as the tests do (the product never does: every call of its goes
    through a ``RunnerClient``, which sets the user each time), would then record a web UI
    user of an earlier test as its actor."""
    module = sys.modules.get("salt.loaded.ext.runners.fleet")
    if module is not None:
        for name in ("__user__", "__pub_user"):
            module.__dict__.pop(name, None)
    yield
