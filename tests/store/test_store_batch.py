"""Batches of returns, events and loads against real SQLite and real PostgreSQL."""

import uuid

from sqlalchemy import select

from saltext_fleet.core.inventory import build_inventory
from saltext_fleet.store import batch, queries
from saltext_fleet.store.models import (
    Event,
    InventorySnapshot,
    Job,
    Node,
    NodeInventory,
    Quarantine,
    Return,
)
from tests.support.store import count, write


def ret(minion="m1", jid="20261123120000000001", fun="test.ping", value=True, **extra):
    return {
        "kind": "return",
        "rid": uuid.uuid4().hex,
        "ret": {
            "id": minion,
            "jid": jid,
            "fun": fun,
            "return": value,
            "retcode": 0,
            "success": True,
            **extra,
        },
    }


def inventory(packages=None):
    """An inventory document as fleet.inventory returns it, with its real digest."""
    return build_inventory(packages or {"deb": {"bash": "5.2"}}, {}, {"os": "Debian"})


def test_returns_are_stored_once_even_when_replayed(engine):
    records = [ret(minion=f"m{i}") for i in range(50)]
    assert write(engine, records).stored == 50
    write(engine, records)  # a replay of the same batch
    assert count(engine, Return) == 50
    assert queries.get_jid(engine, "20261123120000000001")["m7"] == {
        "return": True,
        "retcode": 0,
        "success": True,
    }
    assert count(engine, Node) == 50


def test_a_rejected_record_is_quarantined_and_the_batch_survives(engine, monkeypatch):
    monkeypatch.setattr(batch, "MAX_RECORD_BYTES", 10_000)
    good = [ret(minion=f"ok{i}") for i in range(10)]
    huge = ret(minion="huge", value="x" * 20_000)
    nul = ret(minion="nul", value="before\x00after")
    not_a_mapping = {"kind": "return", "rid": uuid.uuid4().hex, "ret": ["odd"]}
    hostile_id = ret(minion="y" * 300)
    result = write(engine, good + [huge, nul, not_a_mapping, hostile_id])
    stored = {m for (m,) in engine.connect().execute(select(Return.minion_id))}
    assert {f"ok{i}" for i in range(10)} <= stored
    assert "huge" not in stored and "y" * 300 not in stored
    expected_quarantine = 3
    if engine.dialect.name == "postgresql":
        # JSONB cannot hold U+0000: PostgreSQL rejects it, and only that record is lost to
        # the quarantine (with the error), never the batch.
        assert "nul" not in stored
        expected_quarantine += 1
    else:
        assert "nul" in stored
    assert result.quarantined == expected_quarantine == count(engine, Quarantine)
    with engine.connect() as conn:
        errors = [e for (e,) in conn.execute(select(Quarantine.error))]
        payloads = [p for (p,) in conn.execute(select(Quarantine.payload))]
    assert any("exceeds" in e for e in errors)
    assert any("must be a mapping" in e for e in errors)
    if engine.dialect.name == "postgresql":
        assert any("\\u0000" in e or "Unicode" in e or "0000" in e for e in errors)
        assert any("before\\u0000after" in p for p in payloads)


def test_odd_shapes_are_stored_as_json(engine):
    record = ret(minion="odd", value={"b": b"\xff\xfe", "s": {3, 1, 2}, 5: "int key", "t": (1, 2)})
    write(engine, [record])
    stored = queries.get_jid(engine, "20261123120000000001")["odd"]["return"]
    assert stored == {"b": {"__bytes_b64__": "//4="}, "s": [1, 2, 3], "5": "int key", "t": [1, 2]}


def test_events_are_stored_and_replays_ignored(engine):
    events = [
        {"kind": "event", "rid": uuid.uuid4().hex, "tag": f"salt/test/{i}", "data": {"i": i}}
        for i in range(20)
    ]
    write(engine, events)
    write(engine, events[:5])
    assert count(engine, Event) == 20


