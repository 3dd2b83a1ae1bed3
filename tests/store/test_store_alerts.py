"""The alert store on SQLite and PostgreSQL: recorded once, duplicate window, flapping,
acknowledgement, claims that only one master wins, attempts and back-off, UI routes."""

import datetime as dt
import threading

import pytest
from sqlalchemy import func, select

from saltext_fleet.core import alerts as core
from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.core import signing
from saltext_fleet.store import alert_views as views
from saltext_fleet.store import alerts as store
from saltext_fleet.store import secrets as store_secrets
from saltext_fleet.store.models import Alert, AlertDelivery, Node, Secret

T0 = dt.datetime(2026, 12, 5, 19, 0, tzinfo=dt.timezone.utc)
KEY = bytes(range(32))
POLICY = core.Policy(retry_first_s=2, retry_max_s=60, give_up_after_h=1)
HOOK = core.route_of("hook", "config", "webhook", {}, {"url": "http://127.0.0.1:9/x"})
PAGER = core.route_of(
    "pager", "config", "pagerduty", {"min_severity": "error"}, {"url": "http://127.0.0.1:9/e"}
)


def at(minutes):
    return T0 + dt.timedelta(minutes=minutes)


def event(state="above", score=60.0, node="mac-07", n=0):
    data = {
        "id": node,
        "state": state,
        "score": score,
        "previous_score": 1.0,
        "alert_score": 50.0,
        "baseline": "b",
        "raised_at": at(n).isoformat(),
    }
    return signing.signed(KEY, "fleet/alert/drift", data)


def put(engine, data, when, routes=(HOOK,), policy=POLICY, master="m1"):
    alert = core.normalise("fleet/alert/drift", data, now=when)
    key = core.event_key("fleet/alert/drift", data)
    return store.record_alert(engine, alert, list(routes), policy, key, master=master, now=when)


def pending(done):
    return [d for d in done["deliveries"] if d["status"] == "pending"]


def test_an_alert_is_recorded_once_with_one_delivery_per_matching_route(engine):
    data = event(score=60)  # warning: not for the pager (error and above)
    first = put(engine, data, at(0), routes=(HOOK, PAGER))
    assert first["replayed"] is False and first["suppressed"] is None
    assert [(d["route"], d["status"]) for d in first["deliveries"]] == [("config:hook", "pending")]
    again = put(engine, dict(data), at(1), routes=(HOOK, PAGER))
    assert again == {**again, "id": first["id"], "replayed": True, "deliveries": []}
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Alert)).scalar() == 1
        assert conn.execute(select(func.count()).select_from(AlertDelivery)).scalar() == 1
        listed = views.alert_log(conn)
    assert len(listed) == 1 and listed[0]["dedup_key"] == "fleet:drift:mac-07:"
    assert listed[0]["raised_at"] == at(0).isoformat()
    assert listed[0]["deliveries"][0]["status"] == "pending"
    big = put(engine, event(score=200, n=2), at(2), routes=(HOOK, PAGER))
    # an unchanged condition: the hook got it 2 minutes ago, the pager never did
    assert [(d["route"], d["status"]) for d in big["deliveries"]] == [
        ("config:hook", "suppressed"),
        ("config:pager", "pending"),
    ]


def test_duplicate_window_sends_the_same_condition_once_per_route(engine):
    sent = [put(engine, event(n=n, score=60 + n), at(n)) for n in (0, 5, 14)]
    assert [len(pending(s)) for s in sent] == [1, 0, 0]
    assert [s["suppressed"] for s in sent] == [None, "duplicate", "duplicate"]
    assert len(pending(put(engine, event(n=15, score=90), at(15)))) == 1  # the window ended
    # a change is never a duplicate: below, then above again, are both sent
    assert len(pending(put(engine, event("below", 5, n=16), at(16)))) == 1
    assert len(pending(put(engine, event(n=17, score=70), at(17)))) == 1
    # configurable: 0 turns it off
    off = core.Policy(dedup_minutes=0)
    assert len(pending(put(engine, event(n=18, score=71), at(18), policy=off))) == 1
    with engine.connect() as conn:
        suppressed = views.alert_log(conn, status="suppressed")
        assert [a["deliveries"][0]["last_error"] for a in suppressed] == ["duplicate"] * 2
        assert store.counts(conn) == {
            "pending": 5,
            "delivered": 0,
            "failed": 0,
            "suppressed": 2,
        }


