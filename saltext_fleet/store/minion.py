"""The minion-side returner's store access: a PostgreSQL role that may only append.

A minion that writes its own returns (``--return fleet``) connects with its own
``fleet:db_url``. Handing it the master's URL would give every minion write access to
enrolments, users and the audit chain, so the minion side accepts only a *minion role*: a
PostgreSQL role that may ``INSERT`` into ``returns`` and ``events`` and use their id sequences,
and nothing else (no ``SELECT``, ``UPDATE`` or ``DELETE`` anywhere, no ``CREATE``, no role
attributes, no membership of other roles). :func:`create_minion_role` makes one (``saltext-fleet
db minion-role NAME``); :func:`verify_role` refuses any other URL, with the reasons.

Records written this way are stored as returns and events only: :func:`write_minion_batch`
never ingests inventories, grains or state results, never touches ``nodes`` (``last_seen``),
and runs no migrations. A minion speaks only for itself, and only the master's job cache
(whose minion id Salt authenticated) feeds node data.

How it writes without ``SELECT``: ``INSERT ... ON CONFLICT (rid) DO NOTHING`` needs ``SELECT``
on ``rid`` in PostgreSQL (the conflict target is read), so the minion path uses ``INSERT ...
ON CONFLICT DO NOTHING`` without a target: ``rid`` is the only unique column a minion writes
(``id`` comes from the sequence), so a replayed record is still stored exactly once. A record
the database refuses is logged and dropped (the minion role may not write the quarantine).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterable

from sqlalchemy import Text, bindparam, cast, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from saltext_fleet.store import batch as batch_mod
from saltext_fleet.store.engine import StoreError
from saltext_fleet.store.models import utcnow

log = logging.getLogger(__name__)

#: The only tables a minion role may touch, and the only privilege it has on them.
APPEND_TABLES = ("returns", "events")
#: How a minion role may be named (lower case: no quoting in SQL, nothing to escape in URLs).
ROLE_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
#: Problems listed in a refusal (the rest are counted).
MAX_PROBLEMS = 8

_TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
_COLUMN_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "REFERENCES")
_SEQUENCE_PRIVILEGES = ("USAGE", "SELECT", "UPDATE")
_SYSTEM_SCHEMAS = "('pg_catalog', 'information_schema', 'pg_toast')"


class MinionRoleError(StoreError):
    """The minion returner's ``fleet:db_url`` is refused; the message says why."""


# -- checking a role --------------------------------------------------------------------------


