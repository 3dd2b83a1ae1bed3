"""The alert pages with Flask's test client over seeded alerts (tests/support/alertseed.py):
what each role sees and may do, the forms' CSRF, the runner each form calls (as the user) and
what it is given, and route secrets that never come back to a page. The runners themselves
run against a real master in tests/integration/test_alerts_browser.py."""

from __future__ import annotations

import html
import re

import pytest
from sqlalchemy import insert

from saltext_fleet.store.models import AlertRoute, Secret
from saltext_fleet.webui.salt import SaltError
from tests.support.alertseed import CERT_SHA1, seed

SECRET = "hmac-Very-Secret-0123456789"


@pytest.fixture
def seeded(engine):
    with engine.begin() as conn:
        return seed(conn)


@pytest.fixture
def hook_route(app, engine):
    """A UI route ``hook`` (webhook) whose HMAC secret is set in the vault."""
    vault = app.extensions["fleet"].vault
    with engine.begin() as conn:
        conn.execute(
            insert(AlertRoute).values(
                name="hook",
                destination="webhook",
                match={"kinds": ["drift", "kvm"], "min_severity": "warning", "node": "mac-*"},
                target={"url": "http://127.0.0.1:9/fleet", "timeout": 5},
                enabled=True,
                created_by="ui:admin",
            )
        )
        conn.execute(
            insert(Secret).values(
                scope="alert",
                owner="ui:hook",
                name="hmac",
                value=vault.encrypt(SECRET),
                key_id=vault.key_id,
            )
        )
    return "ui:hook"


def text(resp) -> str:
    return resp.get_data(as_text=True)


def rows(page: str, table: str) -> dict[str, str]:
    """``{data-alert: row html}`` of a table."""
    body = page.split(f'id="{table}"', 1)[1].split("</table>", 1)[0]
    return dict(re.findall(r'<tr data-alert="(\d+)"(.*?)</tr>', body, re.S))


def flashes(client) -> str:
    page = text(client.get("/account"))
    found = re.search(r'<div class="flash" role="status">(.*?)</div>', page, re.S)
    return html.unescape(found.group(1)) if found else ""


# -- the alerts page ---------------------------------------------------------------------------


def test_alerts_page_shows_suppressed_flapping_acknowledged_and_deliveries(logged_in, seeded):
    viewer, _csrf = logged_in("viewer")
    resp = viewer.get("/alerts")
    assert resp.status_code == 200
    page = text(resp)
    listed = rows(page, "alerts")
    assert list(listed) == [
        str(seeded[n])
        for n in (
            "cert_held",
            "cert",
            "resolved",
            "cve",
            "flap_held",
            "flapping",
            "kvm_1",
            "kvm_0",
            "duplicate",
            "drift",
        )
    ]
    assert 'data-mark="suppressed-duplicate"' in listed[str(seeded["duplicate"])]
    assert 'data-mark="flapping"' in listed[str(seeded["flapping"])]
    assert "flapping (grouped)" in listed[str(seeded["flapping"])]
    assert 'data-mark="suppressed-flapping"' in listed[str(seeded["flap_held"])]
    cert = listed[str(seeded["cert"])]
    assert 'data-mark="acknowledged"' in cert and "acknowledged by oper" in cert
    assert "renewal ordered" in cert
    drift = listed[str(seeded["drift"])]
    assert 'data-route="ui:hook" data-status="delivered"' in drift and "2 attempts" in drift
    assert 'data-status="failed"' in listed[str(seeded["cve"])]
    assert 'data-status="pending"' in listed[str(seeded["resolved"])]
    assert '<strong data-field="firing">3</strong>' in page
    # a viewer has no Acknowledge button
    assert "/alerts/ack" not in page


