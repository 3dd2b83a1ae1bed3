"""Recording key changes that Salt announced (``salt/key``) exactly once, on each backend: a
decision made through the gate while it holds the key's row is found recorded, not recorded
again."""

from __future__ import annotations

import threading

from saltext_fleet.store import gate as store_gate


def _state(engine, minion_id, finger):
    with engine.connect() as conn:
        return {(r["fingerprint"], r["state"], r["decided_by"]) for r in store_gate.key_rows(conn)
                if r["id"] == minion_id and r["fingerprint"] == finger}  # fmt: skip


def test_a_change_is_recorded_once(engine):
    with engine.begin() as conn:
        store_gate.key_seen(conn, "web1", "aa:bb", "PUB")
        assert store_gate.change_key_state(conn, "web1", "accepted", "salt-key", "aa:bb") == (
            "pending"
        )
        # the same change again (a second event): nothing to record
        assert store_gate.change_key_state(conn, "web1", "accepted", "salt-key", "aa:bb") is None
        # a key the gate never saw gets a row
        assert store_gate.change_key_state(conn, "web2", "rejected", "salt-key", "cc:dd") == (
            "unknown"
        )
        assert store_gate.mark_keys_deleted(conn, "web1", "salt-key") == ["aa:bb"]
        assert store_gate.mark_keys_deleted(conn, "web1", "salt-key") == []
        assert store_gate.mark_keys_deleted(conn, "nobody", "salt-key") == []
    assert _state(engine, "web1", "aa:bb") == {("aa:bb", "deleted", "salt-key")}
    assert _state(engine, "web2", "cc:dd") == {("cc:dd", "rejected", "salt-key")}


def _race(engine, decide, record):
    """``decide(conn)`` in a transaction that stays open while ``record(conn)`` starts in
    another thread (as Salt's salt/key event reaches the recorder while fleet.keys_* still
    holds the row); returns what ``record`` returned."""
    result = {}
    started = threading.Event()

    def recorder():
        started.set()
        with engine.begin() as conn:
            result["value"] = record(conn)

    with engine.begin() as conn:
        decide(conn)
        thread = threading.Thread(target=recorder)
        thread.start()
        started.wait(10)
        thread.join(0.5)  # it waits for the row (PostgreSQL) or the write lock (SQLite)
        assert thread.is_alive(), "the recorder did not wait for the open decision"
    thread.join(30)
    assert not thread.is_alive()
    return result["value"]


def test_a_decision_in_flight_is_not_recorded_twice(engine):
    with engine.begin() as conn:
        store_gate.key_seen(conn, "web3", "ee:ff", "PUB")
    was = _race(
        engine,
        lambda c: store_gate.set_key_state(
            c, "web3", "accepted", "user:alice", fingerprint="ee:ff"
        ),
        lambda c: store_gate.change_key_state(c, "web3", "accepted", "salt-key", "ee:ff"),
    )
    assert was is None
    assert _state(engine, "web3", "ee:ff") == {("ee:ff", "accepted", "user:alice")}
    # a key the gate never saw, accepted by the runner (its row inserted, not yet committed)
    was = _race(
        engine,
        lambda c: store_gate.set_key_state(
            c, "web4", "accepted", "user:bob", fingerprint="11:22", pub="PUB"
        ),
        lambda c: store_gate.change_key_state(c, "web4", "accepted", "salt-key", "11:22"),
    )
    assert was is None
    assert _state(engine, "web4", "11:22") == {("11:22", "accepted", "user:bob")}
    gone = _race(
        engine,
        lambda c: store_gate.set_key_state(c, "web3", "deleted", "user:alice"),
        lambda c: store_gate.mark_keys_deleted(c, "web3", "salt-key"),
    )
    assert gone == []
