"""OSV advisories in the store: the import, and the reads matching and the pages need.

:func:`import_advisories` reads a :class:`~saltext_fleet.core.vulns.sources.Source` one
document at a time and writes it in batches (``batch`` records per transaction):

* a record not stored yet is **added**; one whose ``modified`` is newer than the stored one
  **replaces** it (its ``advisory_packages`` rows are rewritten); one whose ``modified`` is the
  same or older leaves the stored one alone and counts as **unchanged** (nothing is written:
  importing the same data twice writes nothing but the import's own row);
* a withdrawn record (OSV ``withdrawn`` set) is stored like any other, with ``withdrawn`` set,
  and counts as **withdrawn** instead of added or replaced: matching never uses it;
* a file that cannot be read, is not JSON/YAML, or is not a valid OSV record is **rejected**:
  named with its error in the result and in ``vuln_imports.rejected``; the import goes on.

Counts are kept per OSV base ecosystem (``PyPI``, ``Debian``, ``npm``; a record naming two
ecosystems counts in both, once in ``total``). Each document counts once in exactly one of
added, replaced, unchanged, withdrawn and rejected, so ``total`` adds up to the documents read.
Every run leaves a ``vuln_imports`` row: source, counts, rejected files, actor, start and end.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sqlalchemy import delete, insert, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import StatementError

from saltext_fleet.core.errors import FleetError
from saltext_fleet.core.text import terminal_safe
from saltext_fleet.core.vulns import model, osv, severity
from saltext_fleet.core.vulns.sources import Source
from saltext_fleet.store.batch import is_connection_error
from saltext_fleet.store.models import (
    ADVISORY_ID_LEN,
    ECOSYSTEM_LEN,
    Advisory,
    AdvisoryPackage,
    VulnImport,
)

log = logging.getLogger(__name__)

#: Records per transaction, by default.
BATCH = 1000

#: Largest batch a caller may ask for.
MAX_BATCH = 50_000

#: Rejected files kept in one ``vuln_imports`` row (the count is always exact).
MAX_REJECTED_KEPT = 10_000

#: Longest error message kept per rejected file.
MAX_ERROR_CHARS = 1000

#: (ecosystem, name) pairs per ``IN (...)`` list.
PAIRS_CHUNK = 500

#: Ids per ``IN (...)`` list (SQLite allows 32,766 bound values per statement).
IN_CHUNK = 2000

#: What a document can count as.
OUTCOMES = ("added", "replaced", "unchanged", "withdrawn", "rejected")

#: The ecosystem a rejected document (or a record naming none) counts under.
UNKNOWN_ECOSYSTEM = "unknown"

Progress = Callable[[int, int], None]


class AdvisoryImportError(FleetError, ValueError):
    """An import that cannot run (a bad batch size); the message says why."""


@dataclasses.dataclass
class _Counts:
    by_ecosystem: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    total: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))

    def add(self, ecosystems: Iterable[str], outcome: str) -> None:
        self.total[outcome] += 1
        for eco in set(ecosystems) or {UNKNOWN_ECOSYSTEM}:
            row = self.by_ecosystem.setdefault(eco, dict.fromkeys(OUTCOMES, 0))
            row[outcome] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "by_ecosystem": {eco: dict(row) for eco, row in sorted(self.by_ecosystem.items())},
            "total": dict(self.total),
        }


def _chunks(items: list, size: int = IN_CHUNK) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return (str(orig).splitlines() or [type(orig).__name__])[0][:300]


def _aware(at: dt.datetime | None) -> dt.datetime | None:
    """``at`` with a time zone: a naive time (SQLite keeps none) is UTC."""
    if at is None:
        return None
    return at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)


def _insert(conn: Connection):
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def _ecosystems(advisory: model.Advisory) -> set[str]:
    return {model.base_ecosystem(a.ecosystem) for a in advisory.affected if a.ecosystem}


def _sniff_ecosystems(doc: Any) -> set[str]:
    """The base ecosystems a document that failed to parse says it is about, where it says
    so plainly (so its rejection counts under them); else none."""
    found: set[str] = set()
    affected = doc.get("affected") if isinstance(doc, Mapping) else None
    if isinstance(affected, list):
        for entry in affected[:100]:
            package = entry.get("package") if isinstance(entry, Mapping) else None
            eco = package.get("ecosystem") if isinstance(package, Mapping) else None
            if isinstance(eco, str) and eco and len(eco) <= ECOSYSTEM_LEN:
                found.add(model.base_ecosystem(eco))
    return found


def _packages(advisory: model.Advisory) -> set[tuple[str, str]]:
    return {
        (a.ecosystem, osv.package_name(a.ecosystem, a.name))
        for a in advisory.affected
        if a.ecosystem and a.name
    }


#: Text no column can hold: NUL (PostgreSQL's text and JSONB refuse it) and lone surrogates
#: (not UTF-8; JSON's ``"\\ud800"`` escapes make them).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _unstorable(value: Any, path: str = "$") -> str | None:
    """The JSON path of the first string in ``value`` no database column can hold."""
    if isinstance(value, str):
        return path if _UNSTORABLE.search(value) else None
    if isinstance(value, Mapping):
        for key, item in value.items():
            found = _unstorable(key, path) or _unstorable(item, f"{path}.{key}")
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _unstorable(item, f"{path}[{index}]")
            if found:
                return found
    return None


@dataclasses.dataclass(frozen=True)
class _Parsed:
    advisory: model.Advisory
    origin: str
    record: dict[str, Any]


def _check_storable(advisory: model.Advisory, origin: str, record: dict) -> None:
    """Refuse, as this record's error, what the columns cannot hold."""
    if len(advisory.id) > ADVISORY_ID_LEN:  # osv.MAX_ID_CHARS keeps it shorter today
        raise osv.OsvError(origin, "$.id", f"longer than {ADVISORY_ID_LEN} characters")
    for index, affected in enumerate(advisory.affected):
        if len(affected.ecosystem) > ECOSYSTEM_LEN:
            raise osv.OsvError(
                origin,
                f"$.affected[{index}].package.ecosystem",
                f"longer than {ECOSYSTEM_LEN} characters",
            )
    bad = _unstorable(record)
    if bad:
        raise osv.OsvError(origin, bad, "holds a NUL character or a lone UTF-16 surrogate")


