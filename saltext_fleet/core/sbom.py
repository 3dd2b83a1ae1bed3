"""CycloneDX 1.6 SBOMs of nodes from their inventories: pure logic, no Salt, no database.

:func:`build_bom` turns one node's inventory document (see
:mod:`saltext_fleet.core.inventory`) and, when known, its grains into a CycloneDX 1.6
:class:`~cyclonedx.model.bom.Bom` (built with cyclonedx-python-lib); :func:`build_fleet_bom`
puts many nodes into one document; :func:`serialize` writes either as CycloneDX JSON or XML
and :func:`validate` checks a document against the CycloneDX 1.6 schema that
cyclonedx-python-lib ships (offline), raising :class:`SbomValidationError` naming the error.
:func:`node_document` writes the text ``serialize(build_bom(...))`` would, from components
the library wrote once per :class:`ComponentCache` (nodes share most packages): what the
runner, the web UI and the execution module give; ``build_bom`` + ``serialize`` stay the
reference the tests compare it with.

The document
------------
``metadata.component`` is the node: a ``device`` named after its minion id (bom-ref
``node:<minion id>``) with ``saltext-fleet:*`` properties (OS, release, architecture, kernel,
Salt version, the hardware of the ``fleet`` grain, the inventory digest) and, nested in it,
its operating system as an ``operating-system`` component. ``metadata.tools`` names
saltext-fleet and its version; every document has a fresh serial number and a timestamp.

``components`` holds one component per installed package version: the inventory joins the
versions of a package installed more than once with ``","``, and each becomes a component of
its own. Its bom-ref is ``<ecosystem>:<name>@<version>``, unique in the document and the same
in every export of the same inventory. Each has a purl (see :func:`package_purl`) and a
``saltext-fleet:ecosystem`` property; Debian and RPM packages also carry their source package
(``saltext-fleet:source-package`` and ``saltext-fleet:source-version``; a Debian source package
is also a pedigree ancestor with the purl ``pkg:deb/<vendor>/<source>@<version>?arch=source``,
the form the purl spec defines for source packages).

Purls
-----
=============  ====================================================================
ecosystem      purl
=============  ====================================================================
deb            ``pkg:deb/<vendor>/<name>@<version>?arch=<arch>&distro=<vendor>-<release>``
               (vendor: ``debian``, ``ubuntu``... from the ``os`` fact; arch: Salt's
               ``name:arch`` suffix, else the architecture dpkg reports, else the node's
               ``osarch``; the release is the major release on Debian, ``osrelease``
               elsewhere)
rpm            ``pkg:rpm/<vendor>/<name>@<version>-<release>?arch=..&epoch=..&distro=..``
               (epoch from a version ``E:V-R``; arch from Salt's ``name.arch`` suffix,
               the architecture rpm reports, else ``osarch``)
apk            ``pkg:apk/<vendor>/<name>@<version>?arch=..&distro=..``
pacman         ``pkg:alpm/<vendor>/<name>@<version>?arch=..&distro=..`` (the purl type of
               Arch Linux packages is ``alpm``)
pypi           ``pkg:pypi/<PEP 503 name>@<version>``
npm            ``pkg:npm/%40scope/<name>@<version>``
brew           ``pkg:brew/<formula>@<version>``; a formula of a third-party tap
               (``owner/tap/formula``) has the tap as namespace
brew-cask      ``pkg:brew/homebrew/cask/<token>@<version>``: the ``brew`` type's
               namespace is the tap, and official casks live in ``homebrew/cask``
nix            ``pkg:generic/nix/<name>@<version>``: ``nix`` is not a registered purl
               type, and the inventory knows a derivation's name, not the nixpkgs
               attribute path a ``nix`` purl would need
anything else  ``pkg:generic/<ecosystem>/<name>@<version>`` (FreeBSD ``pkg``, unknown)
=============  ====================================================================

Names and versions are percent-encoded as the purl spec says (``/``, ``@``, ``?``, ``#``,
spaces and non-ASCII included), so a hostile package name gives a purl that parses back to
the same name, never one that says something else.

VEX
---
``vex`` is a list of decisions about advisories, each ``{"id", "aliases", "state",
"justification", "detail", "responses", "purls"}`` (``state``: a CycloneDX impact analysis
state, ``not_affected``, ``exploitable``, ``in_triage``, ``resolved``, ``false_positive``,
``resolved_with_pedigree``; ``justification``: a CycloneDX justification such as
``code_not_reachable``; ``responses``: CycloneDX responses such as ``will_not_fix`` or
``update``; ``purls``: the packages the decision is about). Each becomes a ``vulnerabilities``
entry whose ``affects`` point at the components with those purls; purls of packages the node
does not have are left out, and an entry that affects none of its components is left out.
A bad state, justification or response raises :class:`SbomError` naming it.

XML
---
XML 1.0 cannot hold most control characters: every text is written with those replaced by
U+FFFD, so a hostile name cannot make the XML document unreadable (the purl keeps the exact
name, percent-encoded).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from cyclonedx.model import Property, XsUri
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType, Pedigree
from cyclonedx.model.dependency import Dependency
from cyclonedx.model.impact_analysis import (
    ImpactAnalysisJustification,
    ImpactAnalysisResponse,
    ImpactAnalysisState,
)
from cyclonedx.model.tool import ToolRepository
from cyclonedx.model.vulnerability import (
    BomTarget,
    Vulnerability,
    VulnerabilityAnalysis,
    VulnerabilityReference,
    VulnerabilitySource,
)
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.output.xml import XmlV1Dot6
from cyclonedx.schema import SchemaVersion
from packageurl import PackageURL

from saltext_fleet import __version__
from saltext_fleet.core.errors import FleetError

#: The formats :func:`serialize` writes and :func:`validate` checks.
FORMATS = ("cyclonedx-json", "cyclonedx-xml")

#: File name extension and media type of each format.
EXTENSIONS = {"cyclonedx-json": ".cdx.json", "cyclonedx-xml": ".cdx.xml"}
MEDIA_TYPES = {
    "cyclonedx-json": "application/vnd.cyclonedx+json",
    "cyclonedx-xml": "application/vnd.cyclonedx+xml",
}

#: Namespace of the CycloneDX properties this module writes.
NS = "saltext-fleet"

#: Facts of the inventory written as properties of the node.
NODE_FACTS = ("os", "os_family", "osrelease", "osarch", "kernelrelease", "saltversion", "xcode")

#: Keys of the ``fleet`` grain written as properties of the node (its IPv4 address is not:
#: an SBOM travels further than the fleet's own tools).
NODE_GRAIN_KEYS = (
    "hardware_model",
    "cpu_cores",
    "ram_gib",
    "storage_gib",
    "hostname",
    "os_version",
    "kernel",
    "arch",
)

#: Salt's name suffix of a foreign-architecture package: ``libc6:i386``, ``glibc.i686``.
_DEB_ARCH = re.compile(r"^(?P<name>.+):(?P<arch>[a-z0-9][a-z0-9-]*)$")
_RPM_ARCH = re.compile(
    r"^(?P<name>.+)\.(?P<arch>noarch|x86_64|i[3-6]86|aarch64|armv[0-9a-z]+|ppc64(?:le)?|"
    r"s390x?|riscv64|src|ia32e|athlon|alpha|sparc64|mips64el)$"
)
_RPM_EPOCH = re.compile(r"^(?P<epoch>[0-9]+):(?P<rest>.+)$")
_PEP503 = re.compile(r"[-_.]+")
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_QUALIFIER_KEY = re.compile(r"^[a-z][a-z0-9._-]*$")

#: Inventory ecosystem -> purl type, for those with a vendor namespace from the os fact.
_DISTRO_TYPES = {"deb": "deb", "rpm": "rpm", "apk": "apk", "pacman": "alpm"}


class SbomError(FleetError, ValueError):
    """An SBOM could not be built or written: the message says what was wrong."""


class SbomValidationError(SbomError):
    """A document is not valid CycloneDX 1.6; the message names the schema error."""


# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    """``value`` as a string XML 1.0 can hold (control characters become U+FFFD)."""
    text = value if isinstance(value, str) else str(value)
    return _XML_BAD.sub("\ufffd", text)


def _prop(name: str, value: Any) -> Property | None:
    if value is None or value == "" or isinstance(value, (dict, list, tuple)):
        return None
    return Property(name=f"{NS}:{name}", value=_text(value))


def _mapping(value: Any) -> Mapping:
    return value if isinstance(value, Mapping) else {}


# --------------------------------------------------------------------------------------------
# Purls
# --------------------------------------------------------------------------------------------


def purl_string(
    ptype: str,
    namespace: str | None,
    name: str,
    version: str | None = None,
    qualifiers: Mapping[str, str] | None = None,
) -> str:
    """A purl with every component percent-encoded as the purl spec says.

    packageurl-python leaves ``/`` in a name unencoded (``a/b`` reads back as namespace ``a``,
    name ``b``); this encodes it. ``namespace`` may have several ``/``-separated segments,
    each encoded on its own. Qualifiers are sorted by key; empty values are left out.
    """
    parts = [f"pkg:{ptype}/"]
    if namespace:
        parts.append("/".join(quote(seg, safe=":") for seg in namespace.split("/") if seg))
        parts.append("/")
    parts.append(quote(name, safe=":"))
    if version:
        parts.append("@" + quote(version, safe=":"))
    pairs = sorted((k, v) for k, v in (qualifiers or {}).items() if v)
    for key, _value in pairs:
        if not _QUALIFIER_KEY.match(key):
            raise SbomError(f"purl qualifier key {key!r} is not a valid key")
    if pairs:
        parts.append("?" + "&".join(f"{k}={quote(v, safe=':')}" for k, v in pairs))
    return "".join(parts)


def _vendor(facts: Mapping, ecosystem: str) -> str:
    """The purl namespace of a distribution's packages: ``debian``, ``ubuntu``, ``fedora``..."""
    for key in ("os", "os_family"):
        value = facts.get(key)
        if isinstance(value, str) and value.strip():
            return re.sub(r"[^a-z0-9._-]+", "-", value.strip().lower()).strip("-") or ecosystem
    return {"deb": "debian", "apk": "alpine", "pacman": "arch"}.get(ecosystem, "unknown")


