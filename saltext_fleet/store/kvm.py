"""PiKVM devices in the store: registration with encrypted credentials, polls and status.

A device is registered under a name (a Salt-style id: it is also the name a proxy minion
would have) with the options :func:`saltext_fleet.kvm.options.load_options` takes. The
password and the TOTP secret never enter ``kvm_devices``: they are Fernet tokens in
``secrets`` (scope ``kvm``, owner the device), made by the master's vault;
:func:`device_options` decrypts them when a poller or an action needs them. Every poll is a
``kvm_polls`` row, and the device's row keeps its status (missed polls, offline, hot) for the
next poll's :func:`saltext_fleet.kvm.health.evaluate`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.engine import Connection, Engine

from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.core.errors import FleetError
from saltext_fleet.core.gate import GateError, check_minion_id
from saltext_fleet.kvm import health
from saltext_fleet.kvm.errors import KvmConfigError
from saltext_fleet.kvm.options import KvmOptions, load_options
from saltext_fleet.store import secrets as store_secrets
from saltext_fleet.store.drift.common import aware, dialect_insert
from saltext_fleet.store.models import KvmDevice, KvmPoll, utcnow

log = logging.getLogger(__name__)

#: The options that are secrets: kept in ``secrets``, never in ``kvm_devices.options``.
SECRET_OPTIONS = ("password", "totp_secret")


class KvmStoreError(FleetError, ValueError):
    """A device registration or look-up that cannot be done; the message says why."""


def check_name(name: Any) -> str:
    """A device name: the rules of a minion id (it may become a proxy minion's id)."""
    try:
        return check_minion_id(name, "device name")
    except GateError as exc:
        raise KvmStoreError(str(exc)) from exc


def _plain(options: KvmOptions) -> dict[str, Any]:
    """The options as stored in ``kvm_devices.options``: everything but the secrets."""
    out = {k: v for k, v in dataclasses.asdict(options).items() if k not in SECRET_OPTIONS}
    return {k: v for k, v in out.items() if v is not None}


def add_device(
    conn: Connection,
    vault: core_secrets.Vault,
    name: str,
    options: Mapping[str, Any],
    node: str | None = None,
    now: dt.datetime | None = None,
) -> bool:
    """Register (True) or update (False) the device ``name`` with ``options`` (validated
    whole first: nothing is stored when one is wrong) controlling ``node``."""
    name = check_name(name)
    if node is not None:
        try:
            node = check_minion_id(node, "node")
        except GateError as exc:
            raise KvmStoreError(str(exc)) from exc
    if not isinstance(options, Mapping):
        raise KvmStoreError(f"device {name}: options must be a mapping")
    try:
        parsed = load_options(options)
    except KvmConfigError as exc:
        raise KvmStoreError(f"device {name}: {exc}") from exc
    now = now or utcnow()
    exists = conn.execute(select(KvmDevice.name).where(KvmDevice.name == name)).first()
    if exists is None:
        conn.execute(
            KvmDevice.__table__.insert().values(
                name=name,
                options=_plain(parsed),
                node=node,
                created_at=now,
                updated_at=now,
                status=health.Status().as_dict(),
            )
        )
    else:
        conn.execute(
            update(KvmDevice)
            .where(KvmDevice.name == name)
            .values(options=_plain(parsed), node=node, updated_at=now)
        )
    for option in SECRET_OPTIONS:
        value = getattr(parsed, option)
        if value:
            store_secrets.put_secret(
                conn, vault, store_secrets.KVM_SCOPE, name, option, value, now=now
            )
        else:
            store_secrets.drop_secrets(conn, store_secrets.KVM_SCOPE, name, option)
    return exists is None


def remove_device(conn: Connection, name: str) -> bool:
    """Forget a device, its polls and its credentials; False when there was none."""
    name = check_name(name)
    conn.execute(delete(KvmPoll).where(KvmPoll.device == name))
    gone = conn.execute(delete(KvmDevice).where(KvmDevice.name == name)).rowcount
    store_secrets.drop_secrets(conn, store_secrets.KVM_SCOPE, name)
    return bool(gone)


def _row(row: Any) -> dict[str, Any]:
    status = health.Status.from_dict(row.status)
    return {
        "name": row.name,
        "host": (row.options or {}).get("host"),
        "port": (row.options or {}).get("port", 443),
        "node": row.node,
        "options": dict(row.options or {}),
        "status": status.as_dict(),
        "state": status.state,
        "last_poll": row.last_poll,
        "polled_at": aware(row.polled_at).isoformat() if row.polled_at else None,
    }


def devices(conn: Connection, node: str | None = None) -> list[dict[str, Any]]:
    """Every device (or those controlling ``node``), by name, without credentials."""
    stmt = select(KvmDevice.__table__).order_by(KvmDevice.name)
    if node is not None:
        stmt = stmt.where(KvmDevice.node == node)
    return [_row(row) for row in conn.execute(stmt)]


def device(conn: Connection, name: str) -> dict[str, Any]:
    name = check_name(name)
    row = conn.execute(select(KvmDevice.__table__).where(KvmDevice.name == name)).first()
    if row is None:
        raise KvmStoreError(f"no KVM device named {name!r}")
    return _row(row)


def device_options(
    conn: Connection, vault: core_secrets.Vault, names: Iterable[str] | None = None
) -> dict[str, KvmOptions]:
    """``{name: KvmOptions}`` with the credentials decrypted, of ``names`` (every device if
    None). A device whose stored options no longer load raises :class:`KvmStoreError` when
    it was asked for by name, and is left out with a warning in the log otherwise."""
    stmt = select(KvmDevice.name, KvmDevice.options)
    wanted = None if names is None else {check_name(n) for n in names}
    if wanted is not None:
        stmt = stmt.where(KvmDevice.name.in_(sorted(wanted)))
    rows = conn.execute(stmt).all()
    # one query for every device's credentials (a cycle over 200 devices made 400)
    secrets = store_secrets.get_secrets(
        conn, vault, store_secrets.KVM_SCOPE, SECRET_OPTIONS, None if wanted is None else wanted
    )
    out = {}
    for name, options in rows:
        raw = dict(options or {})
        for option in SECRET_OPTIONS:
            value = secrets.get((name, option))
            if value:
                raw[option] = value
        try:
            out[name] = load_options(raw)
        except KvmConfigError as exc:
            if wanted is not None:
                raise KvmStoreError(f"device {name}: {exc}") from exc
            log.warning(
                "fleet: KVM device %s left out: its stored options do not load: %s", name, exc
            )
    if wanted is not None and (missing := wanted - set(out)):
        raise KvmStoreError(f"no KVM device named {sorted(missing)[0]!r}")
    return out


def record_polls(
    conn: Connection,
    polls: Mapping[str, health.Poll],
    now: dt.datetime | None = None,
    **thresholds: Any,
) -> dict[str, list[str]]:
    """Store one cycle's polls and each device's new status; returns ``{device: [alert]}``
    for the devices whose poll raised alerts (:func:`saltext_fleet.kvm.health.evaluate`,
    ``thresholds`` its keyword arguments). Polls of devices not registered are ignored."""
    now = now or utcnow()
    if not polls:
        return {}
    stmt = select(KvmDevice.name, KvmDevice.status).where(KvmDevice.name.in_(sorted(polls)))
    if conn.dialect.name == "postgresql":
        # two masters' cycles at once: the second evaluates the first's new status (in name
        # order, so they never deadlock), and each alert is raised once
        stmt = stmt.order_by(KvmDevice.name).with_for_update()
    rows = conn.execute(stmt).all()
    alerts: dict[str, list[str]] = {}
    history, changes = [], []
    for name, stored in rows:
        poll = polls[name]
        status, raised = health.evaluate(health.Status.from_dict(stored), poll, **thresholds)
        if raised:
            alerts[name] = raised
        history.append({"device": name, "polled_at": now, **poll.as_dict()})
        changes.append({"b_name": name, "status": status.as_dict(), "last_poll": poll.as_dict()})
    if changes:
        # one executemany (pipelined by psycopg) instead of a round trip per device
        table = KvmDevice.__table__
        conn.execute(
            update(table)
            .where(table.c.name == bindparam("b_name"))
            .values(status=bindparam("status"), last_poll=bindparam("last_poll"), polled_at=now),
            changes,
        )
    if history:
        conn.execute(dialect_insert(conn)(KvmPoll.__table__), history)
    return alerts


def poll_history(
    engine: Engine, name: str, since: dt.datetime | None = None, limit: int = 5760
) -> list[dict[str, Any]]:
    """A device's polls, oldest first (the last ``limit``: a day of 15 s polls by default),
    from ``since`` if given."""
    name = check_name(name)
    stmt = select(KvmPoll.__table__).where(KvmPoll.device == name)
    if since is not None:
        stmt = stmt.where(KvmPoll.polled_at >= since)
    stmt = stmt.order_by(KvmPoll.polled_at.desc(), KvmPoll.id.desc()).limit(max(1, int(limit)))
    with engine.connect() as conn:
        rows = list(conn.execute(stmt))
    return [
        {
            "polled_at": aware(row.polled_at).isoformat(),
            **{f.name: getattr(row, f.name) for f in dataclasses.fields(health.Poll)},
        }
        for row in reversed(rows)
    ]


def state_counts(listed: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How many of the devices :func:`devices` listed are ``online``, ``unreachable``,
    ``offline`` and ``hot`` (the KVM page's counts); ``total`` all of them."""
    out = {"total": 0, "online": 0, "unreachable": 0, "offline": 0, "hot": 0}
    for found in listed:
        out["total"] += 1
        out[found["state"]] += 1
        out["hot"] += int(found["status"]["hot"])
    return out