def _row(parsed: _Parsed, now: dt.datetime) -> dict[str, Any]:
    advisory = parsed.advisory
    assessed = severity.of_advisory(advisory)
    for note in assessed.notes:
        log.info("fleet: %s (%s): %s", advisory.id, parsed.origin, terminal_safe(note))
    return {
        "id": advisory.id,
        "modified": advisory.modified,
        "published": advisory.published,
        "withdrawn": advisory.withdrawn,
        "summary": advisory.summary,
        "aliases": list(advisory.aliases),
        "cvss_score": assessed.score,
        "severity": assessed.severity,
        "record": parsed.record,
        "source": parsed.origin,
        "imported_at": now,
    }


class _Importer:
    def __init__(self, engine: Engine, batch: int, progress: Progress | None, estimate: int):
        self.engine = engine
        self.batch = batch
        self.progress = progress
        self.estimate = estimate
        self.counts = _Counts()
        self.rejected: list[dict[str, str]] = []
        self.rejected_count = 0
        self.done = 0
        self.reported = 0
        #: id -> the parsed record waiting for the next write
        self.pending: dict[str, _Parsed] = {}

    def reject(self, origin: str, error: str, ecosystems: Iterable[str] = ()) -> None:
        error = terminal_safe(error, MAX_ERROR_CHARS)
        self.counts.add(ecosystems, "rejected")
        self.rejected_count += 1
        self.done += 1
        if len(self.rejected) < MAX_REJECTED_KEPT:
            self.rejected.append({"origin": origin, "error": error})
        log.warning("fleet: OSV import rejected %s: %s", origin, error)

    def take(self, origin: str, data: bytes) -> None:
        doc = None
        try:
            doc = osv.load_document(data, origin)
            advisory = osv.parse(doc, origin)
            record = osv.to_record(advisory)
            _check_storable(advisory, origin, record)
        except FleetError as exc:
            self.reject(origin, str(exc), _sniff_ecosystems(doc))
            return
        except Exception as exc:  # a parser bug on one hostile file must not stop the import
            log.exception("fleet: the OSV parser failed on %s", origin)
            self.reject(origin, f"{origin}: cannot parse: {type(exc).__name__}: {exc}")
            return
        parsed = _Parsed(advisory, origin, record)
        earlier = self.pending.get(advisory.id)
        if earlier is not None:
            # the same id twice in one source: the newer stays, the other changes nothing
            if advisory.modified > earlier.advisory.modified:
                self.pending[advisory.id], parsed = parsed, earlier
            self.counts.add(_ecosystems(parsed.advisory), "unchanged")
            self.done += 1
            return
        self.pending[advisory.id] = parsed
        if len(self.pending) >= self.batch:
            self.flush()

    def flush(self) -> None:
        """Write the pending records in one transaction. Should the database refuse the
        batch (a value some column cannot hold that the checks above missed), each record is
        written in a transaction of its own, and the ones it refuses are rejected by name; an
        unreachable database stops the import."""
        if not self.pending:
            return
        pending, self.pending = self.pending, {}
        try:
            outcomes = self._write_batch(pending)
        except StatementError as exc:
            if is_connection_error(exc):
                raise
            log.warning(
                "fleet: the database refused a batch of %d OSV records (%s); writing them"
                " one by one",
                len(pending),
                _first_line(exc),
            )
            outcomes = []
            for adv_id, parsed in pending.items():
                try:
                    outcomes.extend(self._write_batch({adv_id: parsed}))
                except StatementError as one:
                    if is_connection_error(one):
                        raise
                    self.reject(
                        parsed.origin,
                        f"{parsed.origin}: the database refused it: {_first_line(one)}",
                        _ecosystems(parsed.advisory),
                    )
        for ecosystems, outcome in outcomes:
            self.counts.add(ecosystems, outcome)
            self.done += 1
        self.report()

    def _write_batch(self, pending: Mapping[str, _Parsed]) -> list[tuple[set[str], str]]:
        """Write ``pending`` in one transaction; what each record counts as."""
        now = dt.datetime.now(dt.timezone.utc)
        outcomes: list[tuple[set[str], str]] = []
        with self.engine.begin() as conn:
            stored = {
                row.id: _aware(row.modified)
                for chunk in _chunks(list(pending))
                for row in conn.execute(
                    select(Advisory.id, Advisory.modified).where(Advisory.id.in_(chunk))
                )
            }
            added: list[dict] = []
            replaced: list[dict] = []
            packages: list[dict] = []
            for adv_id, parsed in pending.items():
                advisory = parsed.advisory
                old = stored.get(adv_id)
                if old is not None and advisory.modified <= old:
                    outcomes.append((_ecosystems(advisory), "unchanged"))
                    continue
                (added if old is None else replaced).append(_row(parsed, now))
                packages.extend(
                    {"advisory_id": adv_id, "ecosystem": eco, "name": name}
                    for eco, name in sorted(_packages(advisory))
                )
                outcome = "added" if old is None else "replaced"
                outcomes.append(
                    (_ecosystems(advisory), "withdrawn" if advisory.withdrawn else outcome)
                )
            self._write(conn, added, replaced, packages)
        return outcomes

    def report(self) -> None:
        if self.progress is not None and self.done != self.reported:
            self.reported = self.done
            self.progress(self.done, max(self.estimate, self.done))

    @staticmethod
    def _write(conn: Connection, added: list, replaced: list, packages: list) -> None:
        """Write the added and replaced rows, then the packages of those actually written:
        another import may have stored a newer copy of a record since it was read (the newer
        one stays, with its packages)."""
        written: set[str] = set()
        for row in replaced:
            values = {k: v for k, v in row.items() if k != "id"}
            done = conn.execute(
                update(Advisory)
                .where(Advisory.id == row["id"], Advisory.modified < row["modified"])
                .values(**values)
                .returning(Advisory.id)
            ).first()
            if done is not None:
                written.add(row["id"])
        insert = _insert(conn)
        if added:
            stmt = insert(Advisory)
            excluded = stmt.excluded
            stmt = stmt.on_conflict_do_update(
                index_elements=[Advisory.id],
                set_={col: getattr(excluded, col) for col in added[0] if col != "id"},
                where=Advisory.modified < excluded.modified,
            ).returning(Advisory.id)
            written.update(conn.execute(stmt, added).scalars())
        if not written:
            return
        for chunk in _chunks(sorted(written)):
            conn.execute(delete(AdvisoryPackage).where(AdvisoryPackage.advisory_id.in_(chunk)))
        rows = [row for row in packages if row["advisory_id"] in written]
        if rows:
            conn.execute(insert(AdvisoryPackage).on_conflict_do_nothing(), rows)


