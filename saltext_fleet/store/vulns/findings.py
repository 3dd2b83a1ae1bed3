"""Vulnerability findings: every node's installed packages matched against the advisories.

A finding is one node's exposure to one advisory through one package (``vuln_findings``):
opened when a recompute first sees it (``first_seen``), kept while it holds, resolved
(``resolved_at``) when the package is upgraded past the fix, removed, or the advisory is
withdrawn or no longer names that version. A later exposure opens a new row, so each node's
exposure has a history. :func:`recompute` does the whole fleet (after an import),
:func:`recompute_node` one node (after its inventory changed: the reactor).

Match keys
----------
What is matched is not the inventory's ``(ecosystem, name, version)`` but what OSV names:

* ``pypi`` and ``npm`` packages are matched as ``PyPI`` / ``npm`` packages under their own name
  (PEP 503 normalised for PyPI) and version;
* ``deb``, ``apk`` and ``rpm`` packages are matched in the OSV ecosystem of the node's release
  (``Debian:12``, ``Ubuntu:22.04``, ``Alpine:v3.19``, ``Rocky Linux:9``, ``AlmaLinux:9``;
  :func:`match_ecosystem`) as the SOURCE package the inventory's ``sources`` map names, at
  the source version (Debian, Ubuntu and Alpine advisories name source packages); a binary
  without a ``sources`` entry is matched under its own name (without ``:arch``) and version;
* every other ecosystem (Homebrew, Nix, macOS applications, pacman...) and a distribution
  whose release the node's facts do not tell are "not covered": counted per node and
  ecosystem (:func:`not_covered`), never matched, never reported as clean.

Each installed version is one 64-bit *match key* (BLAKE2b of the six strings, ``vuln_keys``
is the dictionary); each inventory snapshot's keys are kept packed (``vuln_snapshot_index``,
written the first time a recompute sees the snapshot). Matching is done once per unique key,
never per node: the verdict of every key whose (OSV ecosystem, name) some advisory names is
cached in ``vuln_key_hits`` (advisory ids and fixed versions); keys whose name no advisory
names have no verdict to cache. A recompute first brings the cache up to date with the
advisories imported since the last one (``advisories.imported_at`` later than the newest
``imported_at`` the last one saw, kept in ``vuln_match_state``): the keys of every name a
changed advisory names, and every cached key whose verdict names a changed advisory, are
matched again with a :class:`~saltext_fleet.core.vulns.match.Index` built only from the
advisories naming those names.

The fleet-wide recompute then never decodes an inventory: the snapshots' keys are looked up
among the keys that have a verdict (numpy), each snapshot gets a fingerprint of its verdicts
(advisory, fixed version, severity, score), and only nodes whose fingerprint changed since
their last recompute are compared with their open findings and written. A node whose
inventory is the same as last time is compared only for its packages whose verdict this
recompute changed (its open findings of those packages read by (node, ecosystem, package)),
and its counts are its previous ones adjusted by what opened, changed and resolved (triage
decisions taken meanwhile are counted at the node's next full recompute, e.g. its next
inventory change).

Writing, set-based
------------------
New findings go in by ``COPY`` on PostgreSQL (``executemany`` on SQLite), changed ones
(version, fixed version, severity) by id, resolved ones with one ``UPDATE .. WHERE id =
ANY(..)``. ``last_seen`` is the last recompute that wrote the row (opened or changed it); when
a node's findings were last confirmed is its ``vuln_node_state.computed_at``.

History
-------
A ``vuln_history`` point (open untriaged findings by severity, and triaged ones) is written
for a node whenever its counts differ from its previous point, by either recompute: the chart
shows every change and nothing in between.

Alerts and triage
-----------------
:func:`alerts` picks, from the findings a recompute opened, those at or above a severity
(``fleet:vulns:alert_severity``) that no live triage decision covers (:func:`live_triage`: not
revoked, not expired, for the advisory and the node, its group or the fleet, and the package
if the decision names one). The runner fires ``fleet/alert/cve`` for them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import gc
import hashlib
import json
import logging
import re
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from types import SimpleNamespace
from typing import Any

import numpy as np
from sqlalchemy import bindparam, delete, func, insert, select, text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import aliased

from saltext_fleet.core.errors import FleetError
from saltext_fleet.core.vulns import match as core_match
from saltext_fleet.core.vulns import model, osv
from saltext_fleet.store.drift.common import aware, dialect_insert, in_chunks
from saltext_fleet.store.models import (
    Advisory,
    AdvisoryPackage,
    InventorySnapshot,
    Node,
    VulnFinding,
    VulnHistory,
    VulnKey,
    VulnKeyHits,
    VulnMatchState,
    VulnNodeState,
    VulnSnapshotIndex,
    VulnTriage,
    utcnow,
)

log = logging.getLogger(__name__)

#: Severity buckets, most severe first (``unknown``: the advisory has no CVSS vector).
SEVERITIES = ("critical", "high", "medium", "low", "none", "unknown")
#: Rank of each bucket for "at or above": unknown ranks lowest.
SEVERITY_RANK = {name: len(SEVERITIES) - i for i, name in enumerate(SEVERITIES)}
SEVERITY_RANK["unknown"] = 0

#: Inventory ecosystems whose packages are matched through the ``sources`` map.
SOURCE_MAPPED = ("deb", "apk", "rpm")

#: The ``os`` grain of RPM distributions OSV publishes advisories for, and their OSV name.
RPM_DISTROS = {"Rocky": "Rocky Linux", "AlmaLinux": "AlmaLinux"}

_MAJOR = re.compile(r"\d+")


#: How long the parts of the last recompute in this process took (for ``bench/cve.py`` and
#: the runners' log).
TIMINGS: dict[str, float] = {}


class FindingsError(FleetError, ValueError):
    """A findings request that cannot be served."""


# -- match keys -------------------------------------------------------------------------------


def match_ecosystem(inventory_ecosystem: str, facts: Mapping | None) -> str | None:
    """:func:`saltext_fleet.core.vulns.model.osv_ecosystem`, plus RPM distributions OSV
    covers (``rpm`` on Rocky 9 -> ``Rocky Linux:9``, on AlmaLinux 9 -> ``AlmaLinux:9``)."""
    facts = facts if isinstance(facts, Mapping) else {}
    found = model.osv_ecosystem(inventory_ecosystem, facts)
    if found is None and inventory_ecosystem == "rpm":
        distro = RPM_DISTROS.get(str(facts.get("os") or ""))
        major = _MAJOR.match(str(facts.get("osrelease") or ""))
        if distro and major:
            return f"{distro}:{major.group(0)}"
    return found


@functools.lru_cache(maxsize=100_000)
def match_key(
    ecosystem: str, package: str, version: str, osv_eco: str, name: str, osv_version: str
) -> int:
    """The signed 64-bit match key of one installed version as it is matched (kept for the
    process's most recent 100,000: nodes share most of their packages)."""
    data = "\0".join((ecosystem, package, version, osv_eco, name, osv_version))
    raw = hashlib.blake2b(data.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(raw, "little", signed=True)


KeyInfo = tuple[str, str, str, str, str, str]


def snapshot_keys(
    packages: Any, sources: Any, facts: Any
) -> tuple[dict[int, KeyInfo], dict[str, int]]:
    """``({key: (ecosystem, package, version, osv_ecosystem, name, osv_version)},
    {not covered ecosystem: packages})`` of one inventory (stored data: any shape)."""
    keys: dict[int, KeyInfo] = {}
    uncovered: dict[str, int] = {}
    if not isinstance(packages, Mapping):
        return keys, uncovered
    sources = sources if isinstance(sources, Mapping) else {}
    for eco, pkgs in packages.items():
        if not isinstance(eco, str) or not isinstance(pkgs, Mapping) or not pkgs:
            continue
        target = match_ecosystem(eco, facts)
        if target is None:
            uncovered[eco] = len(pkgs)
            continue
        table = sources.get(eco) if eco in SOURCE_MAPPED else None
        table = table if isinstance(table, Mapping) else {}
        for package, versions in pkgs.items():
            if not isinstance(package, str) or not isinstance(versions, str) or not versions:
                continue
            source = table.get(package)
            for version in versions.split(","):
                if not version:
                    continue
                if eco in SOURCE_MAPPED:
                    if (
                        isinstance(source, Mapping)
                        and isinstance(source.get("name"), str)
                        and source["name"]
                    ):
                        name = source["name"]
                        src_version = source.get("version")
                        osv_version = (
                            src_version if isinstance(src_version, str) and src_version else version
                        )
                    else:
                        name, osv_version = package.split(":", 1)[0], version
                else:
                    name, osv_version = _package_name(target, package), version
                info = (eco, package, version, target, name, osv_version)
                keys[match_key(*info)] = info
    return keys, uncovered


_package_name = functools.lru_cache(maxsize=100_000)(osv.package_name)


def pack(keys: Iterable[int]) -> bytes:
    """Keys as sorted little-endian signed 64-bit integers."""
    return np.array(sorted(keys), dtype="<i8").tobytes()


def unpack(blob: bytes | None) -> np.ndarray:
    return np.frombuffer(blob or b"", dtype="<i8").astype(np.int64, copy=False)


def _is_pg(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def add_keys(conn: Connection, infos: Mapping[int, KeyInfo]) -> None:
    """Add ``vuln_keys`` rows, skipping known keys."""
    keys = sorted(infos)
    if not keys:
        return
    if _is_pg(conn):
        for chunk in in_chunks(keys, 20_000):
            cols = list(zip(*(infos[k] for k in chunk), strict=True))
            conn.execute(
                text(
                    "INSERT INTO vuln_keys (key, ecosystem, package, version, osv_ecosystem, "
                    "name, osv_version) SELECT * FROM unnest(CAST(:k AS bigint[]), "
                    "CAST(:e AS text[]), CAST(:p AS text[]), CAST(:v AS text[]), "
                    "CAST(:oe AS text[]), CAST(:n AS text[]), CAST(:ov AS text[])) "
                    "ON CONFLICT (key) DO NOTHING"
                ),
                {
                    "k": chunk,
                    "e": list(cols[0]),
                    "p": list(cols[1]),
                    "v": list(cols[2]),
                    "oe": list(cols[3]),
                    "n": list(cols[4]),
                    "ov": list(cols[5]),
                },
            )
        return
    conn.execute(
        text(
            "INSERT OR IGNORE INTO vuln_keys (key, ecosystem, package, version, osv_ecosystem, "
            "name, osv_version) VALUES (:k, :e, :p, :v, :oe, :n, :ov)"
        ),
        [
            dict(zip(("k", "e", "p", "v", "oe", "n", "ov"), (k, *infos[k]), strict=True))
            for k in keys
        ],
    )


def index_snapshots(conn: Connection, digests: Iterable[str]) -> int:
    """Write the ``vuln_snapshot_index`` of the given snapshots that have none; how many."""
    wanted = sorted(set(digests))
    have: set[str] = set()
    if len(wanted) > 2000:
        have = set(conn.execute(select(VulnSnapshotIndex.digest)).scalars())
    else:
        for chunk in in_chunks(wanted):
            have.update(
                conn.execute(
                    select(VulnSnapshotIndex.digest).where(VulnSnapshotIndex.digest.in_(chunk))
                ).scalars()
            )
    todo = [d for d in wanted if d not in have]
    for chunk in in_chunks(todo, 200):
        rows = conn.execute(
            select(
                InventorySnapshot.digest,
                InventorySnapshot.packages,
                InventorySnapshot.sources,
                InventorySnapshot.facts,
            ).where(InventorySnapshot.digest.in_(chunk))
        ).all()
        infos: dict[int, KeyInfo] = {}
        index_rows = []
        for digest, packages, sources, facts in rows:
            keys, uncovered = snapshot_keys(packages, sources, facts)
            infos.update(keys)
            index_rows.append({"digest": digest, "keys": pack(keys), "not_covered": uncovered})
        _add_new_keys(conn, infos)
        if index_rows:
            conn.execute(
                dialect_insert(conn)(VulnSnapshotIndex.__table__).on_conflict_do_nothing(
                    index_elements=["digest"]
                ),
                index_rows,
            )
    return len(todo)


def _add_new_keys(conn: Connection, infos: Mapping[int, KeyInfo]) -> None:
    """:func:`add_keys` for the keys of ``infos`` the dictionary does not have yet."""
    known = _known_keys(conn, list(infos))
    add_keys(conn, {k: v for k, v in infos.items() if k not in known})


def _known_keys(conn: Connection, keys: list[int]) -> set[int]:
    out: set[int] = set()
    for chunk in in_chunks(keys, 50_000 if _is_pg(conn) else 5000):
        if _is_pg(conn):
            rows = conn.execute(
                text("SELECT key FROM vuln_keys WHERE key = ANY(CAST(:k AS bigint[]))"),
                {"k": chunk},
            )
        else:
            rows = conn.execute(select(VulnKey.key).where(VulnKey.key.in_(chunk)))
        out.update(rows.scalars())
    return out


# -- verdicts ---------------------------------------------------------------------------------


def _advisories_naming(
    conn: Connection, names: set[tuple[str, str]], only: set[str] | None = None
) -> list[model.Advisory]:
    """The parsed advisories that name any of ``(osv_ecosystem, name)`` (of ``only`` these
    ids if given); a stored record that does not parse is logged and left out."""
    if not names or only is not None and not only:
        return []
    ids: set[str] = set()
    pairs = sorted(names)
    if _is_pg(conn) and only is None:
        return _parsed(conn, _records_naming_pg(conn, pairs))
    if _is_pg(conn):
        for chunk in in_chunks(pairs, 20_000):
            ids.update(
                conn.execute(
                    text(
                        "SELECT DISTINCT p.advisory_id FROM advisory_packages p JOIN "
                        "unnest(CAST(:e AS text[]), CAST(:n AS text[])) AS w(e, n) "
                        "ON p.ecosystem = w.e AND p.name = w.n"
                    ),
                    {"e": [e for e, _ in chunk], "n": [n for _, n in chunk]},
                ).scalars()
            )
    else:
        by_eco: dict[str, list[str]] = defaultdict(list)
        for eco, name in pairs:
            by_eco[eco].append(name)
        for eco, eco_names in by_eco.items():
            for chunk in in_chunks(eco_names, 500):
                ids.update(
                    conn.execute(
                        select(AdvisoryPackage.advisory_id).where(
                            AdvisoryPackage.ecosystem == eco, AdvisoryPackage.name.in_(chunk)
                        )
                    ).scalars()
                )
    if only is not None:
        ids &= only
    records = []
    for chunk in in_chunks(sorted(ids), 5000):
        if _is_pg(conn):
            records.extend(
                conn.execute(
                    text(
                        f"SELECT id, modified, withdrawn, {_AFFECTED_TEXT} "
                        "FROM advisories WHERE id = ANY(CAST(:ids AS text[]))"
                    ),
                    {"ids": chunk},
                )
            )
        else:
            records.extend(
                conn.execute(
                    select(
                        Advisory.id, Advisory.modified, Advisory.withdrawn, Advisory.record
                    ).where(Advisory.id.in_(chunk))
                )
            )
    return _parsed(conn, records)


#: Only the part of a record matching reads (the other fields are most of its size), as
#: text parsed by :func:`_loads` (a third faster than a ``json`` value the driver decodes).
_AFFECTED_TEXT = "CAST(record->'affected' AS text)"


def _records_naming_pg(conn: Connection, pairs: list[tuple[str, str]]) -> list:
    """``(id, modified, withdrawn, affected as text)`` of every advisory naming one of
    ``pairs``, each once: one query per 20,000 pairs (no list of ids sent back)."""
    found: dict[str, Any] = {}
    for chunk in in_chunks(pairs, 20_000):
        for row in conn.execute(
            text(
                f"SELECT id, modified, withdrawn, {_AFFECTED_TEXT} FROM advisories WHERE id IN "
                "(SELECT p.advisory_id FROM advisory_packages p JOIN "
                "unnest(CAST(:e AS text[]), CAST(:n AS text[])) AS w(e, n) "
                "ON p.ecosystem = w.e AND p.name = w.n)"
            ),
            {"e": [e for e, _ in chunk], "n": [n for _, n in chunk]},
        ):
            found[row[0]] = row
    return [found[ident] for ident in sorted(found)]


def _parsed(conn: Connection, records: Iterable) -> list[model.Advisory]:
    """:func:`_fast_advisory` of ``(id, modified, withdrawn, record)`` rows (on PostgreSQL
    the record's ``affected`` as text, :data:`_AFFECTED_TEXT`); a record not of that shape read again whole and parsed with
    :func:`stored_advisory` (after the others)."""
    out = []
    odd = []
    as_text = _is_pg(conn)
    for ident, modified, withdrawn, record in records:
        if as_text:  # jsonb's own text output: always valid JSON
            record = {"affected": None if record is None else json.loads(record)}
        found = _fast_advisory(ident, modified, withdrawn, record)
        if found is None:
            odd.append(ident)
        else:
            out.append(found)
    for ident in odd:  # not the shape to_record writes: the whole record, parsed
        row = conn.execute(
            select(Advisory.modified, Advisory.withdrawn, Advisory.record).where(
                Advisory.id == ident
            )
        ).first()
        found = stored_advisory(ident, *row) if row is not None else None
        if found is not None:
            out.append(found)
    return out


def _fast_advisory(ident: str, modified, withdrawn, record: Any) -> model.Advisory | None:
    """What matching needs of a stored advisory (its id, times and ``affected``), read
    straight from the record :func:`~saltext_fleet.core.vulns.osv.to_record` wrote (parsing
    every record again with :func:`~saltext_fleet.core.vulns.osv.parse` costs ten times as
    much); None when the record is not of that shape."""
    try:
        affected = _fast_affected(record["affected"])
    except (KeyError, TypeError, AttributeError, StopIteration):
        return None
    if affected is None:
        return None
    return model.Advisory(
        id=ident,
        modified=aware(modified),
        withdrawn=aware(withdrawn) if withdrawn is not None else None,
        affected=affected,
    )


def _fast_affected(entries: Any) -> tuple[model.Affected, ...] | None:
    """:func:`_fast_advisory`'s ``affected``: None when a name, version, range type or event
    is not a string or an event kind is unknown; raises when the shape is not the record's.
    (Plain loops: this runs for every advisory naming an installed package.)"""
    out = []
    kinds = model.EVENT_KINDS
    for entry in entries:
        package = entry["package"]
        ecosystem, name = package["ecosystem"], package["name"]
        if not (isinstance(ecosystem, str) and isinstance(name, str)):
            return None
        versions = frozenset(entry.get("versions") or ())
        for version in versions:
            if not isinstance(version, str):
                return None
        ranges = []
        for item in entry.get("ranges") or ():
            range_type = item["type"]
            if not isinstance(range_type, str):
                return None
            events = []
            for event in item["events"]:
                pair = next(iter(event.items()))
                if pair[0] not in kinds or not isinstance(pair[1], str):
                    return None
                events.append(pair)
            ranges.append(model.Range(type=range_type, events=tuple(events)))
        out.append(
            model.Affected(ecosystem=ecosystem, name=name, versions=versions, ranges=tuple(ranges))
        )
    return tuple(out)


def stored_advisory(ident: str, modified, withdrawn, record: Any) -> model.Advisory | None:
    """A stored advisory for matching: :func:`_fast_advisory`, else the record parsed with
    :func:`~saltext_fleet.core.vulns.osv.parse`; one that does not parse is logged and left
    out (None)."""
    found = _fast_advisory(ident, modified, withdrawn, record)
    if found is not None:
        return found
    try:
        return osv.parse(record, f"advisories:{ident}")
    except osv.OsvError as exc:
        log.error("fleet: stored advisory %s skipped: %s", ident, exc)
        return None


def _named(conn: Connection, pairs: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of ``(osv_ecosystem, name)`` some advisory names."""
    out: set[tuple[str, str]] = set()
    if not pairs:
        return out
    ordered = sorted(pairs)
    if _is_pg(conn):
        rows = conn.execute(
            text(
                "SELECT DISTINCT w.e, w.n FROM unnest(CAST(:e AS text[]), CAST(:n AS text[])) "
                "AS w(e, n) WHERE EXISTS (SELECT 1 FROM advisory_packages p "
                "WHERE p.ecosystem = w.e AND p.name = w.n)"
            ),
            {"e": [e for e, _ in ordered], "n": [n for _, n in ordered]},
        )
        out.update((e, n) for e, n in rows)
        return out
    by_eco: dict[str, list[str]] = defaultdict(list)
    for eco, name in ordered:
        by_eco[eco].append(name)
    for eco, eco_names in by_eco.items():
        for chunk in in_chunks(eco_names, 500):
            rows = conn.execute(
                select(AdvisoryPackage.ecosystem, AdvisoryPackage.name)
                .where(AdvisoryPackage.ecosystem == eco, AdvisoryPackage.name.in_(chunk))
                .distinct()
            )
            out.update((e, n) for e, n in rows)
    return out


def match_keys(
    conn: Connection, infos: Mapping[int, KeyInfo], only: set[str] | None = None
) -> tuple[dict[int, list[list[Any]]], int]:
    """Match keys: ``({key: [[advisory_id, fixed], ...]}, unique triples matched)``. Each
    unique (OSV ecosystem, name, version) is matched once, with an index of the advisories
    naming those names only (and of ``only`` these advisories, if given)."""
    if not infos:
        return {}, 0
    names = {(info[3], info[4]) for info in infos.values()}
    started = time.perf_counter()
    advisories = _advisories_naming(conn, names, only)
    loaded = time.perf_counter()
    index = core_match.Index(advisories)
    TIMINGS["advisories_read_s"] = round(loaded - started, 3)
    TIMINGS["index_built_s"] = round(time.perf_counter() - loaded, 3)
    TIMINGS["advisories"] = len(advisories)
    verdicts: dict[tuple[str, str, str], list[list[Any]]] = {}
    out = {}
    for key, info in infos.items():
        triple = (info[3], info[4], info[5])
        hits = verdicts.get(triple)
        if hits is None:
            hits = verdicts[triple] = sorted(
                [hit.advisory_id, hit.fixed] for hit in index.match(*triple)
            )
        out[key] = hits
    return out, len(verdicts)


def _store_hits(conn: Connection, hits: Mapping[int, list[list[Any]]], now: dt.datetime) -> None:
    if not hits:
        return
    keys = sorted(hits)
    if _is_pg(conn):
        for chunk in in_chunks(keys, 50_000):
            conn.execute(
                text(
                    "INSERT INTO vuln_key_hits (key, hits, matched_at) SELECT k, h, :at FROM "
                    "jsonb_to_recordset(CAST(:rows AS jsonb)) AS w(k bigint, h jsonb) "
                    "ON CONFLICT (key) DO UPDATE SET hits = EXCLUDED.hits, "
                    "matched_at = EXCLUDED.matched_at"
                ),
                {"rows": _json([{"k": k, "h": hits[k]} for k in chunk]), "at": now},
            )
        return
    ins = dialect_insert(conn)(VulnKeyHits.__table__)
    conn.execute(
        ins.on_conflict_do_update(
            index_elements=["key"],
            set_={"hits": ins.excluded.hits, "matched_at": ins.excluded.matched_at},
        ),
        [{"key": k, "hits": hits[k], "matched_at": now} for k in keys],
    )


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _seen_at(conn: Connection) -> dt.datetime | None:
    found = conn.execute(
        select(VulnMatchState.advisories_seen_at).where(VulnMatchState.id == 1)
    ).scalar()
    return aware(found) if found is not None else None


def _set_seen_at(conn: Connection, at: dt.datetime) -> None:
    conn.execute(
        dialect_insert(conn)(VulnMatchState.__table__).on_conflict_do_update(
            index_elements=["id"], set_={"advisories_seen_at": at}
        ),
        [{"id": 1, "advisories_seen_at": at}],
    )


def _changed_since(conn: Connection, since: dt.datetime | None):
    """``(advisory ids, their (ecosystem, name) pairs, the newest imported_at)`` of the
    advisories imported after ``since``; None when every verdict must be recomputed (no
    recompute yet)."""
    newest = conn.execute(select(func.max(Advisory.imported_at))).scalar()
    newest = aware(newest) if newest is not None else since
    if since is None:
        return None, newest
    ids = set(conn.execute(select(Advisory.id).where(Advisory.imported_at > since)).scalars())
    names: set[tuple[str, str]] = set()
    for chunk in in_chunks(sorted(ids)):
        names.update(
            (e, n)
            for e, n in conn.execute(
                select(AdvisoryPackage.ecosystem, AdvisoryPackage.name).where(
                    AdvisoryPackage.advisory_id.in_(chunk)
                )
            )
        )
    return (ids, names), newest


def refresh_verdicts(conn: Connection, now: dt.datetime) -> dict[str, Any]:
    """Bring ``vuln_key_hits`` up to date with the advisories (see the module docstring);
    returns ``{"keys": keys with a verdict, "matched": keys matched now, "unique": unique
    (ecosystem, name, version) matched now, "touched": the keys whose verdict changed, or
    may have (an advisory in it was imported again: its severity), None for every key}``."""
    since = _seen_at(conn)
    changed, newest = _changed_since(conn, since)
    candidates = {
        row[0]: tuple(row[1:])
        for row in conn.execute(
            text(
                "SELECT k.key, k.ecosystem, k.package, k.version, k.osv_ecosystem, k.name, "
                "k.osv_version FROM vuln_keys k WHERE EXISTS (SELECT 1 FROM advisory_packages p "
                "WHERE p.ecosystem = k.osv_ecosystem AND p.name = k.name)"
            )
        )
    }
    cached = dict(conn.execute(select(VulnKeyHits.key, VulnKeyHits.hits)).all())
    # keys never matched: against every advisory naming them; keys matched before whose name
    # a changed advisory names, or whose verdict names one: against the changed ones only
    # (an advisory's verdict does not depend on the others), the rest of the verdict kept
    partial: set[int] = set()
    ids: set[str] = set()
    if changed is None:
        full = set(candidates)
    else:
        ids, names = changed
        full = {k for k in candidates if k not in cached}
        if ids:
            partial = {
                k
                for k, info in candidates.items()
                if k in cached
                and ((info[3], info[4]) in names or any(h[0] in ids for h in cached[k]))
            }
    gone = [k for k in cached if k not in candidates]
    for chunk in in_chunks(gone, 20_000):
        conn.execute(delete(VulnKeyHits).where(VulnKeyHits.key.in_(chunk)))
    hits, unique = match_keys(conn, {k: candidates[k] for k in full})
    again, unique_again = match_keys(conn, {k: candidates[k] for k in partial}, only=ids)
    for key in partial:
        kept = [h for h in cached[key] if h[0] not in ids]
        hits[key] = sorted(kept + again.get(key, []))
    unique += unique_again
    _store_hits(conn, hits, now)
    # the keys whose verdict (or an advisory in it: its severity) may have changed
    touched: set[int] | None = None
    if changed is not None:
        touched = {k for k in gone if cached[k]}
        touched.update(k for k in full if hits[k])
        touched.update(
            k
            for k in partial
            if hits[k] != cached[k] or any(h[0] in ids for h in (*hits[k], *cached[k]))
        )
    if newest is not None:
        _set_seen_at(conn, newest)
    return {
        "keys": len(candidates),
        "matched": len(hits),
        "unique": unique,
        "touched": touched,
    }


# -- triage -----------------------------------------------------------------------------------


def live_triage(
    conn: Connection, now: dt.datetime, advisory_ids: Iterable[str] | None = None
) -> dict[str, list[tuple[str, str | None, str | None]]]:
    """Live triage decisions (not revoked, not expired) ``{advisory_id: [(scope, target,
    package)]}``, of ``advisory_ids`` only if given. (The minimal form the findings need;
    :mod:`saltext_fleet.core.vulns.triage` has the whole logic.)"""
    stmt = select(
        VulnTriage.advisory_id, VulnTriage.scope, VulnTriage.target, VulnTriage.package
    ).where(
        VulnTriage.revoked_at.is_(None),
        (VulnTriage.expires_at.is_(None)) | (VulnTriage.expires_at > now),
    )
    out: dict[str, list] = defaultdict(list)
    if advisory_ids is None:
        rows = conn.execute(stmt).all()
    elif _is_pg(conn):
        rows = conn.execute(
            text(
                "SELECT advisory_id, scope, target, package FROM vuln_triage "
                "WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > :now) "
                "AND advisory_id = ANY(CAST(:ids AS text[]))"
            ),
            {"now": now, "ids": sorted(set(advisory_ids))},
        ).all()
    else:
        rows = []
        for chunk in in_chunks(sorted(set(advisory_ids))):
            rows.extend(conn.execute(stmt.where(VulnTriage.advisory_id.in_(chunk))).all())
    for advisory, scope, target, package in rows:
        out[advisory].append((scope, target, package))
    return dict(out)


def is_triaged(
    live: Mapping[str, list], advisory_id: str, package: str, minion: str, group: str | None
) -> bool:
    """Whether a live decision covers this advisory on this node (its group, the fleet)."""
    for scope, target, pkg in live.get(advisory_id, ()):
        if pkg and pkg != package:
            continue
        if scope == "fleet":
            return True
        if scope == "node" and target == minion:
            return True
        if scope == "group" and group is not None and target == group:
            return True
    return False


def at_or_above(severity: str, threshold: str) -> bool:
    return SEVERITY_RANK.get(severity, 0) >= SEVERITY_RANK.get(threshold, 0)


def alerts(
    conn: Connection,
    opened: Mapping[str, list[dict[str, Any]]],
    threshold: str | None,
    now: dt.datetime | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """The findings of ``opened`` (``{minion: [finding]}``, as a recompute returns them) at
    or above ``threshold`` (a severity, ``any`` for every one, None or ``off`` for none)
    that no live triage decision covers: ``{minion: [finding]}``."""
    if not threshold or threshold == "off":
        return {}
    now = now or utcnow()
    wanted = {
        m: [f for f in found if threshold == "any" or at_or_above(f["severity"], threshold)]
        for m, found in opened.items()
    }
    wanted = {m: f for m, f in wanted.items() if f}
    if not wanted:
        return {}
    live = live_triage(conn, now, {f["advisory_id"] for found in wanted.values() for f in found})
    groups = _groups(conn, list(wanted))
    out = {}
    for minion, found in wanted.items():
        kept = [
            f
            for f in found
            if not is_triaged(live, f["advisory_id"], f["package"], minion, groups.get(minion))
        ]
        if kept:
            out[minion] = kept
    return out


def _groups(conn: Connection, minions: list[str]) -> dict[str, str | None]:
    out = {}
    for chunk in in_chunks(sorted(minions)):
        out.update(
            conn.execute(
                select(Node.minion_id, Node.node_group).where(Node.minion_id.in_(chunk))
            ).all()
        )
    return out


# -- findings of nodes ------------------------------------------------------------------------

#: The identity of an open finding: (ecosystem, package, advisory_id).
Ident = tuple[str, str, str]


def _desired(
    keys: Iterable[int],
    infos: Mapping[int, KeyInfo],
    hits: Mapping[int, list],
    meta: Mapping[str, tuple[str, float | None]],
) -> dict[Ident, dict[str, Any]]:
    """The findings a node should have open: ``{(ecosystem, package, advisory): row}``
    (several installed versions of a package that an advisory affects make one row)."""
    out: dict[Ident, dict[str, Any]] = {}
    for key in keys:
        found = hits.get(key)
        if not found:
            continue
        eco, package, version = infos[key][:3]
        for advisory_id, fixed in found:
            ident = (eco, package, advisory_id)
            row = out.get(ident)
            if row is None:
                severity, score = meta.get(advisory_id, ("unknown", None))
                out[ident] = {
                    "ecosystem": eco,
                    "package": package,
                    "advisory_id": advisory_id,
                    "version": version,
                    "fixed": fixed,
                    "severity": severity,
                    "cvss_score": score,
                }
            else:
                versions = sorted(set(row["version"].split(",")) | {version})
                row["version"] = ",".join(versions)
                if row["fixed"] is None:
                    row["fixed"] = fixed
    return out


def _advisory_meta(conn: Connection, ids: Iterable[str]) -> dict[str, tuple[str, float | None]]:
    out = {}
    if _is_pg(conn):
        rows = conn.execute(
            text(
                "SELECT id, severity, cvss_score FROM advisories "
                "WHERE id = ANY(CAST(:ids AS text[]))"
            ),
            {"ids": sorted(set(ids))},
        )
        return {ident: (severity or "unknown", score) for ident, severity, score in rows}
    for chunk in in_chunks(sorted(set(ids)), 5000):
        for ident, severity, score in conn.execute(
            select(Advisory.id, Advisory.severity, Advisory.cvss_score).where(
                Advisory.id.in_(chunk)
            )
        ):
            out[ident] = (severity or "unknown", score)
    return out


_COMPARED = ("version", "fixed", "severity", "cvss_score")


def _open_rows(conn: Connection, minions: list[str], everyone: bool) -> dict[str, dict]:
    """``{minion: {ident: (id, version, fixed, severity, cvss_score)}}`` of open findings."""
    stmt = select(
        VulnFinding.id,
        VulnFinding.minion_id,
        VulnFinding.ecosystem,
        VulnFinding.package,
        VulnFinding.advisory_id,
        VulnFinding.version,
        VulnFinding.fixed,
        VulnFinding.severity,
        VulnFinding.cvss_score,
    ).where(VulnFinding.resolved_at.is_(None))
    out: dict[str, dict] = defaultdict(dict)
    wanted = set(minions)
    if everyone:
        rows = conn.execute(stmt)
    else:
        rows = []
        for chunk in in_chunks(sorted(wanted)):
            rows.extend(conn.execute(stmt.where(VulnFinding.minion_id.in_(chunk))))
    for fid, minion, eco, package, advisory, version, fixed, severity, score in rows:
        if minion in wanted:
            out[minion][(eco, package, advisory)] = (fid, version, fixed, severity, score)
    return out


def _scoped_rows(conn: Connection, scopes: Mapping[str, set[tuple[str, str]]]) -> dict:
    """:func:`_open_rows` of the ``(ecosystem, package)`` pairs of each node's scope only."""
    if not scopes:
        return {}
    triples = sorted((m, e, p) for m, pairs in scopes.items() for e, p in pairs)
    out: dict[str, dict] = defaultdict(dict)
    if _is_pg(conn):
        for chunk in in_chunks(triples, 50_000):
            rows = conn.execute(
                text(
                    "SELECT f.id, f.minion_id, f.ecosystem, f.package, f.advisory_id, f.version, "
                    "f.fixed, f.severity, f.cvss_score FROM vuln_findings f JOIN unnest("
                    "CAST(:m AS text[]), CAST(:e AS text[]), CAST(:p AS text[])) AS w(m, e, p) "
                    "ON f.minion_id = w.m AND f.ecosystem = w.e AND f.package = w.p "
                    "WHERE f.resolved_at IS NULL"
                ),
                {
                    "m": [t[0] for t in chunk],
                    "e": [t[1] for t in chunk],
                    "p": [t[2] for t in chunk],
                },
            )
            for fid, minion, eco, package, advisory, version, fixed, severity, score in rows:
                out[minion][(eco, package, advisory)] = (fid, version, fixed, severity, score)
        return dict(out)
    every = _open_rows(conn, sorted(scopes), everyone=len(scopes) > 2000)
    for minion, rows in every.items():
        pairs = scopes[minion]
        out[minion] = {i: v for i, v in rows.items() if (i[0], i[1]) in pairs}
    return dict(out)


def _adjusted(
    counts: Mapping[str, int],
    log_: list[tuple[int, str, str, str]],
    live: Mapping[str, list],
    minion: str,
    group: str | None,
) -> dict[str, int]:
    """``counts`` (:func:`_counts`) after the changes of ``log_`` (from :func:`_write`)."""
    out = {k: int(counts.get(k) or 0) for k in _COUNTED}
    for sign, severity, advisory, package in log_:
        if is_triaged(live, advisory, package, minion, group):
            out["triaged"] += sign
            continue
        out["open"] += sign
        bucket = severity if severity in out else "unknown"
        if severity == "none":
            bucket = "low"
        out[bucket] += sign
    return out


def _write(
    conn: Connection,
    desired: Mapping[str, Mapping[Ident, dict[str, Any]]],
    now: dt.datetime,
    scopes: Mapping[str, set[tuple[str, str]]] | None = None,
) -> dict[str, Any]:
    """Open, update and resolve the findings of the nodes of ``desired``: every one of their
    open findings not in it is resolved, or, for a node of ``scopes``, every one of its open
    findings of the ``(ecosystem, package)`` pairs its scope names (``desired`` has the
    node's findings of those packages only). Returns ``{"opened": {minion: [row]}, "kept",
    "changed", "resolved", "log": {minion: [(sign, severity, advisory_id, package)]}}``
    (``log``: what left and joined the open findings of a scoped node, for its counts)."""
    started = time.perf_counter()
    scopes = scopes or {}
    minions = sorted(desired)
    whole = [m for m in minions if m not in scopes]
    current = _open_rows(conn, whole, everyone=len(whole) > 2000)
    current.update(_scoped_rows(conn, {m: scopes[m] for m in minions if m in scopes}))
    new_rows, changes, resolved = [], [], []
    opened: dict[str, list] = {}
    log_: dict[str, list] = {}
    kept = 0
    for minion in minions:
        want = desired[minion]
        have = current.get(minion, {})
        scoped = minion in scopes
        if not have and not scoped:
            # nothing open yet (a new node, the first recompute): every finding opens
            if want:
                rows = list(want.values())
                new_rows.extend((minion, row) for row in rows)
                opened[minion] = rows
            continue
        for ident, row in want.items():
            old = have.get(ident)
            if old is None:
                new_rows.append((minion, row))
                opened.setdefault(minion, []).append(row)
                if scoped:
                    log_.setdefault(minion, []).append((1, row["severity"], ident[2], ident[1]))
                continue
            kept += 1
            if tuple(old[1:]) != tuple(row[k] for k in _COMPARED):
                changes.append({"fid": old[0], **{k: row[k] for k in _COMPARED}, "at": now})
                if scoped:
                    log_.setdefault(minion, []).extend(
                        [(-1, old[3], ident[2], ident[1]), (1, row["severity"], ident[2], ident[1])]
                    )
        for ident, old in have.items():
            if ident not in want:
                resolved.append(old[0])
                if scoped:
                    log_.setdefault(minion, []).append((-1, old[3], ident[2], ident[1]))
    TIMINGS["findings_compared_s"] = round(time.perf_counter() - started, 3)
    _insert_findings(conn, new_rows, now)
    if changes:
        conn.execute(
            update(VulnFinding)
            .where(VulnFinding.id == bindparam("fid"))
            .values(
                version=bindparam("version"),
                fixed=bindparam("fixed"),
                severity=bindparam("severity"),
                cvss_score=bindparam("cvss_score"),
                last_seen=bindparam("at"),
            ),
            changes,
        )
    if resolved:
        if _is_pg(conn):
            conn.execute(
                text(
                    "UPDATE vuln_findings SET resolved_at = :at "
                    "WHERE id = ANY(CAST(:ids AS bigint[]))"
                ),
                {"at": now, "ids": resolved},
            )
        else:
            for chunk in in_chunks(resolved, 5000):
                conn.execute(
                    update(VulnFinding).where(VulnFinding.id.in_(chunk)).values(resolved_at=now)
                )
    return {
        "opened": opened,
        "kept": kept,
        "changed": len(changes),
        "resolved": len(resolved),
        "log": log_,
    }


_FINDING_COLUMNS = (
    "minion_id",
    "ecosystem",
    "package",
    "version",
    "advisory_id",
    "fixed",
    "severity",
    "cvss_score",
    "first_seen",
    "last_seen",
)


_FINDING_TYPES = (
    "varchar",
    "varchar",
    "text",
    "text",
    "varchar",
    "text",
    "varchar",
    "float8",
    "timestamptz",
    "timestamptz",
)


#: Above how many new findings a write into an empty ``vuln_findings`` builds the table's
#: secondary indexes after the rows are in, not row by row (about twice as fast here).
REBUILD_INDEXES_ROWS = 100_000


def _empty_findings_indexes(conn: Connection) -> list[str] | None:
    """When ``vuln_findings`` has no row at all (the first recompute after the first import):
    its indexes and constraints dropped, in this transaction (DDL is transactional in
    PostgreSQL: a failure restores them), and the statements that create them again
    returned, to run after the rows are in (the primary key too: maintaining it row by row
    costs as much as the copy itself); None (nothing dropped) when it has rows. Concurrent
    writers wait for the table lock; the emptiness is checked again once it is held."""
    if conn.execute(text("SELECT EXISTS (SELECT 1 FROM vuln_findings)")).scalar():
        return None
    conn.execute(text("LOCK TABLE vuln_findings IN ACCESS EXCLUSIVE MODE"))
    if conn.execute(text("SELECT EXISTS (SELECT 1 FROM vuln_findings)")).scalar():
        return None
    constraints = conn.execute(
        text(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = CAST('vuln_findings' AS regclass) AND contype IN ('p', 'u')"
        )
    ).all()
    indexes = conn.execute(
        text(
            "SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x "
            "JOIN pg_class i ON i.oid = x.indexrelid "
            "WHERE x.indrelid = CAST('vuln_findings' AS regclass) "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)"
        )
    ).all()
    for name, _definition in constraints:
        conn.execute(text(f'ALTER TABLE vuln_findings DROP CONSTRAINT "{name}"'))
    for name, _definition in indexes:
        conn.execute(text(f'DROP INDEX "{name}"'))
    return [
        *(f'ALTER TABLE vuln_findings ADD CONSTRAINT "{n}" {d}' for n, d in constraints),
        *(definition for _name, definition in indexes),
    ]


def _insert_findings(conn: Connection, rows: list[tuple[str, dict]], now: dt.datetime) -> None:
    if not rows:
        return
    if _is_pg(conn) and len(rows) > 50:
        # Findings are derived data, recomputed from the inventories and advisories at any
        # time: not waiting for this transaction's WAL to reach the disk is safe (a crash can
        # lose the last recompute, never corrupt anything; the next one writes it again).
        conn.execute(text("SET LOCAL synchronous_commit = off"))
        indexes = _empty_findings_indexes(conn) if len(rows) >= REBUILD_INDEXES_ROWS else None
        started = time.perf_counter()
        _copy_findings(conn, rows, now)
        copied = time.perf_counter()
        TIMINGS["findings_copy_s"] = round(copied - started, 3)
        if indexes:
            # sorting in memory, not in temporary files (about 100 bytes per finding)
            conn.execute(text("SET LOCAL maintenance_work_mem = '256MB'"))
            for statement in indexes:
                conn.execute(text(statement))
            TIMINGS["findings_indexes_s"] = round(time.perf_counter() - copied, 3)
        return
    conn.execute(
        insert(VulnFinding),
        [
            {
                "minion_id": minion,
                **{k: row[k] for k in _COMPARED},
                "ecosystem": row["ecosystem"],
                "package": row["package"],
                "advisory_id": row["advisory_id"],
                "first_seen": now,
                "last_seen": now,
            }
            for minion, row in rows
        ],
    )


def _copy_findings(conn: Connection, rows: list[tuple[str, dict]], now: dt.datetime) -> None:
    """New findings by ``COPY`` (PostgreSQL)."""
    raw = conn.connection.driver_connection
    with raw.cursor() as cur:
        with cur.copy(
            f"COPY vuln_findings ({', '.join(_FINDING_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
        ) as cp:
            cp.set_types(_FINDING_TYPES)
            write = cp.write_row
            for minion, row in rows:
                write(
                    (
                        minion,
                        row["ecosystem"],
                        row["package"],
                        row["version"],
                        row["advisory_id"],
                        row["fixed"],
                        row["severity"],
                        row["cvss_score"],
                        now,
                        now,
                    )
                )


def _counts(
    desired: Mapping[Ident, dict[str, Any]],
    live: Mapping[str, list],
    minion: str,
    group: str | None,
) -> dict[str, int]:
    counts = dict.fromkeys(("open", "critical", "high", "medium", "low", "unknown", "triaged"), 0)
    for (_, package, advisory), row in desired.items():
        if is_triaged(live, advisory, package, minion, group):
            counts["triaged"] += 1
            continue
        counts["open"] += 1
        bucket = row["severity"] if row["severity"] in counts else "unknown"
        if row["severity"] == "none":
            bucket = "low"
        counts[bucket] += 1
    return counts


def _record_states(
    conn: Connection,
    states: list[dict[str, Any]],
    previous: Mapping[str, Any],
    now: dt.datetime,
) -> int:
    """Upsert ``vuln_node_state`` rows; a history point where the counts changed."""
    if not states:
        return 0
    points = []
    for state in states:
        old = previous.get(state["minion_id"])
        if old is None or (old.counts or None) != state["counts"]:
            points.append({"minion_id": state["minion_id"], "computed_at": now, **state["counts"]})
    if _is_pg(conn) and len(states) > 50:
        _record_states_pg(conn, states, points)
        return len(points)
    ins = dialect_insert(conn)(VulnNodeState.__table__)
    conn.execute(
        ins.on_conflict_do_update(
            index_elements=["minion_id"],
            set_={
                c: getattr(ins.excluded, c)
                for c in ("inventory_digest", "fingerprint", "computed_at", "not_covered", "counts")
            },
        ),
        states,
    )
    if points:
        conn.execute(insert(VulnHistory), points)
    return len(points)


_COUNTED = ("open", "critical", "high", "medium", "low", "unknown", "triaged")


def _record_states_pg(conn: Connection, states: list[dict], points: list[dict]) -> None:
    """:func:`_record_states` for many nodes on PostgreSQL: two statements, each taking its
    rows as one JSON document (``jsonb_to_recordset``: some twenty times faster to send than
    arrays of 10,000 elements, which the driver dumps element by element)."""
    conn.execute(
        text(
            "INSERT INTO vuln_node_state (minion_id, inventory_digest, fingerprint, "
            "computed_at, not_covered, counts) SELECT m, d, f, at, nc, c FROM "
            "jsonb_to_recordset(CAST(:rows AS jsonb)) AS w(m text, d text, f bigint, "
            "at timestamptz, nc jsonb, c jsonb) ON CONFLICT (minion_id) DO UPDATE SET "
            "inventory_digest = EXCLUDED.inventory_digest, fingerprint = EXCLUDED.fingerprint, "
            "computed_at = EXCLUDED.computed_at, not_covered = EXCLUDED.not_covered, "
            "counts = EXCLUDED.counts"
        ),
        {
            "rows": _json(
                [
                    {
                        "m": st["minion_id"],
                        "d": st["inventory_digest"],
                        "f": st["fingerprint"],
                        "at": st["computed_at"].isoformat(),
                        "nc": st["not_covered"],
                        "c": st["counts"],
                    }
                    for st in states
                ]
            )
        },
    )
    if points:
        conn.execute(
            text(
                "INSERT INTO vuln_history (minion_id, computed_at, "
                + ", ".join(_COUNTED)
                + ") SELECT m, at, "
                + ", ".join(_COUNTED)
                + " FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS w(m text, at timestamptz, "
                + ", ".join(f"{k} integer" for k in _COUNTED)
                + ")"
            ),
            {
                "rows": _json(
                    [
                        {
                            "m": p["minion_id"],
                            "at": p["computed_at"].isoformat(),
                            **{k: p[k] for k in _COUNTED},
                        }
                        for p in points
                    ]
                )
            },
        )


def _previous_states(conn: Connection, minions: list[str] | None) -> dict[str, Any]:
    stmt = select(
        VulnNodeState.minion_id,
        VulnNodeState.inventory_digest,
        VulnNodeState.fingerprint,
        VulnNodeState.counts,
    )
    if minions is None:
        return {row.minion_id: row for row in conn.execute(stmt)}
    out = {}
    for chunk in in_chunks(sorted(minions)):
        out.update(
            {
                row.minion_id: row
                for row in conn.execute(stmt.where(VulnNodeState.minion_id.in_(chunk)))
            }
        )
    return out


def _mix(keys: np.ndarray, digests: np.ndarray) -> np.ndarray:
    """Per key a 64-bit value of the key and its verdict's digest (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        mixed = keys.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        return mixed ^ digests.astype(np.uint64)


def _verdict_digest(hits: list, meta: Mapping[str, tuple[str, float | None]]) -> int:
    body = repr([(a, f, *meta.get(a, ("unknown", None))) for a, f in hits])
    return int.from_bytes(hashlib.blake2b(body.encode(), digest_size=8).digest(), "little")


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


# -- recompute --------------------------------------------------------------------------------


@contextlib.contextmanager
def _no_cyclic_gc():
    """Python's cyclic garbage collector paused: a fleet-wide recompute makes millions of
    small, acyclic objects (rows, keys, parsed advisories; freed by reference counting), and
    the collector's passes over them cost a fifth of its time (about 2 s of 10 here). The
    collector is process-wide: it runs again, as before, when the recompute ends."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def recompute(engine: Engine, now: dt.datetime | None = None) -> dict[str, Any]:
    """Recompute every node's findings (after an import; ``salt-run fleet.cve
    recompute=True``). Returns ``{"nodes", "changed", "opened": {minion: [finding]},
    "kept", "updated", "resolved", "history", "not_covered": {minion: {eco: packages}},
    "verdicts": {...}, "indexed"}``."""
    with _no_cyclic_gc():
        return _recompute(engine, now)


def _recompute(engine: Engine, now: dt.datetime | None) -> dict[str, Any]:
    now = now or utcnow()
    TIMINGS.clear()
    started = last = time.perf_counter()

    def lap(what: str) -> None:
        nonlocal last
        at = time.perf_counter()
        TIMINGS[what] = round(at - last, 3)
        last = at

    with engine.begin() as conn:
        nodes = conn.execute(
            select(Node.minion_id, Node.inventory_digest, Node.node_group).where(
                Node.inventory_digest.is_not(None)
            )
        ).all()
        digests = sorted({row.inventory_digest for row in nodes})
        indexed = index_snapshots(conn, digests)
        lap("nodes_s")
        verdicts = refresh_verdicts(conn, now)
        touched = verdicts.pop("touched")
        lap("verdicts_s")
    with engine.begin() as conn:
        hit_keys, hit_info, hits, meta = _hitting(conn)
        lap("hits_read_s")
        blobs = _snapshot_rows(conn, digests)
        previous = _previous_states(conn, None)
        lap("snapshots_read_s")
        # per snapshot: a fingerprint of its verdicts, and its keys that have hits
        segments = [unpack(blobs.get(d, (b"", {}))[0]) for d in digests]
        fingerprints, hit_lists = _fingerprints(segments, hit_keys, hits, meta)
        lap("fingerprints_s")
        by_digest = {
            d: (fingerprints[i], hit_lists[i], blobs.get(d, (b"", {}))[1])
            for i, d in enumerate(digests)
        }
        # A node whose inventory did not change and whose verdicts did: only its packages
        # with a changed verdict are compared and written (its scope)
        scoped_of: dict[str, list[int]] = {}
        if touched:
            position = {d: i for i, d in enumerate(digests)}
            members = _members(segments, np.array(sorted(touched), dtype=np.int64))
            scoped_of = {d: members[position[d]] for d in digests if members[position[d]]}
            missing = [k for k in touched if k not in hit_info]
            touched_info = {**_key_infos(conn, missing), **hit_info} if missing else hit_info
        scopes: dict[str, set[tuple[str, str]]] = {}
        desired, states, previous_of = {}, [], {}
        not_covered = {}
        changed_nodes = []
        for row in nodes:
            fp, keys, uncovered = by_digest[row.inventory_digest]
            not_covered[row.minion_id] = uncovered
            old = previous.get(row.minion_id)
            if (
                old is not None
                and old.fingerprint == fp
                and old.inventory_digest == row.inventory_digest
            ):
                continue
            changed_nodes.append(row)
            if old is not None and old.fingerprint == fp:
                # same verdicts, another snapshot: only the state moves
                states.append(
                    {
                        "minion_id": row.minion_id,
                        "inventory_digest": row.inventory_digest,
                        "fingerprint": fp,
                        "computed_at": now,
                        "not_covered": uncovered,
                        "counts": old.counts,
                    }
                )
                previous_of[row.minion_id] = old
                continue
            if (
                touched is not None
                and old is not None
                and old.inventory_digest == row.inventory_digest
                and old.counts
                and scoped_of.get(row.inventory_digest)
            ):
                pairs = {touched_info[k][:2] for k in scoped_of[row.inventory_digest]}
                scopes[row.minion_id] = pairs
                desired[row.minion_id] = _desired(
                    [k for k in keys if hit_info[k][:2] in pairs], hit_info, hits, meta
                )
                continue
            desired[row.minion_id] = _desired(keys, hit_info, hits, meta)
        lap("derived_s")
        written = _write(conn, desired, now, scopes)
        lap("written_s")
        involved = {i[2] for want in desired.values() for i in want}
        involved.update(e[2] for found in written["log"].values() for e in found)
        live = live_triage(conn, now, involved)
        groups = {row.minion_id: row.node_group for row in nodes}
        by_minion = {row.minion_id: row for row in changed_nodes}
        for minion, want in desired.items():
            row = by_minion[minion]
            fp = by_digest[row.inventory_digest][0]
            states.append(
                {
                    "minion_id": minion,
                    "inventory_digest": row.inventory_digest,
                    "fingerprint": fp,
                    "computed_at": now,
                    "not_covered": by_digest[row.inventory_digest][2],
                    "counts": (
                        _adjusted(
                            previous[minion].counts,
                            written["log"].get(minion, []),
                            live,
                            minion,
                            groups.get(minion),
                        )
                        if minion in scopes
                        else _counts(want, live, minion, groups.get(minion))
                    ),
                }
            )
            if minion in previous:
                previous_of[minion] = previous[minion]
        points = _record_states(conn, states, previous_of, now)
    lap("states_s")
    TIMINGS["total_s"] = round(time.perf_counter() - started, 3)
    return {
        "nodes": len(nodes),
        "changed": len(desired),
        "opened": written["opened"],
        "kept": written["kept"],
        "updated": written["changed"],
        "resolved": written["resolved"],
        "history": points,
        "not_covered": {m: u for m, u in not_covered.items() if u},
        "verdicts": verdicts,
        "indexed": indexed,
        "timings": dict(TIMINGS),
        "computed_at": now.isoformat(),
    }


def _hitting(conn: Connection):
    """Every key with a verdict naming an advisory: ``(sorted keys array, {key: info},
    {key: hits}, {advisory: (severity, score)})``."""
    hits = {}
    for key, found in conn.execute(select(VulnKeyHits.key, VulnKeyHits.hits)):
        if found:
            hits[key] = found
    infos: dict[int, KeyInfo] = {}
    keys = sorted(hits)
    for chunk in in_chunks(keys, 50_000 if _is_pg(conn) else 5000):
        if _is_pg(conn):
            rows = conn.execute(
                text(
                    "SELECT key, ecosystem, package, version, osv_ecosystem, name, osv_version "
                    "FROM vuln_keys WHERE key = ANY(CAST(:k AS bigint[]))"
                ),
                {"k": chunk},
            )
        else:
            rows = conn.execute(
                select(
                    VulnKey.key,
                    VulnKey.ecosystem,
                    VulnKey.package,
                    VulnKey.version,
                    VulnKey.osv_ecosystem,
                    VulnKey.name,
                    VulnKey.osv_version,
                ).where(VulnKey.key.in_(chunk))
            )
        for row in rows:
            infos[row[0]] = tuple(row[1:])
    meta = _advisory_meta(conn, {h[0] for found in hits.values() for h in found})
    return np.array(keys, dtype=np.int64), infos, hits, meta


def _snapshot_rows(conn: Connection, digests: list[str]) -> dict[str, tuple[bytes, dict]]:
    out: dict[str, tuple[bytes, dict]] = {}
    if _is_pg(conn):
        raw = conn.connection.driver_connection
        for chunk in in_chunks(digests, 5000):
            with raw.cursor(binary=True) as cur:
                cur.execute(
                    "SELECT digest, keys, not_covered FROM vuln_snapshot_index "
                    "WHERE digest = ANY(%s)",
                    [chunk],
                )
                for digest, blob, uncovered in cur:
                    out[digest] = (bytes(blob or b""), uncovered or {})
        return out
    for chunk in in_chunks(digests, 5000):
        for digest, blob, uncovered in conn.execute(
            select(
                VulnSnapshotIndex.digest, VulnSnapshotIndex.keys, VulnSnapshotIndex.not_covered
            ).where(VulnSnapshotIndex.digest.in_(chunk))
        ):
            out[digest] = (blob or b"", uncovered or {})
    return out


def _locate(keys: np.ndarray, every: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``every``: whether it is one of ``keys`` (unique) and its index there.

    A table indexed by the keys' low bits (BLAKE2b digests: uniform), at most 1/8 full: one
    array look-up per key, some ten times faster than a binary search over 10 million keys;
    the few keys that share a slot are looked up by binary search, among the few of
    ``every`` that land in such a slot."""
    bits = max(10, int(np.ceil(np.log2(len(keys) * 8))))
    mask = np.int64((1 << bits) - 1)
    slots = keys & mask
    index = np.full(1 << bits, -1, dtype=np.int64)
    index[slots] = np.arange(len(keys), dtype=np.int64)
    shared = index[slots] != np.arange(len(keys))  # a later key took the slot
    at = every & mask
    pos = index[at]
    found = (pos >= 0) & (keys[np.maximum(pos, 0)] == every)
    if shared.any():
        flagged = np.zeros(1 << bits, dtype=bool)
        flagged[slots[shared]] = True
        odd = np.flatnonzero(flagged[at] & ~found)
        if len(odd):
            order = np.argsort(keys)
            ordered = keys[order]
            where = np.searchsorted(ordered, every[odd])
            where[where == len(ordered)] = 0
            hit = ordered[where] == every[odd]
            found[odd[hit]] = True
            pos[odd[hit]] = order[where[hit]]
    return found, np.maximum(pos, 0)


def _members(segments: list[np.ndarray], keys: np.ndarray) -> list[list[int]]:
    """Per segment, its members of ``keys``."""
    out: list[list[int]] = [[] for _ in segments]
    if not len(keys) or not segments:
        return out
    lengths = np.fromiter((len(seg) for seg in segments), dtype=np.int64, count=len(segments))
    if not lengths.sum():
        return out
    every = np.concatenate(segments)
    found, _ = _locate(keys, every)
    where = np.flatnonzero(found)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    seg_of = np.searchsorted(starts, where, side="right") - 1
    for seg, key in zip(seg_of.tolist(), every[where].tolist(), strict=True):
        out[seg].append(key)
    return out


def _fingerprints(
    segments: list[np.ndarray],
    hit_keys: np.ndarray,
    hits: Mapping[int, list],
    meta: Mapping[str, tuple[str, float | None]],
) -> tuple[list[int], list[list[int]]]:
    """Per snapshot (its keys): the fingerprint of its verdicts and its keys with hits."""
    count = len(segments)
    if not count:
        return [], []
    lengths = np.fromiter((len(s) for s in segments), dtype=np.int64, count=count)
    every = np.concatenate(segments) if lengths.sum() else np.zeros(0, dtype=np.int64)
    if len(hit_keys) == 0 or len(every) == 0:
        return [0] * count, [[] for _ in range(count)]
    mixed = _mix(
        hit_keys,
        np.fromiter(
            (_verdict_digest(hits[int(k)], meta) for k in hit_keys),
            dtype=np.uint64,
            count=len(hit_keys),
        ),
    )
    found, pos = _locate(hit_keys, every)
    values = np.where(found, mixed[pos], np.uint64(0))
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    sums = np.zeros(count, dtype=np.uint64)
    nonempty = lengths > 0
    if nonempty.any():
        with np.errstate(over="ignore"):
            sums[nonempty] = np.add.reduceat(values, starts[nonempty])
    where = np.flatnonzero(found)
    seg_of = np.searchsorted(starts, where, side="right") - 1
    lists: list[list[int]] = [[] for _ in range(count)]
    for seg, key in zip(seg_of.tolist(), every[where].tolist(), strict=True):
        lists[seg].append(key)
    return [_signed(int(s)) for s in sums], lists


# -- one node ---------------------------------------------------------------------------------


def recompute_node(engine: Engine, minion: str, now: dt.datetime | None = None) -> dict | None:
    """Recompute one node's findings from its stored inventory (the reactor, after its
    inventory changed). Returns ``{"minion", "opened": [finding], "kept", "updated",
    "resolved", "not_covered", "counts"}``, or None when the node has no inventory."""
    now = now or utcnow()
    with engine.begin() as conn:
        # one round trip: the node, its snapshot's match keys (or, when it has none yet, its
        # packages), its previous state, and whether advisories changed since the verdicts
        row = conn.execute(_NODE_QUERY, {"m": minion}).first()
        if row is None or row.inventory_digest is None:
            return None
        digest = row.inventory_digest
        since, newest = row.seen_at, row.newest
        fresh = since is not None and (newest is None or aware(newest) <= aware(since))
        new_keys = None  # keys that may be new to the dictionary (None: any of them)
        if row.keys is None:
            if row.packages is None:
                return None
            infos, uncovered = snapshot_keys(row.packages, row.sources, row.facts)
            if row.prev_keys is not None:
                # the keys the node's previous snapshot did not have: only these can be new
                # to the dictionary (inserted, known ones skipped by the primary key)
                new_keys = set(infos).difference(unpack(row.prev_keys).tolist())
                add_keys(conn, {k: infos[k] for k in new_keys})
                cached = _cached_hits(conn, list(infos))
            else:
                known, _, cached = _lookup(conn, list(infos), with_info=False)
                add_keys(conn, {k: v for k, v in infos.items() if k not in known})
            conn.execute(
                dialect_insert(conn)(VulnSnapshotIndex.__table__).on_conflict_do_nothing(
                    index_elements=["digest"]
                ),
                [{"digest": digest, "keys": pack(infos), "not_covered": uncovered}],
            )
        else:
            uncovered = row.not_covered or {}
            _, infos, cached = _lookup(conn, unpack(row.keys).tolist(), with_info=True)
        hits = _node_hits(conn, infos, cached, fresh, now, new_keys)
        meta = _advisory_meta(conn, {h[0] for found in hits.values() for h in found})
        want = _desired(infos, infos, hits, meta)
        written = _write(conn, {minion: want}, now)
        live = live_triage(conn, now, {ident[2] for ident in want})
        counts = _counts(want, live, minion, row.node_group)
        previous = {}
        if row.state_minion is not None:
            previous[minion] = SimpleNamespace(counts=row.state_counts)
        hit_keys = np.array(sorted(k for k in infos if hits.get(k)), dtype=np.int64)
        fps, _ = _fingerprints([np.array(sorted(infos), dtype=np.int64)], hit_keys, hits, meta)
        _record_states(
            conn,
            [
                {
                    "minion_id": minion,
                    "inventory_digest": digest,
                    "fingerprint": fps[0],
                    "computed_at": now,
                    "not_covered": uncovered,
                    "counts": counts,
                }
            ],
            previous,
            now,
        )
    return {
        "minion": minion,
        "opened": written["opened"].get(minion, []),
        "kept": written["kept"],
        "updated": written["changed"],
        "resolved": written["resolved"],
        "not_covered": uncovered,
        "counts": counts,
        "computed_at": now.isoformat(),
    }


def _key_infos(conn: Connection, keys: list[int]) -> dict[int, KeyInfo]:
    out: dict[int, KeyInfo] = {}
    if _is_pg(conn):
        rows = conn.execute(
            text(
                "SELECT key, ecosystem, package, version, osv_ecosystem, name, osv_version "
                "FROM vuln_keys WHERE key = ANY(CAST(:k AS bigint[]))"
            ),
            {"k": keys},
        )
    else:
        rows = []
        for chunk in in_chunks(keys, 5000):
            rows.extend(
                conn.execute(
                    select(
                        VulnKey.key,
                        VulnKey.ecosystem,
                        VulnKey.package,
                        VulnKey.version,
                        VulnKey.osv_ecosystem,
                        VulnKey.name,
                        VulnKey.osv_version,
                    ).where(VulnKey.key.in_(chunk))
                )
            )
    for row in rows:
        out[row[0]] = tuple(row[1:])
    return out


def _lookup(
    conn: Connection, keys: list[int], with_info: bool
) -> tuple[set[int], dict[int, KeyInfo], dict[int, list]]:
    """``(keys the dictionary has, {key: info} if ``with_info``, {key: cached hits})``, in
    one round trip on PostgreSQL."""
    known: set[int] = set()
    infos: dict[int, KeyInfo] = {}
    cached: dict[int, list] = {}
    if _is_pg(conn):
        # "= ANY(array)": index look-ups (a join with unnest() is planned as a scan of the
        # whole dictionary); psycopg's own cursor, and the common empty verdict not decoded
        columns = "key, ecosystem, package, version, osv_ecosystem, name, osv_version"
        with conn.connection.driver_connection.cursor() as cur:
            wanted = ", k.".join(columns.split(", ")[1:]) if with_info else ""
            cur.execute(
                "SELECT k.key, h.key IS NOT NULL, NULLIF(h.hits, '[]'::jsonb)"
                + (f", k.{wanted}" if wanted else "")
                + " FROM vuln_keys k LEFT JOIN vuln_key_hits h ON h.key = k.key "
                "WHERE k.key = ANY(%s)",
                [keys],
            )
            for row in cur:
                known.add(row[0])
                if row[1]:
                    cached[row[0]] = row[2] or []
                if with_info:
                    infos[row[0]] = tuple(row[3:])
        return known, infos, cached
    if with_info:
        infos = _key_infos(conn, keys)
        known = set(infos)
    else:
        known = _known_keys(conn, keys)
    for chunk in in_chunks(keys, 5000):
        cached.update(
            conn.execute(
                select(VulnKeyHits.key, VulnKeyHits.hits).where(VulnKeyHits.key.in_(chunk))
            ).all()
        )
    return known, infos, cached


#: The snapshot index of a node's previous recompute.
_PREVIOUS = aliased(VulnSnapshotIndex)

_NODE_QUERY = (
    select(
        Node.inventory_digest,
        Node.node_group,
        VulnSnapshotIndex.keys,
        VulnSnapshotIndex.not_covered,
        InventorySnapshot.packages,
        InventorySnapshot.sources,
        InventorySnapshot.facts,
        VulnNodeState.minion_id.label("state_minion"),
        VulnNodeState.counts.label("state_counts"),
        _PREVIOUS.keys.label("prev_keys"),
        select(VulnMatchState.advisories_seen_at)
        .where(VulnMatchState.id == 1)
        .scalar_subquery()
        .label("seen_at"),
        select(func.max(Advisory.imported_at)).scalar_subquery().label("newest"),
    )
    .outerjoin(VulnSnapshotIndex, VulnSnapshotIndex.digest == Node.inventory_digest)
    .outerjoin(InventorySnapshot, InventorySnapshot.digest == Node.inventory_digest)
    .outerjoin(VulnNodeState, VulnNodeState.minion_id == Node.minion_id)
    .outerjoin(_PREVIOUS, _PREVIOUS.digest == VulnNodeState.inventory_digest)
    .where(Node.minion_id == bindparam("m"))
)


def _node_hits(
    conn: Connection,
    infos: Mapping[int, KeyInfo],
    cached: dict[int, list],
    fresh: bool,
    now: dt.datetime,
    new_keys: set[int] | None = None,
) -> dict:
    """The verdicts of one node's keys: ``cached`` ones, and the keys whose name an advisory
    names matched now (and cached).

    When no advisory was imported since the last fleet-wide recompute (``fresh``), every key
    of the dictionary whose name an advisory names has a cached verdict (that recompute, or a
    one-node recompute since, matched it): only keys without one that are new to the
    dictionary (within ``new_keys`` if given) are looked at. Otherwise every key without a
    cached verdict is, and every one with an advisory's name is matched again."""
    if fresh:
        todo = {
            k: v
            for k, v in infos.items()
            if k not in cached and (new_keys is None or k in new_keys)
        }
    else:
        todo = dict(infos)
    if todo:
        named = _named(conn, {(v[3], v[4]) for v in todo.values()})
        todo = {k: v for k, v in todo.items() if (v[3], v[4]) in named}
    if todo:
        matched, _ = match_keys(conn, todo)
        _store_hits(conn, matched, now)
        cached.update(matched)
    return cached


def _cached_hits(conn: Connection, keys: list[int]) -> dict[int, list]:
    """``{key: hits}`` of the keys with a cached verdict."""
    if _is_pg(conn):
        with conn.connection.driver_connection.cursor() as cur:
            cur.execute(
                "SELECT key, NULLIF(hits, '[]'::jsonb) FROM vuln_key_hits WHERE key = ANY(%s)",
                [keys],
            )
            return {key: found or [] for key, found in cur}
    out: dict[int, list] = {}
    for chunk in in_chunks(keys, 5000):
        out.update(
            conn.execute(
                select(VulnKeyHits.key, VulnKeyHits.hits).where(VulnKeyHits.key.in_(chunk))
            ).all()
        )
    return out


# -- reads ------------------------------------------------------------------------------------


def _vector(record: Any) -> str | None:
    """The record's CVSS vector (v4 before v3 before v2), record-level or per package."""
    if not isinstance(record, Mapping):
        return None
    entries = list(record.get("severity") or [])
    for affected in record.get("affected") or []:
        if isinstance(affected, Mapping):
            entries.extend(affected.get("severity") or [])
    for kind in ("CVSS_V4", "CVSS_V3", "CVSS_V2"):
        for entry in entries:
            if isinstance(entry, Mapping) and entry.get("type") == kind:
                score = entry.get("score")
                if isinstance(score, str):
                    return score
    return None


def node_findings(
    engine: Engine,
    minions: Iterable[str] | None = None,
    severity: str | None = None,
    advisory: str | None = None,
    resolved: bool = False,
    now: dt.datetime | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """``{minion: [finding]}``: open findings (and resolved ones with ``resolved``) of
    ``minions`` (None: every node), at or above ``severity``, of one ``advisory`` (its id or
    an alias); ``triaged`` as of ``now``. Each finding: ``advisory_id``, ``aliases``, ``summary``, ``severity``,
    ``cvss_score``, ``cvss_vector``, ``ecosystem``, ``package``, ``version``, ``fixed``,
    ``first_seen``, ``last_seen``, ``resolved_at``, ``triaged``; most severe first."""
    stmt = select(
        VulnFinding.minion_id,
        VulnFinding.ecosystem,
        VulnFinding.package,
        VulnFinding.version,
        VulnFinding.advisory_id,
        VulnFinding.fixed,
        VulnFinding.severity,
        VulnFinding.cvss_score,
        VulnFinding.first_seen,
        VulnFinding.last_seen,
        VulnFinding.resolved_at,
    )
    if not resolved:
        stmt = stmt.where(VulnFinding.resolved_at.is_(None))
    if severity is not None:
        if severity not in SEVERITY_RANK:
            raise FindingsError(f"severity={severity!r} is not one of {', '.join(SEVERITIES)}")
        stmt = stmt.where(
            VulnFinding.severity.in_([s for s in SEVERITIES if at_or_above(s, severity)])
        )
    now = now or utcnow()
    with engine.connect() as conn:
        if advisory is not None:
            ids = _advisory_ids(conn, str(advisory))
            if not ids:
                return {}
            stmt = stmt.where(VulnFinding.advisory_id.in_(sorted(ids)))
        rows = []
        if minions is None:
            rows = conn.execute(stmt).all()
        else:
            for chunk in in_chunks(sorted(set(minions))):
                rows.extend(conn.execute(stmt.where(VulnFinding.minion_id.in_(chunk))).all())
        ids = sorted({r.advisory_id for r in rows})
        info = {}
        for chunk in in_chunks(ids, 2000):
            for ident, aliases, summary, record in conn.execute(
                select(Advisory.id, Advisory.aliases, Advisory.summary, Advisory.record).where(
                    Advisory.id.in_(chunk)
                )
            ):
                info[ident] = (list(aliases or []), summary or "", _vector(record))
        live = live_triage(conn, now, ids)
        groups = _groups(conn, sorted({r.minion_id for r in rows}))
    out: dict[str, list] = defaultdict(list)
    for r in rows:
        aliases, summary, vector = info.get(r.advisory_id, ([], "", None))
        out[r.minion_id].append(
            {
                "advisory_id": r.advisory_id,
                "aliases": aliases,
                "summary": summary,
                "severity": r.severity,
                "cvss_score": r.cvss_score,
                "cvss_vector": vector,
                "ecosystem": r.ecosystem,
                "package": r.package,
                "version": r.version,
                "fixed": r.fixed,
                "first_seen": _iso(r.first_seen),
                "last_seen": _iso(r.last_seen),
                "resolved_at": _iso(r.resolved_at),
                "triaged": is_triaged(
                    live, r.advisory_id, r.package, r.minion_id, groups.get(r.minion_id)
                ),
            }
        )
    for found in out.values():
        found.sort(
            key=lambda f: (
                f["resolved_at"] is not None,
                -SEVERITY_RANK.get(f["severity"], 0),
                -(f["cvss_score"] or 0),
                f["advisory_id"],
                f["package"],
                f["first_seen"] or "",
            )
        )
    return dict(out)


def _advisory_ids(conn: Connection, wanted: str) -> set[str]:
    """The advisory ``wanted`` names: its id, or every advisory with it as an alias."""
    ids = set(conn.execute(select(Advisory.id).where(Advisory.id == wanted)).scalars())
    if ids:
        return ids
    if _is_pg(conn):
        rows = conn.execute(
            text("SELECT id FROM advisories WHERE aliases @> CAST(:a AS jsonb)"),
            {"a": json.dumps([wanted])},
        )
    else:
        rows = conn.execute(
            text("SELECT a.id FROM advisories a, json_each(a.aliases) j WHERE j.value = :a"),
            {"a": wanted},
        )
    ids.update(rows.scalars())
    ids.update(
        conn.execute(
            select(VulnFinding.advisory_id).where(VulnFinding.advisory_id == wanted).limit(1)
        ).scalars()
    )
    return ids


def node_states(engine: Engine, minions: Iterable[str] | None = None) -> dict[str, dict]:
    """``{minion: {"computed_at", "not_covered", "counts", "inventory_digest"}}`` of the
    nodes' last recompute."""
    stmt = select(
        VulnNodeState.minion_id,
        VulnNodeState.computed_at,
        VulnNodeState.not_covered,
        VulnNodeState.counts,
        VulnNodeState.inventory_digest,
    )
    out = {}
    with engine.connect() as conn:
        if minions is None:
            rows = conn.execute(stmt).all()
        else:
            rows = []
            for chunk in in_chunks(sorted(set(minions))):
                rows.extend(conn.execute(stmt.where(VulnNodeState.minion_id.in_(chunk))).all())
    for row in rows:
        out[row.minion_id] = {
            "computed_at": _iso(row.computed_at),
            "not_covered": dict(row.not_covered or {}),
            "counts": dict(row.counts or {}),
            "inventory_digest": row.inventory_digest,
        }
    return out


def history(engine: Engine, minion: str, days: float | None = None) -> list[dict[str, Any]]:
    """A node's ``vuln_history`` points, oldest first."""
    counted = ("open", "critical", "high", "medium", "low", "unknown", "triaged")
    stmt = (
        select(VulnHistory.computed_at, *(getattr(VulnHistory, k) for k in counted))
        .where(VulnHistory.minion_id == minion)
        .order_by(VulnHistory.computed_at)
    )
    if days is not None:
        stmt = stmt.where(VulnHistory.computed_at >= utcnow() - dt.timedelta(days=days))
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return [
        {"computed_at": _iso(row[0]), **dict(zip(counted, row[1:], strict=True))} for row in rows
    ]


def _iso(at: dt.datetime | None) -> str | None:
    return None if at is None else aware(at).isoformat()
