"""``salt-run fleet.bootstrap``: from a machine that only has SSH to an accepted minion that
has reported its inventory.

The steps (each one a progress event, and the ``step`` of the node's ``bootstraps`` row):

1. claim the node: one running bootstrap per minion id (a unique column; a second bootstrap
   of a node that is still bootstrapping is refused);
2. generate the minion's key pair here, and create its enrolment: a one-time token *and* the
   expected fingerprint of that key, so the gate accepts exactly this key and nothing else
   (a key already held for the id is deleted first, as with ``fleet.enrol``);
3. build (once) the wheelhouse of this master's own Salt and saltext-fleet;
4. salt-ssh into the machine with the node group's credential (decrypted in memory only) and
   apply the ``fleet_bootstrap`` state: virtualenv, install, configuration, key pair, start
   (:func:`saltext_fleet.master.bootstrap.apply`);
5. wait until the gate has accepted the key, and the store holds the node's first inventory.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import salt.crypt
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from saltext_fleet import config
from saltext_fleet.core import gate as core_gate
from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.core.errors import FleetError
from saltext_fleet.master import bootstrap as ssh_bootstrap
from saltext_fleet.master import keys as master_keys
from saltext_fleet.master import wheelhouse
from saltext_fleet.store import audit as store_audit
from saltext_fleet.store import secrets as store_secrets
from saltext_fleet.store.models import Bootstrap, Node, utcnow

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
SERVICES = ("systemd", "launchd", "daemon")
#: Steps reported, in order (their number and the total go with each progress event).
STEPS = (
    "claim",
    "keys",
    "enrol",
    "wheelhouse",
    "ssh",
    "accepted",
    "inventory",
)


class BootstrapError(FleetError, ValueError):
    """A bootstrap that cannot start or did not finish; the message says why."""


def _check_host(host: Any) -> str:
    if not isinstance(host, str) or not host or len(host) > 255:
        raise BootstrapError(f"host: {host!r} is not a host name or address")
    if host.startswith("-") or any(c.isspace() for c in host) or "/" in host:
        raise BootstrapError(f"host: {host!r} is not a host name or address")
    return host


def _claim(engine, minion_id: str, host: str, port: int, user: str, group: str, stale: float):
    """Insert the running row; refuse when one runs (a row older than ``stale`` seconds is a
    bootstrap whose runner died: it is marked failed and the claim goes on)."""
    now = utcnow()
    with engine.begin() as conn:
        running = conn.execute(
            select(Bootstrap.id, Bootstrap.started_at, Bootstrap.step).where(
                Bootstrap.running_id == minion_id
            )
        ).first()
        if running is not None:
            started = running.started_at
            if started.tzinfo is None:
                started = started.replace(tzinfo=dt.timezone.utc)
            if (now - started).total_seconds() < stale:
                raise BootstrapError(
                    f"{minion_id} is still bootstrapping (since {started.isoformat()}, "
                    f"step {running.step}); wait for it to end"
                )
            conn.execute(
                update(Bootstrap)
                .where(Bootstrap.id == running.id)
                .values(state="failed", running_id=None, finished_at=now, error="abandoned")
            )
    try:
        with engine.begin() as conn:
            return conn.execute(
                Bootstrap.__table__.insert()
                .values(
                    minion_id=minion_id,
                    host=host,
                    port=port,
                    ssh_user=user,
                    node_group=group,
                    state="running",
                    step="claim",
                    steps=[],
                    running_id=minion_id,
                    started_at=now,
                )
                .returning(Bootstrap.id)
            ).scalar()
    except IntegrityError as exc:
        raise BootstrapError(f"{minion_id} is still bootstrapping; wait for it to end") from exc


def _step(engine, row_id: int, step: str, note: str | None = None) -> None:
    with engine.begin() as conn:
        steps = conn.execute(select(Bootstrap.steps).where(Bootstrap.id == row_id)).scalar() or []
        steps = [*steps, {"step": step, "at": utcnow().isoformat(), "note": note}]
        conn.execute(update(Bootstrap).where(Bootstrap.id == row_id).values(step=step, steps=steps))


def _finish(engine, row_id: int, ok: bool, error: str | None = None) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(Bootstrap)
            .where(Bootstrap.id == row_id)
            .values(
                state="done" if ok else "failed",
                running_id=None,
                finished_at=utcnow(),
                error=error,
            )
        )


def _key_pair() -> tuple[str, str]:
    """A minion key pair as Salt makes them (``salt.crypt.gen_keys``): PEM private key, PEM
    public key."""
    pem, pub = salt.crypt.gen_keys(2048)
    return (
        pem.decode() if isinstance(pem, bytes) else pem,
        pub.decode() if isinstance(pub, bytes) else pub,
    )


def run(
    opts: dict,
    engine,
    *,
    host: Any,
    minion_id: Any,
    group: Any,
    actor: str,
    port: Any = None,
    user: Any = None,
    python: str = "python3",
    prefix: str = "/opt/saltext-fleet",
    service: str = "systemd",
    timeout: float = 900,
    wait: float = 300,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Bootstrap one machine (see the module docstring). Raises :class:`BootstrapError`."""
    report = progress or (lambda *_: None)
    try:
        minion_id = core_gate.check_minion_id(minion_id, "id")
        group = core_gate.check_group(group, "group")
    except core_gate.GateError as exc:
        raise BootstrapError(str(exc)) from exc
    host = _check_host(host)
    if service not in SERVICES:
        raise BootstrapError(f"service: {service!r} is not one of {', '.join(SERVICES)}")
    cfg = config.load(opts)
    try:
        vault = core_secrets.Vault.open(cfg.key_file)
    except core_secrets.SecretsError as exc:
        raise BootstrapError(f"fleet:key_file: {exc}") from exc
    with engine.connect() as conn:
        found = store_secrets.group(conn, group)
        if found is None:
            raise BootstrapError(f"no node group named {group!r} (see salt-run fleet.group_set)")
        kind, credential = store_secrets.group_credential(conn, vault, group)
    if credential is None:
        raise BootstrapError(
            f"node group {group!r} has no SSH credential (salt-run fleet.group_set {group} "
            "password=... or private_key_file=...)"
        )
    port = int(port) if port is not None else int(found["ssh_port"])
    if not 1 <= port <= 65535:
        raise BootstrapError(f"port: {port} is not a TCP port")
    user = str(user) if user is not None else found["ssh_user"]
    total = len(STEPS)

    def step(name: str, message: str) -> None:
        number = STEPS.index(name) + 1
        report(f"{minion_id}: {message}", number, total)
        _step(engine, row_id, name, message)

    report(f"{minion_id}: claiming the bootstrap", 1, total)
    row_id = _claim(engine, minion_id, host, port, user, group, stale=timeout + wait + 60)
    started = time.monotonic()
    store_audit.record(
        engine,
        actor,
        "bootstrap.start",
        minion_id,
        {"host": host, "port": port, "user": user, "group": group},
    )
    try:
        step("keys", "generating the minion's key pair")
        pem, pub = _key_pair()
        finger = core_gate.fingerprint(pub, opts.get("hash_type") or "sha256")
        step("enrol", "creating its enrolment (token and expected key)")
        made = master_keys.enrol(
            opts, engine, minion_id, actor, ttl=int(timeout + wait), group=group, fingerprint=finger
        )
        step("wheelhouse", "building the wheelhouse (once per Salt version)")
        house = wheelhouse.build(os.path.join(opts["cachedir"], "fleet", "wheelhouse"))
        step("ssh", f"installing the minion over SSH ({user}@{host}:{port})")
        result = ssh_bootstrap.apply(
            opts,
            host=host,
            port=port,
            user=user,
            credential_kind=kind,
            credential=credential,
            minion_id=minion_id,
            minion_config=made["minion_config"],
            minion_pem=pem,
            minion_pub=pub,
            python=python,
            prefix=prefix,
            service=service,
            wheelhouse_dir=house["dir"],
            progress=lambda text: report(f"{minion_id}: {text}", STEPS.index("ssh") + 1, total),
            timeout=timeout,
        )
        del pem, credential
        if not result["ok"]:
            raise BootstrapError(f"{minion_id}: {result['error']}")
        step("accepted", "waiting for its key to be accepted")
        deadline = time.monotonic() + wait
        key = master_keys.salt_key(opts)
        while master_keys.salt_state(key, minion_id) != "accepted":
            if time.monotonic() > deadline:
                raise BootstrapError(
                    f"{minion_id}: the minion runs but its key was not accepted within "
                    f"{wait:.0f} s (see salt-run fleet.keys and the master log)"
                )
            time.sleep(1)
        step("inventory", "waiting for its first inventory")
        while not _has_inventory(engine, minion_id):
            if time.monotonic() > deadline:
                raise BootstrapError(
                    f"{minion_id}: accepted, but no inventory arrived within {wait:.0f} s"
                )
            time.sleep(1)
    except BaseException as exc:
        error = str(exc) if isinstance(exc, BootstrapError) else f"{type(exc).__name__}: {exc}"
        _finish(engine, row_id, False, error)
        store_audit.record(engine, actor, "bootstrap.fail", minion_id, {"error": error[:1000]})
        report(f"{minion_id}: failed: {error}", total, total)
        if isinstance(exc, BootstrapError):
            raise
        raise BootstrapError(f"{minion_id}: {error}") from exc
    seconds = round(time.monotonic() - started, 1)
    _finish(engine, row_id, True)
    store_audit.record(
        engine, actor, "bootstrap.done", minion_id, {"seconds": seconds, "fingerprint": finger}
    )
    report(f"{minion_id}: done in {seconds} s", total, total)
    return {
        "id": minion_id,
        "ok": True,
        "host": host,
        "group": group,
        "fingerprint": finger,
        "seconds": seconds,
        "steps": [s["name"] for s in result["steps"]],
    }


def _has_inventory(engine, minion_id: str) -> bool:
    with engine.connect() as conn:
        return (
            conn.execute(select(Node.inventory_digest).where(Node.minion_id == minion_id)).scalar()
            is not None
        )


def attempts(engine, minion_id: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    stmt = select(Bootstrap).order_by(Bootstrap.id.desc()).limit(limit)
    if minion_id is not None:
        stmt = stmt.where(Bootstrap.minion_id == minion_id)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return [
        {
            "id": row.minion_id,
            "attempt": row.id,
            "host": row.host,
            "port": row.port,
            "user": row.ssh_user,
            "group": row.node_group,
            "state": row.state,
            "step": row.step,
            "steps": row.steps,
            "error": row.error,
            "started_at": row.started_at.isoformat() if row.started_at else None,
            "finished_at": row.finished_at.isoformat() if row.finished_at else None,
        }
        for row in rows
    ]