def test_operator_sees_acknowledge_on_firing_unacknowledged_conditions(logged_in, seeded):
    oper, _csrf = logged_in("operator")
    listed = rows(text(oper.get("/alerts")), "alerts")
    with_button = sorted(int(k) for k, row in listed.items() if "/alerts/ack" in row)
    # the newest alert of each firing condition not acknowledged: mac-01 drift, linux-01 cve
    assert with_button == sorted([seeded["duplicate"], seeded["cve"]])


def test_filters_and_bad_filters(logged_in, seeded):
    viewer, _csrf = logged_in("viewer")
    page = text(viewer.get("/alerts?suppressed=duplicate"))
    assert list(rows(page, "alerts")) == [str(seeded["duplicate"])]
    page = text(viewer.get("/alerts?acknowledged=yes&kind=cert"))
    assert list(rows(page, "alerts")) == [str(seeded["cert_held"]), str(seeded["cert"])]
    page = text(viewer.get("/alerts?node=linux-01&severity=critical&state=firing"))
    assert list(rows(page, "alerts")) == [str(seeded["cve"])]
    page = text(viewer.get("/alerts?per_page=4&page=3"))
    assert len(rows(page, "alerts")) == 2 and "page 3 of 3 (10)" in page
    bad = viewer.get("/alerts?severity=loud")
    assert bad.status_code == 400 and "severity: &#39;loud&#39; is not one of" in text(bad)
    assert viewer.get("/alerts?node=../etc").status_code == 400
    api = viewer.get("/api/v1/alerts?kind=kvm&per_page=2").get_json()
    assert api["total"] == 4 and [r["id"] for r in api["rows"]] == [
        seeded["flap_held"],
        seeded["flapping"],
    ]
    assert api["rows"][1]["flapping"] is True and api["query"]["kind"] == "kvm"


def test_one_alert_with_every_attempt(logged_in, seeded):
    viewer, _csrf = logged_in("viewer")
    page = text(viewer.get(f"/alerts/{seeded['drift']}"))
    attempts = page.split(f'data-attempts="{seeded["drift_delivery"]}"', 1)[1]
    attempts = attempts.split("</table>", 1)[0]
    assert attempts.count("<tr data-ok=") == 2
    assert "HTTP 503 from the receiver" in attempts and "42 ms" in attempts  # 41.5 ms
    assert viewer.get("/alerts/999999").status_code == 404
    assert viewer.get("/alerts/nope").status_code == 404
    api = viewer.get(f"/api/v1/alerts/{seeded['cve']}").get_json()
    assert [a["error"] for a in api["deliveries"][0]["attempt_list"]] == ["connection refused"] * 3


# -- acknowledge -------------------------------------------------------------------------------


def test_operator_withdraws_an_acknowledgement_through_the_runner(logged_in, seeded, salt):
    salt.answers["fleet.alert_unack"] = lambda kw: {**kw, "withdrawn": True}
    viewer, viewer_csrf = logged_in("viewer")
    assert "/alerts/unack" not in text(viewer.get("/alerts"))
    data = {"kind": "cert", "node": "mac-01", "subject": CERT_SHA1}
    refused = viewer.post("/alerts/unack", data={"csrf_token": viewer_csrf, **data})
    assert refused.status_code == 403
    oper, csrf = logged_in("operator")
    listed = rows(text(oper.get("/alerts")), "alerts")
    # offered on the newest alert of the one acknowledged condition (mac-01's certificate)
    assert [int(k) for k, row in listed.items() if "/alerts/unack" in row] == [seeded["cert_held"]]
    assert "/alerts/unack" in text(oper.get(f"/alerts/{seeded['cert_held']}"))
    resp = oper.post("/alerts/unack", data={"csrf_token": csrf, "back": "/alerts", **data})
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/alerts")
    calls = [c for c in salt.calls if c[1] == "fleet.alert_unack"]
    assert calls == [("runner", "fleet.alert_unack", data, "ui:operator")]
    shown = flashes(oper)
    assert f"Acknowledgement of cert on mac-01 ({CERT_SHA1}) withdrawn" in shown
    salt.answers["fleet.alert_unack"] = lambda kw: {**kw, "withdrawn": False}
    oper.post("/alerts/unack", data={"csrf_token": csrf, **data})
    assert f"cert on mac-01 ({CERT_SHA1}) was not acknowledged." in flashes(oper)