def _distro(facts: Mapping, vendor: str) -> str | None:
    """``debian-12``, ``ubuntu-22.04``, ``fedora-40``: the purl ``distro`` qualifier."""
    release = facts.get("osrelease")
    if not isinstance(release, str) or not release.strip():
        return None
    release = release.strip()
    if vendor == "debian":
        release = release.split(".", 1)[0]
    return f"{vendor}-{release}"


def _arch(name: str, ecosystem: str, source: Mapping, facts: Mapping) -> tuple[str, str | None]:
    """``(name without Salt's arch suffix, architecture)``."""
    pattern = _DEB_ARCH if ecosystem == "deb" else _RPM_ARCH if ecosystem == "rpm" else None
    found = pattern.match(name) if pattern is not None else None
    if found:
        return found["name"], found["arch"]
    arch = source.get("arch")
    if isinstance(arch, str) and arch:
        return name, arch
    osarch = facts.get("osarch")
    return name, osarch if isinstance(osarch, str) and osarch else None


def package_purl(
    ecosystem: str,
    name: str,
    version: str,
    facts: Mapping | None = None,
    source: Mapping | None = None,
) -> str:
    """The purl of one installed package version; see the module docstring for each
    ecosystem. ``facts`` are the inventory's (``os``, ``osrelease``, ``osarch``), ``source``
    the package's entry in the inventory's ``sources`` (its ``arch``)."""
    facts = _mapping(facts)
    source = _mapping(source)
    if ecosystem in _DISTRO_TYPES:
        base, arch = _arch(name, ecosystem, source, facts)
        vendor = _vendor(facts, ecosystem)
        qualifiers = {"arch": arch or "", "distro": _distro(facts, vendor) or ""}
        if ecosystem == "rpm":
            epoch = _RPM_EPOCH.match(version)
            if epoch:
                qualifiers["epoch"] = epoch["epoch"]
                version = epoch["rest"]
            return purl_string("rpm", vendor, base, version, qualifiers)
        return purl_string(_DISTRO_TYPES[ecosystem], vendor, base.lower(), version, qualifiers)
    if ecosystem == "pypi":
        return purl_string("pypi", None, _PEP503.sub("-", name).lower(), version)
    if ecosystem == "npm":
        if name.startswith("@") and "/" in name:
            scope, _, rest = name.partition("/")
            return purl_string("npm", scope, rest.lower(), version)
        return purl_string("npm", None, name.lower(), version)
    if ecosystem == "brew":
        tap, _, formula = name.rpartition("/")
        return purl_string("brew", tap.lower() or None, formula.lower(), version)
    if ecosystem == "brew-cask":
        return purl_string("brew", "homebrew/cask", name.lower(), version)
    if ecosystem == "nix":
        return purl_string("generic", "nix", name, version)
    return purl_string("generic", ecosystem, name, version)