def test_publish_load_is_never_overwritten_by_a_return_load(engine):
    jid = "20261123120000000002"
    publish = {
        "kind": "load",
        "rid": uuid.uuid4().hex,
        "jid": jid,
        "publish": True,
        "minions": ["a", "b"],
        "load": {"fun": "test.ping", "tgt": "*", "tgt_type": "glob", "arg": [], "user": "root"},
    }
    from_return = {
        "kind": "load",
        "rid": uuid.uuid4().hex,
        "jid": jid,
        "publish": False,
        "load": {"fun": "test.ping", "id": "a", "return": True, "jid": jid},
    }
    write(engine, [from_return])  # a return's load may arrive first
    write(engine, [publish])
    write(engine, [from_return])
    load = queries.get_load(engine, jid)
    assert load["tgt"] == "*" and load["user"] == "root" and "return" not in load
    assert load["Minions"] == ["a", "b"]
    write(engine, [{"kind": "minions", "rid": uuid.uuid4().hex, "jid": jid, "minions": ["c"]}])
    assert queries.get_load(engine, jid)["Minions"] == ["a", "b", "c"]
    write(
        engine,
        [
            {
                "kind": "endtime",
                "rid": uuid.uuid4().hex,
                "jid": jid,
                "endtime": "2026, Nov 23 12:00:01.000000",
            }
        ],
    )
    assert queries.get_endtime(engine, jid).startswith("2026")


def test_inventory_returns_are_ingested_content_addressed(engine):
    a, b = inventory(), inventory({"deb": {"bash": "5.3"}})
    da, db = a["digest"], b["digest"]
    r1 = write(
        engine,
        [
            ret(minion="n1", fun="fleet.inventory", value=a),
            ret(minion="n2", fun="fleet.inventory", value=inventory()),
        ],
    )
    assert sorted(r1.inventory_changed) == [("n1", da, None), ("n2", da, None)]
    assert count(engine, InventorySnapshot) == 1  # the same inventory is stored once
    # An unchanged inventory writes no snapshot and announces nothing.
    r2 = write(engine, [ret(minion="n1", fun="fleet.inventory", value=inventory())])
    assert r2.inventory_changed == [] and count(engine, InventorySnapshot) == 1
    r3 = write(engine, [ret(minion="n1", fun="fleet.inventory", value=b)])
    assert r3.inventory_changed == [("n1", db, da)]
    assert count(engine, InventorySnapshot) == 2
    assert count(engine, NodeInventory) == 3
    with engine.connect() as conn:
        node = conn.execute(select(Node).where(Node.minion_id == "n1")).one()
    assert node.inventory_digest == db and node.facts == {"os": "Debian"}


def test_the_digest_a_minion_reports_is_not_trusted(engine):
    """Y claims the digest X will report next, with other content: X's later report is stored
    with its own content, and Y's content under the digest of Y's content."""
    x_next = inventory({"deb": {"bash": "5.3", "curl": "8.0"}})
    forged = {
        **inventory({"deb": {"bash": "5.3", "backdoor": "6.6.6"}}),
        "digest": x_next["digest"],
    }
    first = write(engine, [ret(minion="y", fun="fleet.inventory", value=forged)])
    forged_digest = build_inventory(forged["packages"], {}, {"os": "Debian"})["digest"]
    assert first.inventory_changed == [("y", forged_digest, None)]
    assert forged_digest != x_next["digest"]
    write(engine, [ret(minion="x", fun="fleet.inventory", value=x_next)])
    with engine.connect() as conn:
        node = conn.execute(select(Node).where(Node.minion_id == "x")).one()
        stored = conn.execute(
            select(InventorySnapshot.packages).where(
                InventorySnapshot.digest == node.inventory_digest
            )
        ).scalar_one()
    assert node.inventory_digest == x_next["digest"]
    assert stored == {"deb": {"bash": "5.3", "curl": "8.0"}}


def test_malformed_inventory_does_not_lose_the_return(engine):
    result = write(engine, [ret(minion="n1", fun="fleet.inventory", value={"digest": "short"})])
    assert result.inventory_changed == []
    assert count(engine, Return) == 1 and count(engine, InventorySnapshot) == 0