def test_four_changes_in_thirty_minutes_send_one_flapping_alert_then_quiet_until_settled(engine):
    states = ["above", "below", "above", "below", "above", "below", "above"]
    done = [
        put(engine, event(s, 60 if s == "above" else 5, n=n * 4), at(n * 4))
        for n, s in enumerate(states)
    ]
    sent = [len(pending(d)) for d in done]
    assert sent == [1, 1, 1, 1, 1, 0, 0]
    assert [d["flapping"] for d in done] == [False] * 4 + [True, False, False]
    assert [d["suppressed"] for d in done][-2:] == ["flapping", "flapping"]
    with engine.connect() as conn:
        grouped = views.alert(conn, done[4]["id"])
        (cond,) = store.conditions(conn, kind="drift")
    assert grouped["flapping"] is True and grouped["condition"] == "flapping"
    assert "4 changes in 30 minutes" in grouped["summary"]
    assert cond["flapping"] is True and cond["condition"] == "above"
    # nothing changes for 30 minutes: settled, its condition is sent once more
    assert store.settle(engine, [HOOK], POLICY, "m1", now=at(40)) == []
    (settled,) = store.settle(engine, [HOOK], POLICY, "m1", now=at(55))
    assert len(pending(settled)) == 1 and store.settle(engine, [HOOK], POLICY, now=at(56)) == []
    with engine.connect() as conn:
        shown = views.alert(conn, settled["id"])
        (cond,) = store.conditions(conn, kind="drift")
    assert shown["condition"] == "above" and "settled after flapping" in shown["summary"]
    assert cond["flapping"] is False


def test_an_ack_stops_repeats_until_the_condition_changes(engine):
    first = put(engine, event(n=0), at(0))
    with pytest.raises(store.AlertStoreError, match="no alert condition"):
        store.ack(engine, "drift", "web-9", actor="user:alice")
    acked = store.ack(engine, "drift", "mac-07", actor="user:alice", comment="on it", now=at(1))
    assert acked["acked_condition"] == "above" and acked["acked_by"] == "user:alice"
    policy = core.Policy(dedup_minutes=0)  # so only the ack can stop them
    held = [put(engine, event(n=n, score=61 + n), at(n), policy=policy) for n in (20, 40)]
    assert [h["suppressed"] for h in held] == ["acknowledged", "acknowledged"]
    assert all(not pending(h) for h in held)
    back = put(engine, event("below", 5, n=50), at(50), policy=policy)
    assert back["suppressed"] is None and len(pending(back)) == 1
    with engine.connect() as conn:
        (cond,) = store.conditions(conn)
    assert cond["acked_condition"] is None and cond["condition"] == "below"
    again = put(engine, event(n=60), at(60), policy=policy)
    assert len(pending(again)) == 1 and first["id"] < again["id"]
    store.ack(engine, "drift", "mac-07", actor="user:bob", now=at(61))
    assert store.unack(engine, "drift", "mac-07") is True
    assert store.unack(engine, "drift", "mac-07") is False


class Outcome:
    def __init__(self, ok, status_code=None, error=None, retry=True, latency_ms=3.0):
        self.ok, self.status_code, self.error = ok, status_code, error
        self.retry, self.latency_ms = retry, latency_ms