def source_purl(ecosystem: str, source: Mapping, facts: Mapping | None = None) -> str | None:
    """The purl of a Debian source package (``arch=source``), None for other ecosystems."""
    if ecosystem != "deb" or not source.get("name") or not source.get("version"):
        return None
    facts = _mapping(facts)
    vendor = _vendor(facts, ecosystem)
    qualifiers = {"arch": "source", "distro": _distro(facts, vendor) or ""}
    return purl_string(
        "deb", vendor, str(source["name"]).lower(), str(source["version"]), qualifiers
    )


# --------------------------------------------------------------------------------------------
# Components
# --------------------------------------------------------------------------------------------


def _versions(value: Any) -> list[str]:
    """The versions of one inventory entry: ``"1.0,2.0"`` -> ``["1.0", "2.0"]``; ``""`` (a
    cask without a recorded version) -> ``[""]``."""
    if not isinstance(value, str):
        return []
    parts = [v.strip() for v in value.split(",") if v.strip()]
    return list(dict.fromkeys(parts)) or [""]


def package_specs(inventory: Mapping, ref_prefix: str = "") -> list[tuple]:
    """``[(ecosystem, name, version, source, count, ref)]``: what each installed package
    version's component is built from (see :func:`package_component`), sorted by ecosystem,
    name and version; ``count`` is how many versions of the package are installed, ``ref``
    its bom-ref, unique in the list. ``ref_prefix`` goes in front of every bom-ref (a merged
    fleet document names the node there)."""
    packages = _mapping(inventory.get("packages"))
    sources = _mapping(inventory.get("sources"))
    out = []
    used: set[str] = set()
    for ecosystem in sorted(k for k in packages if isinstance(k, str)):
        table = _mapping(packages[ecosystem])
        eco_sources = _mapping(sources.get(ecosystem))
        for name in sorted(k for k in table if isinstance(k, str) and k):
            versions = _versions(table[name])
            source = _mapping(eco_sources.get(name))
            sep = {"deb": ":", "rpm": "."}.get(ecosystem)
            if sep and f"{name}{sep}{source.get('arch')}" in table:
                # installed for two architectures: Salt names the foreign one name:arch and
                # this one plainly, while the plain source entry may be the foreign row's
                source = {k: v for k, v in source.items() if k != "arch"}
            for version in versions:
                ref = base = _text(f"{ref_prefix}{ecosystem}:{name}@{version}")
                while ref in used:  # names that differ only in characters XML cannot hold
                    ref = f"{base}#{len(used)}"
                used.add(ref)
                out.append((ecosystem, name, version, source, len(versions), ref))
    return out


def package_component(spec: tuple, facts: Mapping) -> Component:
    """The component of one :func:`package_specs` entry of a node with ``facts``."""
    ecosystem, name, version, source, count, ref = spec
    component = _package(ecosystem, name, version, facts, source, count)
    component.bom_ref.value = ref
    if component.pedigree is not None:
        for ancestor in component.pedigree.ancestors:
            ancestor.bom_ref.value = f"{ref}#source"
    return component


