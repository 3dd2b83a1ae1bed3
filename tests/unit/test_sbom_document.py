"""core/sbom.py node_document, the path the runner, the web download and ``fleet.sbom`` write
JSON SBOMs by: differential tests against cyclonedx-python-lib's whole document
(``serialize(build_bom(...))``) on real inventories (this machine's, read by the product's
own parsers; the recorded Nix listings), generated fleets (bench/cve.py's generator, nodes
sharing most packages through one cache) and hostile ones, with VEX. Equal means the same
text, hence the same data; serial number and timestamp are pinned."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import pathlib
import random
import shutil
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET

import pytest

from saltext_fleet.core import inventory as core_inventory
from saltext_fleet.core import sbom
from saltext_fleet.modules import fleet as fleet_module

JSON, XML = sbom.FORMATS
NS = "{http://cyclonedx.org/schema/bom/1.6}"
ROOT = pathlib.Path(__file__).resolve().parents[2]
TS = dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.timezone.utc)
SERIAL = uuid.UUID("0f0f0f0f-1111-4222-8333-444455556666")
DEBIAN = {"os": "Debian", "os_family": "Debian", "osrelease": "12.8", "osarch": "amd64"}
ODD = {
    "ünï-cødé": "2.0+ü",
    "at@sign": "1@2",
    "@scope/pkg": "3.0.0",
    "slash/name": "3/4",
    "per%cent": "1%40",
    "plus+plus": "1.0+b1",
    "with space": "1.0 beta",
    "ctrl\x01char": "8\x0b9",
    "colon:name": "1:2",
    "multi": "1.0,2.0",
    "Upper_Case.Name": "0.1",
    "emptyver": "",
}


def library(minion, inv, grains=None, vex=None, fmt=JSON):
    """The reference: cyclonedx-python-lib's whole document."""
    bom = sbom.build_bom(minion, inv, grains, vex, timestamp=TS, serial_number=SERIAL)
    return sbom.serialize(bom, fmt)


def fast(minion, inv, grains=None, vex=None, cache=None, fmt=JSON):
    text, count = sbom.node_document(
        minion, inv, grains, vex, fmt, cache=cache, timestamp=TS, serial_number=SERIAL
    )
    if fmt == JSON:
        assert count == len(json.loads(text).get("components", []))
    else:
        assert count == len(ET.fromstring(text).findall(f"{NS}components/{NS}component"))
    return text


def same(minion, inv, grains=None, vex=None, cache=None, fmt=JSON):
    """The fast document equals the library's (text, hence data); returns JSON parsed, XML
    as text."""
    want = library(minion, inv, grains, vex, fmt)
    got = fast(minion, inv, grains, vex, cache, fmt)
    if fmt == XML:
        assert ET.canonicalize(got) == ET.canonicalize(want)
        assert got == want
        return got
    assert json.loads(got) == json.loads(want)
    assert got == want
    return json.loads(got)


