"""What the UI's alert pages read (saltext_fleet.store.alert_views), on SQLite and PostgreSQL:
alerts newest first, filtered and paged in SQL, with their deliveries and the
acknowledgement of their condition; a node's history; the delivery log with each delivery's
newest attempts; deliveries per hour by status; routes and which secrets are set."""

import datetime as dt

import pytest
from sqlalchemy import insert

from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.store import alert_views as views
from saltext_fleet.store.models import Alert, AlertRoute, Secret
from saltext_fleet.store.ui import QueryError
from tests.support.alertseed import CERT_SHA1, NOW, seed


@pytest.fixture
def seeded(engine):
    with engine.begin() as conn:
        return seed(conn)


def page(engine, **args):
    query = views.AlertsQuery.from_args({k: str(v) for k, v in args.items()})
    with engine.connect() as conn:
        return views.alerts_page(conn, query)


def ids(found):
    return [r["id"] for r in found["rows"]]


def test_alerts_newest_first_with_deliveries_and_acknowledgement(engine, seeded):
    found = page(engine)
    assert found["total"] == 10 and found["pages"] == 1
    raised = [r["raised_at"] for r in found["rows"]]
    assert raised == sorted(raised, reverse=True)
    by_id = {r["id"]: r for r in found["rows"]}
    drift = by_id[seeded["drift"]]
    assert [(d["route"], d["status"], d["attempts"]) for d in drift["deliveries"]] == [
        ("ui:hook", "delivered", 2)
    ]
    assert drift["ackable"] and drift["ack"] is None and not drift["flapping"]
    assert by_id[seeded["duplicate"]]["suppressed"] == "duplicate"
    assert by_id[seeded["duplicate"]]["deliveries"] == []
    assert by_id[seeded["duplicate"]]["current"]["latest"] is True
    assert by_id[seeded["drift"]]["current"]["latest"] is False
    flapping = by_id[seeded["flapping"]]
    assert flapping["flapping"] and flapping["subject"] == "pikvm-2:reach"
    assert by_id[seeded["flap_held"]]["suppressed"] == "flapping"
    assert not by_id[seeded["flap_held"]]["flapping"]
    cert = by_id[seeded["cert"]]
    assert cert["ack"] == {
        "by": "ui:oper",
        "at": (NOW - dt.timedelta(minutes=5)).isoformat(),
        "condition": "7d",
        "comment": "renewal ordered",
    }
    assert not cert["ackable"]
    failed = by_id[seeded["cve"]]["deliveries"][0]
    assert failed["status"] == "failed" and failed["last_error"] == "connection refused"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"kind": "kvm"}, ["flap_held", "flapping", "kvm_1", "kvm_0"]),
        ({"severity": "error"}, ["cve", "flap_held", "flapping", "kvm_1", "kvm_0"]),
        ({"severity": "critical"}, ["cve"]),
        ({"node": "linux-01"}, ["resolved", "cve"]),
        (
            {"node": "mac-*"},
            ["cert_held", "cert", "flap_held", "flapping", "kvm_1", "kvm_0", "duplicate", "drift"],
        ),
        ({"state": "resolved"}, ["resolved", "flap_held", "kvm_1"]),
        ({"suppressed": "yes"}, ["cert_held", "flap_held", "duplicate"]),
        ({"suppressed": "duplicate"}, ["duplicate"]),
        ({"suppressed": "acknowledged"}, ["cert_held"]),
        ({"suppressed": "no", "kind": "drift"}, ["resolved", "drift"]),
        ({"acknowledged": "yes"}, ["cert_held", "cert"]),
        ({"acknowledged": "no", "node": "mac-01"}, ["duplicate", "drift"]),
    ],
)
def test_alert_filters(engine, seeded, args, expected):
    found = page(engine, **args)
    assert ids(found) == [seeded[name] for name in expected]
    assert found["total"] == len(expected)


