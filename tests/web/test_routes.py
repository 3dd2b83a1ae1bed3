"""Every route of the app needs a session, the CSRF token for changes and the right role."""

from __future__ import annotations

from saltext_fleet.core import webauth
from saltext_fleet.webui.security import PUBLIC_ENDPOINTS, STATE_CHANGING
from tests.support.web import account_csrf, login


def _sample_args(rule) -> dict:
    return {arg: "x1" if arg != "jid" else "20261129000000000000" for arg in rule.arguments}


#: Every route of the app (its rule and method) and the least role that may use it, written
#: here from what each page and endpoint does, not read from the app: a route missing from this
#: table, or an entry whose route is gone, fails the walk below. The login form, its TOTP step
#: and static files are public (``PUBLIC_ENDPOINTS``) and not listed.
ROUTE_ROLES = {
    ("/", "GET"): "viewer",
    ("/account", "GET"): "viewer",
    ("/account/password", "POST"): "viewer",
    ("/account/token", "POST"): "viewer",
    ("/account/totp", "POST"): "viewer",
    ("/logout", "POST"): "viewer",
    ("/nodes/<minion_id>", "GET"): "viewer",
    # drift across the fleet, one package's nodes, two nodes compared: reading, like the nodes
    ("/drift", "GET"): "viewer",
    ("/drift/packages/<ecosystem>/<path:name>", "GET"): "viewer",
    ("/compare", "GET"): "viewer",
    # vulnerabilities: reading like the nodes, triage decisions for operators
    ("/vulns", "GET"): "viewer",
    ("/vulns/<advisory_id>", "GET"): "viewer",
    ("/nodes/<minion_id>/vulns", "GET"): "viewer",
    # signing certificates and the Xcode matrix: reading like the nodes
    ("/certs", "GET"): "viewer",
    ("/xcode", "GET"): "viewer",
    ("/api/v1/certs", "GET"): "viewer",
    ("/api/v1/xcode", "GET"): "viewer",
    # PiKVM devices: reading like the nodes (the registry is written by salt-run fleet.kvm_add)
    ("/kvm", "GET"): "viewer",
    ("/kvm/<name>", "GET"): "viewer",
    # a PiKVM's power buttons, mounting a library image and ejecting: operators
    ("/kvm/<name>/power", "POST"): "operator",
    ("/kvm/<name>/media/mount", "POST"): "operator",
    ("/kvm/<name>/media/eject", "POST"): "operator",
    # a device's console page: watching is every role's (kvm.watch), typing an operator's
    ("/kvm/<name>/console", "GET"): "viewer",
    # alerts (issue 15): reading like the nodes; acknowledging and test-sending are an
    # operator's, the UI's routes and route secrets an admin's
    ("/alerts", "GET"): "viewer",
    ("/alerts/<alert_id>", "GET"): "viewer",
    ("/alerts/deliveries", "GET"): "viewer",
    ("/alerts/routes", "GET"): "viewer",
    ("/alerts/ack", "POST"): "operator",
    ("/alerts/unack", "POST"): "operator",
    ("/alerts/routes/test", "POST"): "operator",
    ("/alerts/routes", "POST"): "admin",
    ("/alerts/routes/<name>/delete", "POST"): "admin",
    ("/alerts/routes/secret", "POST"): "admin",
    ("/api/v1/alerts", "GET"): "viewer",
    ("/api/v1/alerts/<alert_id>", "GET"): "viewer",
    ("/api/v1/alerts/deliveries", "GET"): "viewer",
    ("/api/v1/alerts/ack", "POST"): "operator",
    ("/vulns/<advisory_id>/triage", "POST"): "operator",
    ("/vulns/triage/<triage_id>/revoke", "POST"): "operator",
    ("/nodes/<minion_id>/action", "POST"): "operator",
    ("/nodes/<minion_id>/meta", "POST"): "operator",
    ("/groups", "GET"): "viewer",
    ("/groups/<group>/action", "POST"): "operator",
    ("/keys", "GET"): "viewer",
    ("/keys/<minion_id>/<decision>", "POST"): "operator",
    ("/enrol", "GET"): "operator",
    ("/enrol", "POST"): "operator",
    ("/bootstrap", "GET"): "operator",
    ("/bootstrap", "POST"): "operator",
    ("/bootstrap/<minion_id>", "GET"): "viewer",
    ("/baselines", "GET"): "viewer",
    ("/baselines/<name>", "GET"): "viewer",
    ("/baselines/<op>", "POST"): "operator",
    ("/jobs", "GET"): "viewer",
    # The job page shows the load and every return (pillar.items, cmd.run output): auditor
    # and up (issue 11).
    ("/jobs/<jid>", "GET"): "auditor",
    ("/audit", "GET"): "auditor",
    ("/users", "GET"): "admin",
    ("/users", "POST"): "admin",
    ("/users/<username>/<change>", "POST"): "admin",
    ("/api/v1/me", "GET"): "viewer",
    ("/api/v1/openapi.json", "GET"): "viewer",
    ("/api/v1/nodes", "GET"): "viewer",
    ("/api/v1/nodes/<minion_id>", "GET"): "viewer",
    ("/api/v1/nodes/<minion_id>", "PATCH"): "operator",
    ("/api/v1/nodes/<minion_id>/drift", "GET"): "viewer",
    # a node's SBOM: its inventory as a CycloneDX document, readable like the inventory
    ("/api/v1/nodes/<minion_id>/sbom", "GET"): "viewer",
    ("/api/v1/nodes/<minion_id>/drift/findings", "GET"): "viewer",
    ("/api/v1/drift/packages", "GET"): "viewer",
    ("/api/v1/drift/packages/<ecosystem>/<path:name>", "GET"): "viewer",
    ("/api/v1/compare", "GET"): "viewer",
    ("/api/v1/vulns/findings", "GET"): "viewer",
    ("/api/v1/vulns/advisories", "GET"): "viewer",
    ("/api/v1/vulns/nodes", "GET"): "viewer",
    ("/api/v1/vulns/advisories/<advisory_id>", "GET"): "viewer",
    ("/api/v1/nodes/<minion_id>/vulns", "GET"): "viewer",
    ("/api/v1/vulns/triage", "GET"): "viewer",
    ("/api/v1/kvm/devices", "GET"): "viewer",
    ("/api/v1/kvm/devices/<name>", "GET"): "viewer",
    ("/api/v1/vulns/triage", "POST"): "operator",
    ("/api/v1/vulns/triage/<triage_id>/revoke", "POST"): "operator",
    ("/api/v1/nodes/<minion_id>/actions", "POST"): "operator",
    ("/api/v1/groups/<group>/actions", "POST"): "operator",
    ("/api/v1/keys", "GET"): "viewer",
    ("/api/v1/keys/<minion_id>/<decision>", "POST"): "operator",
    ("/api/v1/enrolments", "POST"): "operator",
    ("/api/v1/bootstraps", "GET"): "viewer",
    ("/api/v1/bootstraps", "POST"): "operator",
    ("/api/v1/baselines", "GET"): "viewer",
    ("/api/v1/baselines/<op>", "POST"): "operator",
    # Salt's jobs through the API: the list for everyone, a job's returns for auditors and up.
    ("/api/v1/jobs", "GET"): "viewer",
    ("/api/v1/jobs/<jid>", "GET"): "auditor",
    ("/api/v1/audit", "GET"): "auditor",
    ("/api/v1/audit/verify", "GET"): "auditor",
}