def test_viewer_cannot_acknowledge(logged_in, seeded, salt):
    viewer, csrf = logged_in("viewer")
    resp = viewer.post("/alerts/ack", data={"csrf_token": csrf, "kind": "drift", "node": "mac-01"})
    assert resp.status_code == 403
    assert not [c for c in salt.calls if c[1] == "fleet.alert_ack"]


def test_acknowledge_needs_the_csrf_token(logged_in, seeded, salt):
    oper, csrf = logged_in("operator")
    for token in (None, csrf[:-2] + "xx"):
        data = {"kind": "drift", "node": "mac-01"}
        if token:
            data["csrf_token"] = token
        resp = oper.post("/alerts/ack", data=data)
        assert resp.status_code == 403 and b"CSRF" in resp.data
    assert not [c for c in salt.calls if c[1] == "fleet.alert_ack"]


def test_operator_acknowledges_through_the_runner_as_themselves(logged_in, seeded, salt):
    salt.answers["fleet.alert_ack"] = lambda kw: {**kw, "acked_condition": "above"}
    oper, csrf = logged_in("operator")
    resp = oper.post(
        "/alerts/ack",
        data={
            "csrf_token": csrf,
            "kind": "drift",
            "node": "mac-01",
            "subject": "",
            "comment": "  known: rebuilding the image  ",
            "back": "/alerts?kind=drift",
        },
    )
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/alerts?kind=drift")
    (call,) = [c for c in salt.calls if c[1] == "fleet.alert_ack"]
    assert call == (
        "runner",
        "fleet.alert_ack",
        {
            "kind": "drift",
            "node": "mac-01",
            "subject": "",
            "comment": "known: rebuilding the image",
        },
        "ui:operator",
    )
    assert "Acknowledged drift on mac-01 (above): repeats stop until the condition changes." in (
        flashes(oper)
    )
    # a back link to another site is not followed
    resp = oper.post(
        "/alerts/ack",
        data={
            "csrf_token": csrf,
            "kind": "cert",
            "node": "mac-01",
            "subject": CERT_SHA1,
            "back": "//evil.example/x",
        },
    )
    assert resp.headers["Location"].endswith("/alerts")
    assert salt.calls[-1][2]["subject"] == CERT_SHA1


def test_a_refused_acknowledgement_is_shown(logged_in, seeded, salt):
    salt.answers["fleet.alert_ack"] = SaltError("no condition drift/mac-09")
    oper, csrf = logged_in("operator")
    oper.post("/alerts/ack", data={"csrf_token": csrf, "kind": "drift", "node": "mac-09"})
    assert "Not acknowledged: drift on mac-09: no condition drift/mac-09" in flashes(oper)
    bad = oper.post("/alerts/ack", data={"csrf_token": csrf, "kind": "drift", "node": "a/../b"})
    assert bad.status_code == 400
    long = oper.post(
        "/alerts/ack",
        data={"csrf_token": csrf, "kind": "drift", "node": "mac-01", "comment": "x" * 1001},
    )
    assert long.status_code == 400 and "comment: at most 1000" in text(long)


