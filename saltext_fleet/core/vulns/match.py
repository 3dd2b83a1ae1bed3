"""Whether an installed version is affected by an OSV advisory, with OSV's own rules.

The rules are the "Evaluation" pseudo-code of the OSV schema
(https://ossf.github.io/osv-schema/#evaluation), for one ``affected[]`` entry and a version
``v``:

* ``v`` is affected when it is one of the entry's ``versions``, or falls in any of its
  ``ranges``. ``versions`` are compared as strings; for PyPI both sides are first normalised
  as PEP 440 says (``packaging.utils.canonicalize_version``: ``1.0.0`` is ``1.0``,
  ``1.0RC1`` is ``1.0rc1``).
* A range is evaluated in its own order: ``SEMVER`` ranges in Semantic Versioning 2.0 order,
  ``ECOSYSTEM`` ranges in the order of the entry's ecosystem (``PyPI``: PEP 440; ``npm``:
  SemVer; ``Debian``, ``Ubuntu``: dpkg; ``Alpine``: apk; ``Red Hat``, ``AlmaLinux``,
  ``Rocky Linux``, ``SUSE``, ``openSUSE``: rpm), as :mod:`saltext_fleet.core.versions`
  implements them, through :data:`.model.OSV_TO_INVENTORY`. An ``ECOSYSTEM`` range of an
  ecosystem outside that map has no known order and never matches (its ``versions`` still
  do).
* ``GIT`` ranges are ignored: their events are commit hashes, and telling whether an installed
  package contains a commit needs the repository's history. OSV requires a record with GIT
  ranges to enumerate the affected versions too, and that list is used.
* In a range, when there are ``limit`` events, ``v`` must be below at least one of them (a
  limit containing ``*`` is infinity). Then the events are sorted by version (``introduced:
  "0"`` before everything, events of equal version in record order) and walked in order:
  ``introduced`` with ``v >= introduced`` makes ``v`` affected, ``fixed`` with ``v >= fixed``
  and ``last_affected`` with ``v > last_affected`` make it not affected; what the last such
  event said is the verdict (not affected when none applies).

A withdrawn advisory never matches (:class:`Index` leaves it out). ``database_specific`` and
``ecosystem_specific`` never change a verdict.

:class:`Index` answers many queries: advisories are filed under ``(OSV ecosystem, package
name)`` (PyPI names PEP 503 normalised); each range's events are sorted and turned into
order keys (:func:`saltext_fleet.core.versions.order_key`) once, the first time its package
is queried, and a queried version's key is computed once per query. A query for a package
without advisories is one dict lookup, one with advisories a few tuple comparisons per range.
Each query returns one :class:`Hit` per advisory, with the version that fixes it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable

from packaging.utils import canonicalize_version

from saltext_fleet.core import versions
from saltext_fleet.core.vulns import model
from saltext_fleet.core.vulns.osv import package_name

#: The inventory ecosystem whose order ``SEMVER`` ranges use (npm's order is SemVer 2.0).
SEMVER_ORDER = "npm"

#: Longest version the PEP 440 normalisation of ``versions`` entries is tried on.
MAX_VERSION_CHARS = versions.MAX_PEP440_CHARS

_INTRODUCED, _FIXED, _LAST_AFFECTED = "introduced", "fixed", "last_affected"


@dataclasses.dataclass(frozen=True, slots=True)
class Hit:
    """One advisory that affects a queried version; ``fixed`` is the lowest ``fixed`` version
    above it that the advisory does not affect (None when the advisory names none)."""

    advisory_id: str
    fixed: str | None


def range_order(osv_ecosystem: str, range_type: str) -> str | None:
    """The :mod:`~saltext_fleet.core.versions` ecosystem whose order a range of
    ``range_type`` in ``osv_ecosystem`` uses; None when the range is not evaluated (``GIT``,
    or an ``ECOSYSTEM`` range of an ecosystem without a known order)."""
    if range_type == "SEMVER":
        return SEMVER_ORDER
    if range_type == "ECOSYSTEM":
        return model.OSV_TO_INVENTORY.get(model.base_ecosystem(osv_ecosystem))
    return None


def index_ecosystem(osv_ecosystem: str) -> str:
    """The ecosystem an advisory is filed and looked up under: as given, except that
    Ubuntu's ``:LTS`` suffix is dropped (records say ``Ubuntu:22.04:LTS``, a node's facts give
    ``Ubuntu:22.04``). ``Ubuntu:Pro:...`` (fixes shipped only to Ubuntu Pro) stays apart."""
    if osv_ecosystem.startswith("Ubuntu:") and osv_ecosystem.endswith(":LTS"):
        return osv_ecosystem[: -len(":LTS")]
    return osv_ecosystem


@functools.lru_cache(maxsize=1 << 16)
def _canonical(order: str | None, version: str) -> str:
    """How a ``versions`` entry and a queried version are compared: PEP 440 normalised for
    PyPI, as they are for everything else (cached: advisories of one package list the same
    versions)."""
    if order != "pypi" or len(version) > MAX_VERSION_CHARS:
        return version
    try:
        return canonicalize_version(version)
    except Exception:  # noqa: BLE001 - not PEP 440 (or int() limits): compare it as it is
        return version


class _Query:
    """One queried version: its ``versions``-list form and its order keys, each computed once
    (a query is compared with every range of every advisory of its package)."""

    __slots__ = ("_canonical", "keys", "version")

    def __init__(self, version: str, order: str | None = None, key: object = None) -> None:
        self.version = version
        #: order -> key (keys are non-empty tuples, never false)
        self.keys: dict[str, object] = {} if order is None else {order: key}
        self._canonical: dict[str | None, str] = {}

    def key(self, order: str) -> object:
        key = self.keys.get(order)
        if key is None:
            key = self.keys[order] = versions.order_key(order)(self.version)
        return key

    def canonical(self, order: str | None) -> str:
        found = self._canonical.get(order)
        if found is None:
            found = self._canonical[order] = _canonical(order, self.version)
        return found


@dataclasses.dataclass(frozen=True, slots=True)
class _Range:
    """One evaluated range: its order, its events sorted once as ``(kind, key)`` (key
    ``None``: introduced "0") and the keys of its finite limits (``None``: no limit
    applies)."""

    order: str
    events: tuple[tuple[str, object], ...]
    limits: tuple[object, ...] | None

    def includes(self, query: _Query) -> bool:
        key = query.keys.get(self.order) or query.key(self.order)
        if self.limits is not None and not any(key < limit for limit in self.limits):
            return False
        vulnerable = False
        for kind, value in self.events:
            if value is None:
                vulnerable = True
            elif key < value:
                break  # this event and every later one are above the version: none applies
            elif kind == _INTRODUCED:
                vulnerable = True
            elif kind == _FIXED:
                vulnerable = False
            elif kind == _LAST_AFFECTED and value < key:
                vulnerable = False
        return vulnerable


@functools.lru_cache(maxsize=1 << 16)
def _event_key(order: str, value: str) -> object:
    """An event's order key; cached, as advisories of one package share fixed versions (one
    Debian update fixes many CVEs)."""
    return versions.order_key(order)(value)


def _event_order(event: tuple[int, str, object]) -> tuple:
    return (event[2] is not None, event[2] or (), event[0])


def _compile_range(item: model.Range, order: str) -> _Range:
    limits = []
    events = []
    for index, (kind, value) in enumerate(item.events):
        if kind == "limit":
            limits.append(value)
        else:
            key = None if kind == _INTRODUCED and value == "0" else _event_key(order, value)
            events.append((index, kind, key))
    if len(events) > 1:
        # Sorted by version, introduced "0" first, events of equal version in record order.
        events.sort(key=_event_order)
    unbounded = not limits or any("*" in limit for limit in limits)
    return _Range(
        order=order,
        events=tuple((kind, value) for _index, kind, value in events),
        limits=None if unbounded else tuple(_event_key(order, limit) for limit in limits),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class _Entry:
    """One ``affected[]`` entry ready to answer queries."""

    order: str | None
    versions: frozenset[str]
    ranges: tuple[_Range, ...]
    #: (order, key, version) of every ``fixed`` event of the evaluated ranges.
    fixes: tuple[tuple[str, object, str], ...]

    def includes(self, query: _Query) -> bool:
        if self.versions and query.canonical(self.order) in self.versions:
            return True
        for item in self.ranges:  # a plain loop: faster than any() on this hot path
            if item.includes(query):
                return True
        return False


def _compile(affected: model.Affected) -> _Entry:
    order = model.OSV_TO_INVENTORY.get(model.base_ecosystem(affected.ecosystem))
    ranges = []
    fixes = []
    for item in affected.ranges:
        item_order = range_order(affected.ecosystem, item.type)
        if item_order is None:
            continue
        ranges.append(_compile_range(item, item_order))
        fixes.extend(
            (item_order, _event_key(item_order, value), value)
            for kind, value in item.events
            if kind == _FIXED
        )
    return _Entry(
        order=order,
        versions=frozenset(_canonical(order, version) for version in affected.versions),
        ranges=tuple(ranges),
        fixes=tuple(fixes),
    )


_compile_cached = functools.lru_cache(maxsize=1024)(_compile)


def affects(affected: model.Affected, version: str) -> bool:
    """Whether ``version`` (one version, as the package manager spells it) is affected by
    the ``affected[]`` entry ``affected``, by the rules in the module docstring."""
    return _compile_cached(affected).includes(_Query(version))


def _fixed(entries: tuple[_Entry, ...], query: _Query) -> str | None:
    """The lowest ``fixed`` version above the query's that none of ``entries`` affects."""
    candidates = sorted(
        (order, key, value)
        for entry in entries
        for order, key, value in entry.fixes
        if query.key(order) < key
    )
    for order, key, value in candidates:
        fix = _Query(value, order, key)
        if not any(entry.includes(fix) for entry in entries):
            return value
    return None


