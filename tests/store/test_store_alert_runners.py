"""The alert runners through Salt's real runner loader (master opts, no daemon), on SQLite and
PostgreSQL: the log, acknowledgements, UI routes and their secrets, test sends to a real
loopback receiver, the audit trail, and the resolved fleet/alert/cve when a node's alerted
findings are all resolved."""

import pytest
import salt.loader
import salt.utils.event
from salt.exceptions import SaltRunnerError

from saltext_fleet.core import alerts as core_alerts
from saltext_fleet.master import eventsig
from saltext_fleet.store import alerts as store_alerts
from saltext_fleet.store import audit as store_audit
from saltext_fleet.store import engine as store_engine
from tests.support.alertreceiver import Receiver
from tests.support.runners import master_bus, master_opts
from tests.support.vulns import inventory, put_advisories, record, store_inventory

ADVISORY = record("PYSEC-A-1", "PyPI", "jinja2", [("introduced", "0"), ("fixed", "3.1.3")])


@pytest.fixture
def fired(monkeypatch):
    return master_bus(monkeypatch)


@pytest.fixture
def runners(db_url, tmp_path):
    opts = master_opts(tmp_path / "master", db_url, {"vulns": {"alert_severity": "high"}})
    engine = store_engine.get_engine(db_url)
    store_engine.ensure_schema(engine)
    loaded = salt.loader.runner(opts)
    loaded.engine = engine
    return loaded


def test_routes_secrets_test_send_and_audit(runners):
    with Receiver(secret="runner-hmac-1") as receiver:
        made = runners["fleet.alert_route_set"](
            "builds",
            "webhook",
            match={"kinds": ["drift"], "min_severity": "warning"},
            target={"url": receiver.url, "timeout": 5},
            secrets={"hmac": "runner-hmac-1"},
        )
        assert made["key"] == "ui:builds" and made["secrets"] == ["hmac"]
        with pytest.raises(SaltRunnerError, match="unknown field 'colour'"):
            runners["fleet.alert_route_set"]("bad", "webhook", target={"colour": "red"})
        with pytest.raises(SaltRunnerError, match="slack target: unknown field .token."):
            runners["fleet.alert_route_set"]("bad", "slack", target={"token": "x"})
        with pytest.raises(SaltRunnerError, match="secrets are hmac, not 'url'"):
            runners["fleet.alert_secret"]("ui:builds", "url", value="x")
        with pytest.raises(SaltRunnerError, match="no alert route"):
            runners["fleet.alert_test"]("ui:nope")
        sent = runners["fleet.alert_test"]("ui:builds")
        assert sent["ok"] is True and sent["status"] == "delivered" and sent["status_code"] == 200
        (request,) = receiver.requests
        assert request.verified["kind"] == "test" and request.verified["id"] == sent["alert_id"]
        # a new secret: the next test send is signed with it
        runners["fleet.alert_secret"]("builds", "hmac", value="runner-hmac-2")
        receiver.secret = "runner-hmac-2"
        assert runners["fleet.alert_test"]("builds")["ok"] is True
        assert isinstance(receiver.requests[1].verified, dict)
        receiver.answer(500, b"broken")
        failed = runners["fleet.alert_test"]("builds")
        assert failed["ok"] is False and failed["status"] == "failed"  # a test is tried once
    routes = runners["fleet.alert_routes"]()
    assert [(r["key"], r["secrets"]) for r in routes] == [("ui:builds", ["hmac"])]
    log = runners["fleet.alerts"](kind="test")
    assert [a["deliveries"][0]["status"] for a in log] == ["failed", "delivered", "delivered"]
    assert runners["fleet.alerts"](status="failed", limit=1)[0]["id"] == failed["alert_id"]
    assert runners["fleet.alert_route_delete"]("ui:builds") == {
        "route": "ui:builds",
        "deleted": True,
    }
    actions = [e["action"] for e in store_audit.events(runners.engine, limit=20)]
    for action in ("alert.route_set", "alert.secret", "alert.test", "alert.route_delete"):
        assert action in actions, actions
    assert "runner-hmac" not in repr(store_audit.events(runners.engine, limit=20))


