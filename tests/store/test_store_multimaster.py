"""Hot-hot masters on one store, in each backend: the same return stored by two masters is one
row (its rid is derived from the return), only the master that inserted it ingests it, and
reactor work is claimed once for the fleet (``claims``)."""

import datetime as dt
import threading

import pytest
from sqlalchemy import select

from saltext_fleet.core.inventory import build_inventory
from saltext_fleet.master import keys as master_keys
from saltext_fleet.master import onboard as master_onboard
from saltext_fleet.store import audit as store_audit
from saltext_fleet.store import batch
from saltext_fleet.store import claims as store_claims
from saltext_fleet.store import drift as store_drift
from saltext_fleet.store import gate as store_gate
from saltext_fleet.store import writer as store_writer
from saltext_fleet.store.drift import results as drift_results
from saltext_fleet.store.models import AuditEvent, NodeInventory, Return
from tests.support.store import count, write

JID = "20261205120000000001"


def load(minion="n1", jid=JID, fun="test.echo", value="hi", stamp="2026-12-05T12:00:00", **extra):
    """A return load as a master's job cache gets it (``_stamp`` is each master's own)."""
    return {
        "id": minion,
        "jid": jid,
        "fun": fun,
        "fun_args": [value] if isinstance(value, str) else [],
        "return": value,
        "retcode": 0,
        "success": True,
        "cmd": "_return",
        "_stamp": stamp,
        **extra,
    }


def record(ret):
    """A return record as a master's writer spools it (its rid derived the writer's way)."""
    rec = {"kind": "return", "ret": ret}
    batch.redact_record(rec)
    rec["rid"] = batch.return_rid(rec["ret"])
    return rec


def test_the_rid_of_a_return_is_the_same_on_every_master():
    one = load(stamp="2026-12-05T12:00:00.000001+00:00")
    other = load(stamp="2026-12-05T12:00:00.900000+00:00", traceparent="00-abc-def-01")
    assert batch.return_rid(one) == batch.return_rid(other)
    assert len(batch.return_rid(one)) == 64
    # another job, another minion, another answer, another outcome: another return
    assert batch.return_rid(one) != batch.return_rid(load(jid="20261205120000000002"))
    assert batch.return_rid(one) != batch.return_rid(load(minion="n2"))
    assert batch.return_rid(one) != batch.return_rid(load(value="ho"))
    assert batch.return_rid(one) != batch.return_rid(load(success=False))
    # odd payloads still get an id (and are quarantined later)
    assert batch.return_rid("not a load") != batch.return_rid("not a load")


def test_the_writer_derives_the_rid_after_redaction(tmp_path):
    writer = store_writer.Writer("sqlite:///" + str(tmp_path / "never.db"), str(tmp_path / "s"))
    try:
        secret = load(value={"db_password": "hunter2"})
        rid = writer.submit({"kind": "return", "ret": secret})
        masked = load(value={"db_password": "***"})
        # the digest covers the masked return: no digest of a secret is ever kept
        assert rid == batch.return_rid(masked) != batch.return_rid(load(value={"x": "hunter2"}))
        # events keep random ids (each master's bus stamps its own)
        assert len(writer.submit({"kind": "event", "tag": "t", "data": {}})) == 32
    finally:
        writer.close(timeout=0.1)


def test_the_same_return_from_two_masters_is_one_row(engine):
    first = write(engine, [record(load(stamp="a"))])
    second = write(engine, [record(load(stamp="b")), record(load(minion="n2", stamp="b"))])
    assert first.quarantined == second.quarantined == 0
    with engine.connect() as conn:
        rows = conn.execute(select(Return.minion_id, Return.full_ret)).all()
    assert sorted(m for m, _ in rows) == ["n1", "n2"]
    # the row is the first master's
    assert next(full for m, full in rows if m == "n1")["_stamp"] == "a"


def test_only_the_master_that_inserted_an_inventory_ingests_it(engine):
    inv = build_inventory({"deb": {"bash": "5.2"}}, {}, {"os": "Debian"})
    ret = load(fun="fleet.inventory", value=inv)
    first = write(engine, [record(ret)])
    second = write(engine, [record(dict(ret, _stamp="later"))])
    assert [c[0] for c in first.inventory_changed] == ["n1"]
    assert second.inventory_changed == []  # announced (and drift recomputed) once
    assert count(engine, NodeInventory) == 1 and count(engine, Return) == 1


