"""The fleet returner on a minion (``--return fleet``), through Salt's loader with minion opts.

Only a minion role (``saltext-fleet db minion-role``) is accepted; the master's superuser URL
and SQLite are refused with a clear error before anything is spooled.
"""

import os
import uuid

import pytest
import salt.loader
from sqlalchemy import select
from sqlalchemy.engine import make_url

from saltext_fleet.store import engine as store_engine
from saltext_fleet.store import minion as minion_store
from saltext_fleet.store import writer as store_writer
from saltext_fleet.store.models import Node, Return
from tests.support.store import count


@pytest.fixture
def master_url(pg_url_factory):
    url = pg_url_factory()
    store_engine.ensure_schema(store_engine.get_engine(url))
    yield url
    store_writer.close_all(5)
    minion_store.forget_verified()


@pytest.fixture
def role_url(master_url):
    import psycopg

    name = f"fleet_minion_{uuid.uuid4().hex[:8]}"
    with store_engine.get_engine(master_url).begin() as conn:
        minion_store.create_minion_role(conn, name, "func-minion-password")
    yield (
        make_url(master_url)
        .set(username=name, password="func-minion-password")
        .render_as_string(hide_password=False)
    )
    store_writer.close_all(5)
    store_engine.dispose_all()
    admin = make_url(master_url).set(drivername="postgresql")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'DROP OWNED BY "{name}"')
        conn.execute(f'DROP ROLE "{name}"')


def returner_for(minion_opts, db_url):
    opts = dict(minion_opts, fleet={"db_url": db_url})
    assert opts["__role"] == "minion"
    return salt.loader.returners(opts, {})["fleet.returner"]


def a_return(minion_id, fun="test.ping", value=True):
    return {"id": minion_id, "jid": "20261205120000000002", "fun": fun, "return": value}


def test_the_master_superuser_url_is_refused(minion_opts, master_url):
    returner = returner_for(minion_opts, master_url)
    with pytest.raises(minion_store.MinionRoleError) as refused:
        returner(a_return("func-refused"))
    message = str(refused.value)
    assert "fleet:db_url of a minion" in message and "is a superuser" in message
    assert "saltext-fleet db minion-role" in message
    assert count(store_engine.get_engine(master_url), Return) == 0


def test_sqlite_is_refused_without_making_a_file(minion_opts, tmp_path):
    path = tmp_path / "minion.db"
    returner = returner_for(minion_opts, f"sqlite:///{path}")
    with pytest.raises(minion_store.MinionRoleError, match="the minion returner refuses SQLite"):
        returner(a_return("func-sqlite"))
    assert not os.path.exists(path)


def test_a_minion_role_stores_returns_but_never_node_data(minion_opts, master_url, role_url):
    returner = returner_for(minion_opts, role_url)
    inventory = {
        "packages": {"deb": {"evil": "6.6.6"}},
        "sources": {},
        "facts": {"os": "Forged"},
        "digest": "e" * 64,
        "errors": [],
    }
    returner(a_return("func-node", "fleet.inventory", inventory))
    returner(a_return("func-node", "grains.items", {"os": "Forged"}))
    engine = store_engine.get_engine(master_url)
    # The returner waits (up to 5 s) for its record to reach the database.
    assert count(engine, Return) == 2
    with engine.connect() as conn:
        assert conn.execute(select(Node).where(Node.minion_id == "func-node")).first() is None
