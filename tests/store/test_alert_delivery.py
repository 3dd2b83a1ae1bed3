"""The alert worker against a real loopback receiver, on SQLite and PostgreSQL.

The receiver (tests/support/alertreceiver.py, owned by the test) verifies each delivery's
HMAC signature and timestamp. It is down (connection refused), then answers 503, then 200:
every alert arrives exactly once, in order, and the attempts are recorded. Unsigned and
forged events are recorded nowhere and never delivered.
"""

import datetime as dt
import pathlib
import time

import pytest
from sqlalchemy import func, select

from saltext_fleet.core import alerts as core_alerts
from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.master import alertsend, alertworker, eventsig
from saltext_fleet.store import alert_views
from saltext_fleet.store import alerts as store_alerts
from saltext_fleet.store.models import Alert
from tests.support.alertreceiver import Receiver
from tests.support.runners import master_opts
from tests.support.sshd import free_port
from tests.support.waiting import wait_for

HMAC = "test-hmac-secret-0123456789"
TAG = "fleet/alert/drift"


def make_opts(tmp_path, db_url, port, **alerts):
    route = {"name": "hook", "destination": "webhook", "target": {"url": f"http://127.0.0.1:{port}/hook", "timeout": 2}}  # fmt: skip
    settings = {
        "routes": [route],
        "retry": {"first_s": 0.2, "max_s": 0.6, "give_up_after_h": 1},
        **alerts,
    }
    opts = master_opts(tmp_path / "master", db_url, {"alerts": settings})
    opts["id"] = "master-one"
    return opts


def put_secret(engine, opts):
    vault = core_secrets.Vault.open(opts["pki_dir"] + "/fleet.fernet")
    with engine.begin() as conn:
        store_alerts.put_route_secret(conn, vault, "config:hook", "hmac", HMAC)


def drift(opts, node, state="above", score=60.0):
    data = {
        "id": node,
        "state": state,
        "score": score,
        "previous_score": 1.0,
        "alert_score": 50.0,
        "baseline": "golden",
        # what eventsig.fire adds: two alike alerts are two events
        "raised_at": dt.datetime.now(dt.timezone.utc).isoformat(),
    }
    return eventsig.sign(opts, TAG, data)


def attempts_of(engine, alert_id):
    with engine.connect() as conn:
        found = alert_views.alert(conn, alert_id)
    return found["deliveries"][0]


@pytest.fixture
def receiver_port():
    return free_port()


def test_receiver_down_then_503_then_up_gets_every_alert_once_in_order(
    engine, db_url, tmp_path, receiver_port
):
    opts = make_opts(tmp_path, db_url, receiver_port)
    put_secret(engine, opts)
    worker = alertworker.AlertWorker(opts, scan_interval=0.1).start(listen=False)
    receiver = None
    try:
        # the receiver is down: connection refused
        ids = [worker.handle(TAG, drift(opts, f"mac-{n:02d}"))["id"] for n in range(5)]
        assert ids == sorted(ids)
        wait_for(
            "two refused attempts", lambda: attempts_of(engine, ids[0])["attempts"] >= 2, 20, 0.05
        )
        # up, but answering 503 for a while
        answered = []
        mode = {"status": 503}

        def respond(request):
            answered.append((request, mode["status"]))
            return mode["status"], b"busy" if mode["status"] == 503 else b"ok"

        receiver = Receiver(secret=HMAC, port=receiver_port).start()
        receiver.respond_with(respond)
        wait_for("two 503s", lambda: sum(1 for _, s in answered if s == 503) >= 2, 20, 0.05)
        mode["status"] = 200
        wait_for(
            "every alert delivered",
            lambda: all(attempts_of(engine, i)["status"] == "delivered" for i in ids),
            30,
            0.05,
        )
        time.sleep(0.5)  # (a duplicate, if any, would come within the scans of this half second)
    finally:
        worker.stop()
        if receiver is not None:
            receiver.stop()
    ok = [request for request, status in answered if status == 200]
    records = [request.verified for request in ok]
    assert all(isinstance(r, dict) for r in records), records  # signature and timestamp good
    assert all(isinstance(request.verified, dict) for request, _ in answered)
    assert [r["id"] for r in records] == ids  # each once, in alert order
    assert [r["node"] for r in records] == [f"mac-{n:02d}" for n in range(5)]
    assert [request.headers["X-Fleet-Delivery"] for request in ok] == [
        str(attempts_of(engine, i)["id"]) for i in ids
    ]
    first = attempts_of(engine, ids[0])
    log = first["attempt_list"]
    refused = [a for a in log if a["status_code"] is None]
    busy = [a for a in log if a["status_code"] == 503]
    assert len(refused) >= 2 and len(busy) >= 2
    assert [a["ok"] for a in log] == [False] * (len(log) - 1) + [True]
    assert log[-1]["status_code"] == 200 and all(a["master"] == "master-one" for a in log)
    assert all(a["error"] for a in log[:-1]) and all(a["latency_ms"] is not None for a in log)
    later = [attempts_of(engine, i)["attempts"] for i in ids[1:]]
    assert later == [1, 1, 1, 1]  # they waited their turn behind the first
    print(
        f"\nreceiver down/503/up: {len(ids)} alerts, {len(ok)} delivered (once each, in order); "
        f"first alert: {len(refused)} refused + {len(busy)} x 503 + 1 ok = {len(log)} attempts; "
        f"others: {later}; requests seen by the receiver: {len(answered)}"
    )