def package_components(
    inventory: Mapping, ref_prefix: str = ""
) -> list[tuple[Component, str, str, str]]:
    """``[(component, ecosystem, name, version)]``: one per installed package version, sorted
    by ecosystem, name and version. ``ref_prefix`` goes in front of every bom-ref (a merged
    fleet document names the node there)."""
    facts = _mapping(inventory.get("facts"))
    return [
        (package_component(spec, facts), spec[0], spec[1], spec[2])
        for spec in package_specs(inventory, ref_prefix)
    ]


def purls_of(inventory: Mapping) -> dict[tuple[str, str, str], str]:
    """``{(ecosystem, name, version): purl}`` of every installed package version, the purls
    the node's SBOM has: what a VEX entry's ``purls`` should name (findings are per
    ecosystem, name and version)."""
    return {
        (ecosystem, name, version): component.purl.to_string()
        for component, ecosystem, name, version in package_components(inventory)
    }


def _package(
    ecosystem: str, name: str, version: str, facts: Mapping, source: Mapping, count: int
) -> Component:
    purl = package_purl(ecosystem, name, version, facts, source)
    display = name
    if ecosystem in ("deb", "rpm"):
        display, _ = _arch(name, ecosystem, {}, {})
    properties = [_prop("ecosystem", ecosystem)]
    if display != name:
        properties.append(_prop("package-name", name))
    pedigree = None
    if source.get("name"):
        properties.append(_prop("source-package", source.get("name")))
        # one version: the source version is this version's; several: it is one of theirs
        if count == 1:
            properties.append(_prop("source-version", source.get("version")))
            ancestor_purl = source_purl(ecosystem, source, facts)
            if ancestor_purl:
                ancestor = Component(
                    name=_text(source["name"]),
                    version=_text(source["version"]),
                    type=ComponentType.LIBRARY,
                    purl=_parse_purl(ancestor_purl),
                )
                pedigree = Pedigree(ancestors=[ancestor])
    return Component(
        name=_text(display),
        version=_text(version) if version else None,
        type=ComponentType.APPLICATION if ecosystem == "brew-cask" else ComponentType.LIBRARY,
        purl=_parse_purl(purl),
        properties=[p for p in properties if p is not None],
        pedigree=pedigree,
    )


class FleetPurl(PackageURL):
    """A :class:`~packageurl.PackageURL` written by :func:`purl_string`: a ``/`` in its name
    is percent-encoded (cyclonedx-python-lib writes a component's purl with ``to_string``)."""

    def to_string(self, encode: bool | None = True) -> str:
        if not encode:
            return super().to_string(encode)
        qualifiers = self.qualifiers if isinstance(self.qualifiers, dict) else None
        return purl_string(self.type, self.namespace, self.name, self.version, qualifiers)

    def __str__(self) -> str:
        return self.to_string()


def _parse_purl(text: str) -> FleetPurl:
    try:
        return FleetPurl.from_string(text)
    except ValueError as exc:
        raise SbomError(f"purl {text[:200]!r} does not parse: {exc}") from exc


def node_component(minion_id: str, inventory: Mapping, grains: Mapping | None) -> Component:
    """The node as a ``device`` component with its operating system nested in it."""
    facts = _mapping(inventory.get("facts"))
    fleet = _mapping(_mapping(grains).get("fleet"))
    props = [_prop(key, facts.get(key)) for key in NODE_FACTS]
    props += [_prop(f"hardware:{key}", fleet.get(key)) for key in NODE_GRAIN_KEYS]
    pythons = _mapping(facts.get("pip_python"))
    props += [_prop(f"python:{path}", version) for path, version in sorted(pythons.items())]
    props.append(_prop("inventory-digest", inventory.get("digest")))
    os_name = facts.get("os") or fleet.get("os")
    os_version = facts.get("osrelease") or fleet.get("os_version")
    nested = []
    if isinstance(os_name, str) and os_name:
        nested.append(
            Component(
                name=_text(os_name),
                version=_text(os_version) if isinstance(os_version, (str, int, float)) else None,
                type=ComponentType.OPERATING_SYSTEM,
                bom_ref=_text(f"node:{minion_id}:os"),
                properties=[
                    p
                    for p in (
                        _prop("os_family", facts.get("os_family")),
                        _prop("kernelrelease", facts.get("kernelrelease")),
                    )
                    if p is not None
                ],
            )
        )
    return Component(
        name=_text(minion_id),
        type=ComponentType.DEVICE,
        bom_ref=_text(f"node:{minion_id}"),
        description=_text(f"fleet node {minion_id}"),
        properties=[p for p in props if p is not None],
        components=nested,
    )


def _tools() -> ToolRepository:
    return ToolRepository(
        components=[
            Component(
                name="saltext-fleet",
                version=__version__,
                type=ComponentType.APPLICATION,
                group="saltext-fleet",
            )
        ]
    )


def _metadata(component: Component, timestamp: dt.datetime | None) -> BomMetaData:
    return BomMetaData(
        tools=_tools(),
        component=component,
        timestamp=timestamp or dt.datetime.now(dt.timezone.utc),
    )


# --------------------------------------------------------------------------------------------
# Documents
# --------------------------------------------------------------------------------------------


