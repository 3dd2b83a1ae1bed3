"""Node groups and encrypted secrets in the store.

Every secret (a group's SSH password or private key, any group or node secret) is a Fernet
token made by the master's vault (:mod:`saltext_fleet.core.secrets`); the key file stays on
the master's disk and never enters the database. ``key_id`` records which key made each
token, so a rotation can tell what is left to re-encrypt.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.store.models import Node, NodeGroup, Secret, utcnow

SCOPES = ("group", "node")
#: Secrets of the web UI's users (their TOTP secret): not reachable through the runners.
USER_SCOPE = "user"
#: Credentials of PiKVM devices (password, TOTP secret): for the pollers and actions only.
KVM_SCOPE = "kvm"
#: Secrets of alert routes (webhook HMAC key, Slack URL, PagerDuty routing key, SMTP
#: password); the owner is the route key (``config:<name>`` or ``ui:<name>``).
ALERT_SCOPE = "alert"
#: Keys every master of the fleet shares (the web UI's session key), see :func:`shared_key`.
FLEET_SCOPE = "fleet"
CREDENTIAL_KINDS = ("password", "private_key")
#: The secret names a group's SSH credential is stored under.
CREDENTIAL_NAME = "ssh_credential"


def _insert(conn: Connection):
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def put_secret(
    conn: Connection,
    vault: core_secrets.Vault,
    scope: str,
    owner: str,
    name: str,
    value: str | bytes,
    now: dt.datetime | None = None,
) -> None:
    """Encrypt ``value`` and store it under ``(scope, owner, name)`` (replacing it)."""
    if scope not in SCOPES and scope not in (USER_SCOPE, KVM_SCOPE, ALERT_SCOPE):
        raise ValueError(f"scope: {scope!r} is not one of {', '.join(SCOPES)}")
    token = vault.encrypt(value)
    now = now or utcnow()
    stmt = _insert(conn)(Secret.__table__).values(
        scope=scope, owner=owner, name=name, value=token, key_id=vault.key_id, updated_at=now
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["scope", "owner", "name"],
            set_={"value": stmt.excluded.value, "key_id": stmt.excluded.key_id, "updated_at": now},
        )
    )


def shared_key(
    conn: Connection,
    vault: core_secrets.Vault,
    owner: str,
    name: str,
    candidate: str,
    now: dt.datetime | None = None,
) -> str:
    """A key every master of the fleet uses (scope ``fleet``): the stored one, or
    ``candidate`` stored (encrypted) when there is none yet.

    One conditional insert (``ON CONFLICT DO NOTHING``) then a read: two masters starting
    at once both end with the first one's key, never each with its own. A master whose
    ``fleet:key_file`` differs from the one that stored the key cannot decrypt it and stops
    with the vault's ``cannot decrypt`` error (the masters must share the key file).
    """
    stmt = _insert(conn)(Secret.__table__).values(
        scope=FLEET_SCOPE,
        owner=owner,
        name=name,
        value=vault.encrypt(candidate),
        key_id=vault.key_id,
        updated_at=now or utcnow(),
    )
    conn.execute(stmt.on_conflict_do_nothing(index_elements=["scope", "owner", "name"]))
    found = get_secret(conn, vault, FLEET_SCOPE, owner, name)
    if found is None:  # pragma: no cover - the row was just inserted or was there
        raise core_secrets.SecretsError(f"the fleet-wide key {owner}/{name} was not stored")
    return found


def get_secret(
    conn: Connection,
    vault: core_secrets.Vault,
    scope: str,
    owner: str,
    name: str,
    newer_than: dt.datetime | None = None,
) -> str | None:
    """The secret ``(scope, owner, name)`` decrypted; None when there is none (or, with
    ``newer_than``, when it was stored before then)."""
    stmt = select(Secret.value).where(
        Secret.scope == scope, Secret.owner == owner, Secret.name == name
    )
    if newer_than is not None:
        stmt = stmt.where(Secret.updated_at > newer_than)
    token = conn.execute(stmt).scalar()
    return None if token is None else vault.decrypt_text(token)


def get_secrets(
    conn: Connection,
    vault: core_secrets.Vault,
    scope: str,
    names: Iterable[str],
    owners: Iterable[str] | None = None,
) -> dict[tuple[str, str], str]:
    """``{(owner, name): value}`` of the secrets ``names`` in ``scope`` of every owner (or of
    ``owners``): one query for many owners, where :func:`get_secret` is one per secret."""
    stmt = select(Secret.owner, Secret.name, Secret.value).where(
        Secret.scope == scope, Secret.name.in_(sorted(set(names)))
    )
    if owners is not None:
        stmt = stmt.where(Secret.owner.in_(sorted(set(owners))))
    return {(owner, name): vault.decrypt_text(token) for owner, name, token in conn.execute(stmt)}


def secret_names(conn: Connection, scope: str, owner: str) -> list[str]:
    return sorted(
        conn.execute(
            select(Secret.name).where(Secret.scope == scope, Secret.owner == owner)
        ).scalars()
    )


def drop_secrets(conn: Connection, scope: str, owner: str, name: str | None = None) -> int:
    stmt = delete(Secret).where(Secret.scope == scope, Secret.owner == owner)
    if name is not None:
        stmt = stmt.where(Secret.name == name)
    return conn.execute(stmt).rowcount or 0


def reencrypt_all(engine: Engine, vault: core_secrets.Vault, progress=None) -> dict[str, int]:
    """Re-encrypt every stored secret under the vault's newest key, in one transaction (all
    or nothing: a failure leaves every token as it was, readable with the old keys)."""
    done = 0
    with engine.begin() as conn:
        rows = conn.execute(select(Secret.id, Secret.value, Secret.key_id)).all()
        total = len(rows)
        for n, (secret_id, token, _key_id) in enumerate(rows, 1):
            new = vault.reencrypt(token)
            conn.execute(
                update(Secret).where(Secret.id == secret_id).values(value=new, key_id=vault.key_id)
            )
            done += 1
            if progress and (n % 500 == 0 or n == total):
                progress(n, total)
    return {"reencrypted": done}


# -- node groups -------------------------------------------------------------------------------


def set_group(
    conn: Connection,
    vault: core_secrets.Vault,
    name: str,
    description: str | None = None,
    ssh_user: str | None = None,
    ssh_port: int | None = None,
    states: list[str] | None = None,
    credential_kind: str | None = None,
    credential: str | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Create or change a node group; a credential is encrypted before it is stored."""
    now = now or utcnow()
    existing = conn.execute(select(NodeGroup).where(NodeGroup.name == name)).first()
    values: dict[str, Any] = {"updated_at": now}
    if description is not None:
        values["description"] = description
    if ssh_user is not None:
        values["ssh_user"] = ssh_user
    if ssh_port is not None:
        values["ssh_port"] = ssh_port
    if states is not None:
        values["states"] = list(states)
    if credential is not None:
        if credential_kind not in CREDENTIAL_KINDS:
            raise ValueError(f"credential_kind: expected one of {', '.join(CREDENTIAL_KINDS)}")
        values["credential_kind"] = credential_kind
    if existing is None:
        row = {
            "name": name,
            "description": "",
            "ssh_user": "root",
            "ssh_port": 22,
            "states": [],
            "credential_kind": None,
            "created_at": now,
            **values,
        }
        conn.execute(NodeGroup.__table__.insert().values(**row))
    else:
        conn.execute(update(NodeGroup).where(NodeGroup.name == name).values(**values))
    if credential is not None:
        put_secret(conn, vault, "group", name, CREDENTIAL_NAME, credential, now)
    return group(conn, name)