def test_unsigned_and_forged_alerts_are_refused_and_recorded_nowhere(
    engine, db_url, tmp_path, receiver_port, caplog
):
    opts = make_opts(tmp_path, db_url, receiver_port)
    put_secret(engine, opts)
    good = drift(opts, "mac-01")
    unsigned = {k: v for k, v in good.items() if k != "sig"}
    forged = {**good, "id": "mac-02"}  # a minion's copy with another id: the signature breaks
    other_key = {**unsigned, "sig": "00" * 32}
    worker = alertworker.AlertWorker(opts, scan_interval=0.1).start(listen=False)
    with Receiver(secret=HMAC, port=receiver_port) as receiver:
        try:
            with caplog.at_level("WARNING", logger="saltext_fleet.master.alertworker"):
                assert worker.handle(TAG, unsigned) is None
                assert worker.handle(TAG, forged) is None
                assert worker.handle(TAG, other_key) is None
                assert worker.handle("fleet/alert/drift", "not a mapping") is None
            # the positive control: the master's own event goes through
            done = worker.handle(TAG, good)
            wait_for("the signed alert", lambda: len(receiver.requests) == 1, 20, 0.05)
            time.sleep(0.3)
        finally:
            worker.stop()
    assert worker.stats["refused"] == 4 and worker.stats["accepted"] == 1
    assert [r.verified["id"] for r in receiver.requests] == [done["id"]]
    assert receiver.requests[0].verified["node"] == "mac-01"
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Alert)).scalar() == 1
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 4
    assert "fleet/alert/drift" in refusals[0] and "'mac-01'" in refusals[0]
    assert "'mac-02'" in refusals[1]
    # a replay of the signed event is the same alert: nothing more is recorded or sent
    assert worker.handle(TAG, dict(good))["replayed"] is True


def test_duplicates_flapping_and_ack_through_the_worker(engine, db_url, tmp_path, receiver_port):
    """The decisions as the receiver sees them: a repeat within the window is not sent,
    four changes in 30 minutes send one flapping alert, an ack holds until the condition
    changes."""
    opts = make_opts(tmp_path, db_url, receiver_port, dedup_minutes=15)
    put_secret(engine, opts)
    worker = alertworker.AlertWorker(opts, scan_interval=0.1).start(listen=False)

    def seen(n):
        wait_for(f"{n} deliveries", lambda: len(receiver.requests) >= n, 20, 0.05)
        time.sleep(0.3)
        return [(r.verified["node"], r.verified["condition"]) for r in receiver.requests]

    with Receiver(secret=HMAC, port=receiver_port) as receiver:
        try:
            worker.handle(TAG, drift(opts, "dup", score=60))
            worker.handle(TAG, drift(opts, "dup", score=61))  # same condition: a duplicate
            worker.handle(TAG, drift(opts, "dup", score=62))
            assert seen(1) == [("dup", "above")]
            for n, state in enumerate(["above", "below", "above", "below", "above", "below"]):
                worker.handle(TAG, drift(opts, "flap", state, 60 + n if state == "above" else 5))
            got = seen(6)[1:]
            assert got == [
                ("flap", "above"),
                ("flap", "below"),
                ("flap", "above"),
                ("flap", "below"),
                ("flap", "flapping"),
            ]
            worker.handle(TAG, drift(opts, "ack", score=60))
            seen(7)
            store_alerts.ack(worker_engine(opts), "drift", "ack", actor="user:alice")
            worker.handle(TAG, drift(opts, "ack", score=70))  # acknowledged: held
            worker.handle(TAG, drift(opts, "ack", "below", 5))  # changed: sent
            assert seen(8)[-1] == ("ack", "below")
        finally:
            worker.stop()
    assert len(receiver.requests) == 8
    with engine.connect() as conn:
        held = alert_views.alert_log(conn, node="ack")
    assert [a["suppressed"] for a in held] == [None, "acknowledged", None]