def role_problems(conn: Connection) -> list[str]:
    """Everything the connection's role may do beyond appending returns and events.

    Empty for a proper minion role. Looks at the role's attributes, its memberships, every
    table, view and sequence outside the system schemas, and ``CREATE`` on schemas and on the
    database. Needs no privilege beyond reading the system catalogs (open to every role).
    """
    problems: list[str] = []
    role = conn.execute(
        text(
            "SELECT current_user, rolsuper, rolcreaterole, rolcreatedb, rolreplication,"
            " rolbypassrls FROM pg_roles WHERE rolname = current_user"
        )
    ).one()
    name = role[0]
    for flag, what in zip(
        role[1:],
        (
            "is a superuser",
            "may create roles",
            "may create databases",
            "is a replication role",
            "bypasses row-level security",
        ),
        strict=True,
    ):
        if flag:
            problems.append(what)
    member_of = (
        conn.execute(
            text(
                "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid"
                " JOIN pg_roles me ON me.oid = m.member WHERE me.rolname = current_user"
                " ORDER BY 1"
            )
        )
        .scalars()
        .all()
    )
    if member_of:
        problems.append(f"is a member of {', '.join(member_of)}")
    if conn.execute(text("SELECT has_database_privilege(current_database(), 'CREATE')")).scalar():
        problems.append("may create schemas in the database")
    for schema in conn.execute(
        text(
            "SELECT nspname FROM pg_namespace WHERE nspname NOT IN " + _SYSTEM_SCHEMAS + ""
            " AND nspname NOT LIKE 'pg_temp_%' AND nspname NOT LIKE 'pg_toast_temp_%'"
            " AND (has_schema_privilege(oid, 'CREATE')"
            "      OR pg_has_role(nspowner, 'MEMBER')) ORDER BY 1"
        )
    ).scalars():
        problems.append(f"may create or change objects in schema {schema}")
    store_schema = conn.execute(
        text(
            "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.oid = to_regclass('returns')"
        )
    ).scalar()
    if store_schema is None:
        problems.append(
            "cannot see the store's returns table (no INSERT on it, or the master has not"
            " created the schema yet: run saltext-fleet db upgrade on the master)"
        )
    table_checks = (
        ", ".join(f"has_table_privilege(c.oid, '{p}')" for p in _TABLE_PRIVILEGES)
        + ", "
        + ", ".join(f"has_any_column_privilege(c.oid, '{p}')" for p in _COLUMN_PRIVILEGES)
    )
    rows = conn.execute(
        text(
            "SELECT n.nspname, c.relname, pg_has_role(c.relowner, 'MEMBER'), "
            + table_checks
            + " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')"
            " AND n.nspname NOT IN "
            + _SYSTEM_SCHEMAS
            + " AND n.nspname NOT LIKE 'pg_temp_%' AND n.nspname NOT LIKE 'pg_toast_temp_%'"
            " ORDER BY 1, 2"
        )
    ).all()
    can_insert = set()
    for schema, table, owner, *flags in rows:
        label = table if schema == store_schema else f"{schema}.{table}"
        if owner:
            problems.append(f"owns table {label}")
            continue
        n = len(_TABLE_PRIVILEGES)
        held = {p for p, f in zip(_TABLE_PRIVILEGES, flags[:n], strict=True) if f}
        held |= {p for p, f in zip(_COLUMN_PRIVILEGES, flags[n:], strict=True) if f}
        if schema == store_schema and table in APPEND_TABLES and "INSERT" in held:
            can_insert.add(table)
            held.discard("INSERT")
        if held:
            problems.append(f"may {'/'.join(sorted(held))} on {label}")
    if store_schema is not None:
        marks = conn.execute(
            text(
                "SELECT has_column_privilege(c.oid, a.attnum, 'INSERT')"
                " OR has_column_privilege(c.oid, a.attnum, 'UPDATE')"
                " FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid"
                " WHERE c.oid = to_regclass('returns') AND a.attname = 'authenticated'"
            )
        ).scalar()
        if marks:
            problems.append(
                "may write returns.authenticated (it could pass its own returns off as the"
                " master's; run saltext-fleet db minion-role again)"
            )
        for table in APPEND_TABLES:
            if table not in can_insert:
                problems.append(
                    f"may not INSERT into {table} (grant it, or run "
                    "saltext-fleet db minion-role again)"
                )
    sequences = conn.execute(
        text(
            "SELECT n.nspname, c.relname, pg_has_role(c.relowner, 'MEMBER'), "
            + ", ".join(f"has_sequence_privilege(c.oid, '{p}')" for p in _SEQUENCE_PRIVILEGES)
            + " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind = 'S' AND n.nspname NOT IN " + _SYSTEM_SCHEMAS + " ORDER BY 1, 2"
        )
    ).all()
    needed = set(_append_sequences(conn)) if store_schema is not None else set()
    for schema, seq, owner, *flags in sequences:
        label = seq if schema == store_schema else f"{schema}.{seq}"
        if owner:
            problems.append(f"owns sequence {label}")
            continue
        held = {p for p, f in zip(_SEQUENCE_PRIVILEGES, flags, strict=True) if f}
        if f"{schema}.{seq}" in needed and "USAGE" in held:
            held.discard("USAGE")
            needed.discard(f"{schema}.{seq}")
        if held:
            problems.append(f"may {'/'.join(sorted(held))} on sequence {label}")
    for seq in sorted(needed):
        problems.append(f"may not use sequence {seq.split('.', 1)[1]} (USAGE)")
    return [f"role {name} {p}" if n == 0 else p for n, p in enumerate(problems)]


def _append_sequences(conn: Connection) -> list[str]:
    """``schema.sequence`` of the id columns of the append tables (bigserial)."""
    out = []
    for table in APPEND_TABLES:
        seq = conn.execute(
            text("SELECT pg_get_serial_sequence(CAST(to_regclass(:t) AS text), 'id')"),
            {"t": table},
        ).scalar()
        if seq:
            out.append(seq.replace('"', ""))
    return out


def _missing_columns(conn: Connection) -> list[str]:
    """Columns the minion path writes that the store's tables lack (schema too old/new)."""
    missing = []
    for spec in (MINION_RETURNS, batch_mod.EVENTS_TABLE):
        have = set(
            conn.execute(
                text(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_name = :t AND table_schema ="
                    " (SELECT n.nspname FROM pg_class c JOIN pg_namespace n"
                    "  ON n.oid = c.relnamespace WHERE c.oid = to_regclass(:t))"
                ),
                {"t": spec.table.name},
            ).scalars()
        )
        missing += [f"{spec.table.name}.{c}" for c in spec.columns if c not in have]
    return missing


