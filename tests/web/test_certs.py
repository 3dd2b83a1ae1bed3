"""The certificates and Xcode pages and their API with Flask's client: who may see them,
what they show for the macOS fixtures' nodes, bad parameters (the browser test is
test_certs_browser.py)."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from saltext_fleet.core import baseline as core_baseline
from saltext_fleet.store import drift as store_drift
from saltext_fleet.store.models import DriftCurrent
from tests.support.certs import BUILDS, JANE, OLD, fixture_identities, mac_grains, store_grains
from tests.support.certs import xcode as xc


@pytest.fixture
def fleet(engine):
    """Three Macs with the fixtures' identities, one with a certificate due in 5 days."""
    ids = fixture_identities()
    soon = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=5, hours=1)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    store_grains(engine, "mac-1", mac_grains(ids, [xc("15.4"), xc("16.2", True, "16C5032a")]))
    store_grains(engine, "mac-2", mac_grains(ids[:2], [xc("15.4", True)], os_version="14.4.1"))
    store_grains(
        engine,
        "mac-3",
        mac_grains(
            [{"sha1": "AA" * 20, "name": "Apple Distribution: Soon", "not_after": soon}],
            [xc("16.2", True, "16C5032a")],
            os_version="15.1",
        ),
    )
    store_drift.save_baseline(
        engine, core_baseline.parse({"name": "xc16", "facts": {"xcode": "16.2"}}), "test"
    )
    with engine.begin() as conn:
        for node in ("mac-1", "mac-2"):
            conn.execute(
                DriftCurrent.__table__.insert().values(minion_id=node, baseline="xc16", score=0.0)
            )
    return engine


def test_every_role_sees_both_pages_and_the_nav_links_them(fleet, logged_in, client):
    assert client.get("/certs").status_code in (302, 401)
    assert client.get("/api/v1/xcode").status_code == 401
    for role in ("viewer", "auditor", "operator", "admin"):
        session, _csrf = logged_in(role)
        for path in ("/certs", "/xcode"):
            page = session.get(path)
            assert page.status_code == 200, (role, path)
            html = page.get_data(as_text=True)
            assert 'href="/certs"' in html and 'href="/xcode"' in html


def test_the_certificates_page(fleet, logged_in):
    session, _ = logged_in("viewer")
    html = session.get("/certs").get_data(as_text=True)
    order = re.findall(r'<tr data-sha1="([0-9A-F]{40})"', html)
    assert order == [OLD, "AA" * 20, JANE, BUILDS]
    assert re.search(rf'data-sha1="{OLD}" data-nodes="mac-1" data-band="expired" ', html)
    assert re.search(r'data-nodes="mac-3" data-band="7d" class="cert-7d"', html)
    assert re.search(rf'data-sha1="{JANE}" data-nodes="mac-1 mac-2" data-band="">', html)
    data = session.get("/api/v1/certs?days=30").get_json()
    assert [r["sha1"] for r in data["page"]["rows"]] == [OLD, "AA" * 20]
    assert data["page"]["rows"][1]["days_left"] == 5 and data["page"]["rows"][1]["band"] == "7d"
    assert data["page"]["total"] == 2 and data["page"]["bands"]["7d"] == 1
    assert session.get("/api/v1/certs?days=soon").status_code == 400
    assert "days" in session.get("/api/v1/certs?days=soon").get_json()["error"]["message"]
    assert session.get("/certs?per_page=100000").status_code == 400


def test_the_xcode_page(fleet, logged_in):
    session, _ = logged_in("viewer")
    html = session.get("/xcode").get_data(as_text=True)
    assert re.findall(r'<th scope="col" class="xcode-version" data-version="([^"]+)"', html) == [
        "15.4",
        "16.2",
    ]
    assert re.findall(r'<tr data-node="([^"]+)"', html) == ["mac-1", "mac-2", "mac-3"]
    assert re.search(r'<tr data-node="mac-2" class="xcode-lacks">', html)
    assert '<td data-version="16.2" class="xcode-missing">' in html
    assert html.count("xcode-missing") == 1
    assert html.count("xcode-selected") == 3
    data = session.get("/api/v1/xcode?lacking=yes").get_json()
    assert [r["id"] for r in data["matrix"]["rows"]] == ["mac-2"]
    against = session.get("/api/v1/xcode?baseline=xc16").get_json()["matrix"]
    assert [r["id"] for r in against["rows"] if r["lacks"]] == ["mac-2"]
    assert session.get("/xcode?baseline=nope").status_code == 404
    assert session.get("/xcode?baseline=../x").status_code == 400
    assert session.get("/api/v1/xcode?lacking=maybe").status_code == 400


def test_empty_pages_say_where_the_data_comes_from(engine, logged_in):
    session, _ = logged_in("viewer")
    assert "fleet</code> grain" in session.get("/certs").get_data(as_text=True)
    assert "No macOS nodes" in session.get("/xcode").get_data(as_text=True)