def build_bom(
    minion_id: str,
    inventory: Mapping,
    grains: Mapping | None = None,
    vex: list[dict] | None = None,
    *,
    timestamp: dt.datetime | None = None,
    serial_number: uuid.UUID | None = None,
) -> Bom:
    """One node's CycloneDX 1.6 SBOM: the node as ``metadata.component``, one component per
    installed package version, and ``vex`` as ``vulnerabilities`` (see the module docstring).
    Raises :class:`SbomError` when the inventory is not a mapping or a VEX entry is bad."""
    _check_node(minion_id, inventory)
    node = node_component(minion_id, inventory, grains)
    packages = package_components(inventory)
    bom = Bom(metadata=_metadata(node, timestamp))
    if serial_number is not None:
        bom.serial_number = serial_number
    bom.components = [component for component, *_ in packages]
    _depends(bom, node, bom.components)
    if vex:
        bom.vulnerabilities = _vulnerabilities(vex, packages)
    return bom


def build_fleet_bom(
    nodes: Iterable[tuple[str, Mapping, Mapping | None]],
    *,
    timestamp: dt.datetime | None = None,
) -> Bom:
    """Many nodes in one document: ``metadata.component`` is the fleet (an ``application``
    named ``saltext-fleet fleet``), and ``components`` holds one ``device`` component per node
    (bom-ref ``node:<minion id>``) whose nested components are its packages, bom-refs
    ``<minion id>/<ecosystem>:<name>@<version>``. ``nodes`` yields ``(minion_id, inventory,
    grains)``."""
    fleet = Component(
        name="saltext-fleet fleet",
        type=ComponentType.APPLICATION,
        bom_ref="fleet",
        description="every node exported together",
    )
    bom = Bom(metadata=_metadata(fleet, timestamp))
    devices = []
    for minion_id, inventory, grains in nodes:
        if not isinstance(inventory, Mapping):
            raise SbomError(f"inventory of {minion_id}: expected a mapping")
        device = node_component(minion_id, inventory, grains)
        for component, *_ in package_components(inventory, ref_prefix=f"{minion_id}/"):
            device.components.add(component)
        devices.append(device)
    bom.components = devices
    _depends(bom, fleet, devices)
    return bom


def _depends(bom: Bom, target: Component, parts: Iterable[Component]) -> None:
    """``target`` depends on each of ``parts``, and they on nothing (what
    ``Bom.register_dependency`` records, without its cost quadratic in the parts)."""
    parts = list(parts)
    bom.dependencies.update(Dependency(ref=part.bom_ref) for part in parts)
    bom.dependencies.add(
        Dependency(ref=target.bom_ref, dependencies=[Dependency(ref=p.bom_ref) for p in parts])
    )


# --------------------------------------------------------------------------------------------
# Many documents: each component written once
# --------------------------------------------------------------------------------------------

#: The facts a package's component is built from (what :func:`package_purl` and
#: :func:`source_purl` read): part of its :class:`ComponentCache` key.
COMPONENT_FACTS = ("os", "os_family", "osrelease", "osarch")

#: Components cyclonedx-python-lib writes per batch when filling a :class:`ComponentCache`:
#: a batch's components are sorted from a set (n log n comparisons of tuples of the whole
#: component) and ``Bom.validate`` looks up each one's dependency entry one by one (n²),
#: while each batch costs a document's overhead; 10 was the fastest here (1, 4, 10, 25, 100).
BATCH = 10


class ComponentCache:
    """Package components as cyclonedx-python-lib writes them in a document's JSON, keyed by
    everything they are built from (ecosystem, name, version, bom-ref, source package, the
    number of installed versions, the :data:`COMPONENT_FACTS`), shared by the documents
    :func:`node_document` writes. Nodes share most packages: a fleet's export writes each
    unique component once. Holds ``limit`` components at most (emptied when full), about a
    kilobyte each (a fleet of 10,000 nodes with 258,000 unique package versions: 250 MB)."""

    def __init__(self, limit: int = 300_000):
        self.limit = limit
        self.hits = 0
        self.misses = 0
        self._entries: dict[tuple, tuple[str, str, tuple]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple | None) -> tuple[str, str, tuple] | None:
        """``(JSON text, purl, sort key)`` of a component, None when not cached."""
        entry = self._entries.get(key) if key is not None else None
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def put(self, key: tuple | None, entry: tuple[str, str, tuple]) -> None:
        if key is None:  # built from something that has no faithful key: never shared
            return
        if len(self._entries) >= self.limit:
            self._entries.clear()
        self._entries[key] = entry


def _frozen(value: Any) -> Any:
    """``value`` (JSON data) as a key that tells apart whatever the documents tell apart
    (``1``, ``True`` and ``"1"`` are three keys); None when it is not JSON data."""
    if type(value) is dict and all(type(k) is str and type(v) is str for k, v in value.items()):
        return tuple(sorted(value.items()))  # a source package: the common case, and cheap
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError):
        return None


def component_order(component: Component) -> tuple:
    """The order cyclonedx-python-lib gives a document's components (its ``SortedSet`` of
    :class:`~cyclonedx.model.component.Component`): a component's comparison tuple starts
    with type, group, name, version and bom-ref, a missing value after any other, and the
    bom-ref is unique in a document, so nothing after it counts."""
    group, version = component.group, component.version
    return (
        str(component.type.value),
        group is None,
        group or "",
        component.name,
        version is None,
        version or "",
        component.bom_ref.value,
    )