def sqlite_refusal(db_url: str) -> str | None:
    """Why the minion returner refuses ``db_url`` without connecting (SQLite), or None."""
    try:
        parsed = make_url(db_url)
    except Exception:  # noqa: BLE001 - normalise_url reports bad URLs later, with the option
        return None
    if not parsed.drivername.startswith("sqlite"):
        return None
    return (
        f"fleet:db_url of a minion is {parsed.render_as_string(hide_password=True)}: the "
        "minion returner refuses SQLite (the master would never read that file); use the "
        "master's PostgreSQL database with a minion role (saltext-fleet db minion-role NAME "
        "on the master prints the URL)"
    )


_verified: dict[str, str | None] = {}
_verified_lock = threading.Lock()


def verify_role(engine: Engine) -> None:
    """Refuse (:class:`MinionRoleError`) a URL that is not PostgreSQL with a minion role.

    Checked once per process and URL (the answer is kept, refusals too). Connection errors
    propagate as they are: the caller keeps its records spooled and checks again later.
    """
    key = f"{os.getpid()}:{engine.url.render_as_string(hide_password=False)}"
    with _verified_lock:
        if key in _verified:
            refusal = _verified[key]
            if refusal is not None:
                raise MinionRoleError(refusal)
            return
    shown = engine.url.render_as_string(hide_password=True)
    refusal = sqlite_refusal(shown) if engine.dialect.name != "postgresql" else None
    if refusal is None:
        with engine.connect() as conn:
            problems = role_problems(conn)
            missing = [] if problems else _missing_columns(conn)
        if problems:
            more = len(problems) - MAX_PROBLEMS
            listed = "; ".join(problems[:MAX_PROBLEMS]) + (f"; and {more} more" if more > 0 else "")
            refusal = (
                f"fleet:db_url of a minion ({shown}) may do more than append returns and "
                f"events: {listed}. Create a minion role with saltext-fleet db minion-role NAME "
                "on the master and use the URL it prints"
            )
        elif missing:
            refusal = (
                f"the store at {shown} lacks {', '.join(missing)}: the master's schema and this "
                "minion's saltext-fleet differ in version; upgrade the older one"
            )
        else:
            refusal = None
    with _verified_lock:
        _verified[key] = refusal
    if refusal is not None:
        raise MinionRoleError(refusal)


def forget_verified() -> None:
    """Check every URL again on next use (tests)."""
    with _verified_lock:
        _verified.clear()


# -- the write path ---------------------------------------------------------------------------

_statements: dict[str, object] = {}


def _insert_statement(spec):
    """``INSERT ... ON CONFLICT DO NOTHING`` (no conflict target: that would need SELECT)."""
    stmt = _statements.get(spec.table.name)
    if stmt is None:
        values = {}
        for column in spec.columns:
            key = spec.json_columns.get(column)
            if key is None:
                values[column] = bindparam(column)
            else:
                values[column] = cast(bindparam(key, type_=Text), postgresql.JSONB)
        stmt = (
            postgresql.insert(spec.table).values(values).on_conflict_do_nothing().inline()
        )  # inline: no RETURNING id (that would need SELECT)
        _statements[spec.table.name] = stmt
    return stmt


#: The returns a minion writes: every column but ``authenticated``, which the minion role may
#: not write (its default, false, marks the row as the minion's own claim).
MINION_RETURNS = batch_mod.TableSpec(
    batch_mod.RETURNS_TABLE.model,
    {
        c: t
        for c, t in zip(
            batch_mod.RETURNS_TABLE.columns, batch_mod.RETURNS_TABLE.pg_types, strict=True
        )
        if c != "authenticated"
    },
    batch_mod.RETURNS_TABLE.json_columns,
)
#: The columns of each append table that the minion role may insert into.
APPEND_COLUMNS = {
    "returns": MINION_RETURNS.columns,
    "events": batch_mod.EVENTS_TABLE.columns,
}

_KINDS = {
    "return": (MINION_RETURNS, batch_mod.return_row),
    "event": (batch_mod.EVENTS_TABLE, batch_mod.event_row),
}