def worker_engine(opts):
    from saltext_fleet import config
    from saltext_fleet.store import engine as store_engine

    return store_engine.get_engine(config.load(opts).db_url)


def test_the_contracts_destinations_are_the_senders():
    assert core_alerts.DESTINATIONS == alertsend.DESTINATIONS


def test_a_drift_that_resolves_resolves_the_pagerduty_incident(engine, db_url, tmp_path):
    """Through the worker to a PagerDuty Events API v2 stand-in on loopback: the trigger and
    the resolve carry the same dedup_key, and the routing key from the vault."""
    with Receiver() as pagerduty:
        pagerduty.answer(202, {"status": "success", "message": "Event processed"})
        route = {
            "name": "oncall",
            "destination": "pagerduty",
            "match": {"kinds": ["drift"], "min_severity": "warning"},
            "target": {"url": pagerduty.url},
        }
        opts = master_opts(tmp_path / "master", db_url, {"alerts": {"routes": [route]}})
        vault = core_secrets.Vault.open(opts["pki_dir"] + "/fleet.fernet")
        with engine.begin() as conn:
            store_alerts.put_route_secret(conn, vault, "config:oncall", "routing_key", "R" * 32)
        worker = alertworker.AlertWorker(opts, scan_interval=0.1).start(listen=False)
        try:
            worker.handle(TAG, drift(opts, "mac-07", "above", 160.0))
            worker.handle(TAG, drift(opts, "mac-07", "below", 3.0))
            wait_for("trigger and resolve", lambda: len(pagerduty.requests) >= 2, 20, 0.05)
        finally:
            worker.stop()
    trigger, resolve = (r.json() for r in pagerduty.requests)
    assert trigger["event_action"] == "trigger" and resolve["event_action"] == "resolve"
    assert trigger["dedup_key"] == resolve["dedup_key"] == "fleet:drift:mac-07:"
    assert trigger["routing_key"] == resolve["routing_key"] == "R" * 32
    assert trigger["payload"]["severity"] == "critical"  # 160 is over 3 times 50


def test_alerts_heard_while_the_store_is_away_are_held_and_delivered_when_it_is_back(
    engine, db_url, tmp_path, receiver_port
):
    opts = make_opts(tmp_path, db_url, receiver_port)
    put_secret(engine, opts)
    good_url = opts["fleet"]["db_url"]
    # the store is away: a PostgreSQL address where nothing listens
    opts["fleet"]["db_url"] = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/fleet"
    worker = alertworker.AlertWorker(opts, scan_interval=0.1).start(listen=False)
    with Receiver(secret=HMAC, port=receiver_port) as receiver:
        try:
            events = [drift(opts, f"held-{n}") for n in range(3)]
            assert [worker.take(TAG, e) for e in events] == [None, None, None]
            assert len(worker.backlog) == 3
            time.sleep(0.5)  # scans fail meanwhile; nothing is lost
            assert len(worker.backlog) == 3
            opts["fleet"]["db_url"] = good_url  # back
            wait_for("the held alerts", lambda: len(receiver.requests) == 3, 20, 0.05)
        finally:
            worker.stop()
    assert [r.verified["node"] for r in receiver.requests] == ["held-0", "held-1", "held-2"]
    assert not worker.backlog