def test_two_masters_racing_on_one_return_store_and_announce_it_once(pg_engine):
    """PostgreSQL: the second transaction's COPY waits for the first's row, then falls back
    and inserts nothing; it ingests nothing either."""
    inv = build_inventory({"deb": {"bash": "5.2"}}, {}, {"os": "Debian"})
    ret = load(fun="fleet.inventory", value=inv)
    results = {}
    with pg_engine.connect() as first:
        tx = first.begin()
        results["first"] = batch.write_batch(first, [record(ret)])

        def second():
            with pg_engine.begin() as conn:
                results["second"] = batch.write_batch(conn, [record(dict(ret, _stamp="b"))])

        thread = threading.Thread(target=second)
        thread.start()
        thread.join(1.0)
        assert thread.is_alive(), "the second writer should wait for the first's row"
        tx.commit()
        thread.join(30)
    assert not thread.is_alive()
    assert len(results["first"].inventory_changed) == 1
    assert results["second"].inventory_changed == [] and results["second"].quarantined == 0
    assert count(pg_engine, Return) == 1 and count(pg_engine, NodeInventory) == 1


# -- claims -------------------------------------------------------------------------------------


def claim(engine, *args, **kwargs):
    with engine.begin() as conn:
        return store_claims.claim(conn, *args, **kwargs)


def test_a_claim_with_a_token_is_taken_once_per_token(engine):
    assert claim(engine, "onboard", "n1", "m1", token="1000.000000")
    assert not claim(engine, "onboard", "n1", "m2", token="1000.000000")
    assert not claim(engine, "onboard", "n1", "m1", token="1000.000000")
    assert claim(engine, "onboard", "n2", "m2", token="1000.000000")  # another node
    assert claim(engine, "onboard", "n1", "m2", token="2000.000000")  # its next start
    with engine.connect() as conn:
        assert store_claims.holder(conn, "onboard", "n1")["master"] == "m2"
        assert store_claims.holder(conn, "onboard", "nobody") is None
    # released (the work failed): the same token can be claimed again, by anyone
    with engine.begin() as conn:
        store_claims.release(conn, "onboard", "n1", "m1", "2000.000000")  # not m1's: kept
    assert not claim(engine, "onboard", "n1", "m1", token="2000.000000")
    with engine.begin() as conn:
        store_claims.release(conn, "onboard", "n1", "m2", "2000.000000")
    assert claim(engine, "onboard", "n1", "m1", token="2000.000000")


def test_a_claim_with_an_age_is_taken_once_per_window(engine):
    assert claim(engine, "presence_check", "fleet", "m1", min_age=240)
    assert not claim(engine, "presence_check", "fleet", "m2", min_age=240)
    assert not claim(engine, "presence_check", "fleet", "m1", min_age=240)
    assert claim(engine, "presence_check", "fleet", "m2", min_age=0)  # old enough


