"""A node's SBOM through the API and the node page's download links."""

from __future__ import annotations

import json

from sqlalchemy import insert

from saltext_fleet.core import inventory as core_inventory
from saltext_fleet.core import sbom as core_sbom
from saltext_fleet.store.batch import ingest_grains, ingest_inventory
from saltext_fleet.store.models import Node

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
