"""The quarantine keeps one row per record, replay or not (a crash after the database's commit
and before the spool's checkpoint replays the batch), on SQLite and PostgreSQL."""

import datetime as dt
import json
import signal
import subprocess
import sys

import pytest
from alembic import command
from sqlalchemy import select

from saltext_fleet.store import batch
from saltext_fleet.store import engine as store_engine
from saltext_fleet.store.models import Quarantine, Return
from saltext_fleet.store.spool import Spool
from tests.support.store import count, write

#: these tests migrate an empty database themselves
pytestmark = pytest.mark.empty_db

JID = "20261205070000123456"
NOW = dt.datetime(2026, 12, 5, 7, tzinfo=dt.timezone.utc)

#: A batch with records the database refuses, of each kind of key: a rid, no rid, a rid too
#: long to be a key; and one good return.
RECORDS = [
    {"kind": "return", "rid": "r-good", "ret": {"jid": JID, "id": "m1", "fun": "test.ping"}},
    {"kind": "return", "rid": "r-not-a-mapping", "ret": "no load"},
    {"kind": "mystery", "rid": "r-unknown-kind"},
    {"kind": "endtime", "jid": JID},
    {"kind": "endtime", "rid": "r" * 200, "jid": JID},
]

#: The crash: a process writes the batch, the database commits, and the process is killed
#: before it moves the spool's checkpoint past the batch.
CHILD = r"""
import json, os, signal, sys
from saltext_fleet.store import batch, spool
from saltext_fleet.store import engine as store_engine

db_url, base, records = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
owner = spool.Spool.open(base)
owner.append_many(records)
read = owner.read_batch()
engine = store_engine.get_engine(db_url)
store_engine.ensure_schema(engine)
with engine.begin() as conn:
    result = batch.write_batch(conn, [record for _, record in read])
print(result.stored, result.quarantined, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def quarantined(engine):
    with engine.connect() as conn:
        return conn.execute(select(Quarantine.rid, Quarantine.kind).order_by(Quarantine.id)).all()


def test_a_batch_replayed_after_a_crash_before_the_checkpoint_is_quarantined_once(db_url, tmp_path):
    base = tmp_path / "spool"
    child = subprocess.run(
        [sys.executable, "-c", CHILD, db_url, str(base), json.dumps(RECORDS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert child.stdout.split() == ["1", "4"]
    engine = store_engine.get_engine(db_url)
    first = quarantined(engine)
    assert len(first) == 4

    # the next process adopts the spool and replays the batch, as the writer does
    (adopted,) = Spool.adopt_orphans(base)
    replay = adopted.read_batch()
    assert [record.get("rid") for _, record in replay] == [r.get("rid") for r in RECORDS]
    with engine.begin() as conn:
        batch.write_batch(conn, [record for _, record in replay])
    adopted.commit(replay[-1][0])
    adopted.close()

    assert quarantined(engine) == first
    assert count(engine, Return) == 1
    keys = sorted(rid for rid, _ in first)
    assert keys[:2] == ["r-not-a-mapping", "r-unknown-kind"]
    assert all(key.startswith("sha224:") for key in keys[2:]) and keys[2] != keys[3]


def test_quarantining_a_record_again_leaves_one_row(engine):
    with engine.begin() as conn:
        assert batch.quarantine_record(conn, {"rid": "r1", "kind": "return"}, "return", "bad")
        assert not batch.quarantine_record(conn, {"rid": "r1", "kind": "return"}, "return", "x")
        for _ in range(2):  # no rid: keyed by kind and payload
            batch.quarantine_record(conn, {"kind": "event", "n": 1}, "event", "bad")
        batch.quarantine_record(conn, {"kind": "event", "n": 2}, "event", "bad")
    rows = quarantined(engine)
    assert len(rows) == 3 and rows[0] == ("r1", "return")
    # a batch that runs into the same records again stores nothing new and stays whole
    assert write(engine, [{"kind": "mystery", "rid": "r1"}]).quarantined == 1
    assert len(quarantined(engine)) == 3


def test_the_migration_keeps_the_first_row_of_each_record(db_url):
    engine = store_engine.get_engine(db_url)
    cfg = store_engine.alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0005")
    table = Quarantine.__table__
    row = {"kind": "return", "error": "e", "payload_bytes": 1}
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {**row, "rid": "r1", "payload": "first", "stored_at": NOW},
                {**row, "rid": "r1", "payload": "again", "stored_at": NOW},
                {**row, "rid": None, "payload": "{}", "stored_at": NOW},
                {**row, "rid": None, "payload": "{}", "stored_at": NOW},
                {**row, "rid": None, "payload": '{"other": 1}', "stored_at": NOW},
                {**row, "rid": "r2", "payload": "only", "stored_at": NOW},
            ],
        )
    store_engine.upgrade(engine)
    with engine.connect() as conn:
        rows = conn.execute(select(table.c.rid, table.c.payload).order_by(table.c.id)).all()
    assert [payload for _, payload in rows] == ["first", "{}", '{"other": 1}', "only"]
    assert rows[0][0] == "r1" and rows[3][0] == "r2"
    assert rows[1][0] == batch.quarantine_key(None, "return", "{}")
    assert rows[2][0] != rows[1][0]