def test_claims_attempts_back_off_and_a_routes_alerts_go_in_order(engine):
    ids = [put(engine, event(n=n, score=60 + 30 * n, node=f"n{n}"), at(n))["id"] for n in range(3)]
    claimed = store.claim_due(engine, "m1", now=at(3))
    # one route: only its oldest pending delivery is due
    assert [c["alert_id"] for c in claimed] == [ids[0]]
    assert claimed[0]["alert"]["delivery_id"] == claimed[0]["id"]
    assert claimed[0]["alert"]["node"] == "n0" and claimed[0]["route"] == "config:hook"
    assert store.claim_due(engine, "m2", now=at(3)) == []  # held by m1
    down = store.finish(engine, claimed[0]["id"], "m1", Outcome(False, 503, "503"), POLICY, at(3))
    assert down["status"] == "pending" and down["attempts"] == 1
    assert store.claim_due(engine, "m1", now=at(3)) == []  # waits for its back-off
    retry_at = dt.datetime.fromisoformat(down["next_at"])
    assert 1.6 <= (retry_at - at(3)).total_seconds() <= 2.4
    again = store.claim_due(engine, "m2", now=retry_at)
    assert [c["alert_id"] for c in again] == [ids[0]]
    ok = store.finish(engine, again[0]["id"], "m2", Outcome(True, 200), POLICY, retry_at)
    assert ok["status"] == "delivered" and ok["attempts"] == 2
    nxt = store.claim_due(engine, "m1", now=retry_at)
    assert [c["alert_id"] for c in nxt] == [ids[1]]
    # a permanent refusal is not retried
    no = store.finish(engine, nxt[0]["id"], "m1", Outcome(False, 400, "400", False), POLICY)
    assert no["status"] == "failed"
    # a lease that ran out: another master takes it, the first one's late answer is "lost"
    last = store.claim_due(engine, "m1", now=retry_at, lease_s=5)
    taken = store.claim_due(engine, "m2", now=retry_at + dt.timedelta(seconds=6))
    assert [c["id"] for c in taken] == [last[0]["id"]]
    lost = store.finish(engine, last[0]["id"], "m1", Outcome(True, 200), POLICY)
    assert lost["status"] == "lost"
    # retried past give_up_after_h: failed
    gone = store.finish(engine, taken[0]["id"], "m2", Outcome(False, None, "refused"), POLICY,
                        at(63))  # fmt: skip
    assert gone["status"] == "failed"
    with engine.connect() as conn:
        log = views.alert(conn, ids[0])
        failed = views.deliveries_page(conn, views.DeliveriesQuery(status="failed"))["rows"]
    attempts = log["deliveries"][0]["attempt_list"]
    assert [(a["ok"], a["status_code"], a["master"]) for a in attempts] == [
        (False, 503, "m1"),
        (True, 200, "m2"),
    ]
    assert attempts[0]["error"] == "503" and attempts[1]["latency_ms"] == 3.0
    assert [f["alert_id"] for f in failed] == [ids[2], ids[1]]  # newest first


def test_a_route_that_is_gone_fails_its_deliveries_and_ui_routes_keep_secrets_in_the_vault(
    engine, tmp_path
):
    vault = core_secrets.Vault.open(tmp_path / "fleet.fernet")
    with engine.begin() as conn:
        route = store.set_route(
            conn,
            vault,
            "builds",
            "webhook",
            {"kinds": ["drift"], "node": "mac-*"},
            {"url": "http://127.0.0.1:9/hook"},
            {"hmac": "s3cret-hmac"},
            actor="ui:alice",
        )
        with pytest.raises(core.AlertError, match="target:token"):
            store.set_route(conn, vault, "bad", "webhook", {}, {"token": "x"})
        with pytest.raises(core.AlertError, match="destination"):
            store.set_route(conn, vault, "bad", "telex", {}, {})
    assert route.key == "ui:builds"
    with engine.connect() as conn:
        (row,) = views.ui_routes(conn)
        assert list(views.secrets_set(conn, [row["key"]])[row["key"]]) == ["hmac"]
        assert row["created_by"] == "ui:alice"
        assert row["match"] == {"kinds": ["drift"], "min_severity": "info", "node": "mac-*"}
        assert store.route_secrets(conn, vault, "ui:builds", ["hmac", "url"]) == {
            "hmac": "s3cret-hmac"
        }
        token = conn.execute(select(Secret.value).where(Secret.owner == "ui:builds")).scalar()
        assert "s3cret" not in str(token) and store_secrets.ALERT_SCOPE == "alert"
        routes = store.ui_routes(conn)
    done = put(engine, event(), at(0), routes=routes)
    assert [d["route"] for d in done["deliveries"]] == ["ui:builds"]
    with engine.begin() as conn:
        assert store.delete_route(conn, "builds") is True
        assert store.route_secrets(conn, vault, "ui:builds", ["hmac"]) == {}
        (d,) = views.deliveries_page(conn, views.DeliveriesQuery())["rows"]
    assert d["status"] == "failed" and d["last_error"] == "the route was deleted"


