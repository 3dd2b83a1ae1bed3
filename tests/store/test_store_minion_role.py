"""The minion returner's least-privilege role, on real PostgreSQL.

``saltext-fleet db minion-role NAME`` makes a role that may only append returns and events; the
minion write path stores through it and ingests nothing; anything else the role tries is
refused by PostgreSQL itself, and the minion side refuses URLs that could do more.
"""

import contextlib
import re
import uuid

import psycopg
import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from saltext_fleet import cli
from saltext_fleet.store import engine as store_engine
from saltext_fleet.store import minion as minion_store
from saltext_fleet.store import writer as store_writer
from saltext_fleet.store.models import Event, Node, Return
from tests.conftest import PG_ADMIN_URL
from tests.support.store import count, write

#: Tables a minion must neither read nor write: enrolments, users, the audit chain, and the
#: node data that only the master's authenticated path feeds.
GUARDED = {
    "enrolments": "UPDATE enrolments SET minion_id = 'x'",
    "ui_users": "UPDATE ui_users SET role = 'admin'",
    "audit_events": "UPDATE audit_events SET actor = 'x'",
    "audit_head": "UPDATE audit_head SET last_id = 0",
    "secrets": "UPDATE secrets SET scope = 'x'",
    "nodes": "UPDATE nodes SET inventory_digest = NULL",
    "inventory_snapshots": "UPDATE inventory_snapshots SET facts = '{}'",
    "quarantine": "UPDATE quarantine SET error = 'x'",
    "jobs": "UPDATE jobs SET fun = 'x'",
}


def _psycopg_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _drop_role(db_url: str, name: str) -> None:
    store_engine.dispose_all()
    minion_store.forget_verified()
    with psycopg.connect(_psycopg_url(db_url), autocommit=True) as conn:
        conn.execute(f'DROP OWNED BY "{name}"')
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP ROLE IF EXISTS "{name}"')


@pytest.fixture
def master_url(pg_url_factory):
    url = pg_url_factory()
    store_engine.ensure_schema(store_engine.get_engine(url))
    return url


@pytest.fixture
def make_role(master_url, capsys):
    """``make_role(*extra_args)``: run the CLI; ``(exit code, stdout, stderr, role name)``."""
    made = []

    def make(*extra, name=None):
        name = name or f"fleet_minion_{uuid.uuid4().hex[:8]}"
        if name not in made:
            made.append(name)
        code = cli.main(["db", "minion-role", name, "--db-url", master_url, *extra])
        out, err = capsys.readouterr()
        return code, out, err, name

    yield make
    for name in made:
        _drop_role(master_url, name)


@pytest.fixture
def role_url(make_role):
    code, out, err, _ = make_role("--password", "minion-secret-1")
    assert code == 0, err
    return re.search(r"^  db_url: (\S+)$", out, re.M).group(1)


def ret(minion="m1", fun="test.ping", value=True, **extra):
    return {
        "kind": "return",
        "rid": uuid.uuid4().hex,
        "ret": {
            "id": minion,
            "jid": "20261205120000000001",
            "fun": fun,
            "return": value,
            "retcode": 0,
            "success": True,
            **extra,
        },
    }


def inventory(char, packages):
    return {
        "packages": packages,
        "sources": {},
        "facts": {"os": f"os-{char}"},
        "digest": char * 64,
        "errors": [],
    }


def minion_write(url, records):
    engine = store_engine.get_engine(url)
    minion_store.verify_role(engine)
    with engine.begin() as conn:
        return minion_store.write_minion_batch(conn, records)


