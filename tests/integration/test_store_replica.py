"""A replicated PostgreSQL: the primary crashes mid-stream, the standby is promoted, and every
return is in the store exactly once.

Two real PostgreSQL 15 clusters on this machine (tests/support/pgreplica.py): a primary and a
synchronous standby made with ``pg_basebackup -R``, run as the ``postgres`` user. The store's
URL names both (libpq's multi-host form, ``target_session_attrs=read-write``). Returns flow
through the fleet returner (Salt's loader, master opts) into its real spool and writer; the
primary is killed (``pg_ctl stop -m immediate``) while they flow, the returns keep coming and
wait in the spool while the standby is still read-only, the standby is promoted, and the
writer settles on it by itself. Afterwards each (jid, minion) and each rid is stored once, the
quarantine is empty, and a writer pointed straight at the read-only standby kept its records
spooled (SQLSTATE 25006 is "database away", never a bad record).
"""

import os
import time

import pytest
import salt.loader
from sqlalchemy import func, select, text

from saltext_fleet.store import engine as store_engine
from saltext_fleet.store import writer as store_writer
from saltext_fleet.store.models import Job, Quarantine, Return
from tests.support import pgreplica
from tests.support.runners import master_opts as runner_opts
from tests.support.waiting import wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(pgreplica.available() is not None, reason=str(pgreplica.available())),
]

MINIONS = [f"replica-minion-{n}" for n in range(10)]
#: jobs per phase (before the crash, while the database is away, after the promotion)
JOBS = 100


@pytest.fixture
def pair():
    with pgreplica.replicated_pair("fleet") as replicated:
        try:
            yield replicated
        finally:
            # nothing of this process may still hold a connection or a writer on them
            store_writer.close_all(5)
            store_engine.dispose_all()


@pytest.fixture
def master_opts(pair, tmp_path):
    # the read-only runners read the standby (fleet:db_read_url), the rest the primary
    standby = f"postgresql+psycopg://postgres@127.0.0.1:{pair.standby.port}/fleet"
    return runner_opts(tmp_path / "master", pair.url("fleet"), {"db_read_url": standby})


def jid_of(phase: int, n: int) -> str:
    return f"2026120{phase}{n:012d}"


def publish(returners, phase: int, pace: float = 0.0, midway=None) -> list[str]:
    """``JOBS`` jobs of ``phase``: each one's load (Salt's save_load) and a return from
    every minion (the master's job cache: ``returner``); ``midway(jids)`` is called after
    the first two thirds."""
    jids = []
    for n in range(JOBS):
        if midway is not None and n == JOBS * 2 // 3:
            midway(list(jids))
        jid = jid_of(phase, n)
        load = {"fun": "test.ping", "arg": [], "tgt": "replica-*", "jid": jid, "user": "root"}
        returners["fleet.save_load"](jid, load, minions=MINIONS)
        for minion in MINIONS:
            returners["fleet.returner"](
                {
                    "id": minion,
                    "jid": jid,
                    "fun": "test.ping",
                    "return": True,
                    "retcode": 0,
                    "success": True,
                }
            )
        jids.append(jid)
        if pace:
            time.sleep(pace)
    return jids


def stored(url: str, jids: list[str]) -> dict:
    engine = store_engine.get_engine(url)
    with engine.connect() as conn:
        mine = Return.jid.in_(jids)
        return {
            "rows": conn.execute(select(func.count()).select_from(Return).where(mine)).scalar(),
            "pairs": conn.execute(
                select(func.count()).select_from(
                    select(Return.jid, Return.minion_id).where(mine).distinct().subquery()
                )
            ).scalar(),
            "rids": conn.execute(select(func.count(Return.rid.distinct())).where(mine)).scalar(),
            "jobs": conn.execute(
                select(func.count()).select_from(Job).where(Job.jid.in_(jids))
            ).scalar(),
            "quarantine": conn.execute(select(func.count()).select_from(Quarantine)).scalar(),
        }


def test_a_failover_loses_and_doubles_no_return(pair, master_opts, tmp_path):
    started = time.monotonic()
    url = pair.url("fleet")
    store_engine.ensure_schema(store_engine.get_engine(url))
    returners = salt.loader.returners(master_opts, {})
    spool_dir = os.path.join(master_opts["cachedir"], "fleet", "spool")
    assert ("fleet_standby", "streaming", "sync") in [tuple(r) for r in pair.sync_state()]

    # 1. returns flow to the primary; it is killed while they flow
    seen = {}

    def crash(sent):
        writer = store_writer.existing_writer(url, spool_dir)
        assert writer is not None and writer.database_up()
        seen["stored"] = stored(url, sent)["rows"]
        seen["pending"] = writer.pending()
        pair.primary.crash()

    jids = publish(returners, 1, pace=0.01, midway=crash)
    writer = store_writer.existing_writer(url, spool_dir)
    assert seen["stored"] > 0, "nothing reached the primary before the crash"

    # 2. the primary is gone and the standby is read-only: returns wait in the spool
    jids += publish(returners, 2)
    wait_for("the writer to find the database away", lambda: not writer.database_up(), 30, 0.05)
    assert writer.pending() > 0
    # a writer whose URL reaches the standby itself (no target_session_attrs: libpq takes
    # it) meets a read-only transaction: that is "away", not a bad record
    direct_url = f"postgresql+psycopg://postgres@127.0.0.1:{pair.standby.port}/fleet"
    direct = store_writer.get_writer(direct_url, str(tmp_path / "direct-spool"))
    direct_jid = jid_of(4, 0)
    for minion in MINIONS:
        direct.submit(
            {"kind": "return", "ret": {"id": minion, "jid": direct_jid, "fun": "test.ping"}}
        )
    wait_for(
        "the direct writer to meet the read-only standby",
        lambda: not direct.database_up() and "ReadOnlySqlTransaction" in (direct.last_error or ""),
        30,
        0.05,
    )
    assert direct.pending() == len(MINIONS)
    # the read-only runners answer from the standby meanwhile (fleet:db_read_url)
    runners = salt.loader.runner(master_opts)
    status = runners["fleet.store_status"]()
    assert status["reachable"] is False
    assert (status["read_reachable"], status["read_standby"]) == (True, True), status
    assert sorted(row["minion_id"] for row in runners["fleet.nodes"]()) == sorted(MINIONS)

    # 3. the standby is promoted: the writers settle on it by themselves
    pair.standby.promote()
    jids += publish(returners, 3)
    assert writer.drain(60), f"the spool did not drain: {writer.status()}"
    assert direct.drain(30), f"the direct writer did not drain: {direct.status()}"
    assert writer.database_up() and writer.last_error is None

    expected = JOBS * 3 * len(MINIONS)
    counts = stored(url, jids)
    assert counts == {
        "rows": expected,
        "pairs": expected,
        "rids": expected,
        "jobs": 3 * JOBS,
        "quarantine": 0,
    }, counts
    assert stored(url, [direct_jid])["rows"] == len(MINIONS)
    # the URL's store is the promoted standby: the old primary is down
    with store_engine.get_engine(url).connect() as conn:
        port = conn.execute(text("SELECT inet_server_port()")).scalar()
    assert port == pair.standby.port
    assert time.monotonic() - started < 60