def test_acknowledge_through_the_api(app, people, logged_in, seeded, salt):
    salt.answers["fleet.alert_ack"] = lambda kw: {**kw, "acked_condition": "findings"}
    body = {"kind": "cve", "node": "linux-01", "comment": "patching tonight"}
    tokens = {}
    for role in ("viewer", "operator"):
        client, csrf = logged_in(role)
        made = client.post("/account/token", data={"csrf_token": csrf})
        tokens[role] = re.search(r'id="api-token"[^>]*>([^<]+)<', text(made)).group(1)
    api = app.test_client()
    refused = api.post(
        "/api/v1/alerts/ack", json=body, headers={"Authorization": f"Bearer {tokens['viewer']}"}
    )
    assert refused.status_code == 403
    done = api.post(
        "/api/v1/alerts/ack", json=body, headers={"Authorization": f"Bearer {tokens['operator']}"}
    )
    assert done.status_code == 200 and done.get_json()["acked_condition"] == "findings"
    assert salt.calls[-1] == (
        "runner",
        "fleet.alert_ack",
        {"kind": "cve", "node": "linux-01", "subject": "", "comment": "patching tonight"},
        "ui:operator",
    )
    bad = api.post(
        "/api/v1/alerts/ack",
        json={"kind": ["cve"]},
        headers={"Authorization": f"Bearer {tokens['operator']}"},
    )
    assert bad.status_code == 400 and bad.get_json()["error"]["message"] == "kind: a string"
    salt.answers["fleet.alert_ack"] = SaltError("no alert condition kind='cve' node='x'")
    refused = api.post(
        "/api/v1/alerts/ack",
        json={"kind": "cve", "node": "x"},
        headers={"Authorization": f"Bearer {tokens['operator']}"},
    )
    assert (
        refused.status_code == 400
        and "no alert condition" in refused.get_json()["error"]["message"]
    )


# -- the node page -------------------------------------------------------------------------------


def test_node_page_shows_its_conditions_and_alert_history(logged_in, seeded, engine):
    from saltext_fleet.store.models import Node

    with engine.begin() as conn:
        conn.execute(insert(Node).values(minion_id="mac-01", facts={}, comment=""))
        conn.execute(insert(Node).values(minion_id="quiet-01", facts={}, comment=""))
    oper, _csrf = logged_in("operator")
    page = text(oper.get("/nodes/mac-01"))
    section = page.split('<section id="alerts"', 1)[1].split("</section>", 1)[0]
    conditions = dict(re.findall(r'<tr data-condition="([^"]+)"(.*?)</tr>', section, re.S))
    assert set(conditions) == {f"cert:{CERT_SHA1}", "drift:"}
    assert "acknowledged by oper" in conditions[f"cert:{CERT_SHA1}"]
    assert "/alerts/ack" in conditions["drift:"]  # firing, not acknowledged: the button
    history = rows(section, "node-alerts")
    assert list(history) == [str(seeded[n]) for n in ("cert_held", "cert", "duplicate", "drift")]
    assert 'href="/alerts?node=mac-01"' in section
    quiet = text(oper.get("/nodes/quiet-01"))
    assert 'id="node-alerts-empty"' in quiet


# -- the delivery log ----------------------------------------------------------------------------


def test_delivery_log_with_attempts_filters_and_chart(logged_in, seeded):
    viewer, _csrf = logged_in("viewer")
    page = text(viewer.get("/alerts/deliveries?status=failed"))
    body = page.split('id="deliveries"', 1)[1]
    assert re.findall(r'<tr data-delivery="(\d+)"', body) == [str(seeded["cve_delivery"])]
    attempts = body.split(f'data-attempts-of="{seeded["cve_delivery"]}"', 1)[1]
    assert attempts.split("</table>", 1)[0].count("data-attempt=") == 3
    assert "connection refused" in attempts
    page = text(viewer.get("/alerts/deliveries?route=config:oncall"))
    assert page.count('<tr data-delivery="') == 1
    page = text(viewer.get("/alerts/deliveries"))
    assert page.count('<tr data-delivery="') == 6
    assert 'class="chart column-chart"' in page
    bad = viewer.get("/alerts/deliveries?status=lost")
    assert bad.status_code == 400
    assert viewer.get("/alerts/deliveries?hours=5").status_code == 400
    api = viewer.get("/api/v1/alerts/deliveries?status=delivered").get_json()
    assert api["total"] == 4 and len(api["over_time"]) == 24