def test_the_cli_creates_a_role_that_may_only_append(master_url, make_role):
    code, out, err, name = make_role("--password", "minion-secret-1")
    assert code == 0, err
    assert f"minion role {name} created" in out
    url = make_url(re.search(r"^  db_url: (\S+)$", out, re.M).group(1))
    assert (url.username, url.password, url.database) == (
        name,
        "minion-secret-1",
        make_url(master_url).database,
    )
    assert out.index("fleet:\n  db_url: ") > 0  # the minion config snippet
    with psycopg.connect(PG_ADMIN_URL) as conn:
        attrs = conn.execute(
            "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolinherit, rolpassword"
            " FROM pg_authid WHERE rolname = %s",
            (name,),
        ).fetchone()
    assert attrs[:5] == (True, False, False, False, False)
    first_hash = attrs[5]
    assert first_hash and "minion-secret-1" not in first_hash

    # Run again without a password: updated, password kept, placeholder printed.
    code, out, err, _ = make_role(name=name)
    assert code == 0, err
    assert f"minion role {name} updated" in out and f"{name}:PASSWORD@" in out
    with psycopg.connect(PG_ADMIN_URL) as conn:
        kept = conn.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (name,)
        ).fetchone()[0]
    assert kept == first_hash


def test_a_new_role_without_a_password_gets_a_generated_one(make_role):
    code, out, err, name = make_role()
    assert code == 0, err
    password = make_url(re.search(r"^  db_url: (\S+)$", out, re.M).group(1)).password
    assert len(password) >= 24 and "generated" in out


def test_the_cli_refuses_sqlite_a_superuser_and_bad_names(tmp_path, master_url, capsys):
    sqlite_url = f"sqlite:///{tmp_path / 'fleet.db'}"
    assert cli.main(["db", "minion-role", "fleet_m", "--db-url", sqlite_url]) == 2
    assert "PostgreSQL" in capsys.readouterr().err
    assert cli.main(["db", "minion-role", "postgres", "--db-url", master_url]) == 2
    assert "the role this command connects as" in capsys.readouterr().err
    assert cli.main(["db", "minion-role", "Robert'); DROP", "--db-url", master_url]) == 2
    assert "bad role name" in capsys.readouterr().err
    assert cli.main(["db", "minion-role", "--db-url", master_url]) == 2
    assert "a role name is needed" in capsys.readouterr().err


def test_the_role_appends_returns_and_events_exactly_once(master_url, role_url, tmp_path):
    master = store_engine.get_engine(master_url)
    records = [
        ret(minion="m1"),
        ret(minion="m2", fun="pillar.items", value={"password": "hunter2"}),
        {"kind": "event", "rid": uuid.uuid4().hex, "tag": "fleet/minion/test", "data": {"a": 1}},
    ]
    result = minion_write(role_url, records)
    assert (result.stored, result.quarantined) == (3, 0)
    assert minion_write(role_url, records).stored == 3  # a replay: no new rows
    assert count(master, Return) == 2 and count(master, Event) == 1
    with master.connect() as conn:
        stored = conn.execute(select(Return.full_ret).where(Return.minion_id == "m2")).scalar()
    assert "hunter2" not in str(stored)  # redacted as on the master

    # The writer a minion's returner uses: spooled, checked, written without migrations.
    writer = store_writer.Writer(role_url, str(tmp_path / "spool"), minion=True)
    try:
        writer.submit(ret(minion="m3"))
        assert writer.drain(20), writer.last_error
    finally:
        writer.close(5)
    with master.connect() as conn:
        assert conn.execute(select(Return.minion_id).where(Return.minion_id == "m3")).scalar()


@contextlib.contextmanager
def as_role(url):
    with psycopg.connect(_psycopg_url(url), autocommit=True) as conn:
        yield conn


def _denied(conn, sql):
    with pytest.raises(
        psycopg.errors.InsufficientPrivilege, match="permission denied|must be owner"
    ):
        conn.execute(sql)