def test_concurrent_claims_have_one_winner(pg_engine):
    won = []
    barrier = threading.Barrier(6)

    def take(n):
        barrier.wait()
        won.append(claim(pg_engine, "onboard", "race", f"m{n}", token="1.000000"))

    threads = [threading.Thread(target=take, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(won) == [False] * 5 + [True]


# -- onboarding and the presence check, two masters ---------------------------------------------


@pytest.fixture
def started_node(engine, monkeypatch):
    """Node x, accepted, that says its minion started at t=1000; onboarding is recorded."""
    onboarded = []

    def fake_onboard(opts, engine_, minion_id, actor="reactor", started=None):
        onboarded.append((opts.get("id"), minion_id, started))
        with engine_.begin() as conn:
            store_gate.set_status(conn, [minion_id], "online", onboarded=True)
            store_audit.append(conn, actor, "node.onboard", minion_id, {"minion_started": started})
        return {"id": minion_id}

    monkeypatch.setattr(master_onboard, "onboard", fake_onboard)
    monkeypatch.setattr(master_onboard, "_ask_started", lambda opts, minion_id, timeout: 1000.0)
    monkeypatch.setattr(master_keys, "salt_key", lambda opts: None)
    monkeypatch.setattr(master_keys, "salt_state", lambda key, m: {"x": "accepted"}.get(m))
    return onboarded


def test_a_start_heard_by_two_masters_is_onboarded_once(engine, started_node):
    first = master_onboard.node_started({"id": "m1"}, engine, "x", sender="x")
    second = master_onboard.node_started({"id": "m2"}, engine, "x", sender="x")
    assert first["result"] == "onboarded"
    assert second["result"] == "claimed" and second["by"] == "m1"
    assert "onboarded by m1 for this start" in second["reason"]
    assert started_node == [("m1", "x", 1000.0)]
    with engine.connect() as conn:
        actions = conn.execute(select(AuditEvent.action).where(AuditEvent.target == "x")).all()
    assert [a for (a,) in actions] == ["node.onboard"]  # no refusal for the second master
    # the same master hearing the start again: its last onboarding refuses it, as before
    again = master_onboard.node_started({"id": "m1"}, engine, "x", sender="x")
    assert again["result"] == "refused" and started_node == [("m1", "x", 1000.0)]


def test_a_start_is_refused_on_every_master_when_another_minion_sends_it(engine, started_node):
    for master in ("m1", "m2"):
        out = master_onboard.node_started({"id": master}, engine, "x", sender="y")
        assert out["result"] == "refused"
    assert started_node == []
    with engine.connect() as conn:
        assert store_claims.holder(conn, store_claims.ONBOARD, "x") is None


def test_a_failed_onboarding_releases_its_claim(engine, started_node, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("the master's client failed")

    monkeypatch.setattr(master_onboard, "onboard", broken)
    with pytest.raises(OSError):
        master_onboard.node_started({"id": "m1"}, engine, "x", sender="x")
    with engine.connect() as conn:
        assert store_claims.holder(conn, store_claims.ONBOARD, "x") is None


def test_the_presence_check_of_a_period_is_done_by_one_master(engine, monkeypatch):
    pinged = []

    def fake_ping(opts, minion_ids, timeout):
        pinged.append(opts["id"])
        return set(minion_ids)

    monkeypatch.setattr(master_onboard, "ping", fake_ping)
    monkeypatch.setattr(master_keys, "salt_key", lambda opts: None)
    monkeypatch.setattr(master_keys, "salt_states", lambda key: {"x": "accepted"})
    first = master_onboard.presence_check({"id": "m1"}, engine, 1, window=240)
    second = master_onboard.presence_check({"id": "m2"}, engine, 1, window=240)
    assert first["online"] == ["x"] and second["by"] == "m1" and "m1" in second["skipped"]
    # an operator's run (no window) checks anyway
    assert master_onboard.presence_check({"id": "m2"}, engine, 1)["online"] == ["x"]
    assert pinged == ["m1", "m2"]


# -- drift history partitions -------------------------------------------------------------------


def test_two_masters_creating_a_month_of_drift_history_at_once_both_record(pg_engine):
    """PostgreSQL: the first drift point of a month creates its partition. Two masters (or two
    runner threads of one) doing it at once: the second waits for the first's lock, then sees
    the partition the first committed and goes on (it once failed with DuplicateTable: its
    name lookup answered from a catalog cache that still said "absent")."""
    at = dt.datetime(2031, 3, 15, tzinfo=dt.timezone.utc)
    errors = []
    with pg_engine.connect() as first:
        tx = first.begin()
        store_drift.ensure_partition(first, at)
        drift_results._PARTITIONS.clear()  # the other master has never seen the partition

        def second():
            try:
                with pg_engine.begin() as conn:
                    store_drift.ensure_partition(conn, at)
            except Exception as exc:  # noqa: BLE001 - asserted below
                errors.append(exc)

        thread = threading.Thread(target=second)
        thread.start()
        thread.join(1.0)
        assert thread.is_alive(), "the second master should wait for the first's lock"
        tx.commit()
        thread.join(30)
    assert not thread.is_alive()
    assert errors == []
    assert store_drift.partition_name(at) in store_drift.partitions(pg_engine)
