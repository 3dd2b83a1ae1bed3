"""Real master, real minions, the extension loaded through its entry point."""

import pathlib
import subprocess
import time
import xml.etree.ElementTree as ET

import pytest
from packageurl import PackageURL
from sqlalchemy import select

from saltext_fleet import config
from saltext_fleet.core import sbom as core_sbom
from saltext_fleet.store import engine as store_engine
from saltext_fleet.store import users as store_users
from saltext_fleet.store.models import InventorySnapshot, Node
from tests.support.venvs import make_wheel, pip_install
from tests.support.waiting import run, wait_for
from tests.support.web import PASSWORD, FakeSalt, login, make_app

pytestmark = pytest.mark.integration


def dpkg_installed():
    out = subprocess.run(
        ["dpkg-query", "-W", "-f", "${db:Status-Abbrev}\t${binary:Package}\t${Version}\n"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    packages = {}
    for line in out.splitlines():
        status, name, version = line.split("\t")
        if status.strip() == "ii":
            packages[name.split(":")[0] if name.endswith(":amd64") else name] = version
    return packages


def test_master_has_no_extension_modules_setting(salt_master):
    assert "saltext_fleet" not in str(salt_master.config.get("extension_modules"))
    assert not salt_master.config.get("module_dirs")


def test_minions_load_the_module_through_the_entry_point(salt_cli, salt_minion, salt_minion_2):
    ret = salt_cli.run("sys.list_functions", "fleet", minion_tgt=salt_minion.id)
    assert ret.returncode == 0, ret
    assert "fleet.inventory" in ret.data


def test_inventory_reports_this_machines_real_packages(salt_cli, salt_minion, salt_minion_2):
    ret = salt_cli.run("fleet.inventory", minion_tgt="*", _timeout=120)
    assert ret.returncode == 0, ret
    expected_deb = dpkg_installed()
    for minion in (salt_minion, salt_minion_2):
        inv = ret.data[minion.id]
        assert inv["packages"]["deb"] == expected_deb
        assert len(inv["digest"]) == 64
    # The two minions differ exactly in their virtualenvs.
    assert ret.data[salt_minion.id]["packages"]["pypi"]["fleet-alpha"] == "1.0.0"
    assert "fleet-beta" not in ret.data[salt_minion.id]["packages"]["pypi"]
    assert ret.data[salt_minion_2.id]["packages"]["pypi"]["fleet-alpha"] == "2.1.0"
    assert ret.data[salt_minion_2.id]["packages"]["pypi"]["fleet-beta"] == "0.3"
    assert ret.data[salt_minion.id]["digest"] != ret.data[salt_minion_2.id]["digest"]


def test_fleet_grain_answers(salt_cli, salt_minion):
    ret = salt_cli.run("grains.get", "fleet", minion_tgt=salt_minion.id)
    assert ret.returncode == 0, ret
    fleet = ret.data
    assert fleet["os_family"] == "Debian"
    assert fleet["cpu_cores"] >= 1
    assert fleet["ram_gib"] > 0
    assert fleet["hostname"]
    assert not str(fleet.get("ipv4") or "").startswith(("127.", "169.254."))


def test_beacon_fires_when_a_package_is_installed(salt_master, salt_minion, venvs, event_listener):
    # The beacon's first run records the current package set (and fires nothing); wait for it.
    state = pathlib.Path(salt_minion.config["cachedir"]) / "fleet" / "pkgset_beacon.json"
    deadline = time.time() + 60
    while not state.exists():
        assert time.time() < deadline, f"the beacon never recorded its state in {state}"
        time.sleep(0.2)
    start = time.time()
    pip_install(venvs["one"], make_wheel(venvs["wheels"], "fleet-gamma", "4.5.6"))
    events = event_listener.wait_for_events(
        [(salt_master.id, "fleet/pkgset/changed")], after_time=start, timeout=60
    )
    assert events.found_all_events, "no fleet/pkgset/changed event within 60 s"
    event = next(iter(events.matches))
    assert event.data["id"] == salt_minion.id
    assert event.data["data"]["digest"] != event.data["data"]["previous"]


def test_salt_call_local_inventory_matches_dpkg_query(salt_minion):
    cli = salt_minion.salt_call_cli()
    ret = cli.run("--local", "fleet.inventory", _timeout=120)
    assert ret.returncode == 0, ret
    assert ret.data["packages"]["deb"] == dpkg_installed()
    # Every binary package knows its source package (OSV advisories name source packages).
    sources = ret.data["sources"]["deb"]
    assert set(sources) == set(ret.data["packages"]["deb"])


def test_inventory_return_is_stored_and_announced(
    salt_master, salt_minion, salt_cli, venvs, event_listener
):
    """The master's job cache (the fleet returner) ingests the inventory and says it changed."""
    pip_install(venvs["one"], make_wheel(venvs["wheels"], "fleet-delta", "0.0.1"))
    start = time.time()
    ret = salt_cli.run("fleet.inventory", minion_tgt=salt_minion.id, _timeout=120)
    assert ret.returncode == 0, ret
    digest = ret.data["digest"]
    events = event_listener.wait_for_events(
        [(salt_master.id, "fleet/inventory/changed")], after_time=start, timeout=60
    )
    assert events.found_all_events, "no fleet/inventory/changed event"
    data = [e.data for e in events.matches if e.data.get("id") == salt_minion.id]
    assert data and data[-1]["digest"] == digest and data[-1]["previous"] != digest
    engine = store_engine.get_engine(config.load(salt_master.config).db_url)
    with engine.connect() as conn:
        node = conn.execute(
            select(Node.inventory_digest).where(Node.minion_id == salt_minion.id)
        ).scalar()
        snapshot = conn.execute(
            select(InventorySnapshot.packages).where(InventorySnapshot.digest == digest)
        ).scalar()
    assert node == digest
    assert snapshot["pypi"]["fleet-delta"] == "0.0.1"


def dpkg_rows():
    """``(package, version, architecture, source package)`` of every package the inventory
    lists: dpkg-query's own view, with Salt's aptpkg rule for which states count (want
    install/hold and a state containing "installed", or purge pending on an installed one)."""
    fmt = "${Status}\t${Package}\t${Version}\t${Architecture}\t${source:Package}\n"
    out = subprocess.run(
        ["dpkg-query", "-W", "-f", fmt], check=True, capture_output=True, text=True
    ).stdout
    rows = []
    for line in out.splitlines():
        status, name, version, arch, source = line.split("\t")
        want, _flag, state = status.split(" ")
        if (want in ("install", "hold") and "installed" in state) or (
            want == "purge" and state == "installed"
        ):
            rows.append((name, version, arch, source or name))
    return sorted(rows)


CDX = {"c": "http://cyclonedx.org/schema/bom/1.6"}


def _properties(element):
    return {p.get("name"): p.text for p in element.findall("c:properties/c:property", CDX)}


def test_sbom_of_a_real_minion_validates_and_matches_dpkg(
    salt_master, salt_minion, salt_cli, salt_run_cli
):
    """salt-run fleet.sbom from what the job cache stored of a real minion's inventory (and its
    ``fleet`` grain from Salt's minion data cache): valid CycloneDX 1.6, and its deb components are dpkg-query's packages one
    for one (name, version, architecture, source package)."""
    engine = store_engine.get_engine(config.load(salt_master.config).db_url)

    def stored():
        with engine.connect() as conn:
            return conn.execute(
                select(Node.inventory_digest, Node.grains).where(Node.minion_id == salt_minion.id)
            ).first()

    # The inventory the job cache stored from this minion's real fleet.inventory run (the
    # tests above ran one; run it here when this test runs on its own). dpkg's packages do
    # not change while the tests run, so any stored one is this machine's.
    node = stored()
    if node is None or node.inventory_digest is None:
        ret = salt_cli.run("fleet.inventory", minion_tgt=salt_minion.id, _timeout=120)
        assert ret.returncode == 0, ret
    deadline = time.time() + 60
    while True:  # the returner stores in batches: wait for the inventory
        node = stored()
        if node and node.inventory_digest:
            break
        assert time.time() < deadline, f"no inventory of {salt_minion.id} stored"
        time.sleep(0.2)
    # No test here stores a grains.item(s) return: the fleet grain comes from Salt's minion
    # data cache

    # XML: checking it against the schema takes milliseconds, the JSON form seconds (the
    # JSON schema's uniqueItems compares every pair of components); the JSON form of the
    # same document is checked in tests/store/test_store_sbom.py and tests/unit/test_sbom.py.
    ret = salt_run_cli.run("fleet.sbom", salt_minion.id, "format=cyclonedx-xml", _timeout=120)
    assert ret.returncode == 0, ret
    # salt-run --out=json printed one JSON string; salt-factories hands it back decoded
    assert ret.data is None and ret.stdout.startswith("<?xml"), ret
    core_sbom.validate(ret.stdout, "cyclonedx-xml")
    root = ET.fromstring(ret.stdout)
    node = root.find("c:metadata/c:component", CDX)
    assert (node.findtext("c:name", namespaces=CDX), node.get("type")) == (
        salt_minion.id,
        "device",
    )
    props = _properties(node)
    assert props["saltext-fleet:os_family"] == "Debian"
    assert int(props["saltext-fleet:hardware:cpu_cores"]) >= 1
    # the digest of a stored inventory (a beacon-driven run may have stored a newer one)
    assert len(props["saltext-fleet:inventory-digest"]) == 64

    ours, purls = [], set()
    for component in root.findall("c:components/c:component", CDX):
        purls.add(component.findtext("c:purl", namespaces=CDX))
        purl = PackageURL.from_string(component.findtext("c:purl", namespaces=CDX))
        if purl.type != "deb":
            continue
        assert purl.namespace == "debian" and purl.qualifiers["distro"].startswith("debian-")
        assert (purl.name, purl.version) == (
            component.findtext("c:name", namespaces=CDX),
            component.findtext("c:version", namespaces=CDX),
        )
        source = _properties(component)["saltext-fleet:source-package"]
        ours.append((purl.name, purl.version, purl.qualifiers["arch"], source))
    assert sorted(ours) == dpkg_rows()
    # the minion's own venv is there too, as PyPI components
    assert "pkg:pypi/fleet-alpha@1.0.0" in purls


def _web_client(salt_master, tmp_path):
    """A viewer's session of the web UI app on the master's store (Salt actions faked: the
    pages read only the store)."""
    cfg = config.load(salt_master.config)
    engine = store_engine.get_engine(cfg.db_url)
    name = f"viewer-{int(time.time() * 1000)}"
    with engine.begin() as conn:
        store_users.create_user(conn, name, "viewer", PASSWORD, rounds=4)
    app = make_app(engine, tmp_path / "fleet.fernet", salt=FakeSalt(), config=cfg)
    return login(app, name)


def test_a_vulnerable_pip_package_is_found_and_resolved_with_its_time(
    salt_master, salt_minion, salt_cli, salt_run_cli, venvs, event_listener, tmp_path
):
    """idna 3.6 in the virtualenv the minion inventories, its real advisory (PYSEC-2024-60,
    fixed in 3.7) imported: the reactor opens the finding (runner, signed fleet/alert/cve);
    the upgrade resolves it, with its time."""
    # the real wheels from PyPI, shipped with the tests (no network at test time)
    wheels = pathlib.Path(__file__).parents[1] / "fixtures" / "wheels"
    advisory = pathlib.Path(__file__).parents[1] / "fixtures" / "osv" / "pypi" / "idna"
    imported = run(salt_run_cli, "fleet.cve_import", str(advisory))
    assert imported["counts"]["total"]["added"] + imported["counts"]["total"]["unchanged"] == 1

    def finding():
        mine = run(salt_run_cli, "fleet.cve", salt_minion.id).get(salt_minion.id) or {}
        return [f for f in mine.get("findings", []) if f["package"] == "idna"]

    pip_install(venvs["one"], wheels / "idna-3.6-py3-none-any.whl")
    start = time.time()
    # the inventory (also what the beacon would ask for) -> the returner stores it and fires
    # fleet/inventory/changed -> vulns.sls -> fleet.cve_node
    assert salt_cli.run("fleet.inventory", minion_tgt=salt_minion.id, _timeout=120).returncode == 0
    opened = wait_for("the idna finding", finding, timeout=120)
    (found,) = opened
    assert (found["advisory_id"], found["version"], found["fixed"]) == (
        "PYSEC-2024-60",
        "3.6",
        "3.7",
    )
    assert found["aliases"] == ["CVE-2024-3651"] and found["resolved_at"] is None
    events = event_listener.wait_for_events(
        [(salt_master.id, "fleet/alert/cve")], after_time=start, timeout=60
    )
    alerts = [e.data for e in events.matches if e.data.get("id") == salt_minion.id]
    assert alerts and alerts[-1]["findings"][0]["advisory_id"] == "PYSEC-2024-60"
    assert alerts[-1]["sig"]  # signed by the master, as its other fleet/... events
    # the node's vulnerabilities tab in the web UI (the app on the master's own store)
    client = _web_client(salt_master, tmp_path)
    page = client.get(f"/nodes/{salt_minion.id}/vulns")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert f'data-finding="{salt_minion.id}:pypi:idna:PYSEC-2024-60"' in html
    (row,) = [
        r
        for r in client.get(f"/api/v1/nodes/{salt_minion.id}/vulns").get_json()["findings"]["rows"]
        if r["advisory"] == "PYSEC-2024-60"
    ]
    assert (row["package"], row["version"], row["aliases"]) == ("idna", "3.6", ["CVE-2024-3651"])

    pip_install(venvs["one"], wheels / "idna-3.7-py3-none-any.whl")
    assert salt_cli.run("fleet.inventory", minion_tgt=salt_minion.id, _timeout=120).returncode == 0

    def resolved():
        return [
            f
            for f in run(salt_run_cli, "fleet.cve_history", salt_minion.id)["findings"]
            if f["package"] == "idna" and f["resolved_at"] is not None
        ]

    (done,) = wait_for("the idna finding resolved", resolved, timeout=120)
    assert done["first_seen"] == found["first_seen"] and done["resolved_at"] > found["first_seen"]
    assert finding() == []
    shown = client.get(f"/api/v1/nodes/{salt_minion.id}/vulns").get_json()
    assert "PYSEC-2024-60" not in [f["advisory"] for f in shown["findings"]["rows"]]
