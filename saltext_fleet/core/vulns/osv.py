"""Reading OSV records (https://ossf.github.io/osv-schema/, schema 1.x) into :mod:`.model`.

:func:`load_document` turns the bytes of one file into a mapping (JSON, or YAML as some
advisory databases keep their records); :func:`parse` checks the fields matching needs and
builds a :class:`~.model.Advisory`; :func:`to_record` writes an advisory back as an
OSV-shaped JSON object that :func:`parse` reads back to an equal advisory (what the store
keeps); :func:`package_name` is the name under which a package is looked up.

What is checked
---------------
``id`` (a string of at most :data:`MAX_ID_CHARS` letters, digits and ``. _ : + -``, starting
with a letter or digit), ``modified`` (RFC 3339, required), ``published`` and ``withdrawn``
(RFC 3339, optional), ``schema_version`` (optional; its major version must be 1),
``aliases`` (strings), ``summary`` and ``details`` (strings), ``severity`` (``type`` and
``score`` strings) and ``affected[]``: ``package`` (``ecosystem`` and ``name`` non-empty
strings, ``purl`` a string), ``versions`` (strings), ``ranges[]`` (``type`` one of
``ECOSYSTEM``, ``SEMVER``, ``GIT``; ``events`` a non-empty list of objects each holding
exactly one of ``introduced``, ``fixed``, ``last_affected``, ``limit`` with a non-empty
string value, and at least one ``introduced``, as the schema requires) and the entry's own
``severity``. Everything else (``references``, ``credits``, ``database_specific``,
``ecosystem_specific``, a GIT range's ``repo``, fields of later 1.x schemas) is ignored. An
``affected[]`` entry without ``package`` (allowed since schema 1.4 for GIT-only entries)
cannot be matched by name and is skipped. JSON ``null`` counts as absent for optional fields.
No string kept may hold a NUL character (PostgreSQL text cannot store one).

Errors
------
Every problem raises :class:`OsvError`; its message names the origin (a file name, an
archive member) and the JSON path of the field (``$.affected[0].ranges[1].events[2]``), so
an importer can report the record and go on with the next.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from typing import Any

import yaml

from saltext_fleet.core.errors import FleetError
from saltext_fleet.core.vulns import model

#: Largest document :func:`load_document` reads (the largest real OSV record is a few MiB).
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024

#: Longest advisory id accepted.
MAX_ID_CHARS = 128

#: Longest summary kept; a longer one (or a long first line of ``details``) is cut and ends
#: with an ellipsis.
MAX_SUMMARY_CHARS = 500

#: The schema version :func:`to_record` writes.
SCHEMA_VERSION = "1.6.0"

# The C loader when libyaml is there (several times faster), else the pure-Python one; both
# resolve no tags, so every scalar stays a string ("1.10" stays "1.10", "no" stays "no").
_YAML_LOADER = getattr(yaml, "CBaseLoader", yaml.BaseLoader)

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+\-]*")
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})"
)
_PYPI_SEPARATORS = re.compile(r"[-_.]+")


class OsvError(FleetError, ValueError):
    """A malformed OSV document; the message names its origin and the bad field."""

    def __init__(self, origin: str, path: str, problem: str) -> None:
        self.origin = origin
        self.path = path
        self.problem = problem
        super().__init__(f"{origin}: {path}: {problem}")


# --------------------------------------------------------------------------------------------
# Documents
# --------------------------------------------------------------------------------------------


def _looks_like_json(text: str, origin: str) -> bool:
    if origin.lower().endswith(".json"):
        return True
    if origin.lower().endswith((".yaml", ".yml")):
        return False
    return text.lstrip()[:1] in ("{", "[")


def load_document(data: bytes, origin: str) -> Mapping:
    """The mapping one OSV file holds: JSON, or YAML read with a loader that keeps every
    scalar a string. JSON when ``origin`` ends in ``.json``, YAML when it ends in ``.yaml`` or
    ``.yml``, else JSON when the text starts with ``{`` or ``[``. Raises :class:`OsvError`
    when the data is larger than :data:`MAX_DOCUMENT_BYTES`, not UTF-8, not well-formed, or
    not a mapping."""
    origin = str(origin)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise OsvError(origin, "$", f"expected bytes, got {type(data).__name__}")
    if len(data) > MAX_DOCUMENT_BYTES:
        raise OsvError(
            origin, "$", f"document is {len(data)} bytes, more than {MAX_DOCUMENT_BYTES}"
        )
    try:
        text = bytes(data).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise OsvError(origin, "$", f"not UTF-8 (byte {exc.start})") from exc
    try:
        if _looks_like_json(text, origin):
            doc = json.loads(text)
        else:
            # A base loader resolves no tags: it builds only dicts, lists and strings.
            doc = yaml.load(text, Loader=_YAML_LOADER)
    except json.JSONDecodeError as exc:
        raise OsvError(
            origin, "$", f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from exc
    except yaml.YAMLError as exc:
        raise OsvError(origin, "$", f"not valid YAML: {_one_line(exc)}") from exc
    except RecursionError as exc:
        raise OsvError(origin, "$", "nested too deeply") from exc
    if not isinstance(doc, Mapping):
        raise OsvError(origin, "$", f"expected an object, got {_kind(doc)}")
    return doc


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300]


# --------------------------------------------------------------------------------------------
# Fields
# --------------------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


class _Reader:
    """Field checks for one document; every error names ``origin`` and the path."""

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def fail(self, path: str, problem: str) -> OsvError:
        return OsvError(self.origin, path, problem)

    def string(self, value: Any, path: str, *, required: bool = True) -> str:
        if not isinstance(value, str):
            raise self.fail(path, f"expected a string, got {_kind(value)}")
        if required and not value:
            raise self.fail(path, "must not be empty")
        if "\x00" in value:
            raise self.fail(path, "contains a NUL character")
        return value

    def optional_string(self, doc: Mapping, key: str, path: str) -> str:
        value = doc.get(key)
        return "" if value is None else self.string(value, f"{path}.{key}", required=False)

    def mapping(self, value: Any, path: str) -> Mapping:
        if not isinstance(value, Mapping):
            raise self.fail(path, f"expected an object, got {_kind(value)}")
        return value

    def items(self, doc: Mapping, key: str, path: str) -> list:
        """The list under ``key`` (absent or null: empty)."""
        value = doc.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(f"{path}.{key}", f"expected a list, got {_kind(value)}")
        return value

    def strings(self, doc: Mapping, key: str, path: str) -> list[str]:
        return [
            self.string(item, f"{path}.{key}[{index}]")
            for index, item in enumerate(self.items(doc, key, path))
        ]

    def timestamp(self, doc: Mapping, key: str, *, required: bool = False) -> dt.datetime | None:
        path = f"$.{key}"
        value = doc.get(key)
        if value is None:
            if required:
                raise self.fail(path, "missing (required)")
            return None
        text = self.string(value, path)
        parsed = parse_timestamp(text)
        if parsed is None:
            raise self.fail(path, f"not an RFC 3339 timestamp: {text[:60]!r}")
        return parsed


def parse_timestamp(text: str) -> dt.datetime | None:
    """An RFC 3339 timestamp (``2021-03-26T20:01:00Z``, ``...T20:01:00.5+02:00``) as an aware
    UTC datetime; None when ``text`` is not one. Fractions beyond microseconds are cut."""
    match = _RFC3339.fullmatch(text)
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    if offset in ("Z", "z"):
        zone = dt.UTC
    else:
        sign = 1 if offset[0] == "+" else -1
        hours, minutes = int(offset[1:3]), int(offset[4:6])
        if hours > 23 or minutes > 59:
            return None
        zone = dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))
    try:
        stamp = dt.datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            min(int(second), 59),  # a leap second (":60") is the last second of its minute
            micro,
            tzinfo=zone,
        )
        return stamp.astimezone(dt.UTC)
    except (ValueError, OverflowError):  # no such day, or before year 1 once in UTC
        return None


def format_timestamp(stamp: dt.datetime) -> str:
    """An aware datetime as RFC 3339 in UTC (``Z``), microseconds only when not zero."""
    stamp = stamp.astimezone(dt.UTC)
    text = (
        f"{stamp.year:04d}-{stamp.month:02d}-{stamp.day:02d}"
        f"T{stamp.hour:02d}:{stamp.minute:02d}:{stamp.second:02d}"
    )
    if stamp.microsecond:
        text += f".{stamp.microsecond:06d}"
    return text + "Z"


def _summary(summary: str, details: str) -> str:
    text = summary.strip() or next(
        (line.strip() for line in details.splitlines() if line.strip()), ""
    )
    if len(text) > MAX_SUMMARY_CHARS:
        text = text[: MAX_SUMMARY_CHARS - 1].rstrip() + "\u2026"
    return text


def _severity(reader: _Reader, doc: Mapping, path: str) -> tuple[model.Severity, ...]:
    found = []
    for index, entry in enumerate(reader.items(doc, "severity", path)):
        where = f"{path}.severity[{index}]"
        entry = reader.mapping(entry, where)
        found.append(
            model.Severity(
                type=reader.string(entry.get("type"), f"{where}.type"),
                score=reader.string(entry.get("score"), f"{where}.score"),
            )
        )
    return tuple(found)


def _range(reader: _Reader, entry: Any, path: str) -> model.Range:
    entry = reader.mapping(entry, path)
    kind = reader.string(entry.get("type"), f"{path}.type")
    if kind not in model.RANGE_TYPES:
        raise reader.fail(f"{path}.type", f"unknown range type {kind[:40]!r}")
    raw_events = reader.items(entry, "events", path)
    if not raw_events:
        raise reader.fail(f"{path}.events", "missing or empty (a range needs events)")
    events = []
    for index, event in enumerate(raw_events):
        where = f"{path}.events[{index}]"
        event = reader.mapping(event, where)
        kinds = [name for name in model.EVENT_KINDS if name in event]
        if len(kinds) != 1:
            problem = "holds none" if not kinds else f"holds {', '.join(kinds)}"
            raise reader.fail(
                where, f"an event holds exactly one of {model.EVENT_KINDS}; {problem}"
            )
        name = kinds[0]
        events.append((name, reader.string(event[name], f"{where}.{name}")))
    if not any(name == "introduced" for name, _value in events):
        raise reader.fail(f"{path}.events", "no 'introduced' event (the schema requires one)")
    return model.Range(type=kind, events=tuple(events))


def _affected(reader: _Reader, entry: Any, path: str) -> model.Affected | None:
    entry = reader.mapping(entry, path)
    package = entry.get("package")
    if package is None:
        return None
    package = reader.mapping(package, f"{path}.package")
    purl = package.get("purl")
    return model.Affected(
        ecosystem=reader.string(package.get("ecosystem"), f"{path}.package.ecosystem"),
        name=reader.string(package.get("name"), f"{path}.package.name"),
        purl=None if purl is None else reader.string(purl, f"{path}.package.purl"),
        versions=frozenset(reader.strings(entry, "versions", path)),
        ranges=tuple(
            _range(reader, item, f"{path}.ranges[{index}]")
            for index, item in enumerate(reader.items(entry, "ranges", path))
        ),
        severity=_severity(reader, entry, path),
    )


def parse(doc: Mapping, origin: str) -> model.Advisory:
    """The advisory one OSV record describes; :class:`OsvError` (naming ``origin`` and the
    field) when a field matching needs is missing or malformed. See the module docstring."""
    reader = _Reader(str(origin))
    doc = reader.mapping(doc, "$")
    schema = doc.get("schema_version")
    if schema is not None:
        schema = reader.string(schema, "$.schema_version")
        if schema.split(".", 1)[0] != "1":
            raise reader.fail("$.schema_version", f"unsupported schema version {schema[:40]!r}")
    ident = reader.string(doc.get("id"), "$.id")
    if len(ident) > MAX_ID_CHARS or not _ID.fullmatch(ident):
        raise reader.fail("$.id", f"not an advisory id: {ident[:60]!r}")
    modified = reader.timestamp(doc, "modified", required=True)
    affected = (
        _affected(reader, item, f"$.affected[{index}]")
        for index, item in enumerate(reader.items(doc, "affected", "$"))
    )
    return model.Advisory(
        id=ident,
        modified=modified,
        published=reader.timestamp(doc, "published"),
        withdrawn=reader.timestamp(doc, "withdrawn"),
        aliases=tuple(reader.strings(doc, "aliases", "$")),
        summary=_summary(
            reader.optional_string(doc, "summary", "$"),
            reader.optional_string(doc, "details", "$"),
        ),
        severity=_severity(reader, doc, "$"),
        affected=tuple(item for item in affected if item is not None),
    )


# --------------------------------------------------------------------------------------------
# Names and records
# --------------------------------------------------------------------------------------------


def package_name(osv_ecosystem: str, name: str) -> str:
    """The name a package is looked up under: PEP 503 normalised for PyPI (``Foo_Bar.baz``
    -> ``foo-bar-baz``), as given for every other ecosystem."""
    if model.base_ecosystem(osv_ecosystem) == "PyPI":
        return _PYPI_SEPARATORS.sub("-", name).lower()
    return name


def _severity_record(severity: tuple[model.Severity, ...]) -> list[dict]:
    return [{"type": item.type, "score": item.score} for item in severity]


def _affected_record(affected: model.Affected) -> dict:
    package = {"ecosystem": affected.ecosystem, "name": affected.name}
    if affected.purl is not None:
        package["purl"] = affected.purl
    record: dict[str, Any] = {"package": package}
    if affected.versions:
        record["versions"] = sorted(affected.versions)
    if affected.ranges:
        record["ranges"] = [
            {"type": item.type, "events": [{kind: value} for kind, value in item.events]}
            for item in affected.ranges
        ]
    if affected.severity:
        record["severity"] = _severity_record(affected.severity)
    return record


def to_record(advisory: model.Advisory) -> dict:
    """``advisory`` as an OSV JSON object (schema :data:`SCHEMA_VERSION`), which
    :func:`parse` reads back to an equal advisory. It holds what the model keeps: the summary
    stands in for ``details``, GIT ranges have no ``repo``."""
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "id": advisory.id,
        "modified": format_timestamp(advisory.modified),
    }
    if advisory.published is not None:
        record["published"] = format_timestamp(advisory.published)
    if advisory.withdrawn is not None:
        record["withdrawn"] = format_timestamp(advisory.withdrawn)
    if advisory.aliases:
        record["aliases"] = list(advisory.aliases)
    if advisory.summary:
        record["summary"] = advisory.summary
    if advisory.severity:
        record["severity"] = _severity_record(advisory.severity)
    record["affected"] = [_affected_record(item) for item in advisory.affected]
    return record
