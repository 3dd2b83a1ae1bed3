"""Web tests in the flaskr way: the app on a fresh SQLite store per test, with a fake Salt
gateway (:class:`tests.support.web.FakeSalt`) for what needs no master. The route x role x
CSRF walk, forms, validation and paging run here in seconds; what crosses Salt (runners,
jobs on real minions, eauth) is tests/integration/test_webui_app.py.
"""

from __future__ import annotations

import sqlite3

import pytest

from saltext_fleet import config
from saltext_fleet.core import webauth
from saltext_fleet.store import engine as store_engine
from saltext_fleet.store import users as store_users
from tests.support.web import PASSWORD, FakeSalt, account_csrf, login, make_app

#: A named command for Debian nodes, as the integration master has one.
ACTIONS = {"Debian": {"test": "echo fleet-test-action $(id -un)"}}


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory):
    """A SQLite store migrated to the newest schema once per run; each test gets a copy."""
    path = tmp_path_factory.mktemp("web-store") / "fleet.db"
    url = f"sqlite:///{path}"
    store_engine.ensure_schema(store_engine.get_engine(url))
    return path


@pytest.fixture
def engine(migrated_store, tmp_path):
    """A fresh, migrated SQLite store of this test's own."""
    path = tmp_path / "fleet.db"
    with sqlite3.connect(migrated_store) as src, sqlite3.connect(path) as dst:
        src.backup(dst)
    eng = store_engine.get_engine(f"sqlite:///{path}")
    store_engine.ensure_schema(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def salt():
    """The fake gateway the app's actions go to (see its ``calls`` and ``answers``)."""
    return FakeSalt()


@pytest.fixture
def fleet_config(tmp_path):
    return config.load(
        {"cachedir": str(tmp_path), "fleet": {"actions": ACTIONS, "drift": {"alert_score": 10}}}
    )


@pytest.fixture
def app(engine, salt, fleet_config, tmp_path):
    return make_app(engine, tmp_path / "fleet.fernet", salt=salt, config=fleet_config)


@pytest.fixture
def client(app):
    """A test client with no session."""
    return app.test_client()


@pytest.fixture
def people(app, engine):
    """One user of each role, named after it (``viewer``, ``auditor``, ``operator``,
    ``admin``), with :data:`PASSWORD`."""
    with engine.begin() as conn:
        for role in webauth.ROLES:
            store_users.create_user(conn, role, role, PASSWORD, rounds=4)
    return {role: role for role in webauth.ROLES}


@pytest.fixture
def logged_in(app, people):
    """``logged_in(role) -> (client, csrf)``: a session of that role's user."""

    def make(role):
        client = login(app, people[role])
        return client, account_csrf(client)

    return make