def test_alerts_paged_in_sql_without_overlap(engine, seeded):
    seen = []
    for n in (1, 2, 3, 4):
        found = page(engine, per_page=3, page=n)
        assert found["pages"] == 4 and found["total"] == 10
        seen += ids(found)
    assert len(seen) == len(set(seen)) == 10
    assert page(engine, per_page=3, page=5)["rows"] == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"severity": "loud"}, "severity: 'loud' is not one of info, warning, error, critical"),
        ({"state": "on"}, "state: 'on' is not one of firing, resolved"),
        ({"suppressed": "maybe"}, "suppressed: 'maybe' is not one of"),
        ({"acknowledged": "perhaps"}, "acknowledged: 'perhaps' is not yes or no"),
        ({"per_page": "0"}, "per_page: 0 is not between 1 and 500"),
        ({"kind": "x" * 40}, "kind: at most 32 characters"),
    ],
)
def test_bad_filters_are_named(args, message):
    with pytest.raises(QueryError, match=message):
        views.AlertsQuery.from_args(args)


def test_a_glob_node_filter_is_no_sql_pattern(engine, seeded):
    # LIKE's own wildcards in a node filter are literal characters
    assert page(engine, node="mac-0_")["total"] == 0
    assert page(engine, node="%")["total"] == 0
    assert page(engine, node="*-01")["total"] == 6


def test_one_alert_with_every_attempt(engine, seeded):
    with engine.connect() as conn:
        found = views.alert(conn, seeded["drift"])
        assert views.alert(conn, 999_999) is None
    assert found["data"] == {"id": "mac-01"}
    (delivery,) = found["deliveries"]
    assert [(a["ok"], a["status_code"], a["latency_ms"]) for a in delivery["attempt_list"]] == [
        (False, 503, 41.5),
        (True, 200, 12.25),
    ]
    assert delivery["attempt_list"][0]["error"] == "HTTP 503 from the receiver"
    assert delivery["attempt_list"][0]["master"] == "master-a"


def test_a_nodes_conditions_and_history(engine, seeded):
    with engine.connect() as conn:
        mac1 = views.node_alerts(conn, "mac-01")
        assert views.node_alerts(conn, "nobody") == {"conditions": [], "alerts": [], "total": 0}
        cert = views.condition(conn, "cert", "mac-01", CERT_SHA1)
    assert mac1["total"] == 4
    assert [c["kind"] for c in mac1["conditions"]] == ["cert", "drift"]
    assert cert["ack"]["by"] == "ui:oper" and cert["condition"] == "7d"
    assert [a["id"] for a in mac1["alerts"]] == [
        seeded[n] for n in ("cert_held", "cert", "duplicate", "drift")
    ]
    with engine.connect() as conn:
        mac2 = views.node_alerts(conn, "mac-02", limit=2)
    assert mac2["total"] == 4 and len(mac2["alerts"]) == 2
    assert mac2["conditions"][0]["flapping_since"] is not None


def test_delivery_log_with_newest_attempts(engine, seeded):
    def log(**args):
        query = views.DeliveriesQuery.from_args({k: str(v) for k, v in args.items()})
        with engine.connect() as conn:
            return views.deliveries_page(conn, query, attempts_shown=2)

    everything = log()
    assert everything["total"] == 6
    created = [r["created_at"] for r in everything["rows"]]
    assert created == sorted(created, reverse=True)
    failed = log(status="failed")
    (row,) = failed["rows"]
    assert row["id"] == seeded["cve_delivery"] and row["attempts"] == 3
    assert row["alert"]["kind"] == "cve" and row["alert"]["severity"] == "critical"
    # the newest two of the three attempts, newest first
    shown = [a["at"] for a in row["attempt_list"]]
    assert len(shown) == 2 and shown == sorted(shown, reverse=True)
    assert all(a["error"] == "connection refused" and not a["ok"] for a in row["attempt_list"])
    assert [r["route"] for r in log(route="config:oncall")["rows"]] == ["config:oncall"]
    assert log(route="ui:hook")["total"] == 5
    assert [r["id"] for r in log(alert=seeded["drift"])["rows"]] == [seeded["drift_delivery"]]
    assert log(status="pending")["rows"][0]["attempt_list"] == []
    with pytest.raises(QueryError, match="status: 'lost' is not one of"):
        views.DeliveriesQuery.from_args({"status": "lost"})
    with pytest.raises(QueryError, match="alert: 'x' is not an alert id"):
        views.DeliveriesQuery.from_args({"alert": "x"})