#: Namespace and declaration of the XML documents the library writes.
_XMLNS = "http://cyclonedx.org/schema/bom/1.6"
_XML_DECL = '<?xml version="1.0" ?>\n'


def _xml_text(element: ET.Element) -> str:
    """An element as the library's ``XmlV1Dot6`` writes its document (the same serializer
    and options)."""
    return ET.tostring(
        element,
        method="xml",
        default_namespace=_XMLNS,
        encoding="unicode",
        xml_declaration=False,
    )


def _library_xml(bom: Bom) -> ET.Element | None:
    """The library's XML of ``bom`` as a tree, None when writing that tree again would not
    give the library's text back exactly (a carriage return in a text, which XML parsers
    read as a newline): then no piece of it is used."""
    text = XmlV1Dot6(bom).output_as_string()
    root = ET.fromstring(text)
    # the library's tree has its attributes in its namespace too (ElementTree writes them
    # without a prefix); parsed, they have none, and must have it to be written the same way
    for element in root.iter():
        if element.attrib:
            element.attrib = {
                key if key.startswith("{") else f"{{{_XMLNS}}}{key}": value
                for key, value in element.attrib.items()
            }
    return root if _XML_DECL + _xml_text(root) == text else None


def _cache_components(
    cache: ComponentCache, specs: list[tuple], keys: list, facts: Mapping, fmt: str
) -> list[tuple[str | None, str, tuple]]:
    """Build the components of ``specs`` with the library, write them with it in ``fmt``
    (a :class:`~cyclonedx.model.bom.Bom` per :data:`BATCH`), cache each one's text (None:
    not usable as a piece, see :func:`_library_xml`)."""
    built = [package_component(spec, facts) for spec in specs]
    texts: dict[str, str | None] = {}
    for start in range(0, len(built), BATCH):
        batch = built[start : start + BATCH]
        if fmt == "cyclonedx-json":
            data = json.loads(JsonV1Dot6(Bom(components=batch)).output_as_string())
            for item in data.get("components", ()):
                texts[item["bom-ref"]] = json.dumps(item)
            continue
        root = _library_xml(Bom(components=batch))
        for element in root.find(f"{{{_XMLNS}}}components") if root is not None else ():
            # ElementTree declares the namespace on the element it starts from
            head, text = f'<component xmlns="{_XMLNS}"', _xml_text(element)
            texts[element.get(f"{{{_XMLNS}}}bom-ref")] = (
                "<component" + text[len(head) :] if text.startswith(head) else None
            )
    out = []
    for component, key in zip(built, keys, strict=True):
        entry = (
            texts.get(component.bom_ref.value),
            component.purl.to_string(),
            component_order(component),
        )
        cache.put(key, entry)
        out.append(entry)
    return out


def _check_node(minion_id: Any, inventory: Any) -> None:
    if not isinstance(minion_id, str) or not minion_id:
        raise SbomError("minion_id: a non-empty string is needed")
    if not isinstance(inventory, Mapping):
        raise SbomError(f"inventory of {minion_id}: expected a mapping, got {type(inventory)}")


def node_document(
    minion_id: str,
    inventory: Mapping,
    grains: Mapping | None = None,
    vex: list[dict] | None = None,
    fmt: str = "cyclonedx-json",
    *,
    cache: ComponentCache | None = None,
    timestamp: dt.datetime | None = None,
    serial_number: uuid.UUID | None = None,
) -> tuple[str, int]:
    """``(document, number of components)``: the node's SBOM in ``fmt``, the text
    :func:`serialize` writes of :func:`build_bom`'s document, what the runner, the web UI and
    the execution module give.

    The document is assembled from pieces cyclonedx-python-lib wrote: each package component
    comes from ``cache`` (written by the library the first time it is seen, see
    :class:`ComponentCache`), the rest (metadata, VEX, serial number) from the library's
    document of the node without its packages; the components and dependencies go in the
    order the library sorts them, and the whole is written as the library writes it
    (``json.dumps``; ElementTree's serializer for XML). A document whose bom-refs are not
    unique (the library would replace the duplicates with random ones), or that has a piece
    the library's XML cannot be split into exactly, is the library's whole document."""
    check_format(fmt)
    _check_node(minion_id, inventory)
    cache = cache if cache is not None else ComponentCache()
    facts = _mapping(inventory.get("facts"))
    specs = package_specs(inventory)
    facts_key = _frozen([facts.get(key) for key in COMPONENT_FACTS])
    keys: list[tuple | None] = []
    for ecosystem, name, version, source, count, ref in specs:
        source_key = _frozen(source) if facts_key is not None else None
        keys.append(
            None
            if source_key is None
            else (fmt, ref, ecosystem, name, version, count == 1, source_key, facts_key)
        )
    entries = [cache.get(key) for key in keys]
    missing = [i for i, entry in enumerate(entries) if entry is None]
    if missing:
        made = _cache_components(
            cache, [specs[i] for i in missing], [keys[i] for i in missing], facts, fmt
        )
        for i, entry in zip(missing, made, strict=True):
            entries[i] = entry
    node = node_component(minion_id, inventory, grains)
    skeleton = Bom(metadata=_metadata(node, timestamp))
    if serial_number is not None:
        skeleton.serial_number = serial_number
    if vex:
        by_purl: dict[str, list[str]] = {}
        for spec, entry in zip(specs, entries, strict=True):
            by_purl.setdefault(entry[1], []).append(spec[5])
        skeleton.vulnerabilities = _vex_entries(vex, by_purl)
    _depends(skeleton, node, ())
    refs = [node.bom_ref.value, *(c.bom_ref.value for c in node.components)]
    refs += [spec[5] for spec in specs]
    refs += [v.bom_ref.value for v in skeleton.vulnerabilities]
    text = None
    if not specs:
        text = serialize(skeleton, fmt)  # the document of a node without packages
    elif None not in refs and len(set(refs)) == len(refs):
        entries.sort(key=lambda entry: entry[2])
        package_refs = sorted(spec[5] for spec in specs)
        pieces = [entry[0] for entry in entries]
        if fmt == "cyclonedx-json":
            text = _json_document(skeleton, package_refs, pieces)
        elif None not in pieces:
            text = _xml_document(skeleton, package_refs, pieces)
    if text is None:
        bom = build_bom(minion_id, inventory, grains, vex, timestamp=skeleton.metadata.timestamp)
        bom.serial_number = skeleton.serial_number
        return serialize(bom, fmt), len(bom.components)
    return text, len(specs)