def test_group_matching_uses_the_nodes_group_in_the_store(engine):
    with engine.begin() as conn:
        conn.execute(Node.__table__.insert().values(minion_id="mac-07", node_group="macs"))
    macs = core.route_of("macs", "config", "slack", {"group": "macs"}, {})
    linux = core.route_of("linux", "config", "slack", {"group": "linux"}, {})
    done = put(engine, event(), at(0), routes=(macs, linux))
    assert [d["route"] for d in done["deliveries"]] == ["config:macs"]


def test_listing_is_newest_first_paginated_and_filtered(engine):
    for n in range(5):
        put(engine, event(n=n, node=f"node-{n % 2}"), at(n))
    with engine.connect() as conn:
        page = views.alert_log(conn, limit=2)
        assert [a["node"] for a in page] == ["node-0", "node-1"]
        rest = views.alert_log(conn, limit=10, before=page[-1]["id"])
        assert len(rest) == 3 and rest[0]["id"] < page[-1]["id"]
        assert {a["node"] for a in views.alert_log(conn, node="node-1")} == {"node-1"}
        assert views.alert_log(conn, kind="cve") == []
        assert store.firing_nodes(conn, "drift") == ["node-0", "node-1"]
        with pytest.raises(store.AlertStoreError, match="status"):
            views.alert_log(conn, status="lost")
        with pytest.raises(store.AlertStoreError, match="limit"):
            views.alert_log(conn, limit=0)


def test_a_test_alert_is_recorded_already_claimed(engine):
    delivery = store.record_test(engine, HOOK, master="m1", actor="user:root", now=at(0))
    assert delivery["alert"]["kind"] == "test" and delivery["alert"]["delivery_id"]
    assert store.claim_due(engine, "m2", now=at(0)) == []
    done = store.finish(engine, delivery["id"], "m1", Outcome(True, 204), POLICY, at(0))
    assert done["status"] == "delivered"


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_two_masters_racing_claim_each_delivery_exactly_once(engine):
    for n in range(40):
        routes = [core.route_of(f"r{n % 8}", "config", "webhook", {}, {})]
        put(engine, event(n=n, node=f"node-{n}"), at(0), routes=routes)
    won: dict[str, list[int]] = {"m1": [], "m2": [], "m3": []}
    start = threading.Barrier(3)

    def worker(master):
        start.wait()
        for _ in range(40):
            for d in store.claim_due(engine, master, now=at(1)):
                won[master].append(d["id"])
                store.finish(engine, d["id"], master, Outcome(True, 200), POLICY, at(1))

    threads = [threading.Thread(target=worker, args=(m,)) for m in won]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    every = [i for ids in won.values() for i in ids]
    print({m: len(ids) for m, ids in won.items()})
    assert len(every) == len(set(every)) == 40
    with engine.connect() as conn:
        assert store.counts(conn)["delivered"] == 40
        rows = views.deliveries_page(conn, views.DeliveriesQuery(per_page=100))["rows"]
    assert all(r["attempts"] == 1 for r in rows)


def test_a_run_of_a_routes_due_deliveries_is_claimed_in_order_and_given_back(engine):
    ids = [put(engine, event(n=n, node=f"r{n}"), at(n))["id"] for n in range(5)]
    run = store.claim_due(engine, "m1", now=at(5), per_route=3)
    assert [d["alert_id"] for d in run] == ids[:3]
    assert store.claim_due(engine, "m2", now=at(5), per_route=3) == []  # the head is held
    # the first fails: the two behind it are given back, and wait behind it
    store.finish(engine, run[0]["id"], "m1", Outcome(False, 503, "503"), POLICY, at(5))
    assert store.release(engine, [d["id"] for d in run[1:]], "m1") == 2
    assert store.claim_due(engine, "m2", now=at(5), per_route=3) == []  # not due yet
    later = store.claim_due(engine, "m2", now=at(6), per_route=10)
    assert [d["alert_id"] for d in later] == ids
