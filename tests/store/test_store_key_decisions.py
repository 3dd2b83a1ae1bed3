"""The fleet's key decisions, as another master reads them (hot-hot masters on one store): a
key accepted or rejected by someone is found by its id AND fingerprint only; an enrolment is
used once whichever master asks."""

from __future__ import annotations

import datetime as dt
import threading

from saltext_fleet.store import gate as store_gate


def test_a_decision_is_found_by_id_and_fingerprint_only(engine):
    with engine.begin() as conn:
        for minion_id, finger in (
            ("web1", "aa:01"),
            ("web2", "bb:02"),
            ("web3", "cc:03"),
            ("web4", "dd:04"),
        ):
            store_gate.key_seen(conn, minion_id, finger, "PUB")
        store_gate.set_key_state(conn, "web1", "accepted", "alice", fingerprint="aa:01")
        store_gate.set_key_state(conn, "web2", "rejected", "enrolment:7", fingerprint="bb:02")
        store_gate.set_key_state(conn, "web4", "accepted", "bob", fingerprint="dd:04")
        store_gate.mark_keys_deleted(conn, "web4", "salt-key")
    with engine.connect() as conn:
        found = store_gate.key_decisions(
            conn,
            [
                ("web1", "aa:01"),
                ("web1", "ff:99"),  # another key under an accepted id: a new key
                ("web2", "bb:02"),
                ("web3", "cc:03"),  # pending: nobody decided
                ("web4", "dd:04"),  # accepted, then deleted: nothing to follow
                ("nobody", "aa:01"),  # an accepted fingerprint under another id
            ],
        )
    assert {k: (v["state"], v["decided_by"]) for k, v in found.items()} == {
        ("web1", "aa:01"): ("accepted", "alice"),
        ("web2", "bb:02"): ("rejected", "enrolment:7"),
    }
    assert found[("web1", "aa:01")]["decided_at"]
    with engine.connect() as conn:
        assert store_gate.key_decisions(conn, []) == {}


def test_an_enrolment_is_used_once_by_two_masters_at_once(engine):
    now = dt.datetime.now(dt.timezone.utc)
    with engine.begin() as conn:
        made = store_gate.create_enrolment(conn, "web9", "tok", dt.timedelta(hours=1), "alice")
    enrolment = made["enrolment"]
    results = {}
    go = threading.Barrier(2)

    def master(name, finger):
        go.wait(10)
        with engine.begin() as conn:
            results[name] = store_gate.use_enrolment(conn, enrolment, finger, now)

    threads = [
        threading.Thread(target=master, args=("m1", "aa:09")),
        threading.Thread(target=master, args=("m2", "bb:09")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results.values()) == [False, True], results
    winner = "aa:09" if results["m1"] else "bb:09"
    with engine.connect() as conn:
        assert store_gate.enrolment_used_by(conn, enrolment) == winner
        # and a third attempt later finds it used
        assert not store_gate.use_enrolment(conn, enrolment, winner, now)
