"""Audit chain: a tamper-evident record of what operators and the reactor did. Pure logic, no Salt
import, no database.

Every action that changes the fleet (a key accepted, an enrolment created, a bootstrap, a baseline
edited, later every UI action) appends one *event*. Each event stores the hash of the event before
it, and its own hash covers that link and its content, so a row edited, deleted, inserted or moved
after the fact no longer fits the chain and :func:`verify` names the first event where it breaks.

The store keeps the events in a table ``audit_events`` with the columns of :data:`COLUMNS`::

    id          integer, strictly ascending in the order the events were written (gaps allowed)
    at          when, UTC (the column must keep microseconds; see below)
    actor       who: "user:alice", "cli:root", "reactor", ...   (1 to 128 characters)
    action      what: "key.accept", "baseline.set", ...        (see ACTIONS; 1 to 64 of [a-z0-9_.:-])
    target      on what: a minion id, a baseline name, ...     (1 to 255 characters)
    details     a JSON object with whatever else matters
    prev_hash   the previous event's hash; GENESIS ("0" * 64) for the first event
    hash        this event's hash (below)

Appending, on top of this module::

    with transaction:                              # serialise writers: SELECT ... FOR UPDATE on
        last = newest event (id, hash) or None     # PostgreSQL, BEGIN IMMEDIATE on SQLite
        row = audit.new_event(last.hash if last else audit.GENESIS,
                              (last.id if last else 0) + 1, audit.utc_now(),
                              actor, action, target, details)
        INSERT row (every key of ``row`` is a column, stored exactly as returned)

The id is part of the hashed content, so it is chosen before the insert and written explicitly;
``at`` is computed here, never left to a database default, for the same reason.

Verifying streams the rows in id order: ``audit.verify(rows)`` or, from a checkpoint the store
kept, ``audit.verify(rows_after_checkpoint, start_prev=checkpoint_hash, after_id=checkpoint_id)``.

What the chain proves, and what it does not: anyone who can write the table can also recompute
every hash after an edit (there is no secret in SHA-256). The chain makes an edit *evident* once
the newest hash (``last_hash`` of :func:`verify`) has been recorded somewhere the editor cannot
reach (the master log, a ticket, a checkpoint copied off the host); removing the newest events
is likewise only visible against such a record.

The exact rules, so that a verifier in another language gets the same hashes
==============================================================================

1. The hashed part of an event, its *body*, is the JSON object with exactly the six members
   ``id`` (integer), ``at`` (string), ``actor``, ``action``, ``target`` (strings) and ``details``
   (the JSON value stored in the column, an object when written through :func:`body`).

2. ``at`` is always the string ``YYYY-MM-DDTHH:MM:SS.ffffffZ``: UTC, a four-digit year, exactly
   six fraction digits, a capital ``T`` and ``Z``. :func:`normalise_at` turns what a database
   returns (an aware datetime in any zone, a naive datetime, an ISO-8601 string with or without
   an offset) into this form; *naive means UTC* (a naive value, or a string without an offset,
   is taken as UTC wall time). Microseconds are the precision of Python, PostgreSQL and MySQL
   ``DATETIME(6)``; a column that keeps less (MySQL ``DATETIME``, ``timestamp(3)``) loses what
   was hashed, and every such event will fail to verify.

3. The canonical JSON of a value (:func:`canonical`), encoded as UTF-8 without a BOM:

   - objects: members sorted by key, by Unicode code point (the same order as comparing the
     keys' UTF-8 bytes); keys must be strings; ``{`` ``"key":value`` ``,`` ... ``}`` with no
     whitespace anywhere;
   - arrays: ``[`` values separated by ``,`` ``]``;
   - strings: ``"`` + the characters themselves (no ``\\u`` escapes for non-ASCII), except that
     ``"`` and ``\\`` are escaped as ``\\"`` and ``\\\\``, and U+0000 to U+001F as ``\\b``,
     ``\\t``, ``\\n``, ``\\f``, ``\\r`` or else ``\\u00xx`` with lowercase hex; U+0000 itself
     and lone surrogates are refused (PostgreSQL's jsonb cannot store the one, UTF-8 cannot
     encode the others);
   - ``true``, ``false``, ``null``;
   - numbers: integers and floats alike must lie within +-(2**53 - 1) (larger ones go as
     strings, so that every JSON reader sees the same number); NaN and Infinity are refused; a
     float with an integral value is written as that integer (``1.0`` -> ``1``, ``-0.0`` ->
     ``0``); any other float as ECMAScript's ``Number.prototype.toString`` writes it (the
     shortest digits that round-trip; plain notation from 1e-6 on, ``1.5e-7`` below). This is
     the number form of RFC 8785 (JCS): a number hashes the same however a JSON column, a
     driver or another language spells it (``1``, ``1.0``, ``1E0``; ``1e-07``, ``0.0000001``).

   Nesting is limited to :data:`MAX_DEPTH` levels. Datetimes, sets, bytes and other Python
   objects are refused: give times as ISO-8601 strings.

4. ``hash = lowercase hex SHA-256 of ( ASCII(prev_hash) + "\\n" + canonical(body) )``, where
   ``prev_hash`` is the 64 lowercase hex digits of the previous event's hash, or
   :data:`GENESIS` (64 zeros) for the first event.

Example: the body ``{"id": 1, "at": "2024-05-01T12:00:00.000000Z", "actor": "cli:root",
"action": "key.accept", "target": "web1", "details": {}}`` is canonically
``{"action":"key.accept","actor":"cli:root","at":"2024-05-01T12:00:00.000000Z","details":{},
"id":1,"target":"web1"}`` (one line), and its hash is the SHA-256 of 64 ``0`` characters, a
newline, and those bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from saltext_fleet.core.errors import FleetError

#: ``prev_hash`` of the first event of a chain.
GENESIS = "0" * 64

#: Actions the product writes. The target each one names is in brackets. Action names are not
#: restricted to this list (any name matching :data:`ACTION_RE` is accepted); it documents the
#: vocabulary so that the UI and reports can filter on it.
ACTIONS = (
    "key.accept",  # an operator accepted a minion key [minion id]
    "key.reject",  # an operator rejected a key [minion id]
    "key.delete",  # a key was deleted, by an operator or before a re-bootstrap [minion id]
    "key.deny",  # Salt denied a key (salt-key, the wheel) [minion id]
    "key.pending",  # the reactor recorded a new pending key, details: fingerprint [minion id]
    "enrol.create",  # an operator created an enrolment (expected id, token, expiry) [minion id]
    "enrol.accept",  # a pending key matched an enrolment and was accepted [minion id]
    "enrol.refuse",  # a key claimed an enrolment and did not match it [minion id]
    "bootstrap.start",  # salt-ssh bootstrap of a new machine began, details: host [minion id]
    "bootstrap.done",  # the minion is installed and started [minion id]
    "bootstrap.fail",  # bootstrap failed, details: the error [minion id]
    "baseline.set",  # a baseline was created or changed, details: revision [baseline name]
    "baseline.delete",  # a baseline was deleted [baseline name]
    "baseline.assign",  # a baseline was assigned to a group or target [baseline name]
    "baseline.unassign",  # an assignment was removed [baseline name]
    "secrets.rotate",  # the secrets key was rotated [key file or "vault"]
)
#: Families of actions named by prefix: ``user.create``, ``user.login``, ``user.totp_reset``
#: ... [user name], and ``ui.*`` for actions taken in the web UI [what they act on].
ACTION_FAMILIES = ("user.", "ui.")

ACTION_RE = re.compile(r"[a-z0-9_.:-]+")
MAX_ACTOR = 128
MAX_ACTION = 64
MAX_TARGET = 255
#: Largest canonical ``details`` accepted by :func:`body`, in bytes: an audit row says what
#: happened, it is not a place for payloads.
MAX_DETAILS = 64 * 1024
#: Deepest nesting :func:`canonical` accepts (hostile input must not exhaust the stack).
MAX_DEPTH = 32
#: Largest magnitude of a number in canonical JSON: every JSON reader (JavaScript included)
#: holds integers up to here exactly.
MAX_SAFE_INTEGER = 2**53 - 1

#: The hashed members of an event, and the columns of a stored event.
FIELDS = ("id", "at", "actor", "action", "target", "details")
COLUMNS = (*FIELDS, "prev_hash", "hash")

#: Why :func:`verify` stopped, as its ``reason``.
REASONS = {
    "order": "ids do not ascend: rows were renumbered or not read in id order",
    "prev_hash": "the link to the previous event is wrong: an event was deleted, inserted or moved",
    "hash": "the content does not match the hash: the event was edited after it was written",
    "malformed": "the row cannot be read as an event: a column is missing or of the wrong type",
}

_HASH_RE = re.compile(r"[0-9a-f]{64}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1 (terminal escapes)
_CANONICAL_AT_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", re.ASCII)
_AT_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?"
    r"(?:([Zz])|([+-])(\d{2})(?::?(\d{2}))?)?",
    re.ASCII,  # \d would otherwise take any script's digits
)
# json's own string encoder, the flavour used with ensure_ascii=False: it escapes exactly ", \
# and U+0000..U+001F (short forms where JSON has them, else \u00xx in lowercase hex).
_encode_string = json.encoder.encode_basestring


class AuditError(FleetError, ValueError):
    """An audit event or value is malformed; ``field`` says where (``details.files[2].name``)."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(
            f"bad audit event {field}: {message}" if field else f"bad audit event: {message}"
        )


