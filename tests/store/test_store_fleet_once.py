"""Reactor work once for the fleet with hot-hot masters on one store, in each backend: two
"masters" are two master ids calling the same functions. Presence from every master's view,
an alert's crossing fired once, one crossing fired by two masters recorded once, and the
races on PostgreSQL (threads, as tests/store/test_store_multimaster.py)."""

import datetime as dt
import threading

from sqlalchemy import func, select

from saltext_fleet.core import alerts as core_alerts
from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.core import signing
from saltext_fleet.kvm import health
from saltext_fleet.master import crossings
from saltext_fleet.master import keys as master_keys
from saltext_fleet.master import onboard as master_onboard
from saltext_fleet.store import alerts as store_alerts
from saltext_fleet.store import claims as store_claims
from saltext_fleet.store import gate as store_gate
from saltext_fleet.store import kvm as store_kvm
from saltext_fleet.store import presence as store_presence
from saltext_fleet.store.models import Alert, utcnow

T0 = dt.datetime(2026, 12, 5, 19, 0, tzinfo=dt.timezone.utc)


def status(engine, minion_id):
    with engine.connect() as conn:
        found = store_gate.node_status(conn, minion_id)
    return found and found["status"]


def race(n, work):
    """``work(i)`` in ``n`` threads released at once; their answers (errors re-raised)."""
    barrier = threading.Barrier(n)
    answers, errors = [None] * n, []

    def run(i):
        barrier.wait()
        try:
            answers[i] = work(i)
        except Exception as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    if errors:
        raise errors[0]
    return answers


# -- presence from every master's view ------------------------------------------------------------


def test_a_node_one_master_lost_stays_online_while_another_sees_it(engine):
    # both masters see x arrive: it goes online once
    first = master_onboard.presence(engine, new=["x"], connected={"x"}, master="m1")
    second = master_onboard.presence(engine, new=["x"], connected={"x"}, master="m2")
    assert first["changed"] == {"online": ["x"], "offline": []}
    assert second["changed"] == {"online": [], "offline": []}
    # m1 restarts (or is cut off from x): x stays online, m2 sees it
    lost = master_onboard.presence(engine, lost=["x"], connected=set(), master="m1")
    assert lost["seen_elsewhere"] == {"x": ["m2"]} and lost["offline"] == 0
    assert status(engine, "x") == "online"
    # m2 loses it too: now no master sees it
    gone = master_onboard.presence(engine, lost=["x"], connected=set(), master="m2")
    assert gone["changed"] == {"online": [], "offline": ["x"]} and gone["seen_elsewhere"] == {}
    assert status(engine, "x") == "offline"
    with engine.connect() as conn:
        views = store_presence.views(conn, "x")
    assert [(v["master"], v["connected"]) for v in views] == [("m1", False), ("m2", False)]


def test_a_master_that_stopped_reporting_no_longer_keeps_a_node_online(engine):
    long_ago = utcnow() - dt.timedelta(seconds=store_presence.STALE_SECONDS + 60)
    with engine.begin() as conn:
        store_gate.set_status(conn, ["x"], "online")
        store_presence.report(conn, "m2", connected=["x"], now=long_ago)  # m2 went away
    out = master_onboard.presence(engine, lost=["x"], connected=set(), master="m1")
    assert out["seen_elsewhere"] == {} and out["changed"]["offline"] == ["x"]
    assert status(engine, "x") == "offline"


def test_a_report_writes_only_what_changed_and_a_whole_view_clears_the_rest(engine):
    with engine.begin() as conn:
        assert store_presence.report(conn, "m1", connected=["a", "b"], now=T0) == 2
        assert store_presence.report(conn, "m1", connected=["a", "b"]) == 0
        # the scheduled check's whole view: b is no longer connected to m1
        assert store_presence.report(conn, "m1", connected=["a"], complete=True) == 1
        assert store_presence.seen_elsewhere(conn, ["a", "b"], "m2") == {"a": ["m1"]}
        # a view is never "elsewhere" for the master that holds it
        assert store_presence.seen_elsewhere(conn, ["a", "b"], "m1") == {}


