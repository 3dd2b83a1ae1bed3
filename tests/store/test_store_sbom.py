"""``salt-run fleet.sbom`` over a real store (SQLite and PostgreSQL): the stored inventory and
``fleet`` grain of each targeted node, one document or a mapping, files in a folder or an
archive with the merged document, progress events, and clear errors for unknown nodes."""

from __future__ import annotations

import datetime as dt
import json
import tarfile
import zipfile

import pytest
from salt.exceptions import SaltRunnerError
from sqlalchemy import insert

from saltext_fleet.core import inventory as core_inventory
from saltext_fleet.core import sbom as core_sbom
from saltext_fleet.core.vulns import triage as core_triage
from saltext_fleet.runners import fleet as fleet_runner
from saltext_fleet.store import sbom as store_sbom
from saltext_fleet.store.batch import ingest_grains, ingest_inventory
from saltext_fleet.store.models import Advisory, Node, VulnFinding
from saltext_fleet.store.vulns import triage as store_triage

FACTS = {"os": "Debian", "os_family": "Debian", "osrelease": "12", "osarch": "amd64"}


def _node(engine, minion, packages=None, grains=None):
    with engine.begin() as conn:
        conn.execute(insert(Node).values(minion_id=minion, facts={}))
        if packages is not None:
            sources = {
                "deb": {
                    name: {"name": name + "-src", "version": "1", "arch": "all"}
                    for name in packages.get("deb", {})
                }
            }
            doc = core_inventory.build_inventory(packages, sources, FACTS)
            ingest_inventory(conn, minion, doc)
        if grains is not None:
            ingest_grains(conn, minion, grains)


class Progress:
    def __init__(self):
        self.events = []

    def fire_event(self, data, tag):
        self.events.append(data)


@pytest.fixture
def run(engine, monkeypatch):
    """``run(**kwargs)``: the runner over this store; its progress events in ``run.events``."""
    progress = Progress()
    monkeypatch.setattr(fleet_runner, "__opts__", {"output": None}, raising=False)
    monkeypatch.setattr(fleet_runner, "__jid_event__", progress, raising=False)
    monkeypatch.setattr(fleet_runner, "_engine", lambda: engine)

    def call(*args, **kwargs):
        return fleet_runner.sbom(*args, **kwargs)

    call.events = progress.events
    return call


@pytest.fixture
def fleet(engine):
    _node(
        engine,
        "web-1",
        {"deb": {"bash": "5.2", "tzdata": "2024a"}, "pypi": {"six": "1.16.0"}},
        {"fleet": {"hardware_model": "PowerEdge R650", "cpu_cores": 32}, "os": "Debian"},
    )
    _node(engine, "web-2", {"deb": {"bash": "5.2"}})
    _node(engine, "fresh")  # known, no inventory yet
    return engine


def test_one_node_gives_its_document_from_the_stored_inventory(fleet, run):
    doc = run("web-1", validate=True)
    assert doc["specVersion"] == "1.6"
    node = doc["metadata"]["component"]
    assert node["name"] == "web-1"
    props = {p["name"]: p["value"] for p in node["properties"]}
    assert props["saltext-fleet:hardware:hardware_model"] == "PowerEdge R650"
    purls = sorted(c["purl"] for c in doc["components"])
    assert purls == [
        "pkg:deb/debian/bash@5.2?arch=all&distro=debian-12",
        "pkg:deb/debian/tzdata@2024a?arch=all&distro=debian-12",
        "pkg:pypi/six@1.16.0",
    ]
    xml = run("web-1", format="cyclonedx-xml", validate=True)
    assert isinstance(xml, str) and xml.startswith("<?xml")


def test_several_nodes_give_a_mapping_and_progress(fleet, run, monkeypatch):
    # web-2's fleet grain is not in the store: Salt's minion data cache has it
    def get_minion_data(minion, opts):
        grains = {"fleet": {"hardware_model": "from the cache"}} if minion == "web-2" else None
        return minion, grains, None

    monkeypatch.setattr(fleet_runner.salt.utils.minions, "get_minion_data", get_minion_data)
    docs = run("web-*")
    props = {p["name"]: p["value"] for p in docs["web-2"]["metadata"]["component"]["properties"]}
    assert props["saltext-fleet:hardware:hardware_model"] == "from the cache"
    assert sorted(docs) == ["web-1", "web-2"]
    assert docs["web-2"]["metadata"]["component"]["name"] == "web-2"
    assert run.events[0]["message"] == "building the SBOMs of 2 nodes"
    assert run.events[-1] == {
        "message": "SBOM of 2 of 2 nodes built",
        "outputter": "fleet_drift",
        "done": 2,
        "total": 2,
    }


#: What the runner says when a target names no node it can export.
UNKNOWN = [
    ("nobody", "glob", "no node 'nobody' in the store"),
    ("fresh", "glob", "node 'fresh' has reported no inventory yet"),
    ("web-1,ghost", "list", "no node 'ghost' in the store"),
    ("db-*", "glob", "no node with an inventory matches 'db-*'"),
    ("../../etc/passwd", "glob", "no node '../../etc/passwd' in the store"),
]


def test_unknown_nodes_and_bad_options_are_named(fleet, run):
    for tgt, tgt_type, words in UNKNOWN:
        with pytest.raises(SaltRunnerError) as err:
            run(tgt, tgt_type=tgt_type)
        assert words in str(err.value)
    with pytest.raises(SaltRunnerError, match="format 'spdx' is not one of"):
        run("web-1", format="spdx")
    with pytest.raises(SaltRunnerError, match="not an absolute path"):
        run("web-1", out="relative/dir")
    with pytest.raises(SaltRunnerError, match="merged='maybe' is not true or false"):
        run("web-1", out="/tmp/x", merged="maybe")


