"""The web UI's users: password hashes, roles, TOTP, recovery codes, API tokens.

Nothing secret is stored in clear: passwords as bcrypt hashes, recovery codes and API tokens
as SHA-256 hashes, and the TOTP secret (which must be read back to check a code) in the
``secrets`` table, encrypted with the vault's key like every other secret (``scope`` ``user``,
``owner`` the username, ``name`` ``totp``), so ``fleet.rotate_key`` re-encrypts it too; so is
a TOTP secret shown for enrolment and not yet confirmed (``name`` ``totp-enrol:<id>``, for
15 minutes), which any master's UI may then confirm.

``session_version`` is part of every session cookie: bumping it (a new password, a reset of
the second factor, "log out everywhere") ends every session of the user at once.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.core import webauth
from saltext_fleet.core.errors import FleetError
from saltext_fleet.store import secrets as store_secrets
from saltext_fleet.store.models import Secret, UiEndedSession, UiUser, iso, utcnow

TOTP_SECRET = "totp"
#: The ``secrets`` name of a TOTP secret being enrolled: this and the session's enrolment id.
TOTP_ENROL_PREFIX = "totp-enrol:"
#: Pending enrolments kept per user (one per browser session that opened the account page).
MAX_TOTP_ENROLMENTS = 5


class UserError(FleetError, ValueError):
    """A user operation that cannot be done (unknown user, taken name, ...)."""


def _row(user: UiUser) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "role": user.role,
        "source": user.source,
        "totp": bool(user.totp_enabled),
        "recovery_codes_left": len(user.recovery_codes or []),
        "api_token": user.api_token_hash is not None,
        "disabled": bool(user.disabled),
        "locked_until": iso(user.locked_until),
        "created_at": iso(user.created_at),
        "last_login_at": iso(user.last_login_at),
        "session_version": user.session_version,
    }


def create_user(
    conn: Connection,
    username: str,
    role: str,
    password: str | None,
    source: str = "local",
    rounds: int | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """A new user; ``password`` is checked against the policy and stored hashed (an eauth
    user has none: Salt's eauth checks it)."""
    webauth.check_username(username)
    webauth.check_role(role)
    if source not in ("local", "eauth"):
        raise UserError(f"source: {source!r} is not local or eauth")
    if source == "local":
        if password is None:
            raise UserError("a local user needs a password")
        webauth.check_password_policy(password, username)
    if conn.execute(select(UiUser.id).where(UiUser.username == username)).first():
        raise UserError(f"user {username!r} exists already")
    hashed = None if password is None else _hash(password, rounds)
    conn.execute(
        UiUser.__table__.insert().values(
            username=username,
            password_hash=hashed,
            role=role,
            source=source,
            totp_enabled=False,
            recovery_codes=[],
            session_version=1,
            disabled=False,
            created_at=now or utcnow(),
        )
    )
    return get_user(conn, username)


def _hash(password: str, rounds: int | None) -> str:
    return webauth.hash_password(password, rounds=rounds or webauth.BCRYPT_ROUNDS)


def _get(conn: Connection, username: str) -> UiUser | None:
    return conn.execute(select(UiUser).where(UiUser.username == username)).first()


def get_user(conn: Connection, username: str) -> dict[str, Any] | None:
    user = _get(conn, username)
    return None if user is None else _row(user)


def get_user_by_id(conn: Connection, user_id: int) -> dict[str, Any] | None:
    user = conn.execute(select(UiUser).where(UiUser.id == user_id)).first()
    return None if user is None else _row(user)


def password_hash(conn: Connection, username: str) -> str | None:
    return conn.execute(select(UiUser.password_hash).where(UiUser.username == username)).scalar()


def users(conn: Connection) -> list[dict[str, Any]]:
    return [_row(u) for u in conn.execute(select(UiUser).order_by(UiUser.username))]


def count(conn: Connection) -> int:
    return conn.execute(select(func.count()).select_from(UiUser)).scalar_one()


def _require(conn: Connection, username: str) -> UiUser:
    user = _get(conn, username)
    if user is None:
        raise UserError(f"no user {username!r}")
    return user


def set_password(conn: Connection, username: str, password: str, rounds: int | None = None) -> None:
    """A new password; every session of the user ends."""
    user = _require(conn, username)
    webauth.check_password_policy(password, username)
    hashed = _hash(password, rounds)
    conn.execute(
        update(UiUser)
        .where(UiUser.id == user.id)
        .values(password_hash=hashed, session_version=UiUser.session_version + 1)
    )


def rehash_password(conn: Connection, username: str, hashed: str) -> None:
    """Store a stronger hash of the same password (no session ends)."""
    conn.execute(update(UiUser).where(UiUser.username == username).values(password_hash=hashed))


def set_role(conn: Connection, username: str, role: str) -> None:
    webauth.check_role(role)
    user = _require(conn, username)
    conn.execute(
        update(UiUser)
        .where(UiUser.id == user.id)
        .values(role=role, session_version=UiUser.session_version + 1)
    )


def set_disabled(conn: Connection, username: str, disabled: bool) -> None:
    user = _require(conn, username)
    conn.execute(
        update(UiUser)
        .where(UiUser.id == user.id)
        .values(disabled=bool(disabled), session_version=UiUser.session_version + 1)
    )


def delete_user(conn: Connection, username: str) -> bool:
    store_secrets.drop_secrets(conn, store_secrets.USER_SCOPE, username)
    return bool(conn.execute(delete(UiUser).where(UiUser.username == username)).rowcount)


def end_sessions(conn: Connection, username: str) -> None:
    conn.execute(
        update(UiUser)
        .where(UiUser.username == username)
        .values(session_version=UiUser.session_version + 1)
    )


def record_login(conn: Connection, username: str, now: dt.datetime | None = None) -> None:
    conn.execute(
        update(UiUser)
        .where(UiUser.username == username)
        .values(last_login_at=now or utcnow(), locked_until=None)
    )


def lock(conn: Connection, username: str, until: dt.datetime | None) -> None:
    """Lock the user's logins until ``until`` (None: unlock)."""
    conn.execute(update(UiUser).where(UiUser.username == username).values(locked_until=until))


# -- sessions ended by a logout (schema 0014) -------------------------------------------------


def end_session(
    conn: Connection, sid: str, expires_at: dt.datetime, now: dt.datetime | None = None
) -> None:
    """Record that the web UI session ``sid`` was logged out: every master's UI refuses its
    cookie from now until ``expires_at`` (when the cookie expires anyway). Rows past their
    time are dropped on the way."""
    now = now or utcnow()
    conn.execute(delete(UiEndedSession).where(UiEndedSession.expires_at <= now))
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    conn.execute(
        insert(UiEndedSession.__table__)
        .values(sid=sid, expires_at=expires_at)
        .on_conflict_do_nothing(index_elements=["sid"])
    )


def session_ended(conn: Connection, sid: str, now: dt.datetime | None = None) -> bool:
    """Whether the web UI session ``sid`` was logged out (through any master)."""
    return (
        conn.execute(
            select(func.count())
            .select_from(UiEndedSession)
            .where(UiEndedSession.sid == sid, UiEndedSession.expires_at > (now or utcnow()))
        ).scalar()
        > 0
    )


# -- the second factor -------------------------------------------------------------------------


def set_totp(conn: Connection, vault: core_secrets.Vault, username: str, secret: str) -> list[str]:
    """Enrol a TOTP secret (encrypted) and make ten new recovery codes; returns the codes
    (shown once: only their hashes are kept). From now on the user's logins need a code."""
    user = _require(conn, username)
    store_secrets.put_secret(conn, vault, store_secrets.USER_SCOPE, username, TOTP_SECRET, secret)
    codes = webauth.new_recovery_codes()
    conn.execute(
        update(UiUser)
        .where(UiUser.id == user.id)
        .values(
            totp_enabled=True,
            totp_last_counter=None,
            recovery_codes=[webauth.hash_recovery_code(c) for c in codes],
            session_version=UiUser.session_version + 1,
        )
    )
    return codes


def put_totp_enrolment(
    conn: Connection,
    vault: core_secrets.Vault,
    username: str,
    enrol_id: str,
    secret: str,
    ttl: float,
    now: dt.datetime | None = None,
) -> None:
    """Keep a TOTP secret shown for enrolment (``enrol_id``: the session's) for ``ttl``
    seconds, encrypted in ``secrets`` (scope ``user``, name ``totp-enrol:<enrol_id>``), so the
    user may scan it through one master and confirm it through another. Pending enrolments
    past their time (anyone's) are dropped on the way, and a user keeps at most
    :data:`MAX_TOTP_ENROLMENTS` (the oldest go)."""
    now = now or utcnow()
    enrol_id = _check_enrol_id(enrol_id)
    table = Secret.__table__
    pending = (table.c.scope == store_secrets.USER_SCOPE) & table.c.name.startswith(
        TOTP_ENROL_PREFIX, autoescape=True
    )
    conn.execute(
        delete(table).where(pending, table.c.updated_at <= now - dt.timedelta(seconds=ttl))
    )
    store_secrets.put_secret(
        conn, vault, store_secrets.USER_SCOPE, username, TOTP_ENROL_PREFIX + enrol_id, secret, now
    )
    keep = (
        select(table.c.id)
        .where(pending, table.c.owner == username)
        .order_by(table.c.updated_at.desc(), table.c.id.desc())
        .limit(MAX_TOTP_ENROLMENTS)
    )
    conn.execute(delete(table).where(pending, table.c.owner == username, table.c.id.not_in(keep)))


def totp_enrolment(
    conn: Connection,
    vault: core_secrets.Vault,
    username: str,
    enrol_id: str,
    ttl: float,
    now: dt.datetime | None = None,
) -> str | None:
    """The TOTP secret pending for ``enrol_id`` (through any master), None when there is
    none or it is older than ``ttl`` seconds."""
    now = now or utcnow()
    enrol_id = _check_enrol_id(enrol_id)
    return store_secrets.get_secret(
        conn,
        vault,
        store_secrets.USER_SCOPE,
        username,
        TOTP_ENROL_PREFIX + enrol_id,
        newer_than=now - dt.timedelta(seconds=ttl),
    )


def drop_totp_enrolment(conn: Connection, username: str, enrol_id: str) -> None:
    """Forget a pending enrolment (confirmed, or abandoned)."""
    store_secrets.drop_secrets(
        conn, store_secrets.USER_SCOPE, username, TOTP_ENROL_PREFIX + _check_enrol_id(enrol_id)
    )


def _check_enrol_id(enrol_id: str) -> str:
    if not isinstance(enrol_id, str) or not 1 <= len(enrol_id) <= 64:
        raise UserError("an enrolment id is a string of 1 to 64 characters")
    return enrol_id


def totp_secret(conn: Connection, vault: core_secrets.Vault, username: str) -> str | None:
    return store_secrets.get_secret(conn, vault, store_secrets.USER_SCOPE, username, TOTP_SECRET)


def totp_last_counter(conn: Connection, username: str) -> int | None:
    return conn.execute(
        select(UiUser.totp_last_counter).where(UiUser.username == username)
    ).scalar()


def use_totp_counter(conn: Connection, username: str, counter: int) -> bool:
    """Record the time step of an accepted code; False when a code of this or a later step
    was used already (a replay, or a race between two logins)."""
    done = conn.execute(
        update(UiUser)
        .where(
            UiUser.username == username,
            (UiUser.totp_last_counter.is_(None)) | (UiUser.totp_last_counter < counter),
        )
        .values(totp_last_counter=counter)
    ).rowcount
    return bool(done)


def use_recovery_code(conn: Connection, username: str, code: str) -> bool:
    """Spend one recovery code; False when it is not one of the user's unused codes."""
    user = _require(conn, username)
    left = webauth.use_recovery_code(code, list(user.recovery_codes or []))
    if left is None:
        return False
    done = conn.execute(
        update(UiUser)
        .where(UiUser.id == user.id, UiUser.recovery_codes == user.recovery_codes)
        .values(recovery_codes=left)
    ).rowcount
    return bool(done)


def reset_totp(conn: Connection, username: str) -> None:
    """Remove the second factor (an admin's action for a user who lost it)."""
    user = _require(conn, username)
    store_secrets.drop_secrets(conn, store_secrets.USER_SCOPE, username, TOTP_SECRET)
    conn.execute(
        update(UiUser)
        .where(UiUser.id == user.id)
        .values(
            totp_enabled=False,
            totp_last_counter=None,
            recovery_codes=[],
            session_version=UiUser.session_version + 1,
        )
    )


# -- API tokens --------------------------------------------------------------------------------


def new_api_token(conn: Connection, username: str) -> str:
    """A new API token for the user (replacing the old one); shown once, stored hashed."""
    user = _require(conn, username)
    token = webauth.new_api_token()
    conn.execute(
        update(UiUser)
        .where(UiUser.id == user.id)
        .values(api_token_hash=webauth.api_token_hash(token))
    )
    return token


def revoke_api_token(conn: Connection, username: str) -> None:
    conn.execute(update(UiUser).where(UiUser.username == username).values(api_token_hash=None))


def user_by_api_token(conn: Connection, token: str) -> dict[str, Any] | None:
    if not webauth.is_api_token(token):
        return None
    user = conn.execute(
        select(UiUser).where(UiUser.api_token_hash == webauth.api_token_hash(token))
    ).first()
    return None if user is None or user.disabled else _row(user)