# -- routes --------------------------------------------------------------------------------------


def test_routes_page_says_set_never_the_secret(logged_in, hook_route):
    for role in ("viewer", "operator", "admin"):
        client, _csrf = logged_in(role)
        page = text(client.get("/alerts/routes"))
        assert SECRET not in page
        row = page.split('<tr data-route="ui:hook"', 1)[1].split("</tr>", 1)[0]
        assert 'data-secret="hmac" data-set="1"' in row and "HMAC secret: set" in row
        assert ("data-test-route" in row) == (role != "viewer")
        assert ("data-delete-route" in row) == (role == "admin")
        assert ('id="route-form"' in page) == (role == "admin")
    admin, _csrf = logged_in("admin")
    editing = text(admin.get("/alerts/routes?edit=hook"))
    assert SECRET not in editing
    form = editing.split('id="route-form"', 1)[1].split("</form>", 1)[0]
    assert 'value="http://127.0.0.1:9/fleet"' in form and 'value="5"' in form
    assert "set: leave empty to keep it" in form
    for secret_input in re.findall(r'<input type="password"[^>]*>', form):
        assert 'value=""' in secret_input
    assert admin.get("/alerts/routes?edit=nope").status_code == 404


def test_config_routes_are_shown_read_only(engine, salt, tmp_path, people):
    """The master config's routes (``fleet:alerts:routes``): listed with their secrets' state,
    a Test send for operators and a Set secret for admins, never an Edit or Delete."""
    from saltext_fleet import config
    from tests.support.web import login, make_app

    cfg = config.load(
        {
            "cachedir": str(tmp_path),
            "fleet": {
                "alerts": {
                    "routes": [
                        {
                            "name": "oncall",
                            "destination": "pagerduty",
                            "match": {"kinds": ["drift", "cve"], "min_severity": "error"},
                            "target": {"url": "http://127.0.0.1:9/v2/enqueue"},
                        }
                    ]
                }
            },
        }
    )
    configured = make_app(engine, tmp_path / "other.fernet", salt=salt, config=cfg)
    vault = configured.extensions["fleet"].vault
    for role, set_yet in (("operator", False), ("admin", True)):
        if set_yet:
            with engine.begin() as conn:
                conn.execute(
                    insert(Secret).values(
                        scope="alert",
                        owner="config:oncall",
                        name="routing_key",
                        value=vault.encrypt("PD-KEY-SECRET"),
                        key_id=vault.key_id,
                    )
                )
        client = login(configured, role)
        page = text(client.get("/alerts/routes"))
        section = page.split('id="config-routes"', 1)[1].split("</section>", 1)[0]
        row = section.split('<tr data-route="config:oncall"', 1)[1].split("</tr>", 1)[0]
        assert "pagerduty" in row and "kinds drift, cve; at least error" in row
        assert "http://127.0.0.1:9/v2/enqueue" in row
        assert f'data-secret="routing_key" data-set="{int(set_yet)}"' in row
        assert "PD-KEY-SECRET" not in page
        assert 'data-test-route="config:oncall"' in row
        assert ('data-secret-route="config:oncall"' in row) == (role == "admin")
        assert "data-edit-route" not in section and "data-delete-route" not in section