def test_a_lie_about_presence_changes_no_view(engine):
    """A minion firing salt/presence/change naming other nodes: the master's connected ids
    refuse each claim, and nothing is recorded as any master's view."""
    with engine.begin() as conn:
        store_gate.set_status(conn, ["x"], "online")
    out = master_onboard.presence(
        engine, new=["ghost"], lost=["x"], connected={"x", "liar"}, master="m1"
    )
    assert out["refused"] == {"new": ["ghost"], "lost": ["x"]}
    assert status(engine, "x") == "online" and status(engine, "ghost") is None
    with engine.connect() as conn:
        assert store_presence.views(conn, "x") == store_presence.views(conn, "ghost") == []


def test_the_presence_check_does_not_count_a_node_another_master_sees(engine, monkeypatch):
    """A network split: m1's ping gets no answer from x, m2 sees x connected."""
    monkeypatch.setattr(master_onboard, "ping", lambda opts, ids, timeout: set())
    monkeypatch.setattr(master_keys, "salt_key", lambda opts: None)
    monkeypatch.setattr(master_keys, "salt_states", lambda key: {"x": "accepted", "y": "accepted"})
    seen = {"m1": set(), "m2": {"x"}}
    monkeypatch.setattr(master_onboard, "connected_ids", lambda opts: seen[opts["id"]])
    with engine.begin() as conn:
        store_gate.set_status(conn, ["x", "y"], "online")
    master_onboard.presence_check({"id": "m2"}, engine, 1, window=240)  # m2 reports, checks
    for _ in range(3):
        out = master_onboard.presence_check({"id": "m1"}, engine, 1)
    assert out["seen_elsewhere"] == {"x": ["m2"]} and out["offline"] == ["y"]
    assert status(engine, "x") == "online" and status(engine, "y") == "offline"


def test_two_masters_seeing_a_node_arrive_at_once_change_it_once(pg_engine):
    with pg_engine.begin() as conn:
        store_gate.set_status(conn, ["x"], "offline")

    def arrive(i):
        return master_onboard.presence(pg_engine, new=["x"], connected={"x"}, master=f"m{i}")

    answers = race(6, arrive)
    assert sorted(len(a["changed"]["online"]) for a in answers) == [0] * 5 + [1]
    assert status(pg_engine, "x") == "online"


# -- an alert's crossing, fired once --------------------------------------------------------------


class Bus:
    """What ``fire`` sent (``up=False``: the bus refuses)."""

    def __init__(self):
        self.sent, self.up, self.lock = [], True, threading.Lock()

    def __call__(self, tag, data):
        if self.up:
            with self.lock:
                self.sent.append((tag, data))
        return self.up


def drift(engine, master, bus, state, threshold=50.0, node="n1"):
    data = {"id": node, "state": state, "alert_score": threshold}
    crossing = {node: (f"{state}:{threshold:g}", data)}
    return crossings.fire_once(
        engine, master, store_claims.ALERT_DRIFT, "fleet/alert/drift", crossing, bus
    )


def test_a_crossing_computed_by_two_masters_is_fired_once(engine):
    bus = Bus()
    assert drift(engine, "m1", bus, "above") == ["n1"]
    assert drift(engine, "m2", bus, "above") == []  # the same crossing, through m2
    assert drift(engine, "m1", bus, "above") == []  # and again: no new crossing
    assert drift(engine, "m2", bus, "below") == ["n1"]  # back below: a crossing
    assert drift(engine, "m1", bus, "above") == ["n1"]
    assert drift(engine, "m1", bus, "above", threshold=70) == ["n1"]  # another threshold
    assert [d["state"] for _t, d in bus.sent] == ["above", "below", "above", "above"]


def test_a_crossing_that_could_not_be_fired_is_given_back(engine):
    bus = Bus()
    bus.up = False
    assert drift(engine, "m1", bus, "above") == []
    bus.up = True
    assert drift(engine, "m2", bus, "above") == ["n1"]


def test_masters_racing_on_one_crossing_fire_it_once(pg_engine):
    bus = Bus()
    answers = race(6, lambda i: drift(pg_engine, f"m{i}", bus, "above"))
    assert sorted(len(a) for a in answers) == [0] * 5 + [1] and len(bus.sent) == 1


# -- one crossing fired by two masters is one alert -----------------------------------------------