def bench_cve():
    spec = importlib.util.spec_from_file_location("bench_cve", ROOT / "bench" / "cve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def vex_for(data, count, seed):
    """VEX entries about ``count`` of the document's packages (and one it does not have)."""
    rng = random.Random(seed)
    purls = [c["purl"] for c in data.get("components", [])]
    picked = rng.sample(purls, min(count, len(purls)))
    entries = [
        {
            "id": f"GHSA-{i:04d}-test",
            "aliases": [f"CVE-2026-{i:05d}", "OSV-x"],
            "state": rng.choice(["not_affected", "exploitable", "in_triage", "resolved"]),
            "justification": "code_not_reachable" if i % 2 else None,
            "responses": ["will_not_fix"] if i % 3 == 0 else [],
            "detail": f"decision {i} \u00fc",
            "purls": [purl, "pkg:pypi/not-installed@1"],
        }
        for i, purl in enumerate(picked)
    ]
    entries.append({"id": "PYSEC-0000-1", "state": "not_affected", "purls": ["pkg:npm/nope@1"]})
    return entries


# --- real inventories ---------------------------------------------------------------------------


def machine_inventory():
    """This machine's packages (dpkg, when it has it) and the packages of this Python, read
    with the product's parsers, as the execution module does."""
    packages, sources = {}, {}
    if shutil.which("dpkg-query"):
        native = subprocess.run(
            ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
        ).stdout.strip()
        out = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Package}\\t${Architecture}\\t${Version}\\n"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        listing = {}
        for line in out.splitlines():
            name, arch, version = line.split("\t")
            if version:
                key = name if arch in (native, "all") else f"{name}:{arch}"
                core_inventory.add_version(listing, key, version)
        packages["deb"] = core_inventory.normalise_pkg_list("deb", listing)
        sources["deb"] = core_inventory.parse_deb_sources(
            subprocess.run(
                core_inventory.DEB_SOURCES_CMD, capture_output=True, text=True, check=True
            ).stdout
        )
    out = subprocess.run(
        [sys.executable, "-I", "-c", core_inventory.PIP_SCRIPT],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    listing = core_inventory.parse_pip_listing(out)
    packages["pypi"] = listing["packages"]
    facts = dict(DEBIAN, pip_python={sys.executable: listing["python"]})
    return core_inventory.build_inventory(packages, sources, facts)


def nix_inventory(fixtures_dir):
    nix = {}
    nix.update(
        core_inventory.parse_nix_env_json((fixtures_dir / "nix" / "nix-env-query.json").read_text())
    )
    nix.update(
        core_inventory.parse_nix_profile_json(
            (fixtures_dir / "nix" / "nix-profile-list-v3.json").read_text()
        )
    )
    nix.update(
        core_inventory.parse_nix_store_paths(
            (fixtures_dir / "nix" / "system-sw-references.txt").read_text()
        )
    )
    assert nix
    return core_inventory.build_inventory(
        {"nix": nix}, {}, {"os": "NixOS", "osrelease": "24.05", "osarch": "x86_64"}
    )


def test_real_inventories_give_the_librarys_document_and_validate(fixtures_dir):
    cache = sbom.ComponentCache()
    machine = machine_inventory()
    assert machine["packages"]["pypi"]  # at least this test's own dependencies
    grains = {"fleet": {"hardware_model": "test box", "cpu_cores": 2}}
    data = same("this-machine", machine, grains, cache=cache)
    sbom.validate(json.dumps(data))
    vex = vex_for(data, 5, 1)
    with_vex = same("this-machine", machine, grains, vex, cache=cache)
    assert len(with_vex["vulnerabilities"]) == 5
    # every alias has the source CycloneDX 1.6 requires: OSV's page for one of no known home
    assert with_vex["vulnerabilities"][0]["references"][1] == {
        "id": "OSV-x",
        "source": {"name": "OSV", "url": "https://osv.dev/vulnerability/OSV-x"},
    }
    assert cache.hits >= len(data["components"])  # the second document came from the cache
    nix = same("nixos-01", nix_inventory(fixtures_dir), cache=cache)
    sbom.validate(json.dumps(nix))
    xml_cache = sbom.ComponentCache()
    for _ in range(2):  # the second from the cache
        xml = same("this-machine", machine, grains, vex, xml_cache, XML)
    assert xml_cache.hits >= len(data["components"])
    sbom.validate(xml, XML)


# --- generated fleets ---------------------------------------------------------------------------


def test_a_generated_fleet_through_one_cache_gives_the_librarys_documents():
    cve = bench_cve()
    fleet = cve.Fleet(8, 250, 11, cve.Universe(random.Random(11), [], 2000, {}))
    cache, xml_cache = sbom.ComponentCache(), sbom.ComponentCache()
    for i in range(8):
        packages, sources, facts = fleet.node(i)
        inv = core_inventory.build_inventory(packages, sources, facts)
        grains = {"fleet": {"cpu_cores": i + 1, "ram_gib": 16}}
        vex = vex_for(json.loads(fast(fleet.minion(i), inv, cache=cache)), i, i) if i % 2 else None
        data = same(fleet.minion(i), inv, grains, vex, cache)
        assert len(data["components"]) == 250
        if i in (0, 7):
            sbom.validate(json.dumps(data))
        if i in (0, 3, 4):
            sbom.validate(same(fleet.minion(i), inv, grains, vex, xml_cache, XML), XML)
    # the nodes share most packages: most components were written once
    assert cache.hits > cache.misses
    assert len(cache) < 8 * 250


# --- odd inventories ----------------------------------------------------------------------------


def odd_inventory(facts=DEBIAN):
    ecosystems = ("deb", "rpm", "apk", "pacman", "pypi", "npm", "brew", "brew-cask", "nix", "pkg")
    packages = {eco: dict(ODD) for eco in ecosystems}
    packages["deb"].update({"libc6": "2.36-9", "libc6:i386": "2.36-9", "bash": "5.2.15-2+b2"})
    packages["rpm"].update({"glibc.i686": "2.34-100.el9", "bash": "1:5.1.8-6.el9"})
    packages["brew"]["owner/tap/formula"] = "1.0"
    sources = {
        "deb": {
            "libc6": {"name": "glibc", "version": "2.36-9", "arch": "i386"},
            "libc6:i386": {"name": "glibc", "version": "2.36-9", "arch": "i386"},
            "bash": {"name": "bash", "version": "5.2.15-2"},
            "at@sign": {"name": "src@odd/ü", "version": "1@2", "arch": "amd64"},
            "multi": {"name": "multi-src", "version": "1.0"},
        },
        "rpm": {"bash": {"name": "bash", "version": "5.1.8-6.el9", "arch": "x86_64"}},
    }
    return {"packages": packages, "sources": sources, "facts": dict(facts), "digest": "d1"}


@pytest.mark.parametrize(
    "facts",
    [
        DEBIAN,
        {"os": "Rocky", "os_family": "RedHat", "osrelease": 9, "osarch": "x86_64"},
        {"os": "Ubuntu", "osrelease": "22.04", "osarch": ["odd"], "pip_python": {"/p": "3"}},
        {},
    ],
)
def test_odd_names_and_facts_give_the_librarys_document(facts):
    cache = sbom.ComponentCache()
    inv = odd_inventory(facts)
    data = same("odd node/ü@%+", inv, {"fleet": {"arch": "x86_64", "hostname": "ü"}}, cache=cache)
    sbom.validate(json.dumps(data))
    names = {c["name"] for c in data["components"]}
    assert {"ünï-cødé", "at@sign", "slash/name", "per%cent", "plus+plus"} <= names
    # VEX about odd purls, then the same node again from the cache
    vex = vex_for(data, 12, 3)
    again = same("odd node/ü@%+", inv, None, vex, cache=cache)
    assert again["vulnerabilities"]
    sbom.validate(json.dumps(again))
    # the same packages on a node with other facts: their purls differ, and so do the
    # components the cache gives
    other = dict(inv, facts={"os": "Fedora", "osrelease": "40", "osarch": "aarch64"})
    same("other", other, cache=cache)
    for node, extra in (("odd node/ü@%+", vex), ("other", None)):
        text = same(node, other if node == "other" else inv, None, extra, cache, XML)
        sbom.validate(text, XML)
    # a carriage return: a name's is a space in XML (CycloneDX names are normalised)
    inv["packages"]["pypi"]["cr\rname"] = "1\r2"
    for fmt in (JSON, XML):
        same("odd node/ü@%+", inv, None, vex, cache, fmt)


def test_the_cache_tells_apart_what_the_documents_tell_apart():
    """Same name and version, but another source package, another value type, another
    number of installed versions: another component."""
    cache = sbom.ComponentCache()
    base = {"packages": {"deb": {"bash": "5.2"}}, "sources": {}, "facts": dict(DEBIAN)}
    variants = [
        base,
        dict(base, sources={"deb": {"bash": {"name": "bash-src", "version": "5.2"}}}),
        dict(base, sources={"deb": {"bash": {"name": "bash-src", "version": "5.2", "arch": 1}}}),
        dict(base, sources={"deb": {"bash": {"name": "bash-src", "version": "5.2", "arch": "1"}}}),
        dict(base, facts=dict(DEBIAN, osrelease=12)),
        dict(base, facts=dict(DEBIAN, osrelease=True)),
        dict(base, facts=dict(DEBIAN, osrelease="True")),
        dict(base, packages={"deb": {"bash": "5.2,5.3"}}),
    ]
    for inv in variants * 2:
        same("n1", inv, cache=cache)
        same("n1", inv, cache=cache, fmt=XML)
    assert cache.hits > 0


def test_duplicate_refs_are_the_librarys_own_document():
    """A minion id that makes the node's bom-ref equal a package's: the library replaces the
    duplicate with a random ref, so the document is the library's own (valid, refs unique)."""
    inv = {"packages": {"node": {"x": "1"}}, "sources": {}, "facts": {}}
    text, count = sbom.node_document("x@1", inv, cache=sbom.ComponentCache())
    data = json.loads(text)
    refs = [data["metadata"]["component"]["bom-ref"]] + [c["bom-ref"] for c in data["components"]]
    assert count == 1 and len(set(refs)) == 2 and "node:x@1" in refs
    sbom.validate(text)
    text, count = sbom.node_document("x@1", inv, fmt=XML)
    assert count == 1
    sbom.validate(text, XML)


def test_the_component_order_is_the_librarys():
    """component_order sorts as the library's SortedSet of components does: type (an
    application before a library), name, version (a missing one last), bom-ref."""
    inv = {
        "packages": {
            "brew-cask": {"zed": "1", "Alpha": "2"},
            "pypi": {"alpha": "2,10,1", "zed": ""},
            "nix": {"alpha": "1", "zed": "1", "Zed": "0"},
            "npm": {"alpha": "1"},
        },
        "sources": {},
        "facts": {},
    }
    bom = sbom.build_bom("n1", inv)
    library_order = [c.bom_ref.value for c in bom.components]
    shuffled = list(bom.components)
    random.Random(5).shuffle(shuffled)
    ours = [c.bom_ref.value for c in sorted(shuffled, key=sbom.component_order)]
    assert ours == library_order
    assert bom.components[0].type.value == "application"
    same("n1", inv)
    same("n1", inv, fmt=XML)


def test_empty_and_bad_inventories():
    assert same("empty", {"packages": {}})["dependencies"] == [{"ref": "node:empty"}]
    same("empty", {"packages": {}}, fmt=XML)
    for bad in (None, "x", ["a"]):
        with pytest.raises(sbom.SbomError, match="inventory of n1"):
            sbom.node_document("n1", bad)
    with pytest.raises(sbom.SbomError, match="state 'ignored'"):
        sbom.node_document("n1", odd_inventory(), vex=[{"id": "X", "state": "ignored"}])
    with pytest.raises(sbom.SbomError, match="not one of"):
        sbom.node_document("n1", odd_inventory(), fmt="spdx")


def test_json_and_xml_pieces_are_cached_apart(monkeypatch):
    cache = sbom.ComponentCache()
    inv = odd_inventory()
    for fmt in (JSON, XML, JSON, XML):
        same("n1", inv, cache=cache, fmt=fmt)
    assert len(cache) == 2 * len(json.loads(library("n1", inv))["components"])
    # both were assembled, not the library's whole document
    wanted = {fmt: library("n1", inv, fmt=fmt) for fmt in (JSON, XML)}
    whole = []
    real_build_bom = sbom.build_bom
    monkeypatch.setattr(
        sbom, "build_bom", lambda *a, **k: whole.append(a) or real_build_bom(*a, **k)
    )
    for fmt in (JSON, XML):
        assert fast("n1", inv, cache=cache, fmt=fmt) == wanted[fmt]
    assert whole == []
    # a carriage return in a VEX detail, which XML reads back as a newline: that XML is
    # the library's whole document (a name's is a space: CycloneDX names are normalised)
    vex = [
        {"id": "X-1", "state": "not_affected", "detail": "a\rb", "purls": ["pkg:pypi/multi@1.0"]}
    ]
    for fmt in (JSON, XML):
        want = library("n1", inv, vex=vex, fmt=fmt)
        whole.clear()
        assert fast("n1", inv, vex=vex, cache=cache, fmt=fmt) == want
        assert len(whole) == (fmt == XML)
    assert "<detail>a\rb</detail>" in want


def test_a_full_cache_starts_again():
    cache = sbom.ComponentCache(limit=3)
    inv = {"packages": {"pypi": {f"p{i}": "1" for i in range(5)}}, "sources": {}, "facts": {}}
    same("n1", inv, cache=cache)
    assert len(cache) <= 3
    same("n1", inv, cache=cache)


def test_the_execution_module_writes_the_librarys_whole_document(monkeypatch):
    """``fleet.sbom`` on a minion: the same document the library writes of its inventory."""
    inv = odd_inventory()
    grains = {"fleet": {"hardware_model": "Macmini9,1"}}
    monkeypatch.setattr(fleet_module, "inventory", lambda: inv)
    monkeypatch.setattr(fleet_module, "__opts__", {"id": "mini-07"}, raising=False)
    monkeypatch.setattr(fleet_module, "__grains__", grains, raising=False)
    got = fleet_module.sbom()
    want = json.loads(sbom.serialize(sbom.build_bom("mini-07", inv, grains)))
    for doc in (got, want):
        doc.pop("serialNumber")
        doc["metadata"].pop("timestamp")
    assert got == want