def check_batch(batch: Any) -> int:
    """``batch`` when it is a batch size :func:`import_advisories` takes, else an
    :class:`AdvisoryImportError` saying what is."""
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH:
        raise AdvisoryImportError(f"batch must be a whole number from 1 to {MAX_BATCH}: {batch!r}")
    return batch


def import_advisories(
    engine: Engine,
    source: Source,
    *,
    actor: str | None = None,
    batch: int = BATCH,
    progress: Progress | None = None,
    estimate: int | None = None,
) -> dict[str, Any]:
    """Import the OSV documents of ``source`` (see the module doc); ``progress(done, about)``
    is called after each batch. Returns ``{"import_id", "source", "counts": {"by_ecosystem":
    {eco: {added, replaced, unchanged, withdrawn, rejected}}, "total": {...}}, "rejected":
    [{"origin", "error"}], "rejected_count", "skipped", "seconds"}``.

    A database that becomes unreachable stops the import (its ``vuln_imports`` row keeps no
    ``finished_at``); what was committed stays, and importing again goes on from there."""
    check_batch(batch)
    started = time.monotonic()
    with engine.begin() as conn:
        import_id = conn.execute(
            insert(VulnImport)
            .values(
                source=source.path,
                started_at=dt.datetime.now(dt.timezone.utc),
                counts={},
                rejected=[],
                actor=actor,
            )
            .returning(VulnImport.id)
        ).scalar_one()
    importer = _Importer(
        engine, batch, progress, source.estimate() if estimate is None else estimate
    )
    for entry in source:
        if entry.error is not None:
            importer.reject(entry.origin, f"{entry.origin}: {entry.error}")
        else:
            importer.take(entry.origin, entry.data)
    importer.flush()
    importer.report()
    counts = importer.counts.as_dict()
    counts["skipped"] = source.skipped
    counts["rejected_kept"] = len(importer.rejected)
    with engine.begin() as conn:
        conn.execute(
            update(VulnImport)
            .where(VulnImport.id == import_id)
            .values(
                finished_at=dt.datetime.now(dt.timezone.utc),
                counts=counts,
                rejected=importer.rejected,
            )
        )
    return {
        "import_id": import_id,
        "source": source.path,
        "counts": {"by_ecosystem": counts["by_ecosystem"], "total": counts["total"]},
        "rejected": importer.rejected,
        "rejected_count": importer.rejected_count,
        "skipped": source.skipped,
        "seconds": round(time.monotonic() - started, 3),
    }