def test_the_role_is_refused_everything_else(master_url, role_url):
    with as_role(role_url) as conn:
        # Positive control: the same connection may append a return.
        conn.execute(
            "INSERT INTO returns (rid, jid, minion_id, stored_at) VALUES (%s, 'j', 'm', now())",
            (uuid.uuid4().hex,),
        )
        for table, update in GUARDED.items():
            _denied(conn, f"SELECT * FROM {table}")
            _denied(conn, f"INSERT INTO {table} DEFAULT VALUES")
            _denied(conn, update)
            _denied(conn, f"DELETE FROM {table}")
            _denied(conn, f"TRUNCATE {table}")
        for table in ("returns", "events"):
            _denied(conn, f"SELECT rid FROM {table}")
            _denied(conn, f"UPDATE {table} SET rid = rid")
            _denied(conn, f"DELETE FROM {table}")
        # ...but never mark it as one the master stored from its job cache
        _denied(
            conn,
            "INSERT INTO returns (rid, jid, minion_id, stored_at, authenticated)"
            f" VALUES ('{uuid.uuid4().hex}', 'j', 'm', now(), true)",
        )
        _denied(conn, "CREATE TABLE sneaky (x int)")
        _denied(conn, "ALTER TABLE returns ADD COLUMN sneaky int")
        _denied(conn, "DROP TABLE audit_events")
        _denied(conn, "SELECT setval('returns_id_seq', 1)")
    master = store_engine.get_engine(master_url)
    assert count(master, Return) == 1


def test_the_minion_side_refuses_a_superuser_and_sqlite(master_url, tmp_path):
    minion_store.forget_verified()
    with pytest.raises(minion_store.MinionRoleError) as refused:
        minion_store.verify_role(store_engine.get_engine(master_url))
    message = str(refused.value)
    assert "may do more than append returns and events" in message
    assert "is a superuser" in message and "minion-role" in message
    # The refusal is kept: asked again, the same answer.
    with pytest.raises(minion_store.MinionRoleError, match="is a superuser"):
        minion_store.verify_role(store_engine.get_engine(master_url))

    sqlite_url = f"sqlite:///{tmp_path / 'fleet.db'}"
    with pytest.raises(minion_store.MinionRoleError, match="refuses SQLite"):
        minion_store.verify_role(store_engine.get_engine(sqlite_url))


def test_extra_privileges_are_refused_and_a_second_run_takes_them_away(
    master_url, make_role, role_url
):
    name = make_url(role_url).username
    extras = [
        ("GRANT SELECT ON ui_users TO {r}", "may SELECT on ui_users"),
        ("GRANT SELECT (rid) ON returns TO {r}", "may SELECT on returns"),
        ("GRANT INSERT (authenticated) ON returns TO {r}", "may write returns.authenticated"),
        ("GRANT UPDATE ON audit_head TO {r}", "may UPDATE on audit_head"),
        ("GRANT USAGE, SELECT ON SEQUENCE events_id_seq TO {r}", "SELECT on sequence events_id"),
        ("ALTER ROLE {r} CREATEROLE", "may create roles"),
        ("GRANT pg_read_all_data TO {r}", "is a member of pg_read_all_data"),
    ]
    for grant, named in extras:
        with psycopg.connect(_psycopg_url(master_url), autocommit=True) as conn:
            conn.execute(grant.format(r=f'"{name}"'))
        minion_store.forget_verified()
        with pytest.raises(minion_store.MinionRoleError, match=re.escape(named)):
            minion_store.verify_role(store_engine.get_engine(role_url))
    # Each is still there (the refusals above were cumulative); a second run converges.
    code, out, err, _ = make_role(name=name)
    assert code == 0, err
    assert "revoked its membership of: pg_read_all_data" in out
    minion_store.forget_verified()
    minion_store.verify_role(store_engine.get_engine(role_url))  # accepted again


