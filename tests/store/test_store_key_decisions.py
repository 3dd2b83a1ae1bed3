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


class _FakeKeyStore:
    """What the gate uses of one master's ``salt.key.Key``: the entry of an id (Salt's
    ``cache.fetch("keys", id)``: ``{"state", "pub"}``) and ``accept``/``reject`` by exact
    id. A real key store needs a running master for its events; the real masters' version of
    this is ``tests/multimaster/test_key_decisions.py``."""

    def __init__(self, held: dict):
        self.held = held  # id -> (state, pub)
        self.accepted = []
        store = self

        class Cache:
            def fetch(self, bank, minion_id):
                if bank != "keys" or minion_id not in store.held:
                    return None
                state, pub = store.held[minion_id]
                return {"state": state, "pub": pub}

        self.cache = Cache()

    def accept(self, match_dict):
        for minion_id in match_dict.get("minions_pre", []):
            self.held[minion_id] = ("accepted", self.held[minion_id][1])
            self.accepted.append(minion_id)

    def reject(self, match_dict):  # pragma: no cover - not reached here
        raise AssertionError("nothing is rejected here")


def test_the_second_master_follows_an_enrolment_used_through_the_first_at_once(
    engine, monkeypatch, tmp_path
):
    """A minion asks both masters at once with its token: m2 records the key, m1 uses the
    enrolment and accepts the key, then m2 finds the enrolment used by this very key and
    follows m1's acceptance there and then, not at the key's next attempt (which is up to
    the minion's acceptance_wait_time_max later)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from saltext_fleet.core import gate as core_gate
    from saltext_fleet.master import keys as master_keys

    pub = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    token = core_gate.new_token()
    with engine.begin() as conn:
        made = store_gate.create_enrolment(conn, "web9", token, dt.timedelta(hours=1), "alice")
    stores = {m: _FakeKeyStore({"web9": ("pending", pub)}) for m in ("m1", "m2")}
    monkeypatch.setattr(master_keys, "salt_key", lambda opts: stores[opts["id"]])
    grains = {core_gate.TOKEN_GRAIN: token}
    fired = []

    def decide(master):
        opts = {"id": master, "cachedir": str(tmp_path), "fleet": {"gate": {"mode": "enrolment"}}}
        fire = lambda tag, data: fired.append((master, tag, data.get("by")))  # noqa: E731
        return master_keys.handle_auth(opts, engine, "web9", pub, grains, fire=fire)

    # m2 records the key first (pending), then m1 decides it before m2 looks at the
    # enrolment: m2 finds it used by this very key
    real_find = store_gate.find_enrolment
    answers = {}

    def find_enrolment(conn, minion_id, presented):
        if not answers:  # m2's look, the first: m1 decides meanwhile (m1's own look passes)
            answers["m1"] = None
            answers["m1"] = decide("m1")
        return real_find(conn, minion_id, presented)

    monkeypatch.setattr(store_gate, "find_enrolment", find_enrolment)
    second = decide("m2")
    first = answers["m1"]
    assert first["result"] == "accepted" and first["enrolment"] == made["enrolment"]
    assert second["result"] == "accepted", second
    assert second["follows"] == f"enrolment:{made['enrolment']}"
    assert stores["m1"].accepted == stores["m2"].accepted == ["web9"]
    assert sorted((m, t) for m, t, _by in fired if t == master_keys.ACCEPTED_TAG) == [
        ("m1", master_keys.ACCEPTED_TAG),
        ("m2", master_keys.ACCEPTED_TAG),
    ]
    # the key's enrolment was used once, by m1, and the audit says m2 followed it
    with engine.connect() as conn:
        assert store_gate.enrolment_used_by(conn, made["enrolment"]) == core_gate.fingerprint(
            pub, "sha256"
        )