# -- reads ----------------------------------------------------------------------------------


def _iso(at: dt.datetime | None) -> str | None:
    at = _aware(at)
    return at.isoformat() if at is not None else None


def import_history(conn: Connection, limit: int = 20) -> list[dict[str, Any]]:
    """The last ``limit`` imports, newest first: ``{"id", "source", "started_at",
    "finished_at" (None: it did not finish), "counts", "rejected", "actor"}``."""
    rows = conn.execute(
        select(VulnImport).order_by(VulnImport.id.desc()).limit(max(1, min(int(limit), 1000)))
    ).all()
    return [
        {
            "id": row.id,
            "source": row.source,
            "started_at": _iso(row.started_at),
            "finished_at": _iso(row.finished_at),
            "counts": row.counts or {},
            "rejected": row.rejected or [],
            "actor": row.actor,
        }
        for row in rows
    ]


def advisory(conn: Connection, advisory_id: str) -> dict[str, Any] | None:
    """One stored advisory: its columns, its ``packages`` ``[[ecosystem, name], ...]`` and its
    OSV ``record``; None when there is none with that id."""
    if not isinstance(advisory_id, str) or not advisory_id:
        return None
    row = conn.execute(select(Advisory).where(Advisory.id == advisory_id)).first()
    if row is None:
        return None
    packages = conn.execute(
        select(AdvisoryPackage.ecosystem, AdvisoryPackage.name)
        .where(AdvisoryPackage.advisory_id == advisory_id)
        .order_by(AdvisoryPackage.ecosystem, AdvisoryPackage.name)
    ).all()
    return {
        "id": row.id,
        "modified": _iso(row.modified),
        "published": _iso(row.published),
        "withdrawn": _iso(row.withdrawn),
        "summary": row.summary,
        "aliases": list(row.aliases or []),
        "cvss_score": row.cvss_score,
        "severity": row.severity,
        "packages": [[eco, name] for eco, name in packages],
        "record": row.record,
        "source": row.source,
        "imported_at": _iso(row.imported_at),
    }


