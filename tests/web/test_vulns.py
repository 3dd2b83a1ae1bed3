"""The vulnerabilities pages and their API: the views, filters and paging, an advisory, a
node's tab, the triage form and API, what a bad parameter gets, and an accepted risk past its
expiry counting as open again. (Who may see and do what: the route walk.)"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import update

from saltext_fleet.store import audit as store_audit
from saltext_fleet.store.models import VulnTriage
from tests.support.vulnfleet import make_vuln_fleet


@pytest.fixture
def fleet(engine):
    make_vuln_fleet(engine)
    return engine


@pytest.fixture
def viewer(fleet, logged_in):
    client, _csrf = logged_in("viewer")
    return client


@pytest.fixture
def operator(fleet, logged_in):
    return logged_in("operator")


def text(resp) -> str:
    assert resp.status_code == 200, resp.get_data(as_text=True)[:500]
    return resp.get_data(as_text=True)


def future(days: int) -> str:
    return (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=days)).date().isoformat()


def finding_states(page: str) -> dict[str, str]:
    return dict(re.findall(r'<tr data-finding="([^"]+)">.*?data-triage="([^"]+)"', page, re.S))


def test_the_fleet_page_by_advisory_node_and_finding(viewer):
    page = text(viewer.get("/vulns"))
    assert re.findall(r'<tr data-advisory="([^"]+)">', page) == [
        "GHSA-crit-0001",
        "DSA-5000-1",
        "PYSEC-2024-2",
    ]
    assert 'data-field="open">6<' in page and 'data-field="triaged">0<' in page
    assert 'href="/vulns">Vulnerabilities</a>' in page or 'href="/vulns" aria-current' in page
    # everything a record says is escaped
    assert "urllib3 &lt;script&gt; redirect" in page and "<script> redirect" not in page
    nodes = text(viewer.get("/vulns?view=node"))
    assert re.findall(r'<tr data-node="([^"]+)">', nodes) == ["db1", "web1", "web2"]
    one_by_one = text(viewer.get("/vulns?view=finding&per_page=2&page=2"))
    assert len(re.findall(r"<tr data-finding=", one_by_one)) == 2
    assert "page 2 of 3 (6)" in one_by_one
    assert 'href="/vulns?view=finding&amp;page=3&amp;per_page=2"' in one_by_one


@pytest.mark.parametrize(
    ("args", "advisories"),
    [
        ("severity=high", ["GHSA-crit-0001", "DSA-5000-1"]),
        ("ecosystem=deb", ["DSA-5000-1"]),
        ("group=db", ["GHSA-crit-0001", "DSA-5000-1", "PYSEC-2024-2"]),
        ("group=web&severity=medium", ["GHSA-crit-0001", "PYSEC-2024-2"]),
        ("q=urllib", ["PYSEC-2024-2"]),
        ("triage=not_affected", []),
    ],
)
def test_the_filters(viewer, args, advisories):
    page = text(viewer.get(f"/vulns?{args}"))
    assert re.findall(r'<tr data-advisory="([^"]+)">', page) == advisories
    if not advisories:
        assert "No open findings with these filters." in page
    api = viewer.get(f"/api/v1/vulns/advisories?{args}").get_json()
    assert [r["advisory"] for r in api["rows"]] == advisories


def test_an_advisory_page(viewer):
    page = text(viewer.get("/vulns/GHSA-crit-0001"))
    assert 'id="advisory-aliases">CVE-2026-0001<' in page
    assert 'data-severity="critical">critical 9.8<' in page
    assert "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H" in page
    assert "introduced 0, fixed 2.32.0" in page
    assert set(finding_states(page)) == {
        "web1:pypi:requests:GHSA-crit-0001",
        "web2:pypi:requests:GHSA-crit-0001",
        "db1:pypi:requests:GHSA-crit-0001",
    }
    assert 'id="triage-form"' not in page  # a viewer reads, an operator decides
    assert viewer.get("/vulns/GHSA-nope-9999").status_code == 404
    assert viewer.get("/vulns/..%2Fetc").status_code == 404
    api = viewer.get("/api/v1/vulns/advisories/GHSA-crit-0001").get_json()
    assert api["advisory"]["aliases"] == ["CVE-2026-0001"]
    assert api["findings"]["total"] == 3 and api["decisions"] == []


def test_the_node_tab_and_the_node_page(viewer):
    tab = text(viewer.get("/nodes/web1/vulns"))
    assert set(finding_states(tab)) == {
        "web1:pypi:requests:GHSA-crit-0001",
        "web1:pypi:urllib3:PYSEC-2024-2",
    }
    assert 'id="vuln-chart"' in tab and 'class="point"' in tab  # two history points
    assert 'href="/api/v1/nodes/web1/sbom"' in tab
    node = text(viewer.get("/nodes/web1"))
    assert 'data-field="vulns-open">2<' in node and 'href="/nodes/web1/vulns"' in node
    api = viewer.get("/api/v1/nodes/web1/vulns").get_json()
    assert [p["open"] for p in api["history"]] == [1, 2]
    assert api["summary"]["open"] == 2 and api["findings"]["total"] == 2
    assert viewer.get("/nodes/ghost/vulns").status_code == 404
    assert viewer.get("/api/v1/nodes/ghost/vulns").status_code == 404
    empty = text(viewer.get("/nodes/lone/vulns"))
    assert "No open findings." in empty


def test_the_triage_form_records_an_audited_decision(fleet, operator, viewer):
    client, csrf = operator
    page = text(client.get("/nodes/db1/vulns"))
    assert 'id="triage-' in page and 'name="where"' in page
    resp = client.post(
        "/vulns/GHSA-crit-0001/triage",
        data={
            "csrf_token": csrf,
            "where": "group:web",
            "state": "not_affected",
            "justification": "code_not_present",
            "detail": "web nodes vendor a patched copy",
            "back": "node:web1",
        },
    )
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/nodes/web1/vulns")
    after = text(client.get("/nodes/web1/vulns"))
    assert "Recorded decision" in after
    states = finding_states(after)
    assert states["web1:pypi:requests:GHSA-crit-0001"] == "not_affected"
    assert states["web1:pypi:urllib3:PYSEC-2024-2"] == "open"
    fleet_page = text(viewer.get("/vulns"))
    assert 'data-field="open">4<' in fleet_page and 'data-field="triaged">2<' in fleet_page
    (event,) = store_audit.events(fleet, action="vuln.triage")
    assert event["actor"] == "ui:operator" and event["details"]["target"] == "web"
    # the decision is listed on the advisory's page, with a revoke button for operators
    adv = text(client.get("/vulns/GHSA-crit-0001"))
    decision_id = re.search(r'<tr data-decision="(\d+)" data-live="yes">', adv).group(1)
    assert f'data-revoke="{decision_id}"' in adv
    resp = client.post(
        f"/vulns/triage/{decision_id}/revoke", data={"csrf_token": csrf, "back": "node:web1"}
    )
    assert resp.status_code == 303
    again = text(client.get("/nodes/web1/vulns"))
    assert "Revoked decision" in again
    assert finding_states(again)["web1:pypi:requests:GHSA-crit-0001"] == "open"
    assert [e["action"] for e in store_audit.events(fleet, target="GHSA-crit-0001")] == [
        "vuln.triage.revoke",
        "vuln.triage",
    ]


@pytest.mark.parametrize(
    ("form", "words"),
    [
        ({"where": "fleet", "state": "not_affected"}, "needs a justification"),
        ({"where": "fleet", "state": "accepted"}, "accepted needs an expiry"),
        ({"where": "fleet", "state": "accepted", "expires": "2020-01-01"}, "not in the future"),
        ({"where": "node:../etc", "state": "will_fix"}, "node:"),
        ({"where": "node:ghost", "state": "will_fix"}, "no node 'ghost'"),
        ({"where": "planet", "state": "will_fix"}, "where:"),
        ({"where": "fleet", "state": "ignore"}, "state:"),
    ],
)
def test_a_refused_decision_is_named_and_nothing_is_recorded(fleet, operator, form, words):
    client, csrf = operator
    resp = client.post("/vulns/GHSA-crit-0001/triage", data={"csrf_token": csrf, **form})
    assert resp.status_code == 303
    page = text(client.get(resp.headers["Location"]))
    assert "Not recorded:" in page and words in page.replace("&#39;", "'")
    assert store_audit.events(fleet, action="vuln.triage") == []


def test_an_accepted_risk_past_its_expiry_shows_the_finding_as_open_again(fleet, operator):
    client, csrf = operator
    made = client.post(
        "/api/v1/vulns/triage",
        json={
            "advisory": "DSA-5000-1",
            "state": "accepted",
            "node": "db1",
            "expires": future(7),
            "detail": "isolated host",
        },
        headers={"X-CSRF-Token": csrf},
    )
    assert made.status_code == 201, made.get_json()
    decision = made.get_json()
    assert decision["vex"] == {
        "state": "exploitable",
        "justification": None,
        "responses": ["will_not_fix"],
        "detail": "isolated host",
    }
    key = "db1:deb:libssl3:DSA-5000-1"
    assert finding_states(text(client.get("/nodes/db1/vulns")))[key] == "accepted"
    assert client.get("/api/v1/vulns/findings?triage=open&ecosystem=deb").get_json()["total"] == 0
    # time passes: the expiry is behind us
    with fleet.begin() as conn:
        conn.execute(
            update(VulnTriage)
            .where(VulnTriage.id == decision["id"])
            .values(expires_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1))
        )
    page = text(client.get("/nodes/db1/vulns"))
    assert finding_states(page)[key] == "open"
    assert 'data-open-severity="high">1 high<' in page
    found = client.get("/api/v1/vulns/findings?triage=open&ecosystem=deb").get_json()
    assert [r["package"] for r in found["rows"]] == ["libssl3"] and found["rows"][0][
        "triage"
    ] is None
    assert client.get("/api/v1/vulns/triage").get_json() == []
    (ended,) = client.get("/api/v1/vulns/triage?all=1").get_json()
    assert ended["id"] == decision["id"] and ended["live"] is False


def test_the_triage_api(fleet, operator):
    client, csrf = operator
    headers = {"X-CSRF-Token": csrf}
    made = client.post(
        "/api/v1/vulns/triage",
        json={"advisory": "PYSEC-2024-2", "state": "will_fix", "fleet": True, "package": "urllib3"},
        headers=headers,
    ).get_json()
    assert made["scope"] == "fleet" and made["vex"]["responses"] == ["update"]
    listed = client.get("/api/v1/vulns/triage?advisory=PYSEC-2024-2").get_json()
    assert [d["id"] for d in listed] == [made["id"]]
    nodes = client.get("/api/v1/vulns/nodes?triage=will_fix").get_json()
    assert [(r["minion"], r["triaged"]) for r in nodes["rows"]] == [("db1", 1), ("web1", 1)]
    for body, words in [
        ({"advisory": "PYSEC-2024-2", "state": "will_fix"}, "exactly one of"),
        ({"advisory": "PYSEC-2024-2", "state": "will_fix", "fleet": True, "x": 1}, "unknown"),
        ({"advisory": ["x"], "state": "will_fix", "fleet": True}, "advisory: text"),
        ({"advisory": "GHSA-none-9", "state": "will_fix", "fleet": True}, "no advisory"),
    ]:
        resp = client.post("/api/v1/vulns/triage", json=body, headers=headers)
        assert resp.status_code == 400 and words in resp.get_json()["error"]["message"], body
    revoked = client.post(f"/api/v1/vulns/triage/{made['id']}/revoke", headers=headers)
    assert revoked.status_code == 200 and revoked.get_json()["revoked_by"] == "ui:operator"
    again = client.post(f"/api/v1/vulns/triage/{made['id']}/revoke", headers=headers)
    assert again.status_code == 409 and "already revoked" in again.get_json()["error"]["message"]
    assert client.post("/api/v1/vulns/triage/999/revoke", headers=headers).status_code == 404
    spec = client.get("/api/v1/openapi.json").get_json()
    assert spec["paths"]["/vulns/triage"]["post"]["x-permission"] == "vulns.triage"


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/api/v1/vulns/findings?severity=urgent", "severity"),
        ("/api/v1/vulns/findings?triage=maybe", "triage"),
        ("/api/v1/vulns/advisories?per_page=501", "per_page"),
        ("/api/v1/vulns/nodes?page=0", "page"),
        ("/api/v1/vulns/findings?node=..%2Fetc", "not a minion id"),
        ("/api/v1/vulns/findings?advisory=a%20b", "not an advisory id"),
        ("/api/v1/vulns/triage?all=perhaps", "all"),
        ("/vulns?view=cloud", "view"),
    ],
)
def test_a_bad_parameter_is_named(viewer, path, words):
    resp = viewer.get(path)
    assert resp.status_code == 400
    body = resp.get_data(as_text=True)
    assert words in body, body[:300]


def test_with_no_advisories_the_pages_say_how_to_import_them(engine, logged_in):
    make_vuln_fleet(engine, advisories=False)
    client, _csrf = logged_in("viewer")
    page = text(client.get("/vulns"))
    assert "No advisories imported yet" in page and "salt-run fleet.cve_import" in page
    assert "No advisories imported yet" in text(client.get("/nodes/web1/vulns"))
    assert "No advisories imported yet" in text(client.get("/nodes/web1"))
    assert client.get("/api/v1/vulns/findings").get_json()["advisories"] == 0


def test_an_api_token_triages_without_a_csrf_token_and_a_viewers_cannot(app, fleet, logged_in):
    tokens = {}
    for role in ("viewer", "operator"):
        client, csrf = logged_in(role)
        page = client.post("/account/token", data={"csrf_token": csrf})
        tokens[role] = re.search(
            r'id="api-token"[^>]*>([^<]+)<', page.get_data(as_text=True)
        ).group(1)
    api = app.test_client()
    body = {"advisory": "DSA-5000-1", "state": "will_fix", "group": "db"}
    refused = api.post(
        "/api/v1/vulns/triage",
        json=body,
        headers={"Authorization": f"Bearer {tokens['viewer']}"},
    )
    assert refused.status_code == 403
    made = api.post(
        "/api/v1/vulns/triage",
        json=body,
        headers={"Authorization": f"Bearer {tokens['operator']}"},
    )
    assert made.status_code == 201 and made.get_json()["decided_by"] == "ui:operator"
    listed = api.get(
        "/api/v1/vulns/findings?triage=will_fix",
        headers={"Authorization": f"Bearer {tokens['viewer']}"},
    ).get_json()
    assert [(r["minion"], r["package"]) for r in listed["rows"]] == [("db1", "libssl3")]