def test_export_to_an_archive_with_the_merged_document(fleet, run, tmp_path):
    out = str(tmp_path / "fleet.tar.gz")
    result = run("*", out=out)
    assert result == {
        "path": out,
        "format": "cyclonedx-json",
        "nodes": 2,
        "components": 4,
        "files": ["nodes/web-1.cdx.json", "nodes/web-2.cdx.json", "merged.cdx.json"],
    }
    with tarfile.open(out) as archive:
        merged = archive.extractfile("merged.cdx.json").read().decode()
        one = archive.extractfile("nodes/web-1.cdx.json").read().decode()
    core_sbom.validate(merged, "cyclonedx-json")
    core_sbom.validate(one, "cyclonedx-json")
    assert sorted(c["name"] for c in json.loads(merged)["components"]) == ["web-1", "web-2"]
    assert run.events[-1]["message"] == f"3 SBOM files written to {out}"


def test_export_to_a_zip_and_a_folder(fleet, run, tmp_path):
    out = str(tmp_path / "x.zip")
    run("web-2", out=out, format="cyclonedx-xml", merged=False)
    with zipfile.ZipFile(out) as archive:
        assert archive.namelist() == ["nodes/web-2.cdx.xml"]
        core_sbom.validate(archive.read("nodes/web-2.cdx.xml").decode(), "cyclonedx-xml")
    folder = tmp_path / "sboms"
    result = run("web-1,web-2", tgt_type="list", out=str(folder))
    assert sorted(p.name for p in (folder / "nodes").iterdir()) == [
        "web-1.cdx.json",
        "web-2.cdx.json",
    ]
    assert (folder / "merged.cdx.json").exists() and result["nodes"] == 2


def test_store_reads_what_the_sbom_is_built_from(fleet):
    with fleet.connect() as conn:
        known, inventory, grains = store_sbom.node_input(conn, "web-1")
        assert known and inventory["sources"]["deb"]["bash"]["arch"] == "all"
        assert grains == {"fleet": {"hardware_model": "PowerEdge R650", "cpu_cores": 32}}
        assert store_sbom.node_input(conn, "fresh") == (True, None, {})
        assert store_sbom.node_input(conn, "nobody") == (False, None, {})
    assert store_sbom.known_nodes(fleet) == {"web-1": True, "web-2": True, "fresh": False}
    assert [m for m, *_ in store_sbom.node_inputs(fleet, ["web-2", "fresh", "web-1"])] == [
        "web-2",
        "web-1",
    ]


def test_vex_carries_the_nodes_triage_decisions(fleet, run):
    """``vex=True``: web-1's not_affected decision on six is a VEX entry of its SBOM (and of
    no other node's), pointing at the six component; the document validates."""
    now = dt.datetime.now(dt.timezone.utc)
    with fleet.begin() as conn:
        conn.execute(
            insert(Advisory).values(
                id="PYSEC-2099-1",
                modified=now,
                summary="six does something bad",
                aliases=["CVE-2099-0001"],
                severity="high",
                record={"id": "PYSEC-2099-1", "modified": "2099-01-01T00:00:00Z"},
            )
        )
        for minion in ("web-1", "web-2"):
            conn.execute(
                insert(VulnFinding).values(
                    minion_id=minion,
                    ecosystem="pypi",
                    package="six",
                    version="1.16.0",
                    advisory_id="PYSEC-2099-1",
                    first_seen=now,
                    last_seen=now,
                )
            )
        decision = core_triage.Decision(
            advisory_id="PYSEC-2099-1",
            state="not_affected",
            scope="node",
            target="web-1",
            justification="code_not_present",
            detail="the vulnerable module is not shipped",
        )
        store_triage.decide(conn, decision, "user:alice", now)
    assert "vulnerabilities" not in run("web-1")
    doc = run("web-1", vex=True, validate=True)
    (vuln,) = doc["vulnerabilities"]
    assert vuln["id"] == "PYSEC-2099-1"
    assert vuln["analysis"]["state"] == "not_affected"
    assert vuln["analysis"]["justification"] == "code_not_present"
    six = next(c for c in doc["components"] if c["name"] == "six")
    assert [a["ref"] for a in vuln["affects"]] == [six["bom-ref"]]
    # web-2 has the same finding, untriaged: nothing to say about it in VEX
    assert "vulnerabilities" not in run("web-2", vex=True)
    xml = run("web-1", vex=True, format="cyclonedx-xml", validate=True)
    assert "<vulnerabilities>" in xml and "code_not_present" in xml


def _unstamped(doc):
    """A document without what every document has of its own: serial number and time."""
    doc = dict(doc, metadata=dict(doc["metadata"]))
    doc.pop("serialNumber")
    doc["metadata"].pop("timestamp")
    return doc


def test_the_runner_exports_the_librarys_whole_documents(fleet, run, tmp_path):
    """The runner's documents (returned and exported) are cyclonedx-python-lib's whole
    document of the same stored inventory."""
    docs = run("web-*")
    out = run("web-*", out=str(tmp_path / "x"), merged=False)
    assert out["components"] == 4
    for minion in ("web-1", "web-2"):
        with fleet.connect() as conn:
            _known, inventory, grains = store_sbom.node_input(conn, minion)
        reference = json.loads(
            core_sbom.serialize(core_sbom.build_bom(minion, inventory, grains or None))
        )
        exported = json.loads((tmp_path / "x" / "nodes" / f"{minion}.cdx.json").read_text())
        assert _unstamped(docs[minion]) == _unstamped(reference) == _unstamped(exported)