def test_only_admin_edits_routes(logged_in, hook_route, salt):
    form = {
        "name": "chat",
        "destination": "slack",
        "target-slack-channel": "#builds",
        "secret-slack-url": "https://hooks.slack.example/T000/B000/XXXX",
        "enabled": "1",
    }
    for role in ("viewer", "auditor", "operator"):
        client, csrf = logged_in(role)
        assert client.post("/alerts/routes", data={**form, "csrf_token": csrf}).status_code == 403
        assert (
            client.post("/alerts/routes/hook/delete", data={"csrf_token": csrf}).status_code == 403
        )
        assert (
            client.post(
                "/alerts/routes/secret",
                data={"csrf_token": csrf, "route": "ui:hook", "name": "hmac", "value": "x"},
            ).status_code
            == 403
        )
    assert not [c for c in salt.calls if c[1].startswith("fleet.alert_")]
    admin, csrf = logged_in("admin")
    assert admin.post("/alerts/routes", data=form).status_code == 403  # no CSRF token
    resp = admin.post("/alerts/routes", data={**form, "csrf_token": csrf})
    assert resp.status_code == 303
    (call,) = [c for c in salt.calls if c[1] == "fleet.alert_route_set"]
    assert call[2] == {
        "name": "chat",
        "destination": "slack",
        "match": {},
        "target": {"channel": "#builds"},
        "secrets": {"url": "https://hooks.slack.example/T000/B000/XXXX"},
        "enabled": True,
    }
    assert call[3] == "ui:admin"
    shown = flashes(admin)
    assert "Route ui:chat saved (secret set: url)." in shown and "hooks.slack" not in shown


def test_route_form_fields_become_the_runners_arguments(logged_in, salt):
    admin, csrf = logged_in("admin")
    admin.post(
        "/alerts/routes",
        data={
            "csrf_token": csrf,
            "name": "mail",
            "destination": "email",
            "kinds": ["cve", "drift"],
            "min_severity": "error",
            "group": "macs",
            "node": "mac-*",
            "target-email-host": "127.0.0.1",
            "target-email-port": "2525",
            "target-email-from": "fleet@example.com",
            "target-email-to": "a@example.com, b@example.com",
            "secret-email-password": "",  # blank: left as it is
            # another destination's fields are not sent on
            "target-webhook-url": "http://ignored.example",
        },
    )
    (call,) = [c for c in salt.calls if c[1] == "fleet.alert_route_set"]
    assert call[2] == {
        "name": "mail",
        "destination": "email",
        "match": {
            "kinds": ["drift", "cve"],
            "min_severity": "error",
            "group": "macs",
            "node": "mac-*",
        },
        "target": {
            "host": "127.0.0.1",
            "port": 2525,
            "starttls": False,
            "from": "fleet@example.com",
            "to": ["a@example.com", "b@example.com"],
        },
        "enabled": False,
    }


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "no spaces"}, "is not a route name"),
        ({"destination": "pigeon"}, "destination: one of webhook, slack, pagerduty, email"),
        ({"kinds": ["drift", "weather"]}, "kinds: weather not among"),
        ({"min_severity": "loud"}, "min_severity: one of info"),
        ({"target-webhook-timeout": "soon"}, "timeout: a whole number"),
    ],
)
def test_a_bad_route_form_is_refused_before_salt(logged_in, salt, fields, message):
    admin, csrf = logged_in("admin")
    form = {
        "csrf_token": csrf,
        "name": "hook",
        "destination": "webhook",
        "target-webhook-url": "http://127.0.0.1:9/",
    }
    form.update(fields)
    resp = admin.post("/alerts/routes", data=form)
    assert resp.status_code == 303
    assert message in flashes(admin)
    assert not [c for c in salt.calls if c[1] == "fleet.alert_route_set"]


def test_what_the_runner_refuses_is_shown(logged_in, salt):
    salt.answers["fleet.alert_route_set"] = SaltError("target: url must be http or https")
    admin, csrf = logged_in("admin")
    admin.post(
        "/alerts/routes",
        data={
            "csrf_token": csrf,
            "name": "hook",
            "destination": "webhook",
            "target-webhook-url": "ftp://x",
        },
    )
    assert "Not saved: hook: target: url must be http or https" in flashes(admin)