def write_minion_batch(conn: Connection, records: Iterable[dict]) -> batch_mod.BatchResult:
    """Append the returns and events of ``records`` on ``conn`` (the caller commits).

    Rows are built (and secrets redacted) exactly as on the master; nothing is ingested: no
    node, inventory, grains, pending states or ``last_seen`` is touched, whatever the record
    says. Records of other kinds, records that cannot be built and rows the database refuses
    are logged (kind, rid and error, never the content) and dropped: the minion role may not
    write the quarantine. Connection errors propagate (the caller keeps the batch spooled).
    """
    result = batch_mod.BatchResult()
    now = utcnow()
    by_kind: dict[str, list[tuple[dict, dict]]] = {}
    for record in records:
        kind = record.get("kind") if isinstance(record, dict) else None
        if kind not in _KINDS:
            drop_record(record, str(kind), "the minion returner writes only returns and events")
            result.quarantined += 1
            continue
        spec, build = _KINDS[kind]
        try:
            by_kind.setdefault(kind, []).append((record, build(record, now)))
        except (batch_mod.RecordRejected, KeyError, TypeError, ValueError) as exc:
            drop_record(record, kind, f"{type(exc).__name__}: {exc}")
            result.quarantined += 1
    for kind in sorted(by_kind):
        spec, _ = _KINDS[kind]
        pairs = by_kind[kind]
        stmt = _insert_statement(spec)
        try:
            with conn.begin_nested():
                conn.execute(stmt, [spec.params(row) for _, row in pairs])
            result.stored += len(pairs)
            continue
        except batch_mod.ROW_ERRORS as exc:
            if isinstance(exc, SQLAlchemyError) and batch_mod.must_retry_batch(exc):
                raise
            if _denied(exc):
                raise _refused(exc) from exc
        for record, row in pairs:  # isolate the row(s) the database refuses
            try:
                with conn.begin_nested():
                    conn.execute(stmt, [spec.params(row)])
                result.stored += 1
            except batch_mod.ROW_ERRORS as exc:
                if isinstance(exc, SQLAlchemyError) and batch_mod.must_retry_batch(exc):
                    raise
                if _denied(exc):
                    raise _refused(exc) from exc
                drop_record(
                    record,
                    kind,
                    batch_mod.describe_db_error(exc)
                    if isinstance(exc, SQLAlchemyError)
                    else str(exc),
                )
                result.quarantined += 1
    return result


def _denied(exc: BaseException) -> bool:
    """A permission error: the role is wrong, not the record (keep the batch spooled)."""
    return getattr(getattr(exc, "orig", None), "sqlstate", None) == "42501"


def _refused(exc: BaseException) -> MinionRoleError:
    return MinionRoleError(
        f"the minion role may not append here ({batch_mod.describe_db_error(exc)}): run "
        "saltext-fleet db minion-role NAME on the master again"
    )


def drop_record(record, kind: str, error: str) -> None:
    """Log a record the minion returner cannot store (its role may not write the quarantine)."""
    rid = record.get("rid") if isinstance(record, dict) else None
    log.warning(
        "saltext-fleet: a %s record (%s) was not stored by the minion returner: %s",
        kind,
        rid if isinstance(rid, str) else "-",
        error[:300],
    )


# -- creating a role --------------------------------------------------------------------------


