"""The drift pages and their API: a node's findings with their rules, drift across the fleet,
two nodes compared; what a bad parameter gets. (Who may see them: the route walk.)"""

from __future__ import annotations

import re

import pytest

from tests.support.driftfleet import make_fleet


@pytest.fixture
def viewer(engine, logged_in):
    """A viewer's session on a store holding :mod:`tests.support.driftfleet`'s fleet."""
    make_fleet(engine)
    client, _csrf = logged_in("viewer")
    return client


def text(resp) -> str:
    assert resp.status_code == 200, resp.get_data(as_text=True)[:500]
    return resp.get_data(as_text=True)


def test_the_node_page_lists_every_finding_with_its_rule(viewer):
    page = text(viewer.get("/nodes/n2"))
    assert 'id="drift-findings" class="findings" data-state="ok"' in page
    row = re.search(r'<tr data-finding="changed:pypi:requests">(.*?)</tr>', page, re.S).group(1)
    assert "2.31.0" in row and "3.0.1" in row and "major" in row
    assert "packages:pypi:requests" in row and "exactly 2.31.0" in row
    assert 'data-finding="missing:pypi:certifi"' in page
    assert 'data-finding="extra:pypi:rich"' in page
    assert 'data-finding="facts::osrelease"' in page and "facts:osrelease" in page
    # the baseline was pinned from n1: one click compares the two
    assert 'href="/compare?a=n1&amp;b=n2"' in page
    unscored = text(viewer.get("/nodes/n4"))
    assert 'data-state="no-baseline"' in unscored


def test_the_fleet_page_shows_the_packages_on_most_nodes_and_their_nodes(viewer):
    page = text(viewer.get("/drift"))
    rows = re.findall(r'<tr data-package="([^"]+)">', page)
    assert rows[0] == "pypi:certifi" and set(rows) == {
        "pypi:certifi",
        "pypi:requests",
        "pypi:rich",
        "pypi:six",
    }
    certifi = re.search(r'<tr data-package="pypi:certifi">(.*?)</tr>', page, re.S).group(1)
    assert re.findall(r'data-node="([^"]+)"', certifi) == ["n2", "n3", "n5"]
    assert 'class="bar bar-missing"' in page  # the chart
    assert '<tr data-fact="osrelease">' in page
    extras = text(viewer.get("/drift?kind=extra&sort=name"))
    assert re.findall(r'<tr data-package="([^"]+)">', extras) == ["pypi:rich", "pypi:six"]
    nodes = text(viewer.get("/drift/packages/pypi/certifi"))
    assert re.findall(r'<tr data-node="([^"]+)">', nodes) == ["n2", "n3", "n5"]


def test_two_nodes_side_by_side(viewer):
    page = text(viewer.get("/compare?a=n1&b=n2"))
    kinds = dict(re.findall(r'<tr data-package="([^"]+)" data-kind="([^"]+)">', page))
    assert kinds == {
        "pypi:certifi": "only_a",
        "pypi:rich": "only_b",
        "pypi:requests": "different",
    }
    assert re.search(r'data-field="same">3<', page)
    picked = text(viewer.get("/compare?node=n1&node=n2"))
    assert 'data-kind="different"' in picked
    only = text(viewer.get("/compare?a=n1&b=n2&kind=only_b"))
    assert re.findall(r'<tr data-package="([^"]+)"', only) == ["pypi:rich"]
    assert text(viewer.get("/compare")).count("data-package=") == 0
    missing = viewer.get("/compare?a=n1&b=ghost")
    assert missing.status_code == 404 and "is not in the store" in missing.get_data(as_text=True)
    # the overview offers the choice: a box to tick per node
    assert 'name="node" value="n2" form="compare-pick"' in text(viewer.get("/"))


def test_the_api_gives_the_same(viewer):
    found = viewer.get("/api/v1/nodes/n2/drift/findings").get_json()
    changed = next(g for g in found["groups"] if g["kind"] == "changed")["findings"]
    assert changed[0]["rule_text"] == "exactly 2.31.0" and changed[0]["found"] == "3.0.1"
    page = viewer.get("/api/v1/drift/packages?sort=-changed&per_page=1").get_json()
    assert page["rows"][0]["name"] == "requests" and page["pages"] == 4
    assert page["rows"][0]["sample"] == ["n2", "n3"]
    nodes = viewer.get("/api/v1/drift/packages/pypi/six").get_json()
    assert [r["minion"] for r in nodes["rows"]] == ["n5"]
    compared = viewer.get("/api/v1/compare?a=n1&b=n5&ecosystem=pypi").get_json()
    assert compared["comparison"]["only_b"] == [
        {"ecosystem": "pypi", "name": "six", "a": None, "b": "1.16.0"}
    ]
    assert list(compared["comparison"]["ecosystems"]) == ["pypi"]
    spec = viewer.get("/api/v1/openapi.json").get_json()
    assert spec["paths"]["/compare"]["get"]["x-permission"] == "view"
    assert "/nodes/{minion_id}/drift/findings" in spec["paths"]


@pytest.mark.parametrize(
    ("path", "code", "words"),
    [
        ("/api/v1/drift/packages?sort=score", 400, "sort"),
        ("/api/v1/drift/packages?kind=facts", 400, "kind"),
        ("/api/v1/drift/packages?per_page=501", 400, "per_page"),
        ("/api/v1/drift/packages/Bad%20Eco/x", 400, "ecosystem"),
        ("/api/v1/drift/packages/pypi/x?kind=other", 400, "kind"),
        ("/api/v1/nodes/ghost/drift/findings", 404, "ghost"),
        ("/api/v1/compare?a=n1", 400, "b:"),
        ("/api/v1/compare?a=n1&b=..%2Fetc", 400, "not a minion id"),
        ("/api/v1/compare?a=n1&b=ghost", 404, "ghost"),
        ("/api/v1/compare?node=n1&node=n2&node=n3", 400, "exactly two"),
        ("/api/v1/compare?a=n1&b=n2&kind=same", 400, "kind"),
        ("/api/v1/compare?a=n1&b=n2&ecosystem=brew", 400, "ecosystem"),
    ],
)
def test_a_bad_parameter_is_named(viewer, path, code, words):
    resp = viewer.get(path)
    assert resp.status_code == code, resp.get_data(as_text=True)
    assert words in resp.get_json()["error"]["message"]


def test_an_empty_fleet_says_so(engine, logged_in):
    client, _csrf = logged_in("viewer")
    page = text(client.get("/drift"))
    assert "No package drifts." in page and "no drifting packages" in page
    assert "0 of 0 scored nodes" in page
    assert client.get("/api/v1/drift/packages").get_json()["total"] == 0
    assert text(client.get("/drift/packages/pypi/requests")).count("drifts on no scored node") == 1