def _json_document(skeleton: Bom, package_refs: list[str], pieces: list[str]) -> str:
    """The library writes ``json.dumps`` of its document: the same, pieces spliced in."""
    node_ref = skeleton.metadata.component.bom_ref.value
    head = json.loads(JsonV1Dot6(skeleton).output_as_string())
    dependencies = [{"ref": ref} for ref in package_refs]
    dependencies.append({"dependsOn": package_refs, "ref": node_ref})
    dependencies.sort(key=lambda dep: dep["ref"])
    parts = ['"components": [' + ", ".join(pieces) + "]"]
    for key, value in head.items():
        if key == "dependencies":
            value = dependencies
        parts.append(f"{json.dumps(key)}: {json.dumps(value)}")
    return "{" + ", ".join(parts) + "}"


def _xml_document(skeleton: Bom, package_refs: list[str], pieces: list[str]) -> str | None:
    """The library's XML of ``skeleton`` with the components after the metadata, the
    dependencies of them all, written by the library's serializer; None when it cannot be
    split exactly (see :func:`_library_xml`)."""
    root = _library_xml(skeleton)
    if root is None:
        return None
    ns = f"{{{_XMLNS}}}"
    node_ref = skeleton.metadata.component.bom_ref.value
    tags = [child.tag for child in root]
    marker = uuid.uuid4().hex
    components = ET.Element(f"{ns}components")
    components.text = marker
    root.insert(tags.index(f"{ns}metadata") + 1, components)
    dependencies = root.find(f"{ns}dependencies")
    dependencies.clear()
    for ref in sorted([*package_refs, node_ref]):
        entry = ET.SubElement(dependencies, f"{ns}dependency", {f"{ns}ref": ref})
        if ref == node_ref:
            for package_ref in package_refs:
                ET.SubElement(entry, f"{ns}dependency", {f"{ns}ref": package_ref})
    text = _XML_DECL + _xml_text(root)
    if text.count(marker) != 1:
        return None
    return text.replace(marker, "".join(pieces))


def _enum(kind, value: Any, what: str, ident: str):
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(item.value for item in kind)
        raise SbomError(f"VEX entry {ident}: {what} {value!r} is not one of {allowed}") from None


def _vulnerabilities(vex: list[dict], packages: list) -> list[Vulnerability]:
    by_purl: dict[str, list[str]] = {}
    for component, *_ in packages:
        by_purl.setdefault(component.purl.to_string(), []).append(component.bom_ref.value)
    return _vex_entries(vex, by_purl)


def _vex_entries(vex: list[dict], by_purl: Mapping[str, list[str]]) -> list[Vulnerability]:
    """The ``vulnerabilities`` of ``vex``; ``by_purl``: the bom-refs of each purl."""
    out = []
    for index, entry in enumerate(vex):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("id"), str):
            raise SbomError(f"VEX entry {index}: a mapping with an 'id' is needed")
        ident = entry["id"]
        state = entry.get("state")
        analysis = VulnerabilityAnalysis(
            state=_enum(ImpactAnalysisState, state, "state", ident) if state else None,
            justification=(
                _enum(ImpactAnalysisJustification, entry["justification"], "justification", ident)
                if entry.get("justification")
                else None
            ),
            responses=[
                _enum(ImpactAnalysisResponse, r, "response", ident)
                for r in entry.get("responses") or ()
            ],
            detail=_text(entry["detail"]) if entry.get("detail") else None,
        )
        refs: list[str] = []
        for purl in entry.get("purls") or ():
            refs.extend(by_purl.get(_canonical_purl(purl, ident), ()))
        if not refs:
            continue
        out.append(
            Vulnerability(
                bom_ref=_text(f"vex:{index}:{ident}"),
                id=_text(ident),
                source=VulnerabilitySource(name="OSV", url=_osv_url(ident)),
                references=[
                    VulnerabilityReference(id=_text(alias), source=_alias_source(alias))
                    for alias in entry.get("aliases") or ()
                    if isinstance(alias, str) and alias and alias != ident
                ],
                analysis=analysis,
                affects=[BomTarget(ref=ref) for ref in dict.fromkeys(refs)],
            )
        )
    return out


