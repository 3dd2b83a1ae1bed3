"""The findings runners through Salt's real runner loader (master opts, no daemon), on SQLite
and PostgreSQL: what they show, the fleet/alert/cve events they fire, and that only events
this master signed about the node itself make them recompute anything."""

import json

import pytest
import salt.loader
import salt.utils.event
from salt.exceptions import SaltRunnerError

from saltext_fleet.master import eventsig
from saltext_fleet.store import engine as store_engine
from tests.support.runners import master_bus, master_opts
from tests.support.vulns import inventory, put_advisories, record, store_inventory

ADVISORIES = [
    record(
        "PYSEC-R-1",
        "PyPI",
        "requests",
        [("introduced", "0"), ("fixed", "2.31.0")],
        aliases=["CVE-2023-32681"],
        cvss="CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:U/C:H/I:N/A:N",
    ),
    record("PYSEC-R-2", "PyPI", "jinja2", [("introduced", "0"), ("fixed", "3.1.3")]),
]


@pytest.fixture
def fired(monkeypatch):
    """Events the runners fire on the master bus: ``[(tag, data)]``."""
    return master_bus(monkeypatch)


@pytest.fixture
def runners(db_url, tmp_path):
    opts = master_opts(tmp_path / "master", db_url, {"vulns": {"alert_severity": "high"}})
    engine = store_engine.get_engine(db_url)
    store_engine.ensure_schema(engine)
    put_advisories(engine, ADVISORIES, {"PYSEC-R-1": "medium", "PYSEC-R-2": "high"}, {})
    store_inventory(engine, "web-1", inventory({"pypi": {"requests": "2.30.0", "jinja2": "3.1.2"}}))
    store_inventory(engine, "web-2", inventory({"pypi": {"requests": "2.31.0"}, "nix": {"a": "1"}}))
    loaded = salt.loader.runner(opts)
    loaded.engine = engine
    return loaded


def test_recompute_show_filter_and_alert(runners, fired):
    shown = runners["fleet.cve"](recompute=True)
    assert shown["_recompute"]["opened"] == 2 and shown["_recompute"]["alerts"] == 1
    web1 = shown["web-1"]
    assert web1["open"] == 2 and web1["not_covered"] == {}
    first = web1["findings"][0]
    assert (first["advisory_id"], first["severity"], first["fixed"]) == (
        "PYSEC-R-2",
        "high",
        "3.1.3",
    )
    req = web1["findings"][1]
    assert req["aliases"] == ["CVE-2023-32681"]
    assert req["cvss_vector"] == "CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:U/C:H/I:N/A:N"
    assert shown["web-2"] == {
        "open": 0,
        "triaged": 0,
        "findings": [],
        "not_covered": {"nix": 1},
        "computed_at": shown["web-2"]["computed_at"],
    }
    # only the high finding alerts (fleet:vulns:alert_severity: high), and it is signed
    ((tag, data),) = fired
    assert tag == "fleet/alert/cve" and data["id"] == "web-1" and data["count"] == 1
    assert data["findings"][0]["advisory_id"] == "PYSEC-R-2"
    eventsig.check(runners.opts, tag, data)

    assert list(runners["fleet.cve"](severity="high")) == ["web-1"]
    assert list(runners["fleet.cve"](id="CVE-2023-32681")) == ["web-1"]
    assert runners["fleet.cve"]("web-2", id="PYSEC-R-1") == {}
    with pytest.raises(SaltRunnerError, match="severity='severe' is not one of"):
        runners["fleet.cve"](severity="severe")

    # the node upgrades: the reactor's runner resolves it; history has both points
    store_inventory(
        runners.engine,
        "web-1",
        inventory({"pypi": {"requests": "2.31.0", "jinja2": "3.1.2"}}),
        "20261201110000000000",
    )
    data = eventsig.sign(runners.opts, "fleet/inventory/changed", {"id": "web-1"})
    done = runners["fleet.cve_node"](
        "web-1", event={"tag": "fleet/inventory/changed", "data": data}
    )
    assert done["web-1"]["resolved"] == 1 and done["web-1"]["counts"]["open"] == 1
    past = runners["fleet.cve_history"]("web-1")
    assert [p["open"] for p in past["points"]] == [2, 1]
    assert [f["resolved_at"] is None for f in past["findings"]] == [True, False]


def test_only_the_masters_own_event_about_the_node_recomputes_it(runners, fired):
    """Another minion cannot make the master recompute a node from anything but that node's
    own authenticated inventory: forged events are refused, and a genuine event's contents
    (a digest of another node's inventory) are never read."""
    opts, tag = runners.opts, "fleet/inventory/changed"
    runners["fleet.cve"](recompute=True)
    fired.clear()
    before = runners["fleet.cve"]()
    data = {"id": "web-2", "digest": "0" * 64}
    refused = [
        runners["fleet.cve_node"]("web-2", event={"tag": tag, "data": data}),
        runners["fleet.cve_node"]("web-2", event={"tag": tag, "data": {**data, "sig": "ab" * 32}}),
        runners["fleet.cve_node"](
            "web-2", event={"tag": tag, "data": eventsig.sign(opts, tag, {**data, "id": "web-1"})}
        ),
        runners["fleet.cve_node"](
            "web-2", event={"tag": tag, "data": eventsig.sign(opts, "fleet/states/ran", data)}
        ),
    ]
    assert all("refused" in r for r in refused)
    assert "about 'web-1'" in refused[2]["refused"]
    # web-2 claims, in a return filed under its own id, web-1's vulnerable inventory: it is
    # web-2's inventory now (it may say what it has), and web-1 is untouched
    web1 = inventory({"pypi": {"requests": "2.30.0", "jinja2": "3.1.2"}})
    store_inventory(runners.engine, "web-2", web1, "20261201120000000000")
    web1_digest = web1["digest"]
    signed = eventsig.sign(opts, tag, {"id": "web-2", "digest": web1_digest})
    runners["fleet.cve_node"]("web-2", event={"tag": tag, "data": signed})
    after = runners["fleet.cve"]()
    assert after["web-1"]["findings"] == before["web-1"]["findings"]
    assert after["web-2"]["open"] == 2
    assert [d["id"] for _, d in fired] == ["web-2"]
    assert runners["fleet.cve_recompute"]()["nodes"] == 2


def test_an_import_recomputes_the_fleet(runners, fired, tmp_path):
    runners["fleet.cve"](recompute=True)
    fired.clear()
    folder = tmp_path / "osv"
    folder.mkdir()
    doc = record("GHSA-new", "PyPI", "requests", [("introduced", "0"), ("fixed", "2.32.0")])
    doc["severity"] = [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}]
    (folder / "GHSA-new.json").write_text(json.dumps(doc))
    result = runners["fleet.cve_import"](str(folder))
    assert result["findings"]["opened"] == 2 and result["findings"]["alerts"] == 2
    assert sorted(d["id"] for _, d in fired) == ["web-1", "web-2"]
    # the same data again changes nothing: no recompute
    assert "findings" not in runners["fleet.cve_import"](str(folder))