def group(conn: Connection, name: str) -> dict[str, Any] | None:
    row = conn.execute(select(NodeGroup).where(NodeGroup.name == name)).first()
    if row is None:
        return None
    return {
        "name": row.name,
        "description": row.description,
        "ssh_user": row.ssh_user,
        "ssh_port": row.ssh_port,
        "states": list(row.states or []),
        "credential": row.credential_kind,  # the kind only, never the credential
        "secrets": secret_names(conn, "group", row.name),
        "updated_at": row.updated_at.isoformat() if row.updated_at else None,
    }


def groups(conn: Connection) -> list[dict[str, Any]]:
    names = conn.execute(select(NodeGroup.name).order_by(NodeGroup.name)).scalars().all()
    return [group(conn, n) for n in names]


def delete_group(conn: Connection, name: str) -> bool:
    """Delete a node group, its secrets, and its name on the nodes that were in it."""
    drop_secrets(conn, "group", name)
    gone = bool(conn.execute(delete(NodeGroup).where(NodeGroup.name == name)).rowcount)
    if gone:
        conn.execute(update(Node).where(Node.node_group == name).values(node_group=None))
    return gone


def group_credential(
    conn: Connection, vault: core_secrets.Vault, name: str
) -> tuple[str | None, str | None]:
    """``(kind, credential)`` of a group, decrypted (for the bootstrap, in memory only)."""
    kind = conn.execute(select(NodeGroup.credential_kind).where(NodeGroup.name == name)).scalar()
    if kind is None:
        return None, None
    return kind, get_secret(conn, vault, "group", name, CREDENTIAL_NAME)