def test_corrupt_and_unknown_records_are_quarantined(engine):
    result = write(
        engine,
        [
            {"__corrupt__": True, "error": "bad crc", "raw": b"\x00\x01"},
            {"kind": "mystery", "rid": "r1"},
            ret(),
        ],
    )
    assert result.quarantined == 2 and result.stored == 1


def test_jobs_listing_and_cleanup(engine):
    old_jid, new_jid = "20000101000000000000", "20991231000000000000"
    for jid in (old_jid, new_jid):
        write(
            engine,
            [
                {
                    "kind": "load",
                    "rid": uuid.uuid4().hex,
                    "jid": jid,
                    "publish": True,
                    "load": {
                        "fun": "cmd.run",
                        "arg": ["id"],
                        "tgt": "*",
                        "tgt_type": "glob",
                        "user": "root",
                    },
                },
                ret(jid=jid, fun="cmd.run", value="uid=0"),
            ],
        )
    assert [jid for jid, _ in queries.iter_jobs(engine)] == [old_jid, new_jid]
    assert queries.get_fun(engine, "cmd.run") == {"m1": new_jid}
    assert queries.clean_old_jobs(engine, 86400) == 1
    assert [jid for jid, _ in queries.iter_jobs(engine)] == [new_jid]
    assert list(queries.get_jid(engine, old_jid)) == []
    assert count(engine, Job) == 1


def test_concurrent_loads_of_one_job_from_several_processes(engine):
    """Master workers write the publish load and return loads of the same jid at once."""
    import threading

    jids = [f"2026112312000000{n:04d}" for n in range(40)]
    errors = []

    def worker(publish):
        try:
            for jid in jids:
                load = (
                    {"fun": "test.ping", "tgt": "*", "user": "root"}
                    if publish
                    else {"fun": "test.ping", "id": "m", "return": True}
                )
                result = write(
                    engine,
                    [
                        {
                            "kind": "load",
                            "rid": uuid.uuid4().hex,
                            "jid": jid,
                            "publish": publish,
                            "minions": ["a"] if publish else None,
                            "load": load,
                        }
                    ],
                )
                assert result.quarantined == 0
                write(
                    engine,
                    [{"kind": "minions", "rid": uuid.uuid4().hex, "jid": jid, "minions": ["b"]}],
                )
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(p,)) for p in (True, False, False, True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert count(engine, Quarantine) == 0
    for jid in jids:
        load = queries.get_load(engine, jid)
        assert load["tgt"] == "*" and "return" not in load
        assert load["Minions"] == ["a", "b"]


def test_batches_of_many_jobs_from_two_writers_never_deadlock(engine):
    """Two master processes write batches holding the same jobs' loads and minions in
    opposite orders (seen: DeadlockDetected, quarantined). Locks are taken in jid order, so
    nothing deadlocks and nothing is quarantined."""
    import threading

    jids = [f"2026112913000000{n:04d}" for n in range(30)]
    errors = []

    def records(order):
        out = []
        for jid in order:
            out.append(
                {
                    "kind": "load",
                    "rid": uuid.uuid4().hex,
                    "jid": jid,
                    "publish": False,
                    "minions": None,
                    "load": {"fun": "test.ping", "id": "m", "return": True},
                }
            )
            out.append({"kind": "minions", "rid": uuid.uuid4().hex, "jid": jid, "minions": ["m"]})
        return out

    def worker(reverse):
        try:
            for _ in range(15):
                order = list(reversed(jids)) if reverse else list(jids)
                write(engine, records(order))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(r,)) for r in (False, True, False, True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert count(engine, Quarantine) == 0


def test_deadlocks_are_retried_not_quarantined():
    from sqlalchemy.exc import OperationalError

    class Deadlock(Exception):
        sqlstate = "40P01"

    class Unique(Exception):
        sqlstate = "23505"

    assert batch.is_transient(OperationalError("UPDATE jobs", {}, Deadlock()))
    assert not batch.is_transient(OperationalError("INSERT", {}, Unique()))
    assert not batch.is_transient(ValueError("x"))
