"""The fleet returner as master_job_cache and event_return, against SQLite and PostgreSQL.

Salt's own job runners (jobs.lookup_jid, list_jobs, list_job, last_run, print_job) must work
unchanged against it.
"""

import re
from pathlib import Path

import pytest
from saltfactories.utils import random_string
from sqlalchemy import func, select

from saltext_fleet import snippet
from saltext_fleet.store import engine as store_engine
from saltext_fleet.store import minion as minion_store
from saltext_fleet.store.models import Event, Return
from tests.support.daemons import start_all, stop_all
from tests.support.pgdb import fresh_database
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend_url(request, tmp_path_factory, pg_server_url):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('jobcache') / 'fleet.db'}"
        return
    with fresh_database(pg_server_url, "fleet_it") as url:
        yield url


@pytest.fixture(scope="module")
def jc_master(salt_factories, backend_url):
    overrides = snippet.master_snippet(db_url=backend_url)
    assert overrides["master_job_cache"] == "fleet" and overrides["event_return"] == "fleet"
    overrides.update({"interface": "127.0.0.1", "event_return_queue": 0})
    overrides.pop("engines", None)  # the job cache is under test here, not the web UI
    factory = salt_factories.salt_master_daemon(random_string("jc-master-"), overrides=overrides)
    with factory.started():
        yield factory


@pytest.fixture(scope="module")
def minion_db_url(backend_url):
    """What the minions get as fleet:db_url: on PostgreSQL a minion role that may only append
    returns and events (``saltext-fleet db minion-role``); on SQLite the file (refused)."""
    if backend_url.startswith("sqlite"):
        yield backend_url
        return
    import psycopg
    from sqlalchemy.engine import make_url

    engine = store_engine.get_engine(backend_url)
    store_engine.ensure_schema(engine)
    name = f"fleet_minion_{random_string('', uppercase=False)}"[:40]
    with engine.begin() as conn:
        done = minion_store.create_minion_role(conn, name, "minion-role-password")
    assert done["verified"] and not done["problems"], done
    yield (
        make_url(backend_url)
        .set(username=name, password="minion-role-password")
        .render_as_string(hide_password=False)
    )
    store_engine.dispose_all()
    admin = make_url(backend_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP OWNED BY "{name}"')
        conn.execute(f'DROP ROLE "{name}"')


@pytest.fixture(scope="module")
def jc_minions(jc_master, minion_db_url):
    minions = [
        jc_master.salt_minion_daemon(
            random_string(f"jc-minion-{n}-"), overrides={"fleet": {"db_url": minion_db_url}}
        )
        for n in (1, 2)
    ]
    start_all(minions)
    yield minions
    stop_all(minions)


def run_async(jc_master, *args):
    ret = jc_master.salt_cli().run("--async", *args, minion_tgt="*")
    assert ret.returncode == 0, ret
    return re.search(r"(\d{20})", ret.stdout).group(1)


def test_lookup_jid_and_list_jobs(jc_master, jc_minions):
    run = jc_master.salt_run_cli()
    jid = run_async(jc_master, "test.ping")
    ids = {m.id for m in jc_minions}

    def answered():
        ret = run.run("jobs.lookup_jid", jid)
        return (
            ret.data
            if ret.returncode == 0 and isinstance(ret.data, dict) and set(ret.data) >= ids
            else None
        )

    data = wait_for("both minions' answers in jobs.lookup_jid", answered, timeout=60, interval=0.25)
    assert all(data[m] is True for m in ids)

    listed = run.run("jobs.list_jobs")
    assert listed.returncode == 0, listed
    assert jid in listed.data and listed.data[jid]["Function"] == "test.ping"
    assert listed.data[jid]["Target"] == "*"

    job = run.run("jobs.list_job", jid)
    assert job.returncode == 0, job
    assert job.data["Function"] == "test.ping" and set(job.data["Result"]) == ids
    assert set(job.data["Minions"]) == ids

    printed = run.run("jobs.print_job", jid)
    assert printed.returncode == 0 and set(printed.data[jid]["Result"]) == ids

    last = run.run("jobs.last_run", "function=test.ping")
    assert last.returncode == 0, last
    assert list(last.data) == [jid]
    assert set(last.data[jid]["Result"]) == ids


def test_publish_load_survives_the_returns(jc_master, jc_minions):
    run = jc_master.salt_run_cli()
    jid = run_async(jc_master, "cmd.run", "echo fleet")
    wait_for(
        "cmd.run returns",
        lambda: len(run.run("jobs.lookup_jid", jid).data or {}) == 2,
        timeout=60,
        interval=0.25,
    )
    load = run.run("jobs.list_job", jid).data
    assert load["Function"] == "cmd.run" and load["Arguments"] == ["echo fleet"]
    assert load["Target"] == "*" and load["User"]


def test_events_are_stored(jc_master, jc_minions, backend_url):
    jc_master.salt_cli().run("test.ping", minion_tgt="*")
    engine = store_engine.get_engine(backend_url)

    def stored():
        with engine.connect() as conn:
            return conn.execute(
                select(func.count()).select_from(Event).where(Event.tag.like("salt/job/%/ret/%"))
            ).scalar()

    assert wait_for("job return events in the events table", stored, timeout=60, interval=0.25) >= 2


def test_minion_returner(jc_master, jc_minions, backend_url):
    """A minion's own returner (--return fleet): on PostgreSQL through a minion role, whose rows
    are plain returns; on SQLite refused with an error in the minion's log."""
    minion = jc_minions[0]
    engine = store_engine.get_engine(backend_url)

    def stored():
        with engine.connect() as conn:
            return conn.execute(
                select(func.count())
                .select_from(Return)
                .where(Return.minion_id == minion.id, Return.fun == "test.echo")
            ).scalar()

    ret = jc_master.salt_cli().run(
        "test.echo", "returned-by-minion", "--return", "fleet", minion_tgt=minion.id
    )
    assert ret.returncode == 0 and ret.data == "returned-by-minion"
    if backend_url.startswith("sqlite"):
        log_file = Path(minion.config["log_file"])
        refused = wait_for(
            "the minion returner's refusal in the minion log",
            lambda: "the minion returner refuses SQLite" in log_file.read_text(errors="replace"),
            timeout=60,
            interval=0.25,
        )
        assert refused
        # The master's job cache stored the return (its own path), the minion wrote nothing.
        assert wait_for("the job cache's row", stored, timeout=60, interval=0.25) == 1
        return
    # One row from the master's job cache, one written by the minion's own returner.
    assert wait_for("the minion returner's row", lambda: stored() >= 2, timeout=60, interval=0.25)
    # ... and the minion role it used was not refused: nothing in its log says so.
    log_text = Path(minion.config["log_file"]).read_text(errors="replace")
    assert "may do more than append" not in log_text


def test_store_status(jc_master, jc_minions, backend_url):
    ret = jc_master.salt_run_cli().run("fleet.store_status")
    assert ret.returncode == 0, ret
    status = ret.data
    assert status["backend"] == ("sqlite" if backend_url.startswith("sqlite") else "postgresql")
    assert status["schema_revision"] == status["schema_head"] == store_engine.head_revision()
    assert status["reachable"] is True
    assert status["rows"]["returns"] >= 2
    assert status["quarantine"] == 0
    assert "spool_depth" in status