def test_ack_through_the_runner(runners):
    data = eventsig.sign(
        runners.opts,
        "fleet/alert/drift",
        {"id": "web-1", "state": "above", "score": 80.0, "alert_score": 50.0},
    )
    alert = core_alerts.normalise("fleet/alert/drift", data)
    key = core_alerts.event_key("fleet/alert/drift", data)
    store_alerts.record_alert(runners.engine, alert, [], core_alerts.Policy(), key)
    with pytest.raises(SaltRunnerError, match="kind='weather'"):
        runners["fleet.alert_ack"]("weather", "web-1")
    with pytest.raises(SaltRunnerError, match="no alert condition"):
        runners["fleet.alert_ack"]("drift", "web-2")
    done = runners["fleet.alert_ack"]("drift", "web-1", comment="rebuilding")
    assert done["acked_condition"] == "above" and done["ack_comment"] == "rebuilding"
    assert done["acked_by"].startswith("user:")
    (event,) = [
        e for e in store_audit.events(runners.engine, limit=5) if e["action"] == "alert.ack"
    ]
    assert event["target"] == "drift:web-1:"
    # withdrawn: alerts are sent again; withdrawing again finds nothing to withdraw
    assert runners["fleet.alert_unack"]("drift", "web-1")["withdrawn"] is True
    with runners.engine.connect() as conn:
        (row,) = store_alerts.conditions(conn, kind="drift", node="web-1")
    assert row["acked_condition"] is None and row["acked_by"] is None
    assert runners["fleet.alert_unack"]("drift", "web-1")["withdrawn"] is False
    with pytest.raises(SaltRunnerError, match="kind='weather'"):
        runners["fleet.alert_unack"]("weather", "web-1")
    unacks = [
        e for e in store_audit.events(runners.engine, limit=9) if e["action"] == "alert.unack"
    ]
    assert [e["target"] for e in unacks] == ["drift:web-1:"]


def test_a_nodes_cve_alert_resolves_when_its_alerted_findings_are_resolved(runners, fired):
    put_advisories(runners.engine, [ADVISORY], {"PYSEC-A-1": "high"}, {})
    store_inventory(runners.engine, "web-1", inventory({"pypi": {"jinja2": "3.1.2"}}))
    store_inventory(runners.engine, "web-2", inventory({"pypi": {"jinja2": "3.1.2"}}))
    runners["fleet.cve"](recompute=True)
    opened = [(t, d) for t, d in fired if t == "fleet/alert/cve"]
    assert sorted(d["id"] for _, d in opened) == ["web-1", "web-2"]
    # the worker recorded web-1's alert (web-2's was never heard: nothing to resolve there)
    tag, data = next((t, d) for t, d in opened if d["id"] == "web-1")
    alert = core_alerts.normalise(tag, data)
    store_alerts.record_alert(
        runners.engine, alert, [], core_alerts.Policy(), core_alerts.event_key(tag, data)
    )
    fired.clear()
    for node in ("web-1", "web-2"):
        store_inventory(
            runners.engine, node, inventory({"pypi": {"jinja2": "3.1.4"}}), "20261201110000000000"
        )
        signed = eventsig.sign(runners.opts, "fleet/inventory/changed", {"id": node})
        done = runners["fleet.cve_node"](
            node, event={"tag": "fleet/inventory/changed", "data": signed}
        )
        assert done[node]["resolved"] == 1
    assert [d["id"] for _, d in fired] == ["web-1"]
    ((tag, data),) = fired
    eventsig.check(runners.opts, tag, data)
    resolved = core_alerts.normalise(tag, data)
    assert (resolved["state"], resolved["condition"]) == ("resolved", "resolved")
    assert core_alerts.record({**resolved, "id": 1})["dedup_key"] == "fleet:cve:web-1:"