def test_deliveries_per_hour_by_status(engine, seeded):
    with engine.connect() as conn:
        hours = views.deliveries_over_time(conn, hours=3, now=NOW)
    assert [h["at"] for h in hours] == ["2026-12-05 16:00", "2026-12-05 17:00", "2026-12-05 18:00"]
    # every seeded delivery was made in the hour before NOW
    assert hours[1] == {
        "at": "2026-12-05 17:00",
        "pending": 1,
        "delivered": 4,
        "failed": 1,
        "suppressed": 0,
    }
    assert sum(hours[0][s] + hours[2][s] for s in views.DELIVERY_STATUSES) == 0


def test_summary_and_latest(engine, seeded):
    with engine.connect() as conn:
        head = views.summary(conn)
        assert views.latest_alert_id(conn) == max(
            seeded[n] for n in seeded if not n.endswith("delivery")
        )
    assert head == {
        "firing": 3,
        "acknowledged": 1,
        "deliveries": {"pending": 1, "delivered": 4, "failed": 1, "suppressed": 0},
    }


def test_routes_secrets_set_never_their_values(engine, tmp_path):
    vault = core_secrets.Vault.open(str(tmp_path / "fleet.fernet"))
    with engine.begin() as conn:
        conn.execute(
            insert(AlertRoute).values(
                name="hook",
                destination="webhook",
                match={"kinds": ["drift"], "min_severity": "warning"},
                target={"url": "https://hooks.example/fleet"},
                enabled=True,
                created_by="ui:admin",
            )
        )
        conn.execute(
            insert(Secret).values(
                scope="alert",
                owner="ui:hook",
                name="hmac",
                value=vault.encrypt("s3cret-hmac"),
                key_id=vault.key_id,
            )
        )
        conn.execute(
            insert(Secret).values(
                scope="node",
                owner="ui:hook",
                name="other",
                value=vault.encrypt("x"),
                key_id=vault.key_id,
            )
        )
        seed(conn)
    with engine.connect() as conn:
        routes = views.ui_routes(conn)
        assert views.ui_route(conn, "nope") is None
        secrets = views.secrets_set(conn, ["ui:hook", "config:oncall"])
        stats = views.route_stats(conn)
    assert [(r["key"], r["destination"], r["enabled"]) for r in routes] == [
        ("ui:hook", "webhook", True)
    ]
    assert routes[0]["target"] == {"url": "https://hooks.example/fleet"}
    assert list(secrets) == ["ui:hook"] and list(secrets["ui:hook"]) == ["hmac"]
    assert "s3cret" not in repr(secrets)
    assert stats["ui:hook"]["counts"] == {
        "pending": 1,
        "delivered": 4,
        "failed": 0,
        "suppressed": 0,
    }
    assert stats["config:oncall"]["counts"]["failed"] == 1
    assert stats["config:oncall"]["last_delivered"] is None


def test_a_node_less_alert_meets_its_condition(engine):
    """An alert about no node (``node`` NULL) has the condition of node ``""``."""
    from saltext_fleet.store.models import AlertCondition

    with engine.begin() as conn:
        alert_id = conn.execute(
            insert(Alert)
            .values(
                event_key="fleetwide-1",
                tag="fleet/alert/test",
                kind="test",
                node=None,
                state="firing",
                condition="test",
                severity="info",
                summary="a test",
                data={},
                raised_at=NOW,
            )
            .returning(Alert.id)
        ).scalar_one()
        conn.execute(
            insert(AlertCondition).values(
                kind="test",
                node="",
                subject="",
                state="firing",
                condition="test",
                severity="info",
                changes=[],
                last_sent={},
                last_alert_id=alert_id,
            )
        )
    (row,) = page(engine)["rows"]
    assert row["node"] is None and row["current"]["latest"] and row["ackable"]