def test_delete_and_set_secret_call_their_runners(logged_in, hook_route, salt):
    admin, csrf = logged_in("admin")
    admin.post("/alerts/routes/hook/delete", data={"csrf_token": csrf})
    assert salt.calls[-1] == ("runner", "fleet.alert_route_delete", {"name": "hook"}, "ui:admin")
    assert "Route ui:hook deleted." in flashes(admin)
    admin.post(
        "/alerts/routes/secret",
        data={
            "csrf_token": csrf,
            "route": "config:oncall",
            "name": "routing_key",
            "value": "R0UTING-KEY-42",
        },
    )
    assert salt.calls[-1] == (
        "runner",
        "fleet.alert_secret",
        {"route": "config:oncall", "name": "routing_key", "value": "R0UTING-KEY-42"},
        "ui:admin",
    )
    shown = flashes(admin)
    assert "config:oncall: routing key set." in shown and "R0UTING" not in shown
    assert (
        admin.post(
            "/alerts/routes/secret",
            data={"csrf_token": csrf, "route": "elsewhere:x", "name": "hmac", "value": "v"},
        ).status_code
        == 400
    )
    calls = len(salt.calls)
    admin.post(
        "/alerts/routes/secret",
        data={"csrf_token": csrf, "route": "ui:hook", "name": "hmac", "value": ""},
    )
    assert len(salt.calls) == calls and "Not set: ui:hook" in flashes(admin)


def test_operator_test_sends_and_sees_the_outcome_once(logged_in, hook_route, salt):
    salt.answers["fleet.alert_test"] = lambda kw: {
        "ok": False,
        "status_code": 503,
        "latency_ms": 42.345,
        "error": "HTTP 503 from the receiver",
        "retry": True,
    }
    viewer, vcsrf = logged_in("viewer")
    assert (
        viewer.post(
            "/alerts/routes/test", data={"csrf_token": vcsrf, "route": "ui:hook"}
        ).status_code
        == 403
    )
    oper, csrf = logged_in("operator")
    assert oper.post("/alerts/routes/test", data={"route": "ui:hook"}).status_code == 403
    resp = oper.post("/alerts/routes/test", data={"csrf_token": csrf, "route": "ui:hook"})
    assert resp.status_code == 303 and resp.headers["Location"].endswith("#route-ui:hook")
    assert salt.calls[-1] == ("runner", "fleet.alert_test", {"route": "ui:hook"}, "ui:operator")
    page = text(oper.get("/alerts/routes"))
    outcome = page.split('id="test-outcome"', 1)[1].split("</section>", 1)[0]
    assert 'data-route="ui:hook" data-ok="0"' in page
    assert '<dd data-field="status-code">503</dd>' in outcome
    assert '<dd data-field="latency">42.3 ms</dd>' in outcome
    assert "HTTP 503 from the receiver" in outcome
    assert 'id="test-outcome"' not in text(oper.get("/alerts/routes"))  # shown once
    salt.answers["fleet.alert_test"] = SaltError("no route ui:gone")
    oper.post("/alerts/routes/test", data={"csrf_token": csrf, "route": "ui:gone"})
    page = text(oper.get("/alerts/routes"))
    assert 'data-route="ui:gone" data-ok="0"' in page and "no route ui:gone" in page
    assert (
        oper.post("/alerts/routes/test", data={"csrf_token": csrf, "route": "hook"}).status_code
        == 400
    )


# -- live ----------------------------------------------------------------------------------------


def test_the_live_counts_carry_the_newest_alert(engine, seeded):
    """The hub's counts message says which alert is the newest, so an alerts page can offer a
    reload (the browser side: tests/integration/test_alerts_browser.py)."""
    import json

    from saltext_fleet.webui.live import Hub

    class Socket:
        def __init__(self):
            self.messages = []

        def write_message(self, text):
            self.messages.append(json.loads(text))

    hub = Hub(engine, schedule=lambda fn: fn(), idle_seconds=None)
    socket = Socket()
    with hub._lock:
        hub._sockets.add(socket)
    hub.look()
    (counts,) = [m for m in socket.messages if m["type"] == "counts"]
    assert counts["alerts"] == {"latest": seeded["cert_held"]}  # the newest seeded alert
    hub.stop()