def test_every_route_needs_a_session_csrf_and_the_right_role(app, people, logged_in):
    """Walk the app's whole URL map against ``ROUTE_ROLES``."""
    routes = {
        (rule.rule, method): rule
        for rule in app.url_map.iter_rules()
        if rule.endpoint not in PUBLIC_ENDPOINTS
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    unlisted = sorted(set(routes) - set(ROUTE_ROLES))
    gone = sorted(set(ROUTE_ROLES) - set(routes))
    assert not unlisted, f"routes missing from ROUTE_ROLES (add them with their role): {unlisted}"
    assert not gone, f"ROUTE_ROLES entries with no route in the app: {gone}"
    assert set(ROUTE_ROLES.values()) <= set(webauth.ROLES)
    clients = {role: logged_in(role) for role in webauth.ROLES}
    anonymous = app.test_client()
    refused = {role: 0 for role in webauth.ROLES}
    allowed = {role: 0 for role in webauth.ROLES}
    for (path, method), rule in sorted(routes.items()):
        least = ROUTE_ROLES[(path, method)]
        url = rule.build(_sample_args(rule), append_unknown=False)[1]
        what = (path, method)
        # 1. no session: refused (API: 401; pages: a redirect to the login form)
        resp = anonymous.open(url, method=method)
        assert resp.status_code in (401, 302), (*what, resp.status_code)
        if resp.status_code == 302:
            assert "/login" in resp.headers["Location"], what
        if method in STATE_CHANGING:
            # 2. a session of the least role that may use it, without the CSRF token, or
            #    with a wrong one: refused
            client, csrf = clients[least]
            for headers in ({}, {"X-CSRF-Token": csrf[:-2] + "xx"}):
                resp = client.open(url, method=method, headers=headers)
                assert resp.status_code == 403, (*what, resp.status_code)
                assert b"CSRF" in resp.data, what
        # 3. every role below the least one: 403; the least one and above: let in (whatever
        #    the sample arguments then make of it: 200, a redirect, 400, 404 ...)
        for role in webauth.ROLES:
            client, csrf = clients[role]
            if what == ("/logout", "POST"):
                client = login(app, people[role])  # keep the walk's sessions alive
                csrf = account_csrf(client)
            headers = {"X-CSRF-Token": csrf} if method in STATE_CHANGING else {}
            resp = client.open(url, method=method, headers=headers)
            if webauth.ROLES.index(role) < webauth.ROLES.index(least):
                assert resp.status_code == 403, (*what, role, resp.status_code)
                refused[role] += 1
            else:
                assert resp.status_code not in (401, 403, 500), (
                    *what,
                    role,
                    resp.status_code,
                    resp.get_data(as_text=True)[:300],
                )
                allowed[role] += 1
    # (the walk reached both sides of every role boundary)
    assert refused["viewer"] > refused["auditor"] > refused["operator"] > refused["admin"] == 0
    assert allowed["admin"] == len(routes)
    # API errors share one envelope
    resp = anonymous.get("/api/v1/nodes")
    assert resp.status_code == 401
    body = resp.get_json()
    assert set(body) == {"error"} and body["error"]["code"] == 401 and body["error"]["message"]


def test_answers_carry_the_security_headers(client, logged_in):
    page = client.get("/login")
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert "Cache-Control" not in page.headers or "no-store" not in page.headers["Cache-Control"]
    viewer, _csrf = logged_in("viewer")
    assert viewer.get("/").headers["Cache-Control"] == "no-store"
    missing = viewer.get("/no/such/page")
    assert missing.status_code == 404 and missing.headers["X-Content-Type-Options"] == "nosniff"
    assert viewer.get("/api/v1/nope").get_json()["error"]["code"] == 404
