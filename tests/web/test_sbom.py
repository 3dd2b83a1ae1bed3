"""A node's SBOM through the API and the node page's download links."""

from __future__ import annotations

import json

from sqlalchemy import insert

from saltext_fleet.core import inventory as core_inventory
from saltext_fleet.core import sbom as core_sbom
from saltext_fleet.store.batch import ingest_grains, ingest_inventory
from saltext_fleet.store.models import Node
from tests.support.vulnfleet import make_vuln_fleet

FACTS = {"os": "Debian", "osrelease": "12", "osarch": "amd64"}


def _node(engine, minion, packages=None):
    with engine.begin() as conn:
        conn.execute(insert(Node).values(minion_id=minion, facts={}, comment=""))
        if packages is not None:
            ingest_inventory(conn, minion, core_inventory.build_inventory(packages, {}, FACTS))
            ingest_grains(conn, minion, {"fleet": {"hardware_model": "R650"}})


def test_a_viewer_downloads_a_nodes_sbom(engine, logged_in):
    _node(engine, "web-1", {"deb": {"bash": "5.2"}, "pypi": {"six": "1.16.0"}})
    client, _csrf = logged_in("viewer")
    resp = client.get("/api/v1/nodes/web-1/sbom")
    assert resp.status_code == 200
    assert resp.mimetype == "application/vnd.cyclonedx+json"
    assert resp.headers["Content-Disposition"] == 'attachment; filename="web-1.cdx.json"'
    text = resp.get_data(as_text=True)
    core_sbom.validate(text, "cyclonedx-json")
    data = json.loads(text)
    assert data["metadata"]["component"]["name"] == "web-1"
    assert sorted(c["purl"] for c in data["components"]) == [
        "pkg:deb/debian/bash@5.2?arch=amd64&distro=debian-12",
        "pkg:pypi/six@1.16.0",
    ]
    resp = client.get("/api/v1/nodes/web-1/sbom?format=cyclonedx-xml")
    assert resp.status_code == 200 and resp.mimetype == "application/vnd.cyclonedx+xml"
    assert resp.headers["Content-Disposition"] == 'attachment; filename="web-1.cdx.xml"'
    core_sbom.validate(resp.get_data(as_text=True), "cyclonedx-xml")


def test_sbom_errors_name_what_was_wrong(engine, logged_in):
    _node(engine, "web-1", {"deb": {"bash": "5.2"}})
    _node(engine, "fresh")
    client, _csrf = logged_in("viewer")
    cases = [
        ("/api/v1/nodes/web-1/sbom?format=spdx", 400, "format 'spdx' is not one of"),
        ("/api/v1/nodes/ghost/sbom", 404, "no node 'ghost'"),
        ("/api/v1/nodes/fresh/sbom", 409, "has reported no inventory yet"),
        ("/api/v1/nodes/-rf/sbom", 404, "no such node"),
    ]
    for url, status, words in cases:
        resp = client.get(url)
        assert resp.status_code == status, url
        assert words in resp.get_json()["error"]["message"], url


def test_the_node_page_links_the_downloads(engine, logged_in):
    _node(engine, "web-1", {"deb": {"bash": "5.2"}})
    _node(engine, "fresh")
    client, _csrf = logged_in("viewer")
    page = client.get("/nodes/web-1").get_data(as_text=True)
    assert 'href="/api/v1/nodes/web-1/sbom?format=cyclonedx-json"' in page
    assert 'href="/api/v1/nodes/web-1/sbom?format=cyclonedx-xml"' in page
    # a node with no inventory has nothing to download
    assert "/sbom" not in client.get("/nodes/fresh").get_data(as_text=True)


def test_a_not_affected_decision_is_a_vex_entry_in_the_nodes_sbom(engine, logged_in):
    """An operator's not_affected decision shows in the node's SBOM (``?vex=1``) as a
    CycloneDX VEX entry that validates, pointing at the component the finding is about."""
    make_vuln_fleet(engine)
    with engine.begin() as conn:
        ingest_inventory(
            conn,
            "db1",
            core_inventory.build_inventory(
                {"deb": {"libssl3": "3.0.11-1~deb12u1"}, "pypi": {"requests": "2.0.0"}},
                {"deb": {"libssl3": {"name": "openssl", "version": "3.0.11-1~deb12u1"}}},
                FACTS,
            ),
        )
    client, csrf = logged_in("operator")
    made = client.post(
        "/api/v1/vulns/triage",
        json={
            "advisory": "GHSA-crit-0001",
            "state": "not_affected",
            "justification": "code_not_reachable",
            "node": "db1",
            "detail": "no outbound HTTP from this host",
        },
        headers={"X-CSRF-Token": csrf},
    )
    assert made.status_code == 201, made.get_json()
    plain = json.loads(client.get("/api/v1/nodes/db1/sbom").get_data(as_text=True))
    assert "vulnerabilities" not in plain
    for fmt in ("cyclonedx-json", "cyclonedx-xml"):
        resp = client.get(f"/api/v1/nodes/db1/sbom?vex=1&format={fmt}")
        assert resp.status_code == 200
        core_sbom.validate(resp.get_data(as_text=True), fmt)
    data = json.loads(client.get("/api/v1/nodes/db1/sbom?vex=1").get_data(as_text=True))
    (vuln,) = data["vulnerabilities"]
    assert vuln["id"] == "GHSA-crit-0001"
    assert vuln["analysis"]["state"] == "not_affected"
    assert vuln["analysis"]["justification"] == "code_not_reachable"
    assert vuln["analysis"]["detail"] == "no outbound HTTP from this host"
    requests = next(c for c in data["components"] if c["name"] == "requests")
    assert [a["ref"] for a in vuln["affects"]] == [requests["bom-ref"]]
    assert client.get("/api/v1/nodes/db1/sbom?vex=maybe").status_code == 400


def test_the_download_is_the_librarys_whole_document(engine, logged_in):
    """The API's JSON (built through the web process's component cache, twice) is
    cyclonedx-python-lib's whole document of the stored inventory, serial number and time
    apart."""
    packages = {"deb": {"bash": "5.2", "libc6": "2.36-9,2.37-1"}, "pypi": {"at@odd/ü": "1+x"}}
    _node(engine, "web-1", packages)
    _node(engine, "web-2", packages)
    client, _csrf = logged_in("viewer")
    inventory = core_inventory.build_inventory(packages, {}, FACTS)
    for minion in ("web-1", "web-2"):
        got = json.loads(client.get(f"/api/v1/nodes/{minion}/sbom").get_data(as_text=True))
        bom = core_sbom.build_bom(minion, inventory, {"fleet": {"hardware_model": "R650"}})
        want = json.loads(core_sbom.serialize(bom))
        for doc in (got, want):
            doc.pop("serialNumber")
            doc["metadata"].pop("timestamp")
        assert got == want
        assert len(got["components"]) == 4