def test_a_minion_return_never_feeds_node_data(master_url, role_url):
    master = store_engine.get_engine(master_url)
    # The master's authenticated path: the node has an inventory and pending states.
    write(
        master,
        [
            ret(minion="x", fun="fleet.inventory", value=inventory("a", {"deb": {"bash": "5.2"}})),
            ret(minion="x", fun="grains.items", value={"os": "Debian"}),
        ],
    )

    def node_row():
        with master.connect() as conn:
            return conn.execute(select(Node).where(Node.minion_id == "x")).one()._asdict()

    before = node_row()
    assert before["inventory_digest"] and before["grains"] == {"os": "Debian"}
    forged = inventory("f", {"deb": {"evil-backdoor": "6.6.6"}})
    states = {"pkg_|-x_|-x_|-installed": {"result": None, "changes": {"x": 1}}}
    result = minion_write(
        role_url,
        [
            ret(minion="x", fun="fleet.inventory", value=forged),
            ret(minion="x", fun="grains.items", value={"os": "Forged"}),
            ret(minion="x", fun="state.apply", value=states, fun_args=[{"test": True}]),
            ret(minion="newnode", fun="fleet.inventory", value=forged),
        ],
    )
    assert result.stored == 4 and not result.inventory_changed and not result.states_run
    assert node_row() == before  # inventory, facts, grains, pending states, last_seen
    with master.connect() as conn:
        assert conn.execute(select(Node).where(Node.minion_id == "newnode")).first() is None
        stored = conn.execute(
            select(Return.ret).where(Return.minion_id == "x", Return.fun == "fleet.inventory")
        ).all()
        snapshots = conn.execute(text("SELECT count(*) FROM inventory_snapshots")).scalar()
    assert len(stored) == 2  # the minion's return is stored as a return
    assert snapshots == 1


def test_a_role_that_owns_a_table_is_refused_by_both_sides(master_url, make_role, role_url):
    """Like the master's own role (the owner of the store): refused as a minion URL, and the
    CLI will not turn it into a minion role."""
    name = make_url(role_url).username
    with psycopg.connect(_psycopg_url(master_url), autocommit=True) as conn:
        conn.execute(f'ALTER TABLE audit_events OWNER TO "{name}"')
    minion_store.forget_verified()
    with pytest.raises(minion_store.MinionRoleError, match="owns table audit_events"):
        minion_store.verify_role(store_engine.get_engine(role_url))
    code, _out, err, _ = make_role(name=name)
    assert code == 2 and "owns objects" in err


def test_a_row_the_database_refuses_is_dropped_and_the_rest_stored(master_url, role_url, caplog):
    bad = ret(minion="nul", value="a\x00b")  # JSONB refuses an escaped NUL
    result = minion_write(role_url, [ret(minion="ok1"), bad, ret(minion="ok2")])
    assert (result.stored, result.quarantined) == (2, 1)
    master = store_engine.get_engine(master_url)
    with master.connect() as conn:
        stored = set(conn.execute(select(Return.minion_id)).scalars())
        quarantined = conn.execute(text("SELECT count(*) FROM quarantine")).scalar()
    assert stored == {"ok1", "ok2"} and quarantined == 0
    assert bad["rid"] in caplog.text and "not stored by the minion returner" in caplog.text


def test_the_job_cache_answers_only_what_the_master_stored(master_url, role_url):
    """Salt's clients (and onboarding's fleet.started check) read a minion's answer from the job
    cache: a return that minion Y writes itself for X's job is stored, marked as Y's claim, and
    never answers for X."""
    from saltext_fleet.store import queries

    master = store_engine.get_engine(master_url)
    jid = "20261205043000123456"
    forged = ret(minion="x", fun="fleet.started", value={"started": 4102444800.0}, jid=jid)
    assert minion_write(role_url, [forged]).stored == 1
    assert queries.get_jid(master, jid) == {}
    assert "x" not in queries.get_minions(master)
    assert queries.get_fun(master, "fleet.started") == {}
    # the master's job cache stores X's own answer: that one counts
    write(master, [ret(minion="x", fun="fleet.started", value={"started": 1.0}, jid=jid)])
    assert queries.get_jid(master, jid)["x"]["return"] == {"started": 1.0}
    assert queries.get_fun(master, "fleet.started") == {"x": jid}
    with master.connect() as conn:
        marks = conn.execute(
            select(Return.authenticated).where(Return.jid == jid).order_by(Return.id)
        ).scalars()
        assert list(marks) == [False, True]