def parse_stored(record: Mapping[str, Any], advisory_id: str) -> model.Advisory:
    """The :class:`~saltext_fleet.core.vulns.model.Advisory` of a stored ``record``."""
    return osv.parse(record, f"advisories/{advisory_id}")


def advisories_for(
    conn: Connection, pairs: Iterable[tuple[str, str]], include_withdrawn: bool = False
) -> list[model.Advisory]:
    """The parsed advisories naming any of ``pairs`` ``(OSV ecosystem, package name)`` (names
    as :func:`~saltext_fleet.core.vulns.osv.package_name` gives them, e.g. PEP 503 for PyPI),
    each once, by id. Withdrawn ones only with ``include_withdrawn`` (they never match)."""
    wanted = sorted({(eco, name) for eco, name in pairs})
    found: dict[str, model.Advisory] = {}
    for start in range(0, len(wanted), PAIRS_CHUNK):
        chunk = wanted[start : start + PAIRS_CHUNK]
        ids = (
            select(AdvisoryPackage.advisory_id)
            .where(tuple_(AdvisoryPackage.ecosystem, AdvisoryPackage.name).in_(chunk))
            .distinct()
        )
        stmt = select(Advisory.id, Advisory.record).where(Advisory.id.in_(ids))
        if not include_withdrawn:
            stmt = stmt.where(Advisory.withdrawn.is_(None))
        for adv_id, record in conn.execute(stmt):
            if adv_id not in found:
                found[adv_id] = parse_stored(record, adv_id)
    return [found[adv_id] for adv_id in sorted(found)]


def all_advisory_names(conn: Connection) -> set[tuple[str, str]]:
    """Every ``(OSV ecosystem, package name)`` a stored advisory that is not withdrawn names:
    which of a fleet's packages need matching at all."""
    stmt = (
        select(AdvisoryPackage.ecosystem, AdvisoryPackage.name)
        .join(Advisory, Advisory.id == AdvisoryPackage.advisory_id)
        .where(Advisory.withdrawn.is_(None))
        .distinct()
    )
    return {(eco, name) for eco, name in conn.execute(stmt)}