class Index:
    """Non-withdrawn ``advisories`` filed for queries by ``(OSV ecosystem, package name)``.

    Building it only files each ``affected[]`` entry under its package (a dict insert); a
    package's entries are prepared (events sorted, order keys computed) the first time it is
    queried, so an index of 100,000 advisories is built in well under a second and a fleet
    pays only for the packages it has. A package no advisory names costs one dict lookup. An
    advisory id given more than once counts as one advisory whose entries are all of theirs
    (give each id once).
    """

    def __init__(self, advisories: Iterable[model.Advisory]) -> None:
        table: dict[tuple[str, str], dict[str, list[model.Affected]]] = {}
        count = 0
        for advisory in advisories:
            if advisory.withdrawn is not None:
                continue
            count += 1
            for affected in advisory.affected:
                ecosystem = index_ecosystem(affected.ecosystem)
                key = (ecosystem, package_name(ecosystem, affected.name))
                table.setdefault(key, {}).setdefault(advisory.id, []).append(affected)
        self._raw = table
        self._compiled: dict[tuple[str, str], tuple[tuple[str, tuple[_Entry, ...]], ...]] = {}
        self.advisories = count

    def __len__(self) -> int:
        """How many (ecosystem, package) pairs some advisory names."""
        return len(self._raw)

    def __contains__(self, key: object) -> bool:
        """Whether ``(osv_ecosystem, name)`` has advisories at all."""
        if not (isinstance(key, tuple) and len(key) == 2):
            return False
        ecosystem = index_ecosystem(key[0])
        return (ecosystem, package_name(ecosystem, key[1])) in self._raw

    def _entries(self, key: tuple[str, str]) -> tuple[tuple[str, tuple[_Entry, ...]], ...]:
        compiled = self._compiled.get(key)
        if compiled is None:
            by_id = self._raw.get(key)
            if not by_id:
                return ()
            compiled = tuple(
                (ident, tuple(_compile(affected) for affected in entries))
                for ident, entries in by_id.items()
            )
            self._compiled[key] = compiled
        return compiled

    def match(self, osv_ecosystem: str, name: str, version: str) -> list[Hit]:
        """The advisories affecting ``name`` at ``version`` in ``osv_ecosystem`` (``"PyPI"``,
        ``"Debian:12"``; for Debian, Ubuntu and Alpine ``name`` is the SOURCE package and
        ``version`` its version; see :func:`index_ecosystem`), one :class:`Hit` per
        advisory, in the order they were given.
        ``version`` is one version; split the inventory's ``","``-joined values first."""
        ecosystem = index_ecosystem(osv_ecosystem)
        candidates = self._entries((ecosystem, package_name(ecosystem, name)))
        if not candidates:
            return []
        query = _Query(version)
        hits = []
        for ident, entries in candidates:
            for entry in entries:
                if entry.includes(query):
                    hits.append(Hit(advisory_id=ident, fixed=_fixed(entries, query)))
                    break
        return hits
