"""What the drift store's modules share.

:class:`DriftError`, the size of ``IN (...)`` lists (:data:`CHUNK`) and the helpers that cut lists
into them, the dialect's ``INSERT`` (for ``ON CONFLICT``), and times read back as UTC.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from saltext_fleet.core.errors import FleetError

#: Rows per IN (...) list.
CHUNK = 2000

try:  # a decoder several times faster than the standard library's, where it is installed
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson is a dependency; this is for odd platforms
    _orjson = None


def json_loads(text: str | bytes | None) -> Any:
    """Decoded stored JSON text (None and the empty text: None).

    orjson where it is installed; the standard library for what orjson refuses and
    ``json`` accepts (a lone surrogate escape, which SQLite may hold).
    """
    if not text:
        return None
    if _orjson is not None:
        try:
            return _orjson.loads(text)
        except _orjson.JSONDecodeError:
            pass
    return json.loads(text)


class DriftError(FleetError, ValueError):
    """A drift request that cannot be served (unknown baseline, unknown node...)."""


def dialect_insert(conn: Connection):
    """The ``insert`` of ``conn``'s dialect (PostgreSQL's or SQLite's: both have ON CONFLICT)."""
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def copy_upsert(
    conn: Connection,
    table: str,
    types: dict[str, str],
    rows: Iterable,
    key: tuple[str, ...],
    update_rest: bool = False,
) -> None:
    """Many rows into ``table`` on PostgreSQL in two statements: binary ``COPY`` into a
    temporary table of this transaction, then one ``INSERT .. SELECT .. ON CONFLICT (key)``
    from it, sorted by ``key`` (the order of its index); ``DO UPDATE`` of the other columns
    with ``update_rest``, else ``DO NOTHING``. ``types`` maps each column to its PostgreSQL
    type, in the order of the values of each row of ``rows``. (psycopg writes ``COPY`` rows in
    C; array parameters would be built element by element in Python.)"""
    columns = list(types)
    names = ", ".join(f'"{c}"' for c in columns)
    keys = ", ".join(key)
    if update_rest:
        sets = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in columns if c not in key)
        conflict = f"DO UPDATE SET {sets}"
    else:
        conflict = "DO NOTHING"
    scratch = f"_fleet_load_{table}"
    with conn.connection.driver_connection.cursor() as cur:
        cur.execute(
            f"CREATE TEMPORARY TABLE {scratch} ON COMMIT DROP AS "
            f"SELECT {names} FROM {table} WITH NO DATA"
        )
        with cur.copy(f"COPY {scratch} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types([types[c] for c in columns])
            for row in rows:
                copy.write_row(row)
        cur.execute(
            f"INSERT INTO {table} ({names}) SELECT {names} FROM {scratch} "
            f"ORDER BY {keys} ON CONFLICT ({keys}) {conflict}"
        )
        cur.execute(f"DROP TABLE {scratch}")


def in_chunks(items: list, size: int = CHUNK) -> Iterable[list]:
    """``items`` in lists of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def rows_by_minion(conn: Connection, stmt, minion_column, minions: list[str]) -> dict[str, Any]:
    """``{minion: row}`` of ``stmt`` for ``minions`` (a scan instead of a huge IN list)."""
    if len(minions) > CHUNK:
        wanted = set(minions)
        return {row.minion_id: row for row in conn.execute(stmt).all() if row.minion_id in wanted}
    rows = conn.execute(stmt.where(minion_column.in_(minions))).all()
    return {row.minion_id: row for row in rows}


def aware(at: dt.datetime) -> dt.datetime:
    """``at`` with a time zone: a naive time (SQLite keeps none) is UTC."""
    return at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)


def facts_of(facts_text: str | None, decoded: dict[str, dict]) -> dict[str, Any]:
    """Facts from their stored JSON text, decoded once per distinct text."""
    if not facts_text:
        return {}
    found = decoded.get(facts_text)
    if found is None:
        try:
            found = json.loads(facts_text)
        except ValueError:
            found = {}
        if not isinstance(found, dict):
            found = {}
        decoded[facts_text] = found
    return found