# -- what the alert worker writes, as the pages read it ----------------------------------------

T0 = dt.datetime(2026, 12, 5, 19, 0, tzinfo=dt.timezone.utc)
SIGNING_KEY = bytes(range(32))


def _drift(engine, state, n, node="mac-07"):
    """A signed drift event recorded by the alert store at T0 + 4n minutes."""
    from saltext_fleet.core import alerts as core
    from saltext_fleet.core import signing
    from saltext_fleet.store import alerts as store_alerts

    when = T0 + dt.timedelta(minutes=4 * n)
    data = signing.signed(
        SIGNING_KEY,
        "fleet/alert/drift",
        {
            "id": node,
            "state": state,
            "score": 60.0 if state == "above" else 5.0,
            "previous_score": 1.0,
            "alert_score": 50.0,
            "baseline": "b",
            "raised_at": when.isoformat(),
        },
    )
    hook = core.route_of("hook", "config", "webhook", {}, {"url": "http://127.0.0.1:9/x"})
    alert = core.normalise("fleet/alert/drift", data, now=when)
    key = core.event_key("fleet/alert/drift", data)
    return store_alerts.record_alert(engine, alert, [hook], core.Policy(), key, "m1", now=when)


def test_the_worker_s_duplicate_flapping_and_acknowledgement_as_the_pages_show_them(engine):
    """Alerts recorded by saltext_fleet.store.alerts (the worker's store API), read back
    through the page's views: a duplicate, the grouped flapping alert, the alerts held back
    while it flaps, and an acknowledgement made by ``store.alerts.ack``."""
    from saltext_fleet.store import alerts as store_alerts

    first = _drift(engine, "above", 0)
    duplicate = _drift(engine, "above", 1)
    assert duplicate["suppressed"] == "duplicate"
    states = ["below", "above", "below", "above", "below", "above"]
    flips = [_drift(engine, s, n) for n, s in enumerate(states, 2)]
    grouped = next(f for f in flips if f["flapping"])
    held = [f["id"] for f in flips if f["suppressed"] == "flapping"]
    found = page(engine, node="mac-07")
    by_id = {r["id"]: r for r in found["rows"]}
    assert by_id[duplicate["id"]]["suppressed"] == "duplicate"
    assert [d["status"] for d in by_id[duplicate["id"]]["deliveries"]] == ["suppressed"]
    assert by_id[grouped["id"]]["flapping"] and by_id[grouped["id"]]["condition"] == "flapping"
    assert [d["status"] for d in by_id[grouped["id"]]["deliveries"]] == ["pending"]
    assert held and all(by_id[i]["suppressed"] == "flapping" for i in held)
    assert not by_id[first["id"]]["flapping"]
    assert ids(page(engine, suppressed="duplicate")) == [duplicate["id"]]
    # acknowledged by an operator: the condition shows it, on each of its alerts
    store_alerts.ack(engine, "drift", "mac-07", "", actor="ui:oper", comment="on it")
    acked = page(engine, acknowledged="yes")
    assert acked["total"] == found["total"]
    newest = acked["rows"][0]
    assert newest["ack"]["by"] == "ui:oper" and newest["ack"]["comment"] == "on it"
    assert newest["ack"]["condition"] == newest["current"]["condition"]
    assert not newest["ackable"]
    with engine.connect() as conn:
        (cond,) = views.node_conditions(conn, "mac-07")
    assert cond["ack"]["condition"] == cond["condition"] and cond["flapping_since"]


def test_alert_pages_bench_quick_shows_the_generated_rows(pg_server_url):
    """bench/alerts_ui.py --quick: every page it times shows, in order, the alerts and
    deliveries that filtering the generated data in Python gives (on both backends)."""
    from tests.store.test_bench_quick import run_bench

    summary = run_bench("alerts_ui.py", "--quick", "--pg-url", pg_server_url)
    for backend in ("postgresql", "sqlite"):
        checks = summary[backend]["checks"]
        assert checks["alerts_first_page"] == 50 and checks["node_page"] == 20
        assert len(checks) == 7 and all(n > 0 for n in checks.values())
