"""``fleet:db_read_url``: the read-only pages (overview, jobs, certificates, Xcode) query the
read store; logins, sessions and everything else stay on the store itself."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import insert

from saltext_fleet.store import engine as store_engine
from saltext_fleet.store.models import Job, Node


@pytest.fixture
def read_engine(migrated_store, tmp_path):
    """A second store (standing in for a standby) holding a node and a job the first lacks."""
    path = tmp_path / "standby.db"
    with sqlite3.connect(migrated_store) as src, sqlite3.connect(path) as dst:
        src.backup(dst)
    eng = store_engine.get_engine(f"sqlite:///{path}", writable=False)
    with eng.begin() as conn:
        conn.execute(insert(Node), [{"minion_id": "seen-on-the-standby", "facts": {}}])
        conn.execute(
            insert(Job),
            [{"jid": "20261205000000777777", "fun": "test.ping", "load": {}, "publish": True}],
        )
    yield eng
    eng.dispose()


def test_read_only_pages_read_the_read_store_and_logins_the_store(app, read_engine, logged_in):
    with app.app_context():
        app.extensions["fleet"].read_engine = read_engine
    # the read store has no users: the login works, so it was checked on the store
    client, _csrf = logged_in("viewer")
    overview = client.get("/").get_data(as_text=True)
    assert "seen-on-the-standby" in overview
    jobs = client.get("/jobs").get_data(as_text=True)
    assert "20261205000000777777" in jobs
    assert client.get("/certs").status_code == 200
    assert client.get("/xcode").status_code == 200


def test_without_a_read_url_the_pages_read_the_store(app, logged_in):
    assert app.extensions["fleet"].read_engine is None
    client, _csrf = logged_in("viewer")
    assert "seen-on-the-standby" not in client.get("/").get_data(as_text=True)