# --- canonical JSON -----------------------------------------------------------------------------


def canonical(value: Any, path: str = "") -> bytes:
    """The canonical JSON of ``value`` as UTF-8 bytes (rules in the module docstring, point 3).

    ``path`` prefixes the field named in an :class:`AuditError` (``canonical(d, "details")``
    reports ``details.a[0]``).
    """
    parts: list[str] = []
    try:
        _emit(value, parts, 0)
    except _Refused as exc:
        where = path
        for step in reversed(exc.where):
            where = f"{where}[{step}]" if isinstance(step, int) else _child(where, step)
        raise AuditError(where, exc.message) from exc
    text = "".join(parts)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        # Rare, so found by a second walk rather than by encoding every string on the way.
        raise AuditError(
            _find_surrogate(value, path) or path, "a lone surrogate cannot be encoded as UTF-8"
        ) from exc


class _Refused(FleetError):
    """Raised deep in :func:`_emit`; each container on the way out adds its key, so that the
    path is only built when something is wrong (verification runs this for every event)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message
        self.where: list[Any] = []  # innermost first


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _emit(value: Any, out: list[str], depth: int) -> None:
    # Exact type checks first: they are cheap, and plain str/int/dict is nearly every value.
    kind = type(value)
    if kind is str:
        if "\0" in value:
            raise _Refused("U+0000 (NUL) is not allowed in strings")
        out.append(_encode_string(value))
    elif kind is int:
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise _Refused(f"{value} is beyond +-(2**53 - 1): give it as a string")
        out.append(int.__repr__(value))
    elif kind is dict or isinstance(value, Mapping):
        _emit_object(value, out, depth)
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, float):
        out.append(_number(value))
    elif isinstance(value, (list, tuple)):
        if depth >= MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels")
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            try:
                _emit(item, out, depth + 1)
            except _Refused as exc:
                exc.where.append(index)
                raise
        out.append("]")
    elif isinstance(value, int):  # an int subclass (IntEnum): written as the number it holds
        _emit(int(value), out, depth)
    elif isinstance(value, str):  # a str subclass: written as the plain string it holds
        _emit(str.__str__(value), out, depth)
    else:
        hint = " (give times as ISO-8601 strings)" if isinstance(value, datetime) else ""
        raise _Refused(f"{type(value).__name__} is not a JSON value{hint}")


def _emit_object(value: Mapping, out: list[str], depth: int) -> None:
    if depth >= MAX_DEPTH:
        raise _Refused(f"nested deeper than {MAX_DEPTH} levels")
    try:
        keys = sorted(value)
    except TypeError:  # keys of types that do not compare: the loop below names one
        keys = list(value)
    separator = "{"
    for key in keys:
        if type(key) is not str:
            if not isinstance(key, str):
                exc = _Refused(f"keys must be strings, got {type(key).__name__}")
                exc.where.append(repr(key))
                raise exc
            key = str.__str__(key)
        if "\0" in key:
            exc = _Refused("U+0000 (NUL) is not allowed in keys")
            exc.where.append(repr(key))
            raise exc
        out.append(separator + _encode_string(key) + ":")
        separator = ","
        item = value[key]
        if type(item) is str and "\0" not in item:  # the common case, without a call
            out.append(_encode_string(item))
            continue
        try:
            _emit(item, out, depth + 1)
        except _Refused as exc:
            exc.where.append(key)
            raise
    out.append("}" if separator == "," else "{}")


def _number(value: float) -> str:
    """A float as ECMAScript's Number.prototype.toString writes it (RFC 8785's number form)."""
    if math.isnan(value) or math.isinf(value):
        raise _Refused(f"{value!r} is not a JSON number (NaN and Infinity are refused)")
    if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        raise _Refused(f"{value!r} is beyond +-(2**53 - 1): give it as a string")
    if value.is_integer():
        return str(int(value))
    # repr gives the shortest digits that round-trip, as ECMAScript does; only the layout
    # differs (Python writes 1e-05 where ECMAScript writes 0.00001, and 1e-07 for 1e-7).
    sign = "-" if value < 0 else ""
    mantissa, _, exponent = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    # value = 0.<digits> * 10**n
    n = len(whole) + (int(exponent) if exponent else 0)
    stripped = digits.lstrip("0")
    n -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + digits
    exp = n - 1
    head = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{sign}{head}e{'+' if exp >= 0 else '-'}{abs(exp)}"


def _find_surrogate(value: Any, path: str) -> str | None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
    elif isinstance(value, Mapping):
        for key, item in value.items():
            found = _find_surrogate(key, _child(path, repr(key))) or _find_surrogate(
                item, _child(path, key)
            )
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _find_surrogate(item, f"{path}[{index}]")
            if found:
                return found
    return None


# --- the event body -----------------------------------------------------------------------------


def utc_now() -> datetime:
    """The current time as an aware UTC datetime, the ``at`` of a new event."""
    return datetime.now(timezone.utc)


def normalise_at(at: Any) -> str:
    """``at`` as the hashed string ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (module docstring, point 2).

    Accepts an aware datetime (converted to UTC), a naive datetime (taken as UTC) or an
    ISO-8601 string with ``T`` or a space between date and time, up to six fraction digits
    (more only if they are zeros: a database rounding nanoseconds would not hash the same) and
    an optional ``Z``, ``+HH:MM``, ``+HHMM`` or ``+HH`` offset (none means UTC). Numbers are
    refused: seconds or milliseconds since the epoch cannot be told apart.
    """
    if type(at) is str and _CANONICAL_AT_RE.fullmatch(at):
        # Already in the hashed form (what body() returns, what a text column gives back):
        # only the calendar is left to check, which fromisoformat does in C.
        try:
            datetime.fromisoformat(at[:-1])
        except ValueError:
            pass  # _parse_at says what is wrong
        else:
            return at
    if isinstance(at, datetime):
        moment = at
    elif isinstance(at, str):
        moment = _parse_at(at)
    else:
        raise AuditError(
            "at", f"expected a datetime or an ISO-8601 string, got {type(at).__name__}"
        )
    if moment.tzinfo is not None:
        offset = moment.utcoffset()
        if offset:
            try:
                moment = moment - offset
            except OverflowError as exc:
                raise AuditError("at", f"{at!r} is outside the years 1 to 9999 in UTC") from exc
        moment = moment.replace(tzinfo=None)
    return datetime.isoformat(moment, timespec="microseconds") + "Z"


def _parse_at(text: str) -> datetime:
    match = _AT_RE.fullmatch(text)
    if not match:
        raise AuditError("at", f"{text[:64]!r} is not an ISO-8601 date and time")
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    micro = 0
    if fraction:
        if len(fraction) > 6 and fraction[6:].strip("0"):
            raise AuditError("at", f"{text[:64]!r} is more precise than microseconds")
        micro = int(fraction[:6].ljust(6, "0"))
    try:
        moment = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro
        )
    except ValueError as exc:
        raise AuditError("at", f"{text!r} is not a valid time: {exc}") from exc
    if sign:
        hours, minutes = int(off_h), int(off_m or 0)
        if hours > 23 or minutes > 59:
            raise AuditError("at", f"{text!r} has an impossible UTC offset")
        offset = timedelta(hours=hours, minutes=minutes)
        moment = moment.replace(tzinfo=timezone(-offset if sign == "-" else offset))
    return moment


def check_id(event_id: Any) -> int:
    """An event id: a positive integer (the store's ascending primary key)."""
    if isinstance(event_id, bool) or not isinstance(event_id, int):
        raise AuditError("id", f"expected a positive integer, got {type(event_id).__name__}")
    if not 1 <= event_id <= MAX_SAFE_INTEGER:
        raise AuditError("id", f"{event_id} is not between 1 and 2**53 - 1")
    return int(event_id)


def check_text(field: str, value: Any, limit: int) -> str:
    """``actor`` or ``target``: a non-empty string of at most ``limit`` characters, no control
    characters (an audit line must read the same in a terminal as in the database)."""
    if not isinstance(value, str):
        raise AuditError(field, f"expected a string, got {type(value).__name__}")
    if not value.strip():
        raise AuditError(field, "must not be empty")
    if len(value) > limit:
        raise AuditError(field, f"{len(value)} characters, at most {limit}")
    if _CONTROL_RE.search(value):
        raise AuditError(field, f"{value[:64]!r} holds a control character")
    return str.__str__(value)


def check_action(action: Any) -> str:
    """An action name: 1 to 64 of ``[a-z0-9_.:-]`` (see :data:`ACTIONS` for the vocabulary)."""
    if not isinstance(action, str) or not action:
        raise AuditError("action", f"expected a non-empty string, got {action!r}")
    if len(action) > MAX_ACTION:
        raise AuditError("action", f"{len(action)} characters, at most {MAX_ACTION}")
    if not ACTION_RE.fullmatch(action):
        raise AuditError("action", f"{action!r} is not an action name ([a-z0-9_.:-])")
    return str.__str__(action)


def is_known_action(action: str) -> bool:
    """Whether ``action`` is in the product's vocabulary (:data:`ACTIONS` or a family)."""
    return action in ACTIONS or action.startswith(ACTION_FAMILIES)


def normalise_details(details: Any) -> dict[str, Any]:
    """``details`` as it is hashed and stored: a JSON object (None means ``{}``), passed
    through canonical JSON so that what the store writes is exactly what was hashed
    (tuples become lists, ``1.0`` becomes ``1``)."""
    if details is None:
        return {}
    if not isinstance(details, Mapping):
        raise AuditError("details", f"expected a mapping, got {type(details).__name__}")
    data = canonical(details, "details")
    if len(data) > MAX_DETAILS:
        raise AuditError("details", f"{len(data)} bytes of JSON, at most {MAX_DETAILS}")
    return json.loads(data)


def body(
    event_id: int,
    at: Any,
    actor: str,
    action: str,
    target: str,
    details: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The hashed part of a new event, validated and normalised (``at`` as a string, details
    as plain JSON). Raises :class:`AuditError` naming the field that is wrong."""
    return {
        "id": check_id(event_id),
        "at": normalise_at(at),
        "actor": check_text("actor", actor, MAX_ACTOR),
        "action": check_action(action),
        "target": check_text("target", target, MAX_TARGET),
        "details": normalise_details(details),
    }


def check_hash(value: Any, field: str = "prev_hash") -> str:
    """A hash as stored: 64 lowercase hex digits."""
    if not isinstance(value, str) or not _HASH_RE.fullmatch(value):
        raise AuditError(field, f"{value!r} is not 64 lowercase hex digits")
    return value


def event_hash(prev_hash: str, event_body: Mapping[str, Any]) -> str:
    """``sha256(ASCII(prev_hash) + "\\n" + canonical(event_body)).hexdigest()``."""
    check_hash(prev_hash)
    return _digest(prev_hash, event_body)


def _digest(prev_hash: str, event_body: Mapping[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + b"\n" + canonical(event_body)).hexdigest()


def new_event(
    prev_hash: str,
    event_id: int,
    at: Any,
    actor: str,
    action: str,
    target: str,
    details: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A complete row to insert after the event whose hash is ``prev_hash``: the body plus
    ``prev_hash`` and ``hash`` (the keys of :data:`COLUMNS`)."""
    check_hash(prev_hash)
    event_body = body(event_id, at, actor, action, target, details)
    return {**event_body, "prev_hash": prev_hash, "hash": _digest(prev_hash, event_body)}


def chain(prev_hash: str, events: Iterable[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
    """Rows for ``events`` (mappings with ``id``, ``at``, ``actor``, ``action``, ``target`` and
    optionally ``details``), each linked to the one before, the first to ``prev_hash``.

    Lazy: rows are made as they are consumed, so a long import never sits in memory.
    """
    check_hash(prev_hash)

    def rows() -> Iterator[dict[str, Any]]:
        previous = prev_hash
        for number, event in enumerate(events):
            if not isinstance(event, Mapping):
                raise AuditError(f"events[{number}]", f"expected a mapping, got {event!r:.64}")
            missing = [f for f in FIELDS if f != "details" and f not in event]
            if missing:
                raise AuditError(f"events[{number}]", f"missing {', '.join(missing)}")
            row = new_event(
                previous,
                event["id"],
                event["at"],
                event["actor"],
                event["action"],
                event["target"],
                event.get("details"),
            )
            previous = row["hash"]
            yield row

    return rows()


# --- verification -------------------------------------------------------------------------------


def verify(
    events: Iterable[Any], start_prev: str = GENESIS, after_id: int | None = None
) -> dict[str, Any]:
    """Check a chain, or a window of one, streaming: one row in memory at a time.

    ``events`` yields rows in id order: mappings with the keys of :data:`COLUMNS`, or objects
    with those attributes (SQLAlchemy rows and models). A window (an incremental check) starts
    from a checkpoint ``(after_id, start_prev)``: the id and hash of the last event already
    verified; the first row must then link to ``start_prev`` and have an id above ``after_id``.

    Returns ``{"ok": True, "checked": N, "last_id": id, "last_hash": h}`` (the next window's
    checkpoint; an empty window returns the one it was given), or at the first bad row
    ``{"ok": False, "checked": N, "broken": id, "reason": r, "message": text}``, where
    ``checked`` counts the good rows before it and ``reason`` is a key of :data:`REASONS`:
    ``"hash"`` (the row was edited), ``"prev_hash"`` (a row before it was deleted, inserted or
    moved), ``"order"`` (ids do not ascend), ``"malformed"`` (unreadable row).

    Only integrity is checked, not today's limits on actor, target or details, so that old
    events still verify after a limit changes.
    """
    check_hash(start_prev, "start_prev")
    if after_id is not None and (isinstance(after_id, bool) or not isinstance(after_id, int)):
        raise AuditError("after_id", f"expected an integer, got {type(after_id).__name__}")
    expected_prev = start_prev
    last_id = after_id
    checked = 0

    def broken(event_id: Any, reason: str, message: str) -> dict[str, Any]:
        return {
            "ok": False,
            "checked": checked,
            "broken": event_id,
            "reason": reason,
            "message": message,
        }

    for row in events:
        try:
            event_id, at, actor, action, target, details, prev_hash, stored_hash = _columns(row)
        except (KeyError, AttributeError, TypeError) as exc:
            event_id = _try_id(row)
            return broken(event_id, "malformed", f"event {event_id}: missing column {exc}")
        if isinstance(event_id, bool) or not isinstance(event_id, int):
            return broken(event_id, "malformed", f"event id {event_id!r} is not an integer")
        if last_id is not None and event_id <= last_id:
            return broken(
                event_id, "order", f"event {event_id} comes after event {last_id}: ids must ascend"
            )
        if prev_hash != expected_prev:
            return broken(
                event_id,
                "prev_hash",
                f"event {event_id} links to {str(prev_hash)[:16]}..., but the event before it "
                f"has hash {expected_prev[:16]}...: an event was deleted, inserted or moved",
            )
        try:
            computed = _digest(
                expected_prev,
                {
                    "id": event_id,
                    "at": normalise_at(at),
                    "actor": actor,
                    "action": action,
                    "target": target,
                    "details": details,
                },
            )
        except AuditError as exc:
            return broken(event_id, "malformed", f"event {event_id}: {exc}")
        if computed != stored_hash:
            return broken(
                event_id,
                "hash",
                f"event {event_id}'s content does not match its hash: it was edited after it "
                "was written",
            )
        expected_prev = computed
        last_id = event_id
        checked += 1
    return {"ok": True, "checked": checked, "last_id": last_id, "last_hash": expected_prev}


def _columns(row: Any) -> tuple:
    if isinstance(row, Mapping):
        return (
            row["id"],
            row["at"],
            row["actor"],
            row["action"],
            row["target"],
            row["details"],
            row["prev_hash"],
            row["hash"],
        )
    return (
        row.id,
        row.at,
        row.actor,
        row.action,
        row.target,
        row.details,
        row.prev_hash,
        row.hash,
    )


def _try_id(row: Any) -> Any:
    try:
        return row["id"] if isinstance(row, Mapping) else row.id
    except (KeyError, AttributeError, TypeError):
        return None