def test_a_rotated_key_file_is_followed_and_an_unreadable_secret_is_an_attempts_error(
    engine, db_url, tmp_path, receiver_port
):
    """fleet.rotate_key while the engine runs: the worker reads the new key file (the
    secrets were re-encrypted under the new key, the old one retired). A key file that cannot
    read a route's secret is recorded as each attempt's error and retried, not a crash."""
    from saltext_fleet.store import secrets as store_secrets

    opts = make_opts(tmp_path, db_url, receiver_port)
    put_secret(engine, opts)
    key_file = opts["pki_dir"] + "/fleet.fernet"
    worker = alertworker.AlertWorker(opts, scan_interval=0.1).start(listen=False)
    with Receiver(secret=HMAC, port=receiver_port) as receiver:
        try:
            worker.handle(TAG, drift(opts, "before"))
            wait_for("the first alert", lambda: len(receiver.requests) == 1, 20, 0.05)
            # the rotation fleet.rotate_key makes: a new key, secrets re-encrypted, old retired
            store_secrets.reencrypt_all(engine, core_secrets.rotate(key_file))
            core_secrets.retire(key_file)
            worker.handle(TAG, drift(opts, "after-rotation"))
            wait_for("the second alert", lambda: len(receiver.requests) == 2, 20, 0.05)
            # a key file that is not the one the secret was stored with
            saved = pathlib.Path(key_file).read_bytes()
            core_secrets.rotate(key_file)
            core_secrets.retire(key_file)
            done = worker.handle(TAG, drift(opts, "wrong-key"))
            first = wait_for(
                "an attempt with the vault's error",
                lambda: [a for a in attempts_of(engine, done["id"])["attempt_list"] if a["error"]],
                20,
                0.05,
            )
            assert "secrets cannot be read" in first[0]["error"]
            assert attempts_of(engine, done["id"])["status"] == "pending"  # retried
            pathlib.Path(key_file).write_bytes(saved)
            wait_for("the held alert", lambda: len(receiver.requests) == 3, 20, 0.05)
        finally:
            worker.stop()
    assert [r.verified["node"] for r in receiver.requests] == [
        "before",
        "after-rotation",
        "wrong-key",
    ]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_two_masters_workers_on_one_store_send_each_delivery_once(engine, db_url, tmp_path):
    """Two masters' workers share the store: 30 alerts x 6 routes, every delivery reaches
    the receiver exactly once, each route's in alert order, whichever master sent it."""
    with Receiver(secret=HMAC) as receiver:
        routes = [
            {"name": f"r{n}", "destination": "webhook", "target": {"url": f"{receiver.url}/r{n}"}}
            for n in range(6)
        ]
        workers = []
        for name in ("master-a", "master-b"):
            opts = master_opts(tmp_path / name, db_url, {"alerts": {"routes": routes}})
            opts["id"] = name
            opts["pki_dir"] = str(tmp_path / "shared-pki")  # one vault for both
            workers.append(alertworker.AlertWorker(opts, scan_interval=0.05, per_route=3))
        vault = core_secrets.Vault.open(str(tmp_path / "shared-pki" / "fleet.fernet"))
        with engine.begin() as conn:
            for n in range(6):
                store_alerts.put_route_secret(conn, vault, f"config:r{n}", "hmac", HMAC)
        for worker in workers:
            worker.start(listen=False)
        try:
            ids = []
            for n in range(30):  # each master hears half of them
                worker = workers[n % 2]
                ids.append(worker.handle(TAG, drift(worker.opts, f"node-{n:02d}"))["id"])
            wait_for("180 deliveries", lambda: len(receiver.requests) >= 180, 60, 0.05)
            time.sleep(0.5)
        finally:
            for worker in workers:
                worker.stop()
    got = receiver.requests
    assert len(got) == 180 and all(isinstance(r.verified, dict) for r in got)
    deliveries = [r.headers["X-Fleet-Delivery"] for r in got]
    assert len(set(deliveries)) == 180
    for n in range(6):
        order = [r.verified["id"] for r in got if r.path.endswith(f"/r{n}")]
        assert order == sorted(ids), n
    with engine.connect() as conn:
        rows = [d for a in alert_views.alert_log(conn, limit=500) for d in a["deliveries"]]
        by_master: dict[str, int] = {}
        for row in rows:
            for attempt in alert_views.attempts(conn, row["id"]):
                by_master[attempt["master"]] = by_master.get(attempt["master"], 0) + 1
    assert sum(by_master.values()) == 180 and all(r["attempts"] == 1 for r in rows)
    print(f"\ntwo masters, one store: 180 deliveries sent once each; by master: {by_master}")