HOOK = core_alerts.route_of("hook", "config", "webhook", {}, {"url": "http://127.0.0.1:9/x"})
NO_DEDUP = core_alerts.Policy(dedup_minutes=0)


def record(engine, master, state="above", seconds=0, kind="drift", **extra):
    """A ``fleet/alert/<kind>`` event ``master`` signed (each master has its own key),
    recorded as its alert worker records it."""
    key = bytes([int(master[-1])]) * 32
    raised = (T0 + dt.timedelta(seconds=seconds)).isoformat()
    if kind == "drift":
        data = {"id": "n1", "state": state, "score": 60.0, "alert_score": 50.0}
    else:
        finding = {"advisory_id": "CVE-1", "package": "p", "version": "1", "severity": "high"}
        data = {"id": "n1", "count": 1, "findings": [finding]}
    data = signing.signed(key, f"fleet/alert/{kind}", {**data, "raised_at": raised, **extra})
    alert = core_alerts.normalise(f"fleet/alert/{kind}", data)
    return store_alerts.record_alert(
        engine,
        alert,
        [HOOK],
        NO_DEDUP,
        core_alerts.event_key(f"fleet/alert/{kind}", data),
        master=master,
        now=T0 + dt.timedelta(seconds=seconds),
        same_crossing_s=store_alerts.SAME_CROSSING_S,
    )


def alerts(engine):
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(Alert)).scalar()


def test_one_crossing_fired_by_two_masters_is_recorded_and_sent_once(engine):
    first = record(engine, "m1")
    second = record(engine, "m2", seconds=3)
    assert [d["status"] for d in first["deliveries"]] == ["pending"]
    assert second["replayed"] and second["same_crossing"] and second["id"] == first["id"]
    assert alerts(engine) == 1
    # a change of condition is a crossing; the same master again is not merged (its own
    # events are told apart by their keys); long after, another master's is recorded
    assert not record(engine, "m2", state="below", seconds=10)["replayed"]
    assert not record(engine, "m2", state="below", seconds=15)["replayed"]
    assert record(engine, "m1", state="below", seconds=16)["same_crossing"]
    assert not record(engine, "m1", state="below", seconds=15 + 600)["replayed"]
    assert alerts(engine) == 4


def test_new_vulnerability_findings_from_two_masters_are_never_merged(engine):
    record(engine, "m1", kind="cve")
    assert not record(engine, "m2", kind="cve", seconds=1)["replayed"]
    assert alerts(engine) == 2


def test_two_masters_recording_one_crossing_at_once_record_it_once(pg_engine):
    answers = race(4, lambda i: record(pg_engine, f"m{i + 1}", seconds=i))
    assert sorted(a["replayed"] for a in answers) == [False, True, True, True]
    assert alerts(pg_engine) == 1


# -- KVM: two cycles at once raise an alert once ---------------------------------------------------


def test_two_kvm_cycles_at_once_raise_offline_once(pg_engine, tmp_path):
    vault = core_secrets.Vault.open(str(tmp_path / "fleet.fernet"))
    with pg_engine.begin() as conn:
        store_kvm.add_device(conn, vault, "pikvm-1", {"host": "pikvm-1", "password": "pw"})
    missed = {"pikvm-1": health.missed("kvm pikvm-1: timed out")}
    raised = {}
    with pg_engine.connect() as first:
        tx = first.begin()
        raised["first"] = store_kvm.record_polls(first, missed, offline_after=1)

        def second():
            with pg_engine.begin() as conn:
                raised["second"] = store_kvm.record_polls(conn, missed, offline_after=1)

        thread = threading.Thread(target=second)
        thread.start()
        thread.join(1.0)
        assert thread.is_alive(), "the second cycle should wait for the first's device row"
        tx.commit()
        thread.join(30)
    assert raised["first"] == {"pikvm-1": ["offline"]} and raised["second"] == {}


def test_a_kvm_poll_cycle_is_claimed_once_per_interval(engine):
    with engine.begin() as conn:
        assert store_claims.claim(conn, store_claims.KVM_POLL, "fleet", "m1", min_age=12)
        assert not store_claims.claim(conn, store_claims.KVM_POLL, "fleet", "m2", min_age=12)