def create_minion_role(conn: Connection, name: str, password: str | None) -> dict:
    """Create or update the minion role ``name`` on the store of ``conn`` (PostgreSQL).

    ``conn`` belongs to a role that may create roles and grant on the store's tables (the
    master's role when it owns the database, or a superuser). The role gets ``LOGIN`` and
    ``INSERT`` on ``returns`` and ``events`` plus ``USAGE`` on their id sequences; every
    other privilege it held on the store's schema, and its memberships of other roles, are
    revoked. A role that is a superuser, the connection's own role, or owns anything in the
    database is refused. ``password`` None keeps the password of an existing role.

    Returns ``{"created", "revoked_memberships", "verified", "problems"}``: ``problems`` is
    what :func:`role_problems` still finds when run as the role (empty when all is well).
    """
    if conn.dialect.name != "postgresql":
        raise MinionRoleError("minion roles need the store on PostgreSQL, not SQLite")
    if not ROLE_NAME_RE.match(name or ""):
        raise MinionRoleError(
            f"bad role name {name!r}: use 1-63 lower-case letters, digits and _, "
            "starting with a letter or _"
        )
    me = conn.execute(text("SELECT current_user")).scalar()
    if name == me:
        raise MinionRoleError(
            f"role {name} is the role this command connects as, not a minion role"
        )
    schema = conn.execute(
        text(
            "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.oid = to_regclass('returns')"
        )
    ).scalar()
    if schema is None:
        raise MinionRoleError("the store has no returns table: run saltext-fleet db upgrade first")
    existing = conn.execute(
        text("SELECT oid, rolsuper, rolreplication, rolbypassrls FROM pg_roles WHERE rolname = :n"),
        {"n": name},
    ).first()
    password_sql = ""
    params: dict = {}
    if password is not None:
        if not password or "\n" in password or "\x00" in password:
            raise MinionRoleError("the password must be one line of text, not empty")
        # A bound parameter is not allowed in utility statements: quote it as a literal.
        password_sql = " PASSWORD " + _literal(conn, password)
    revoked: list[str] = []
    if existing is None:
        conn.execute(
            text(
                f'CREATE ROLE "{name}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT'
                f" NOREPLICATION NOBYPASSRLS{password_sql}"
            ),
            params,
        )
    else:
        oid, superuser, replication, bypassrls = existing
        if superuser:
            raise MinionRoleError(f"role {name} is a superuser: choose another name")
        owns = conn.execute(
            text(
                "SELECT (SELECT count(*) FROM pg_class WHERE relowner = :o)"
                " + (SELECT count(*) FROM pg_namespace WHERE nspowner = :o)"
                " + (SELECT count(*) FROM pg_database WHERE datdba = :o)"
            ),
            {"o": oid},
        ).scalar()
        if owns:
            raise MinionRoleError(
                f"role {name} owns objects of this server (tables, schemas or databases): "
                "it is not a minion role; choose another name"
            )
        extra = (" NOREPLICATION" if replication else "") + (" NOBYPASSRLS" if bypassrls else "")
        conn.execute(
            text(
                f'ALTER ROLE "{name}" LOGIN NOCREATEDB NOCREATEROLE NOINHERIT{extra}{password_sql}'
            ),
            params,
        )
        for group in conn.execute(
            text(
                "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid"
                " WHERE m.member = :o ORDER BY 1"
            ),
            {"o": oid},
        ).scalars():
            conn.execute(text(f'REVOKE "{group}" FROM "{name}"'))
            revoked.append(group)
        conn.execute(text(f'REVOKE ALL ON ALL TABLES IN SCHEMA "{schema}" FROM "{name}"'))
        conn.execute(text(f'REVOKE ALL ON ALL SEQUENCES IN SCHEMA "{schema}" FROM "{name}"'))
        conn.execute(text(f'REVOKE CREATE ON SCHEMA "{schema}" FROM "{name}"'))
        database = conn.execute(text("SELECT current_database()")).scalar()
        conn.execute(text(f'REVOKE CREATE ON DATABASE "{database}" FROM "{name}"'))
    database = conn.execute(text("SELECT current_database()")).scalar()
    conn.execute(text(f'GRANT CONNECT ON DATABASE "{database}" TO "{name}"'))
    conn.execute(text(f'GRANT USAGE ON SCHEMA "{schema}" TO "{name}"'))
    for table in APPEND_TABLES:
        columns = ", ".join(f'"{c}"' for c in APPEND_COLUMNS[table])
        conn.execute(text(f'GRANT INSERT ({columns}) ON "{schema}"."{table}" TO "{name}"'))
    for seq in _append_sequences(conn):
        seq_schema, seq_name = seq.split(".", 1)
        conn.execute(text(f'GRANT USAGE ON SEQUENCE "{seq_schema}"."{seq_name}" TO "{name}"'))
    verified, problems = _check_as(conn, name)
    return {
        "created": existing is None,
        "revoked_memberships": revoked,
        "verified": verified,
        "problems": problems,
    }


def _literal(conn: Connection, value: str) -> str:
    """``value`` as a PostgreSQL string literal, quoted by the server's own rules."""
    return conn.execute(text("SELECT quote_literal(:v)"), {"v": value}).scalar()


def _check_as(conn: Connection, name: str) -> tuple[bool, list[str]]:
    """Run :func:`role_problems` as ``name`` (``SET ROLE``); ``(False, [])`` if not allowed."""
    try:
        with conn.begin_nested():
            conn.execute(text(f'SET LOCAL ROLE "{name}"'))
            problems = role_problems(conn)
            conn.execute(text("RESET ROLE"))
    except SQLAlchemyError as exc:
        if not _denied(exc):
            raise
        return False, []
    return True, problems