def _canonical_purl(purl: Any, ident: str) -> str:
    """A purl as :func:`package_purl` writes it (so ``?b=1&a=2`` finds ``?a=2&b=1``)."""
    if not isinstance(purl, str):
        raise SbomError(f"VEX entry {ident}: purl {purl!r} is not a string")
    try:
        parsed = PackageURL.from_string(purl)
    except ValueError as exc:
        raise SbomError(f"VEX entry {ident}: {purl[:200]!r} is not a purl: {exc}") from exc
    return purl_string(
        parsed.type,
        parsed.namespace,
        parsed.name,
        parsed.version,
        parsed.qualifiers if isinstance(parsed.qualifiers, dict) else None,
    )


def _osv_url(ident: str) -> XsUri:
    return XsUri(f"https://osv.dev/vulnerability/{quote(ident, safe='')}")


def _alias_source(alias: str) -> VulnerabilitySource:
    """Where an alias comes from: CycloneDX 1.6 requires a source for every reference (an
    alias such as ``PYSEC-...`` or ``DSA-...`` is looked up on OSV, which knows them)."""
    if alias.startswith("CVE-"):
        return VulnerabilitySource(name="NVD")
    if alias.startswith("GHSA-"):
        return VulnerabilitySource(name="GitHub")
    return VulnerabilitySource(name="OSV", url=_osv_url(alias))


# --------------------------------------------------------------------------------------------
# Writing and checking
# --------------------------------------------------------------------------------------------


def check_format(fmt: Any) -> str:
    """``fmt`` when it is one of :data:`FORMATS`; :class:`SbomError` naming it otherwise."""
    if fmt not in FORMATS:
        raise SbomError(f"format {str(fmt)[:40]!r} is not one of {', '.join(FORMATS)}")
    return fmt


def serialize(bom: Bom, fmt: str = "cyclonedx-json", indent: int | None = None) -> str:
    """``bom`` as CycloneDX 1.6 JSON (``cyclonedx-json``) or XML (``cyclonedx-xml``)."""
    check_format(fmt)
    if fmt == "cyclonedx-json":
        return JsonV1Dot6(bom).output_as_string(indent=indent)
    return XmlV1Dot6(bom).output_as_string(indent=indent)


def validate(text: str, fmt: str = "cyclonedx-json") -> None:
    """Check ``text`` against the CycloneDX 1.6 schema (shipped with cyclonedx-python-lib,
    read offline); :class:`SbomValidationError` naming the first error."""
    check_format(fmt)
    # Imported here: jsonschema's format checkers compile their grammars when imported
    # (one to three seconds), which every runner, web worker and minion loading this module
    # would pay for a check only the tests and ``validate=True`` ask for.
    if fmt == "cyclonedx-json":
        from cyclonedx.validation.json import JsonStrictValidator

        validator = JsonStrictValidator(SchemaVersion.V1_6)
    else:
        from cyclonedx.validation.xml import XmlValidator

        validator = XmlValidator(SchemaVersion.V1_6)
    error = validator.validate_str(text)
    if error is not None:
        raise SbomValidationError(f"{fmt}: not a valid CycloneDX 1.6 document: {str(error)[:1000]}")


# --------------------------------------------------------------------------------------------
# Export files
# --------------------------------------------------------------------------------------------

#: Archive suffixes :func:`write_bundle` knows; any other ``out`` is a folder.
ARCHIVES = (".tar.gz", ".tgz", ".zip")

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,200}$")


def file_name(minion_id: str, fmt: str) -> str:
    """A file name for a node's document that can never leave its folder: the minion id
    when it is plain (``A-Z a-z 0-9 . _ -``, not starting with ``.`` or ``-``), else the id
    with every other character replaced by ``_`` and a digest of the id appended (two odd
    ids never share a file)."""
    ext = EXTENSIONS[check_format(fmt)]
    if _SAFE_NAME.match(minion_id) and ".." not in minion_id:
        return minion_id + ext
    digest = hashlib.sha256(minion_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    plain = re.sub(r"[^A-Za-z0-9._-]", "_", minion_id)[:100].lstrip(".-").replace("..", "__")
    return f"{plain or 'node'}-{digest}{ext}"


def write_bundle(out: str, entries: Iterable[tuple[str, bytes]]) -> str:
    """Write ``(relative path, content)`` entries into ``out``: a ``.tar.gz``/``.tgz`` or
    ``.zip`` archive (written to a temporary file beside it, then moved into place), else a
    folder (created when missing). ``out`` must be absolute; relative paths come from
    :func:`file_name` and fixed folder names. Returns what was written (the archive or
    folder)."""
    if not isinstance(out, str) or not os.path.isabs(out) or "\0" in out:
        raise SbomError(f"out: {str(out)[:200]!r} is not an absolute path")
    out = os.path.normpath(out)
    lower = out.lower()
    if not lower.endswith(ARCHIVES):
        os.makedirs(out, exist_ok=True)
        for rel, data in entries:
            path = os.path.join(out, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as handle:
                handle.write(data)
        return out
    folder = os.path.dirname(out)
    if not os.path.isdir(folder):
        raise SbomError(f"out: the folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=".sbom-", dir=folder)
    os.close(fd)
    try:
        if lower.endswith(".zip"):
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                for rel, data in entries:
                    archive.writestr(rel, data)
        else:
            now = time.time()
            with tarfile.open(tmp, "w:gz") as archive:
                for rel, data in entries:
                    info = tarfile.TarInfo(rel)
                    info.size, info.mtime, info.mode = len(data), now, 0o644
                    archive.addfile(info, io.BytesIO(data))
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return out
