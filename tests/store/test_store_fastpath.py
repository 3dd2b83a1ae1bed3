"""The fast write path: JSON encoded once, COPY on PostgreSQL, batched inventory ingest,
reading ahead in the writer, announcements off the flusher. Real SQLite and real PostgreSQL.

Every test checks that the guarantees of the slow path still hold: exactly once by rid, one
bad record quarantined without losing its batch, inventories ingested as one by one.
"""

import json
import logging
import threading
import time
import uuid

import pytest
from sqlalchemy import select, text

from saltext_fleet.core.inventory import build_inventory
from saltext_fleet.store import batch, spool
from saltext_fleet.store import engine as store_engine
from saltext_fleet.store import writer as store_writer
from saltext_fleet.store.models import (
    Event,
    InventorySnapshot,
    Node,
    NodeInventory,
    Quarantine,
    Return,
)
from tests.support.store import count, write

JID = "20261123120000000001"


@pytest.fixture
def pg_engine(pg_url_factory):
    eng = store_engine.get_engine(pg_url_factory())
    store_engine.ensure_schema(eng)
    return eng


def ret(minion="m1", jid=JID, fun="test.ping", value=True, rid=None, **extra):
    return {
        "kind": "return",
        "rid": rid or uuid.uuid4().hex,
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


def event(tag="salt/test", data=None, rid=None):
    return {
        "kind": "event",
        "rid": rid or uuid.uuid4().hex,
        "tag": tag,
        "data": data if data is not None else {"x": 1},
        "master_id": "master",
    }


#: The real digest of the last inventory made for each label (the master recomputes it).
DIGESTS: dict[str, str] = {}


def inventory(label, packages=None, facts=None):
    """An inventory document with its real digest; default content differs by ``label``."""
    curl = "7.88" if label == "a" else f"7.88.{ord(label[0]) - 96}"
    inv = build_inventory(
        packages or {"deb": {"bash": "5.2", "curl": curl}},
        {"deb": {"bash": {"name": "bash", "version": "5.2"}}},
        facts or {"os": "Debian"},
    )
    DIGESTS[label] = inv["digest"]
    return inv


def dg(label):
    return DIGESTS[label]


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def batch_log():
    """Warnings of the batch module (pytest's caplog is off under ``-p no:logging``)."""
    handler = _Collect()
    logger = logging.getLogger(batch.__name__)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def copy_fallbacks(log):
    return [r for r in log.records if "COPY of a" in r.getMessage()]


# -- what is stored -------------------------------------------------------------------------


def test_return_and_full_ret_columns_hold_the_load(engine):
    inv = inventory("a")
    records = [
        ret(minion="n1", fun="fleet.inventory", value=inv),
        ret(minion="n2", fun="cmd.run", value="line one\n\ttab \\ backslash \u00e9\u4e2d"),
        ret(minion="n3", value=None),
    ]
    no_return = ret(minion="n4")
    del no_return["ret"]["return"]
    write(engine, records + [no_return])
    with engine.connect() as conn:
        rows = {
            m: (r, full)
            for m, r, full in conn.execute(select(Return.minion_id, Return.ret, Return.full_ret))
        }
    assert rows["n1"][0] == inv
    assert rows["n1"][1] == records[0]["ret"]
    assert rows["n2"][0] == "line one\n\ttab \\ backslash \u00e9\u4e2d"
    assert rows["n2"][1]["return"] == rows["n2"][0]
    assert rows["n3"] == (None, records[2]["ret"])
    assert "return" not in rows["n4"][1] and rows["n4"][1]["id"] == "n4"


def test_payloads_json_cannot_encode_take_the_slow_path(engine):
    value = {"b": b"\xff\xfe", "s": {3, 1, 2}, 5: "int key", "t": (1, 2), "nan": float("nan")}
    write(
        engine,
        [
            ret(minion="odd", value=value, extra=b"bytes in the load"),
            event(data={"raw": b"\xff\x01", "ok": "text"}),
        ],
    )
    expected = {
        "b": {"__bytes_b64__": "//4="},
        "s": [1, 2, 3],
        "5": "int key",
        "t": [1, 2],
        "nan": "nan",
    }
    with engine.connect() as conn:
        stored, full = conn.execute(select(Return.ret, Return.full_ret)).one()
        data = conn.execute(select(Event.data)).scalar()
    assert stored == expected
    assert full["extra"] == "bytes in the load" and full["return"] == expected
    assert data == {"raw": {"__bytes_b64__": "/wE="}, "ok": "text"}
    assert count(engine, Quarantine) == 0


def test_to_json_encodes_ready_values_as_they_are_and_the_rest_via_jsonable():
    text_, value = batch.to_json({"a": [1, 2.5, None, True], "b": "\u00e9"})
    assert json.loads(text_) == {"a": [1, 2.5, None, True], "b": "\u00e9"} == value
    assert text_.isascii()
    text_, value = batch.to_json({"inf": float("inf"), "set": {2, 1}})
    assert value == {"inf": "inf", "set": [1, 2]} == json.loads(text_)
    cycle = {}
    cycle["self"] = cycle
    with pytest.raises(batch.RecordRejected):
        batch.to_json(cycle)


# -- exactly once ---------------------------------------------------------------------------


def test_replays_and_duplicate_rids_are_stored_once(engine, batch_log):
    first = [ret(minion=f"m{i}") for i in range(20)]
    events = [event(tag=f"salt/test/{i}") for i in range(10)]
    write(engine, first + events)
    # A replay of the whole batch plus new records, one of them twice in the same batch.
    new = [ret(minion=f"new{i}") for i in range(5)]
    again = dict(new[0])
    new_events = [event(tag="salt/test/new")]
    result = write(engine, first + new + [again] + events + new_events + new_events)
    assert count(engine, Return) == 25
    assert count(engine, Event) == 11
    assert count(engine, Quarantine) == 0
    assert result.quarantined == 0
    if engine.dialect.name == "postgresql":
        assert copy_fallbacks(batch_log) == []  # replays never make the COPY fail


def test_a_duplicate_that_races_in_makes_copy_fall_back_and_stays_once(
    pg_engine, batch_log, monkeypatch
):
    records = [ret(minion=f"m{i}") for i in range(10)]
    write(pg_engine, [records[3]])
    # Another writer stored that rid between the look-up and the COPY: the look-up saw nothing.
    monkeypatch.setattr(
        batch.RETURNS_TABLE,
        "existing_sql",
        text("SELECT rid FROM returns WHERE false AND rid = ANY(:rids)"),
    )
    result = write(pg_engine, records)
    assert copy_fallbacks(batch_log), "the COPY should have failed on the duplicate"
    assert count(pg_engine, Return) == 10 and result.quarantined == 0


# -- isolation ------------------------------------------------------------------------------


def test_nul_records_are_isolated_and_the_copy_of_the_rest_succeeds(pg_engine, batch_log):
    good = [ret(minion=f"ok{i}") for i in range(10)]
    nul_ret = ret(minion="nul", value="before\x00after")
    nul_event = event(tag="salt/nul", data={"v": "a\x00b"})
    good_events = [event(tag=f"salt/ok/{i}") for i in range(5)]
    result = write(pg_engine, good + [nul_ret] + good_events + [nul_event])
    assert copy_fallbacks(batch_log) == []
    assert count(pg_engine, Return) == 10 and count(pg_engine, Event) == 5
    assert result.quarantined == 2 == count(pg_engine, Quarantine)
    with pg_engine.connect() as conn:
        rids = {r for (r,) in conn.execute(select(Quarantine.rid))}
    assert rids == {nul_ret["rid"], nul_event["rid"]}


def test_a_row_the_copy_cannot_take_is_isolated_and_quarantined(engine, batch_log):
    # A jid within the id limit but longer than the jid column: PostgreSQL refuses it
    # (the COPY fails, the batch is retried row by row); SQLite stores it.
    long_jid = "9" * 100
    good = [ret(minion=f"ok{i}") for i in range(10)]
    odd = ret(minion="odd", jid=long_jid)
    result = write(engine, good[:5] + [odd] + good[5:])
    stored = {m for (m,) in engine.connect().execute(select(Return.minion_id))}
    assert {f"ok{i}" for i in range(10)} <= stored
    if engine.dialect.name == "postgresql":
        assert copy_fallbacks(batch_log)
        assert "odd" not in stored and result.quarantined == 1 == count(engine, Quarantine)
    else:
        assert "odd" in stored and result.quarantined == 0


def test_records_that_cannot_be_built_are_quarantined_around_the_copy(engine):
    records = [
        ret(minion="a"),
        {"kind": "return", "rid": uuid.uuid4().hex, "ret": "not a mapping"},
        ret(minion="b"),
        {"kind": "event", "rid": uuid.uuid4().hex, "tag": None, "data": {}},
        ret(minion="y" * 300),
        {"kind": "return", "ret": {"id": "norid", "jid": JID}},
    ]
    result = write(engine, records)
    assert result.stored == 2 and result.quarantined == 4
    assert count(engine, Return) == 2 and count(engine, Quarantine) == 4


def test_values_the_driver_cannot_send_are_isolated(engine):
    # A lone surrogate in a minion id cannot be encoded as UTF-8 by any driver.
    good = [ret(minion=f"ok{i}") for i in range(5)]
    bad = ret(minion="bad\udc80")
    result = write(engine, good[:2] + [bad] + good[2:])
    stored = {m for (m,) in engine.connect().execute(select(Return.minion_id))}
    assert stored == {f"ok{i}" for i in range(5)}
    assert result.quarantined == 1 == count(engine, Quarantine)
    with engine.connect() as conn:
        assert conn.execute(select(Quarantine.rid)).scalar() == bad["rid"]


def test_rids_that_are_not_short_strings_are_quarantined(engine):
    records = [ret(minion="a"), ret(minion="b", rid="r" * 65), ret(minion="c")]
    records[2]["rid"] = 12345
    result = write(engine, records + [event(rid="e" * 100)])
    assert result.stored == 1 and result.quarantined == 3
    assert count(engine, Return) == 1 and count(engine, Event) == 0


# -- inventories ------------------------------------------------------------------------------


def test_inventories_of_one_batch_are_ingested_as_one_by_one(engine):
    a, b = inventory("a"), inventory("b", {"deb": {"bash": "5.3"}}, {"os": "Debian 13"})
    result = write(
        engine,
        [
            ret(minion="n1", fun="fleet.inventory", value=a),
            ret(minion="n2", fun="fleet.inventory", value=a),
            ret(minion="n1", fun="fleet.inventory", value=b),
            ret(minion="n1", fun="fleet.inventory", value=b),  # unchanged: nothing new
            ret(minion="n3", fun="fleet.inventory", value={"digest": "short"}),
            ret(minion="n4", fun="fleet.inventory", value=a, success=False),
            # A job return event is stored as an event, never ingested: anybody can fire it.
            event(
                tag=f"salt/job/{JID}/ret/n5",
                data={"id": "n5", "fun": "fleet.inventory", "return": b, "success": True},
            ),
        ],
    )
    assert result.inventory_changed == [
        ("n1", dg("a"), None),
        ("n2", dg("a"), None),
        ("n1", dg("b"), dg("a")),
    ]
    assert count(engine, InventorySnapshot) == 2
    assert count(engine, NodeInventory) == 3
    assert count(engine, Event) == 1
    assert count(engine, Return) == 6 and count(engine, Quarantine) == 0
    with engine.connect() as conn:
        nodes = {n.minion_id: n for n in conn.execute(select(Node)).all()}
        history = conn.execute(
            select(NodeInventory.minion_id, NodeInventory.digest, NodeInventory.previous_digest)
            .where(NodeInventory.minion_id == "n1")
            .order_by(NodeInventory.id)
        ).all()
        packages = conn.execute(
            select(InventorySnapshot.packages, InventorySnapshot.package_count).where(
                InventorySnapshot.digest == dg("a")
            )
        ).one()
    assert nodes["n1"].inventory_digest == dg("b") and nodes["n1"].facts == {"os": "Debian 13"}
    assert nodes["n2"].inventory_digest == dg("a") and nodes["n2"].inventory_at is not None
    assert nodes["n3"].inventory_digest is None and nodes["n4"].inventory_digest is None
    assert "n5" not in nodes
    assert [tuple(h) for h in history] == [("n1", dg("a"), None), ("n1", dg("b"), dg("a"))]
    assert packages == (a["packages"], 2)
    # The next batch sees what this one stored: unchanged inventories announce nothing.
    again = write(engine, [ret(minion="n1", fun="fleet.inventory", value=b)])
    assert again.inventory_changed == [] and count(engine, NodeInventory) == 3


def test_when_the_batched_ingest_fails_each_inventory_is_ingested_alone(engine, monkeypatch):
    from sqlalchemy.exc import DBAPIError

    def refuse(conn, items):
        raise DBAPIError("INSERT ...", None, ValueError("refused"))

    monkeypatch.setattr(batch, "_ingest_inventories", refuse)
    result = write(
        engine,
        [
            ret(minion="n1", fun="fleet.inventory", value=inventory("a")),
            ret(minion="n2", fun="fleet.inventory", value=inventory("b")),
        ],
    )
    assert sorted(result.inventory_changed) == sorted(
        [("n1", dg("a"), None), ("n2", dg("b"), None)]
    )
    assert count(engine, InventorySnapshot) == 2 and count(engine, Return) == 2


# -- the spool: reading ahead ----------------------------------------------------------------


def test_read_batch_after_a_position_reads_what_follows(tmp_path):
    sp = spool.Spool.open(tmp_path, segment_bytes=300)  # a few records per segment
    sp.append_many({"i": i, "pad": "x" * 50} for i in range(20))
    first = sp.read_batch(6)
    assert [r["i"] for _, r in first] == list(range(6))
    ahead = sp.read_batch(6, after=first[-1][0])
    assert [r["i"] for _, r in ahead] == list(range(6, 12))
    assert [p.index for p, _ in ahead] == list(range(6, 12))
    # Committing the first batch (which drops its segments) does not disturb the next read.
    sp.commit(first[-1][0])
    further = sp.read_batch(100, after=ahead[-1][0])
    assert [r["i"] for _, r in further] == list(range(12, 20))
    # A position at or before the checkpoint is ignored: read from the checkpoint.
    assert [r["i"] for _, r in sp.read_batch(3, after=first[0][0])] == [6, 7, 8]
    sp.commit(ahead[-1][0])
    sp.commit(further[-1][0])
    assert sp.read_batch(5, after=further[-1][0]) == [] and sp.depth() == 0
    sp.close()


# -- the writer ------------------------------------------------------------------------------


def _writer(db_url, tmp_path, **kw):
    return store_writer.Writer(db_url, str(tmp_path / "spool"), batch_records=7, **kw)


def test_writer_reads_ahead_and_stores_every_record_once_in_order(db_url, tmp_path):
    writer = _writer(db_url, tmp_path)
    try:
        for chunk in range(10):
            writer.submit_many(ret(minion=f"m{chunk}-{i}") for i in range(10))
            writer.submit(event(tag=f"salt/test/{chunk}"))
        assert writer.drain(60)
        engine = store_engine.get_engine(db_url)
        assert count(engine, Return) == 100 and count(engine, Event) == 10
        with engine.connect() as conn:
            order = [m for (m,) in conn.execute(select(Return.minion_id).order_by(Return.id))]
        assert order == [f"m{c}-{i}" for c in range(10) for i in range(10)]
        assert writer.pending() == 0 and writer.last_error is None
    finally:
        writer.close(5)


def test_a_short_read_ahead_is_topped_up_with_what_came_since(db_url, tmp_path, monkeypatch):
    """The next batch takes the records spooled while the one before was written (up to the
    batch size), in spool order, after what the read-ahead read: a stream is written in fewer,
    larger batches."""
    monkeypatch.setattr(store_writer.Writer, "_run", lambda self: None)  # no flusher: by hand
    writer = store_writer.Writer(db_url, str(tmp_path / "spool"), batch_records=8)
    try:
        writer.submit_many(ret(minion=f"m{i}", rid=f"r{i}") for i in range(3))
        ahead = writer.spool.read_batch(8, 1 << 20)
        writer.submit_many(ret(minion=f"m{i}", rid=f"r{i}") for i in range(3, 12))
        batch_ = writer._topped_up(writer.spool, ahead)
        assert [record["rid"] for _, record in batch_] == [f"r{i}" for i in range(8)]
        rest = writer.spool.read_batch(8, 1 << 20, after=batch_[-1][0])
        assert [record["rid"] for _, record in rest] == [f"r{i}" for i in range(8, 12)]
        assert writer._topped_up(writer.spool, batch_) == batch_  # full: as it is
        assert writer._topped_up(writer.spool, []) == []
    finally:
        writer.spool.close()


def test_a_failed_write_drops_the_read_ahead_and_replays_from_the_checkpoint(
    db_url, tmp_path, monkeypatch
):
    calls = {"n": 0}
    real = batch.write_batch

    def flaky(conn, records):
        calls["n"] += 1
        if calls["n"] == 2:
            raise ConnectionError("the database went away")
        return real(conn, records)

    monkeypatch.setattr(store_writer, "RETRY_MIN", 0.05)
    monkeypatch.setattr(store_writer.batch_mod, "write_batch", flaky)
    writer = _writer(db_url, tmp_path)
    try:
        writer.submit_many(ret(minion=f"m{i}") for i in range(30))
        assert writer.drain(60)
        engine = store_engine.get_engine(db_url)
        assert count(engine, Return) == 30 and count(engine, Quarantine) == 0
        assert calls["n"] >= 6  # 30 records in batches of 7, one of them written twice
    finally:
        writer.close(5)


def test_inventory_changes_are_announced_in_order_off_the_flusher(db_url, tmp_path):
    announced = []
    flusher = []

    def slow_callback(tag, data):
        flusher.append(threading.current_thread().name)
        time.sleep(0.2)
        assert tag == "fleet/inventory/changed"
        announced.append((data["id"], data["digest"], data["previous"]))

    writer = _writer(db_url, tmp_path, on_announce=slow_callback)
    try:
        writer.submit_many(
            ret(minion=f"n{i}", fun="fleet.inventory", value=inventory("abcdef"[i]))
            for i in range(6)
        )
        assert writer.drain(60)
        # The announcements run in their own thread, after the commits; drain() does not
        # wait for them (an event bus that is slow must not hold up readers).
        assert len(announced) < 6
        assert writer.wait_announced(30)
        assert announced == [(f"n{i}", dg("abcdef"[i]), None) for i in range(6)]
        assert set(flusher) == {"saltext-fleet-notifier"}
    finally:
        writer.close(5)


def test_a_failing_announcement_loses_nothing(db_url, tmp_path):
    def broken(*_):
        raise RuntimeError("the event bus is gone")

    writer = _writer(db_url, tmp_path, on_announce=broken)
    try:
        writer.submit(ret(minion="n1", fun="fleet.inventory", value=inventory("a")))
        assert writer.drain(30)
        engine = store_engine.get_engine(db_url)
        assert count(engine, InventorySnapshot) == 1 and count(engine, Return) == 1
    finally:
        writer.close(5)


def test_get_writer_hands_out_one_writer_per_database_and_keeps_the_callback(db_url, tmp_path):
    spool_dir = str(tmp_path / "spool")

    def cb(*_):
        return None

    try:
        w1 = store_writer.get_writer(db_url, spool_dir)
        w2 = store_writer.get_writer(db_url, spool_dir, cb)
        w3 = store_writer.get_writer(db_url, spool_dir)
        assert w1 is w2 is w3 and w3.on_announce is cb
        assert store_writer.existing_writer(db_url, spool_dir) is w1
    finally:
        store_writer.close_all(5)


# -- returns and events spooled as JSON text (encode_record) ---------------------------------


def _mixed_batch() -> list[dict]:
    """Returns and events of every shape the write path treats apart."""
    shared = inventory("a")
    liar = dict(inventory("b"), digest=DIGESTS["a"])  # claims another content's digest
    state = {"pkg_|-curl_|-curl_|-installed": {"result": None, "changes": {"new": "1"}}}
    odd = {"b": b"\xff\xfe", "s": {3, 1, 2}, 5: "int key", "nan": float("nan")}
    no_return = ret(minion="n9", rid="r-noreturn")
    del no_return["ret"]["return"]
    return [
        ret(minion="n1", fun="fleet.inventory", value=shared, rid="r-inv1"),
        ret(minion="n2", fun="fleet.inventory", value=json.loads(json.dumps(shared)), rid="r-inv2"),
        ret(minion="n3", fun="fleet.inventory", value=liar, rid="r-liar"),
        ret(minion="n4", fun="grains.items", value={"os": "MacOS", "osrelease": "15.1"}, rid="r-g"),
        ret(minion="n5", fun="state.apply", value=state, fun_args=["test=True"], rid="r-st"),
        ret(minion="n6", fun="cmd.run", value="db_password=hunter2 and more", rid="r-cmd"),
        ret(minion="n7", value=odd, rid="r-odd"),
        ret(minion="n8", value="nul \u0000 inside", rid="r-nul"),
        ret(minion="n8", jid="9" * 100, rid="r-longjid"),  # the column refuses it
        no_return,
        event(tag="salt/job/1/ret/n1", data={"return": "x", "token": "abc"}, rid="e-1"),
        event(tag="odd", data={"raw": b"\xff\x01"}, rid="e-2"),
        event(tag="nul", data={"t": "a\u0000b"}, rid="e-3"),
    ]


def _stored(engine) -> dict:
    with engine.connect() as conn:
        return {
            "returns": sorted(
                conn.execute(
                    select(
                        Return.rid,
                        Return.jid,
                        Return.minion_id,
                        Return.fun,
                        Return.success,
                        Return.retcode,
                        Return.ret,
                        Return.full_ret,
                    )
                ).all(),
                key=repr,
            ),
            "events": sorted(
                conn.execute(select(Event.rid, Event.tag, Event.data)).all(), key=repr
            ),
            "nodes": sorted(
                conn.execute(
                    select(Node.minion_id, Node.facts, Node.inventory_digest, Node.pending_states)
                ).all(),
                key=repr,
            ),
            "snapshots": sorted(
                conn.execute(
                    select(
                        InventorySnapshot.digest,
                        InventorySnapshot.packages,
                        InventorySnapshot.facts,
                        InventorySnapshot.package_count,
                    )
                ).all(),
                key=repr,
            ),
            "history": sorted(
                conn.execute(
                    select(
                        NodeInventory.minion_id, NodeInventory.digest, NodeInventory.previous_digest
                    )
                ).all(),
                key=repr,
            ),
            "quarantined": sorted(conn.execute(select(Quarantine.kind)).scalars()),
        }


def _wipe(engine):
    with engine.begin() as conn:
        for table in (
            "node_inventory",
            "returns",
            "events",
            "quarantine",
            "nodes",
            "inventory_snapshots",
        ):
            conn.execute(text(f"DELETE FROM {table}"))


def test_encoded_records_store_exactly_what_plain_records_store(engine):
    """The master's writer spools returns and events as JSON text (``encode_record``); the
    write of such records stores the same rows as the write of the records as Salt handed
    them over: returns, events, nodes, snapshots, history, what is quarantined. Records
    spooled before (plain) are still written."""
    import copy

    plain = _mixed_batch()
    result_plain = write(engine, copy.deepcopy(plain))
    before = _stored(engine)
    if engine.dialect.name == "postgresql":  # SQLite takes NUL and any length
        assert before["quarantined"], "the batch must exercise the isolation path"
    assert len(before["returns"]) >= 8 and len(before["events"]) >= 2
    _wipe(engine)
    batch.INVENTORY_MEMO.clear()
    encoded = [batch.encode_record(batch.redact_record(copy.deepcopy(r))) for r in plain]
    assert all("ret" not in r and isinstance(r["ret_rest_json"], str) for r in encoded[:10])
    assert all("data" not in r and isinstance(r["data_json"], str) for r in encoded[10:])
    result_encoded = write(engine, encoded)
    after = _stored(engine)
    # secrets: redact_record masked them before encoding; the plain path masks them at write
    assert after == before
    assert result_encoded.inventory_changed == result_plain.inventory_changed
    assert result_encoded.states_run == result_plain.states_run
    # nothing an unredacted record holds is ever encoded as it is
    raw = {"kind": "return", "rid": "x", "ret": {"id": "m", "jid": "1", "password": "p"}}
    assert batch.encode_record(dict(raw)) == raw


def test_a_payload_that_cannot_be_encoded_is_spooled_and_written_as_before(db_url, tmp_path):
    """An object whose ``repr`` raises cannot be encoded when it is spooled: the writer spools
    the record as it is (the spool's own fallback) and writes it; the caller (Salt's returner
    call) sees no error and the return is not lost."""

    class Odd:
        def __repr__(self):
            raise RuntimeError("no repr")

    writer = _writer(db_url, tmp_path)
    try:
        writer.submit(ret(minion="odd", value={"x": Odd()}, rid="r-odd"))
        writer.submit(ret(minion="fine", rid="r-fine"))
        assert writer.drain(60)
        engine = store_engine.get_engine(db_url)
        with engine.connect() as conn:
            stored = set(conn.execute(select(Return.rid)).scalars())
            held = set(conn.execute(select(Quarantine.rid)).scalars())
        assert "r-fine" in stored and "r-odd" in stored | held
    finally:
        writer.close(5)


def test_a_minion_cannot_poison_the_inventory_memo(engine):
    """Inventories decoded once per text (``INVENTORY_MEMO``): another minion sending the very
    same text gets its own node rows, a minion claiming a neighbour's digest for other content
    is stored under the digest of what it sent, and the memo stays bounded."""
    batch.INVENTORY_MEMO.clear()
    write(engine, [batch.encode_record(batch.redact_record(r)) for r in _mixed_batch()[:3]])
    with engine.connect() as conn:
        digests = dict(conn.execute(select(Node.minion_id, Node.inventory_digest)).all())
    assert digests["n1"] == digests["n2"] == DIGESTS["a"]
    assert digests["n3"] == DIGESTS["b"] != DIGESTS["a"]
    memo = batch._InventoryMemo(size=2)
    first = memo.value('{"a": 1}')
    assert memo.value('{"a": 1}') is first
    assert memo.digest(first, lambda: "d1") == "d1" and memo.digest(first, lambda: "other") == "d1"
    assert memo.digest({"a": 1}, lambda: "fresh") == "fresh"  # an equal but other object
    memo.value('{"b": 2}')
    memo.value('{"c": 3}')
    assert len(memo._entries) == 2 and memo.value('{"a": 1}') is not first
