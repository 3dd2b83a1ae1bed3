"""core/sbom.py: purls of every ecosystem, one component per installed version, hostile names,
the node as the document's subject, VEX, the merged fleet document, and every document checked
against the CycloneDX 1.6 schema (JSON and XML) that cyclonedx-python-lib ships."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import tarfile
import uuid
import xml.etree.ElementTree as ET
import zipfile

import pytest
from packageurl import PackageURL
from salt.exceptions import CommandExecutionError

from saltext_fleet import __version__
from saltext_fleet.core import inventory as core_inventory
from saltext_fleet.core import sbom
from saltext_fleet.modules import fleet as fleet_module

DEBIAN = {"os": "Debian", "os_family": "Debian", "osrelease": "12", "osarch": "amd64"}

#: Names and versions a minion could send: spaces, unicode, the purl separators, control
#: characters (which XML 1.0 cannot hold).
HOSTILE = {
    "with space": "1.0 beta",
    "ünï-cødé": "2.0",
    "at@sign": "1@2",
    "slash/name": "3/4",
    "question?mark#hash": "5?6#7",
    "ctrl\x01char\x1fend": "8\x0b9",
    "percent%2Fencoded": "1%40",
    "colon:name": "1:2",
}


def inventory(packages, sources=None, facts=None):
    return core_inventory.build_inventory(packages, sources or {}, facts or DEBIAN)


def components(bom):
    return {c.bom_ref.value: c for c in bom.components}


def valid(bom, fmt):
    text = sbom.serialize(bom, fmt)
    sbom.validate(text, fmt)
    return text


# --- purls ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "eco, name, version, facts, source, expected",
    [
        # Debian: vendor and distro from the facts, arch from what dpkg says, else osarch
        (
            "deb",
            "bash",
            "5.2.15-2+b8",
            DEBIAN,
            {"name": "bash", "version": "5.2.15-2", "arch": "amd64"},
            "pkg:deb/debian/bash@5.2.15-2%2Bb8?arch=amd64&distro=debian-12",
        ),
        (
            "deb",
            "tzdata",
            "2024a-0+deb12u1",
            DEBIAN,
            {"name": "tzdata", "version": "2024a-0+deb12u1", "arch": "all"},
            "pkg:deb/debian/tzdata@2024a-0%2Bdeb12u1?arch=all&distro=debian-12",
        ),
        (
            "deb",
            "libc6:i386",
            "2.36-9",
            DEBIAN,
            {},
            "pkg:deb/debian/libc6@2.36-9?arch=i386&distro=debian-12",
        ),
        (
            "deb",
            "dpkg",
            "1.21.22",
            DEBIAN,
            {},
            "pkg:deb/debian/dpkg@1.21.22?arch=amd64&distro=debian-12",
        ),
        (
            "deb",
            "attr",
            "1:2.5.1-4",
            {**DEBIAN, "osrelease": "12.5"},
            {},
            "pkg:deb/debian/attr@1:2.5.1-4?arch=amd64&distro=debian-12",
        ),
        (
            "deb",
            "curl",
            "7.81.0-1ubuntu1.15",
            {"os": "Ubuntu", "osrelease": "22.04", "osarch": "arm64"},
            {},
            "pkg:deb/ubuntu/curl@7.81.0-1ubuntu1.15?arch=arm64&distro=ubuntu-22.04",
        ),
        # RPM: epoch as a qualifier, Salt's name.arch suffix, the arch rpm reports
        (
            "rpm",
            "openssl",
            "1:3.0.7-27.el9",
            {"os": "Rocky", "osrelease": "9.3", "osarch": "x86_64"},
            {"name": "openssl", "version": "3.0.7-27.el9", "arch": "x86_64"},
            "pkg:rpm/rocky/openssl@3.0.7-27.el9?arch=x86_64&distro=rocky-9.3&epoch=1",
        ),
        (
            "rpm",
            "glibc.i686",
            "2.34-100.el9",
            {"os": "Fedora", "osrelease": "40", "osarch": "x86_64"},
            {},
            "pkg:rpm/fedora/glibc@2.34-100.el9?arch=i686&distro=fedora-40",
        ),
        (
            "rpm",
            "python3.11",
            "3.11.7-1.el9",
            {"os": "Fedora", "osrelease": "40", "osarch": "x86_64"},
            {"arch": "x86_64"},
            "pkg:rpm/fedora/python3.11@3.11.7-1.el9?arch=x86_64&distro=fedora-40",
        ),
        (
            "apk",
            "musl",
            "1.2.4_git20230717-r4",
            {"os": "Alpine", "osrelease": "3.19.1", "osarch": "x86_64"},
            {},
            "pkg:apk/alpine/musl@1.2.4_git20230717-r4?arch=x86_64&distro=alpine-3.19.1",
        ),
        (
            "pacman",
            "zstd",
            "1.5.6-1",
            {"os": "Arch", "osrelease": "rolling", "osarch": "x86_64"},
            {},
            "pkg:alpm/arch/zstd@1.5.6-1?arch=x86_64&distro=arch-rolling",
        ),
        (
            "pypi",
            "Django_REST.framework",
            "3.15.1",
            {},
            {},
            "pkg:pypi/django-rest-framework@3.15.1",
        ),
        ("npm", "@Babel/core", "7.24.0", {}, {}, "pkg:npm/%40Babel/core@7.24.0"),
        ("npm", "left-pad", "1.3.0", {}, {}, "pkg:npm/left-pad@1.3.0"),
        ("brew", "postgresql@16", "16.2", {}, {}, "pkg:brew/postgresql%4016@16.2"),
        ("brew", "Owner/Tap/thing", "1.0", {}, {}, "pkg:brew/owner/tap/thing@1.0"),
        ("brew-cask", "firefox", "124.0", {}, {}, "pkg:brew/homebrew/cask/firefox@124.0"),
        ("brew-cask", "some-app", "", {}, {}, "pkg:brew/homebrew/cask/some-app"),
        ("nix", "hello", "2.12.1", {}, {}, "pkg:generic/nix/hello@2.12.1"),
        ("pkg", "curl", "8.6.0", {"os": "FreeBSD"}, {}, "pkg:generic/pkg/curl@8.6.0"),
        ("unknown", "thing", "1", {}, {}, "pkg:generic/unknown/thing@1"),
    ],
)
def test_purl_of_every_ecosystem(eco, name, version, facts, source, expected):
    purl = sbom.package_purl(eco, name, version, facts, source)
    assert purl == expected
    PackageURL.from_string(purl)  # and it parses


def test_a_package_installed_for_two_architectures():
    """Salt names the foreign one ``libc6:i386`` and the native one ``libc6``; the parser's
    plain ``libc6`` entry is whichever row dpkg listed first."""
    out = "libc6\ti386\tglibc\t2.36-9\nlibc6\tamd64\tglibc\t2.36-9\n"
    sources = {"deb": core_inventory.parse_deb_sources(out)}
    doc = inventory({"deb": {"libc6": "2.36-9", "libc6:i386": "2.36-9"}}, sources)
    purls = sorted(c.purl.to_string() for c in sbom.build_bom("n1", doc).components)
    assert purls == [
        "pkg:deb/debian/libc6@2.36-9?arch=amd64&distro=debian-12",
        "pkg:deb/debian/libc6@2.36-9?arch=i386&distro=debian-12",
    ]


def test_npm_scope_is_the_namespace():
    parsed = PackageURL.from_string(sbom.package_purl("npm", "@types/node", "20.1.0"))
    assert (parsed.namespace, parsed.name, parsed.version) == ("@types", "node", "20.1.0")


def test_debian_source_package_is_a_property_and_a_pedigree_ancestor():
    doc = inventory(
        {"deb": {"libc6": "2.36-9+deb12u4"}},
        {"deb": {"libc6": {"name": "glibc", "version": "2.36-9+deb12u4", "arch": "amd64"}}},
    )
    data = json.loads(valid(sbom.build_bom("n1", doc), "cyclonedx-json"))
    (component,) = data["components"]
    props = {p["name"]: p["value"] for p in component["properties"]}
    assert props["saltext-fleet:source-package"] == "glibc"
    assert props["saltext-fleet:source-version"] == "2.36-9+deb12u4"
    assert props["saltext-fleet:ecosystem"] == "deb"
    (ancestor,) = component["pedigree"]["ancestors"]
    assert ancestor["purl"] == "pkg:deb/debian/glibc@2.36-9%2Bdeb12u4?arch=source&distro=debian-12"
    assert component["purl"] == "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12"


@pytest.mark.parametrize("name, version", sorted(HOSTILE.items()))
@pytest.mark.parametrize(
    "eco", ["deb", "rpm", "pypi", "npm", "brew", "brew-cask", "nix", "odd eco"]
)
def test_hostile_names_give_purls_that_read_back_the_same(eco, name, version):
    purl = sbom.package_purl(eco, name, version, DEBIAN)
    parsed = PackageURL.from_string(purl)
    if eco == "rpm" and version == "1:2":
        assert (parsed.qualifiers["epoch"], parsed.version) == ("1", "2")  # E:V-R
    else:
        assert parsed.version == version
    for ch in " ?#@":
        assert ch not in purl.split("@", 1)[0][4:] or ch == "@" and "%40" in purl  # encoded
    if eco in ("nix", "odd eco"):
        assert parsed.name == name  # the generic type keeps names as they are
    assert "\x01" not in purl and " " not in purl


# --- the document -----------------------------------------------------------------------------


def test_one_component_per_installed_version_with_stable_unique_refs():
    doc = inventory({"deb": {"linux-image-amd64": "6.1.76-1,6.1.85-1"}, "pypi": {"six": "1.16.0"}})
    first, second = sbom.build_bom("n1", doc), sbom.build_bom("n1", doc)
    refs = sorted(components(first))
    assert refs == [
        "deb:linux-image-amd64@6.1.76-1",
        "deb:linux-image-amd64@6.1.85-1",
        "pypi:six@1.16.0",
    ]
    assert refs == sorted(components(second))  # the same inventory, the same refs
    versions = sorted(c.version for c in first.components if c.name == "linux-image-amd64")
    assert versions == ["6.1.76-1", "6.1.85-1"]
    assert first.serial_number != second.serial_number  # each export is its own document


def test_the_node_is_the_subject_with_os_and_hardware():
    doc = inventory(
        {"deb": {"bash": "5.2"}},
        facts={**DEBIAN, "kernelrelease": "6.1.0-18-amd64", "saltversion": "3008.4"},
    )
    grains = {
        "fleet": {
            "hardware_model": "Macmini9,1",
            "cpu_cores": 8,
            "ram_gib": 16.0,
            "ipv4": "192.0.2.10",
            "hostname": "mini-07",
        }
    }
    at = dt.datetime(2026, 12, 5, 10, 0, tzinfo=dt.timezone.utc)
    serial = uuid.UUID("3e671687-395b-41f5-a30f-a58921a69b79")
    text = valid(
        sbom.build_bom("mini-07", doc, grains, timestamp=at, serial_number=serial), "cyclonedx-json"
    )
    data = json.loads(text)
    assert data["specVersion"] == "1.6" and data["bomFormat"] == "CycloneDX"
    assert data["serialNumber"] == serial.urn
    meta = data["metadata"]
    assert meta["timestamp"].startswith("2026-12-05T10:00:00")
    (tool,) = meta["tools"]["components"]
    assert (tool["name"], tool["version"]) == ("saltext-fleet", __version__)
    node = meta["component"]
    assert (node["type"], node["name"], node["bom-ref"]) == ("device", "mini-07", "node:mini-07")
    props = {p["name"]: p["value"] for p in node["properties"]}
    assert props["saltext-fleet:os"] == "Debian"
    assert props["saltext-fleet:osrelease"] == "12"
    assert props["saltext-fleet:hardware:hardware_model"] == "Macmini9,1"
    assert props["saltext-fleet:hardware:cpu_cores"] == "8"
    assert props["saltext-fleet:inventory-digest"] == doc["digest"]
    assert "192.0.2.10" not in text  # the address stays in the fleet
    (os_component,) = node["components"]
    assert (os_component["type"], os_component["name"], os_component["version"]) == (
        "operating-system",
        "Debian",
        "12",
    )
    # the node depends on every package
    deps = {d["ref"]: d.get("dependsOn", []) for d in data["dependencies"]}
    assert deps["node:mini-07"] == ["deb:bash@5.2"]


@pytest.mark.parametrize("fmt", sbom.FORMATS)
def test_hostile_names_and_versions_still_give_a_valid_document(fmt):
    doc = inventory({eco: dict(HOSTILE) for eco in ("deb", "pypi", "npm", "nix", "brew-cask")})
    bom = sbom.build_bom("n1", doc)
    assert len(bom.components) == 5 * len(HOSTILE)
    text = valid(bom, fmt)
    if fmt == "cyclonedx-json":
        purls = [c["purl"] for c in json.loads(text)["components"]]
    else:
        ns = {"c": "http://cyclonedx.org/schema/bom/1.6"}
        purls = [e.text for e in ET.fromstring(text).findall("c:components/c:component/c:purl", ns)]
    assert len(purls) == len(set(purls)) == 5 * len(HOSTILE)
    for purl in purls:
        PackageURL.from_string(purl)
    # the exact name survives in the purl, even where XML had to replace a control character
    nix = {PackageURL.from_string(p).name for p in purls if p.startswith("pkg:generic/nix/")}
    assert nix == set(HOSTILE)


@pytest.mark.parametrize("fmt", sbom.FORMATS)
def test_refs_stay_unique_when_xml_merges_two_names(fmt):
    """Two names that differ only in control characters are one name in XML; a repeated
    version in a stored inventory is one component."""
    doc = {
        "packages": {"nix": {"a\x01": "1", "a\x02": "1", "b": "2,2"}},
        "sources": {},
        "facts": {},
    }
    bom = sbom.build_bom("n1", doc)
    refs = [c.bom_ref.value for c in bom.components]
    assert len(refs) == len(set(refs)) == 3
    valid(bom, fmt)


def test_empty_inventory_is_a_valid_document():
    bom = sbom.build_bom("empty", inventory({}))
    assert len(bom.components) == 0
    for fmt in sbom.FORMATS:
        valid(bom, fmt)


@pytest.mark.parametrize("bad", [None, "x", ["a"]])
def test_not_an_inventory(bad):
    with pytest.raises(sbom.SbomError, match="inventory of n1"):
        sbom.build_bom("n1", bad)


# --- validation -------------------------------------------------------------------------------


def test_validation_names_the_schema_error_json():
    text = sbom.serialize(sbom.build_bom("n1", inventory({"pypi": {"six": "1.16.0"}})))
    data = json.loads(text)
    data["components"][0]["type"] = "spaceship"
    with pytest.raises(sbom.SbomValidationError, match="spaceship") as err:
        sbom.validate(json.dumps(data), "cyclonedx-json")
    assert isinstance(err.value, sbom.SbomError) and isinstance(err.value, ValueError)


def test_validation_names_the_schema_error_xml():
    text = sbom.serialize(
        sbom.build_bom("n1", inventory({"pypi": {"six": "1.16.0"}})), "cyclonedx-xml"
    )
    broken = text.replace('type="library"', 'type="spaceship"')
    with pytest.raises(sbom.SbomValidationError, match="spaceship"):
        sbom.validate(broken, "cyclonedx-xml")


@pytest.mark.parametrize("fmt", ["spdx", "", None, "CYCLONEDX-JSON"])
def test_unknown_format(fmt):
    with pytest.raises(sbom.SbomError, match="cyclonedx-json, cyclonedx-xml"):
        sbom.serialize(sbom.build_bom("n1", inventory({})), fmt)


# --- VEX --------------------------------------------------------------------------------------


def test_not_affected_decision_is_a_vex_entry_that_validates():
    doc = inventory(
        {"pypi": {"jinja2": "3.1.2", "six": "1.16.0"}, "deb": {"bash": "5.2"}},
        {"deb": {"bash": {"name": "bash", "version": "5.2", "arch": "amd64"}}},
    )
    bash = sbom.purls_of(doc)[("deb", "bash", "5.2")]
    assert bash == sbom.package_purl(
        "deb", "bash", "5.2", doc["facts"], doc["sources"]["deb"]["bash"]
    )
    vex = [
        {
            "id": "GHSA-h5c8-rqwp-cp95",
            "aliases": ["CVE-2024-22195"],
            "state": "not_affected",
            "justification": "code_not_reachable",
            "detail": "xmlattr is never used with user keys",
            "purls": ["pkg:pypi/jinja2@3.1.2", "pkg:pypi/jinja2@9.9"],  # the second: not here
        },
        {
            "id": "DSA-0000-1",
            "state": "exploitable",
            "responses": ["will_not_fix"],
            "detail": "accepted until 2027-01-01",
            # qualifiers in another order still find the component
            "purls": [bash.replace("arch=amd64&distro=debian-12", "distro=debian-12&arch=amd64")],
        },
        {"id": "PYSEC-0000-1", "state": "not_affected", "purls": ["pkg:pypi/absent@1"]},
    ]
    bom = sbom.build_bom("n1", doc, vex=vex)
    for fmt in sbom.FORMATS:
        text = valid(bom, fmt)
    data = json.loads(sbom.serialize(bom))
    by_id = {v["id"]: v for v in data["vulnerabilities"]}
    assert set(by_id) == {"GHSA-h5c8-rqwp-cp95", "DSA-0000-1"}  # nothing here for the third
    ghsa = by_id["GHSA-h5c8-rqwp-cp95"]
    assert ghsa["analysis"] == {
        "state": "not_affected",
        "justification": "code_not_reachable",
        "detail": "xmlattr is never used with user keys",
    }
    assert ghsa["affects"] == [{"ref": "pypi:jinja2@3.1.2"}]
    assert ghsa["references"] == [{"id": "CVE-2024-22195", "source": {"name": "NVD"}}]
    assert ghsa["source"]["url"] == "https://osv.dev/vulnerability/GHSA-h5c8-rqwp-cp95"
    dsa = by_id["DSA-0000-1"]
    assert dsa["analysis"]["response"] == ["will_not_fix"]
    assert dsa["affects"] == [{"ref": "deb:bash@5.2"}]
    assert "vulnerabilities" in text  # the XML has them too


@pytest.mark.parametrize(
    "entry, words",
    [
        ({"id": "X-1", "state": "ignored", "purls": []}, "state 'ignored' is not one of"),
        ({"id": "X-1", "justification": "because", "purls": []}, "justification 'because'"),
        ({"id": "X-1", "responses": ["later"], "purls": []}, "response 'later'"),
        ({"id": "X-1", "purls": ["not a purl"]}, "is not a purl"),
        ({"state": "not_affected"}, "VEX entry 0"),
    ],
)
def test_bad_vex_entries_are_named(entry, words):
    with pytest.raises(sbom.SbomError, match=words):
        sbom.build_bom("n1", inventory({"pypi": {"six": "1"}}), vex=[entry])


# --- the fleet --------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", sbom.FORMATS)
def test_fleet_document_nests_each_nodes_packages(fmt):
    nodes = [
        (
            "web-1",
            inventory({"deb": {"bash": "5.2", "curl": "7.88.1"}}),
            {"fleet": {"cpu_cores": 2}},
        ),
        ("web-2", inventory({"deb": {"bash": "5.2"}, "pypi": {"six": "1.16.0"}}), {}),
    ]
    bom = sbom.build_fleet_bom(nodes)
    text = valid(bom, fmt)
    if fmt == "cyclonedx-json":
        data = json.loads(text)
        devices = {c["name"]: c for c in data["components"]}
        assert set(devices) == {"web-1", "web-2"}
        assert sorted(c["bom-ref"] for c in devices["web-2"]["components"]) == [
            "node:web-2:os",
            "web-2/deb:bash@5.2",
            "web-2/pypi:six@1.16.0",
        ]
        assert data["metadata"]["component"]["bom-ref"] == "fleet"


# --- export files -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "minion, expected",
    [("web-01", "web-01.cdx.json"), ("a.b_c", "a.b_c.cdx.json"), ("merged", "merged.cdx.json")],
)
def test_file_name_of_a_plain_id(minion, expected):
    assert sbom.file_name(minion, "cyclonedx-json") == expected


@pytest.mark.parametrize(
    "minion",
    ["../../etc/passwd", "..", ".", "/abs", "a/b", "-rf", "a\x00b", "x" * 400, "über", "a..b"],
)
def test_hostile_ids_never_leave_the_folder(minion):
    name = sbom.file_name(minion, "cyclonedx-xml")
    assert name.endswith(".cdx.xml")
    assert "/" not in name and "\x00" not in name and ".." not in name
    assert not name.startswith((".", "-")) and len(name) < 200
    assert name != sbom.file_name(minion + "x", "cyclonedx-xml")


def test_write_bundle_folder_tar_and_zip(tmp_path):
    entries = [("nodes/a.cdx.json", b"{}"), ("merged.cdx.json", b"[]")]
    folder = sbom.write_bundle(str(tmp_path / "out"), entries)
    assert (tmp_path / "out" / "nodes" / "a.cdx.json").read_bytes() == b"{}"
    assert folder == str(tmp_path / "out")
    tgz = sbom.write_bundle(str(tmp_path / "x.tar.gz"), entries)
    with tarfile.open(tgz) as archive:
        assert sorted(archive.getnames()) == ["merged.cdx.json", "nodes/a.cdx.json"]
        assert archive.extractfile("merged.cdx.json").read() == b"[]"
    zipped = sbom.write_bundle(str(tmp_path / "x.zip"), entries)
    with zipfile.ZipFile(zipped) as archive:
        assert archive.read("nodes/a.cdx.json") == b"{}"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".sbom-")]  # no temp file left


@pytest.mark.parametrize("out", ["relative/dir", "", None, "/no/such/folder/x.zip"])
def test_write_bundle_refuses_bad_paths(out):
    with pytest.raises(sbom.SbomError, match="out"):
        sbom.write_bundle(out, [("a", b"")])


def test_the_xml_parses_and_names_the_namespace():
    text = sbom.serialize(sbom.build_bom("n1", inventory({"pypi": {"six": "1"}})), "cyclonedx-xml")
    root = ET.parse(io.StringIO(text)).getroot()
    assert root.tag == "{http://cyclonedx.org/schema/bom/1.6}bom"


# --- the execution module ---------------------------------------------------------------------


def test_execution_module_builds_the_document_from_the_live_inventory(monkeypatch):
    """``fleet.sbom`` on a minion: its own inventory, its id, its ``fleet`` grain."""
    doc = inventory({"deb": {"bash": "5.2"}})
    monkeypatch.setattr(fleet_module, "inventory", lambda: doc)
    monkeypatch.setattr(fleet_module, "__opts__", {"id": "mini-07"}, raising=False)
    monkeypatch.setattr(
        fleet_module, "__grains__", {"fleet": {"hardware_model": "Macmini9,1"}}, raising=False
    )
    data = fleet_module.sbom(validate=True)
    assert data["metadata"]["component"]["name"] == "mini-07"
    assert {p["value"] for p in data["metadata"]["component"]["properties"]} >= {"Macmini9,1"}
    assert [c["bom-ref"] for c in data["components"]] == ["deb:bash@5.2"]
    xml = fleet_module.sbom(format="cyclonedx-xml", validate="True")
    assert xml.startswith("<?xml") and "mini-07" in xml
    with pytest.raises(CommandExecutionError, match="format 'spdx' is not one of"):
        fleet_module.sbom(format="spdx")
