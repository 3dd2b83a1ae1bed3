"""The parsed form of an OSV advisory, and which inventory ecosystem an OSV ecosystem is.

An OSV record (https://ossf.github.io/osv-schema/) says which versions of which packages are
affected. This module holds what matching and the store need of it, immutable and hashable:

* :class:`Advisory`: ``id``, ``modified``/``published``/``withdrawn`` (aware UTC datetimes),
  ``aliases`` (CVE ids and others), ``summary`` (the record's summary, else the first line of
  its details), ``severity`` (the record's ``severity`` entries) and ``affected``.
* :class:`Affected`: one ``affected[]`` entry: the OSV ``ecosystem`` as the record spells it
  (``"PyPI"``, ``"Debian:12"``, ``"npm"``), the package ``name`` as the record spells it, the
  explicit ``versions``, and the ``ranges`` with their events in record order.
* :class:`Range`: ``type`` (``ECOSYSTEM``, ``SEMVER`` or ``GIT``) and ``events``: a tuple of
  ``(kind, value)`` pairs, ``kind`` one of :data:`EVENT_KINDS`.

``database_specific`` and ``ecosystem_specific`` are not kept: OSV never needs them for a
verdict.

Ecosystems
----------
The inventory files packages under its own ecosystem names (``deb``, ``rpm``, ``pypi``,
``npm``, ``apk``, ``brew``, ``nix``, ...; see :mod:`saltext_fleet.core.inventory`). OSV names
ecosystems differently, and a distribution's advisories hold for one release
(``Debian:12``, ``Ubuntu:22.04``, ``Alpine:v3.19``). :func:`osv_ecosystem` gives the OSV
ecosystem a node's packages of one inventory ecosystem are matched in (None: OSV does not
cover them, and the node says "not covered" for them, never "clean"); :func:`base_ecosystem`
strips the release from an OSV ecosystem.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Mapping

#: The kinds of a range event, as OSV names them.
EVENT_KINDS = ("introduced", "fixed", "last_affected", "limit")

#: Range types OSV defines; ``GIT`` ranges name commits and are ignored by matching.
RANGE_TYPES = ("ECOSYSTEM", "SEMVER", "GIT")

#: OSV ecosystem (without release) -> the inventory ecosystem whose version order it uses.
OSV_TO_INVENTORY = {
    "PyPI": "pypi",
    "npm": "npm",
    "Debian": "deb",
    "Ubuntu": "deb",
    "Alpine": "apk",
    "Red Hat": "rpm",
    "AlmaLinux": "rpm",
    "Rocky Linux": "rpm",
    "openSUSE": "rpm",
    "SUSE": "rpm",
}

#: Inventory ecosystems OSV has no advisories for: their packages are "not covered".
NOT_COVERED = ("brew", "brew-cask", "nix", "macos-app", "pacman", "pkg", "unknown")


@dataclasses.dataclass(frozen=True, slots=True)
class Severity:
    """One ``severity`` entry: ``type`` (``CVSS_V3``, ``CVSS_V4``, ``CVSS_V2``, ``Ubuntu``)
    and ``score`` (a CVSS vector string, or the type's own text)."""

    type: str
    score: str


@dataclasses.dataclass(frozen=True, slots=True)
class Range:
    type: str
    events: tuple[tuple[str, str], ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Affected:
    ecosystem: str
    name: str
    purl: str | None = None
    versions: frozenset[str] = frozenset()
    ranges: tuple[Range, ...] = ()
    severity: tuple[Severity, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Advisory:
    id: str
    modified: dt.datetime
    published: dt.datetime | None = None
    withdrawn: dt.datetime | None = None
    aliases: tuple[str, ...] = ()
    summary: str = ""
    severity: tuple[Severity, ...] = ()
    affected: tuple[Affected, ...] = ()


def base_ecosystem(osv_ecosystem: str) -> str:
    """``"Debian:12"`` -> ``"Debian"``; ``"PyPI"`` -> ``"PyPI"``."""
    return osv_ecosystem.split(":", 1)[0]


_MAJOR = re.compile(r"\d+")


def osv_ecosystem(inventory_ecosystem: str, facts: Mapping | None = None) -> str | None:
    """The OSV ecosystem a node's ``inventory_ecosystem`` packages are matched in, from the
    node's facts (``os``, ``osrelease``, ``osmajorrelease``, ``oscodename`` grains): ``pypi``
    -> ``PyPI``, ``npm`` -> ``npm``, ``deb`` on Debian 12 -> ``Debian:12``, on Ubuntu 22.04
    -> ``Ubuntu:22.04``, ``apk`` on Alpine 3.19.1 -> ``Alpine:v3.19``. None when OSV does
    not cover it (:data:`NOT_COVERED`, an unknown ecosystem, or a distribution release the
    facts do not tell)."""
    facts = facts or {}
    if inventory_ecosystem == "pypi":
        return "PyPI"
    if inventory_ecosystem == "npm":
        return "npm"
    os_name = str(facts.get("os") or "")
    release = str(facts.get("osrelease") or "")
    major = str(facts.get("osmajorrelease") or "")
    if not major:
        found = _MAJOR.match(release)
        major = found.group(0) if found else ""
    if inventory_ecosystem == "deb":
        if os_name == "Debian" and major:
            return f"Debian:{major}"
        if os_name == "Ubuntu" and release:
            return f"Ubuntu:{release}"
        return None
    if inventory_ecosystem == "apk" and os_name == "Alpine" and release:
        parts = release.split(".")
        if len(parts) >= 2:
            return f"Alpine:v{parts[0]}.{parts[1]}"
    return None
