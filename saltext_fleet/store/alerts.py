"""Alerts in the store: written first, then delivered, each attempt recorded.

:func:`record_alert` writes an accepted alert, its condition's update and its deliveries (one
per matching route) in one transaction; the event's signature makes its ``event_key``, so a
replayed event is one row, and so is one crossing fired by two masters (each signs its own
events: the same condition again from another master within :data:`SAME_CROSSING_S` seconds
of the condition's last alert is that crossing). The decisions (duplicate window, flapping,
acknowledgement) are :mod:`saltext_fleet.core.alerts`'; this module applies them to the condition's row, which it
locks (``SELECT .. FOR UPDATE`` on PostgreSQL) so two masters recording alerts of the same
condition take turns.

Delivery: :func:`claim_due` claims due deliveries by a conditional ``UPDATE`` (``claimed_by``
= the master, ``claimed_until`` a lease), so with several masters exactly one sends each; only
the oldest pending delivery of each route is due (a route's alerts go out in alert order, a
later one waits while an earlier one is retried). :func:`finish` records the attempt and
marks the delivery delivered, failed (gave up, or refused for good) or due again after the
back-off.

Routes that admins make in the web UI are kept in ``alert_routes``; their secrets, like the
config routes', are in the vault (``secrets``, scope ``alert``, owner the route's key,
``config:<name>`` or ``ui:<name>``).

What people read (the alert log, the delivery log, the pages) is
:mod:`saltext_fleet.store.alert_views`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from saltext_fleet.core import alerts as core
from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.core.errors import FleetError
from saltext_fleet.store import secrets as store_secrets
from saltext_fleet.store.drift.common import aware, dialect_insert
from saltext_fleet.store.models import (
    Alert,
    AlertAttempt,
    AlertCondition,
    AlertDelivery,
    AlertRoute,
    Node,
    iso,
    utcnow,
)

#: Delivery statuses.
STATUSES = ("pending", "delivered", "failed", "suppressed")
#: The vault scope of the routes' secrets.
SCOPE = store_secrets.ALERT_SCOPE
#: Seconds a claim holds a delivery; a master that died while sending loses it after that.
LEASE_S = 60.0
MAX_LIMIT = 1000


class AlertStoreError(FleetError, ValueError):
    """A request about alerts that cannot be served (no such route, condition...)."""


def check_limit(limit: Any) -> int:
    """``limit`` as a whole number from 1 to :data:`MAX_LIMIT`, else :class:`AlertStoreError`."""
    try:
        value = int(limit)
    except (TypeError, ValueError):
        raise AlertStoreError(f"limit: {limit!r} is not a whole number") from None
    if not 1 <= value <= MAX_LIMIT:
        raise AlertStoreError(f"limit: {value} is not 1 to {MAX_LIMIT}")
    return value


def _locked(conn: Connection, stmt):
    return stmt.with_for_update() if conn.dialect.name == "postgresql" else stmt


# -- recording -------------------------------------------------------------------------------


def _condition_row(conn: Connection, kind: str, node: str, subject: str, alert: Mapping, now):
    """The condition's row, locked; ``(row, first)`` where ``first`` says it was just made."""
    key = and_(
        AlertCondition.kind == kind, AlertCondition.node == node, AlertCondition.subject == subject
    )
    row = conn.execute(_locked(conn, select(AlertCondition.__table__).where(key))).first()
    if row is not None:
        return row, False
    made = conn.execute(
        dialect_insert(conn)(AlertCondition.__table__)
        .values(
            kind=kind,
            node=node,
            subject=subject,
            state=alert["state"],
            condition=alert["condition"],
            severity=alert["severity"],
            changed_at=now,
            changes=[],
            last_sent={},
        )
        .on_conflict_do_nothing(index_elements=["kind", "node", "subject"])
    ).rowcount
    row = conn.execute(_locked(conn, select(AlertCondition.__table__).where(key))).first()
    return row, made == 1


def _group(conn: Connection, node: str | None) -> str | None:
    if not node:
        return None
    return conn.execute(select(Node.node_group).where(Node.minion_id == node)).scalar()


#: Seconds within which an alert of the condition a condition already is in, raised by
#: another master, is the same crossing heard twice (:func:`record_alert`).
SAME_CROSSING_S = 120.0


def record_alert(
    engine: Engine,
    alert: Mapping[str, Any],
    routes: Sequence[core.Route],
    policy: core.Policy,
    event_key: str,
    master: str | None = None,
    now: dt.datetime | None = None,
    same_crossing_s: float | None = None,
) -> dict[str, Any]:
    """Record ``alert`` (:func:`saltext_fleet.core.alerts.normalise`'s result), update its
    condition and make a delivery for each route of ``routes`` that matches, in one
    transaction. Returns ``{"id", "replayed", "suppressed", "flapping", "deliveries":
    [{"id", "route", "destination", "status"}]}``; a second event with the same
    ``event_key`` records nothing (``replayed`` True, the first one's id).

    With ``same_crossing_s`` (the alert worker's events), an alert that says what its
    condition already says (``state`` and ``condition``), raised by *another* master within
    that many seconds of the condition's last alert, is the same crossing fired by two
    masters (each signs its own events, so their keys differ): recorded once, the second
    answered as ``replayed`` with ``same_crossing`` True. New vulnerability findings
    (``cve``, ``open``) are never merged: each event names findings of its own."""
    now = now or utcnow()
    try:
        with engine.begin() as conn:
            found = conn.execute(select(Alert.id).where(Alert.event_key == event_key)).scalar()
            if found is not None:
                return _replayed(found)
            return _record(conn, alert, routes, policy, event_key, master, now, same_crossing_s)
    except IntegrityError:
        with engine.connect() as conn:
            found = conn.execute(select(Alert.id).where(Alert.event_key == event_key)).scalar()
        if found is None:
            raise
        return _replayed(found)


def _replayed(alert_id: int) -> dict[str, Any]:
    return {
        "id": alert_id,
        "replayed": True,
        "suppressed": None,
        "flapping": False,
        "deliveries": [],
    }


def _same_crossing(conn, row, alert, master, window: float | None) -> int | None:
    """The id of the condition's last alert when ``alert`` is that crossing again, fired by
    another master (see :func:`record_alert`); None otherwise."""
    if window is None or row.last_alert_id is None or alert["kind"] in ("test",):
        return None
    if alert["kind"] == "cve" and alert["state"] == "firing":
        return None
    if (row.state, row.condition) != (alert["state"], alert["condition"]):
        return None
    last = conn.execute(
        select(Alert.id, Alert.master, Alert.raised_at, Alert.condition).where(
            Alert.id == row.last_alert_id
        )
    ).first()
    if last is None or last.master == master or last.condition == core.FLAPPING:
        return None
    raised = alert.get("raised_at")
    if not isinstance(raised, dt.datetime) or last.raised_at is None:
        return None
    gap = abs((aware(raised) - aware(last.raised_at)).total_seconds())
    return last.id if gap <= window else None


def _record(conn, alert, routes, policy, event_key, master, now, same_crossing_s=None):
    kind, subject = alert["kind"], alert.get("subject") or ""
    node = alert.get("node")
    row, first = _condition_row(conn, kind, node or "", subject, alert, now)
    same = None if first else _same_crossing(conn, row, alert, master, same_crossing_s)
    if same is not None:
        return {**_replayed(same), "same_crossing": True}
    changed = not first and row.condition != alert["condition"]
    suppressed = None
    ack = {} if first else None
    if not first:
        verdict = core.ack_decision(row.acked_condition, alert["condition"])
        if verdict == "suppress":
            suppressed = "acknowledged"
        elif verdict == "clear":
            ack = {"acked_by": None, "acked_at": None, "acked_condition": None, "ack_comment": None}
    flap = core.flap_decision(
        [] if first else (row.changes or []),
        changed,
        False if first else row.flapping_since is not None,
        now,
        policy.flap_changes,
        policy.flap_minutes,
    )
    sent = dict(alert)
    if suppressed is None and flap.verdict == "start":
        sent = core.flapping_alert(alert, flap.changes, policy.flap_minutes)
    elif suppressed is None and flap.verdict == "quiet":
        suppressed = "flapping"
    group = _group(conn, node)
    matching = [r for r in routes if r.matches(sent, group)]
    last_sent = dict({} if first else (row.last_sent or {}))
    plans = []
    for route in matching:
        if suppressed is not None:
            plans.append((route, "suppressed", suppressed))
        elif core.is_duplicate(
            last_sent.get(route.key), sent["condition"], now, policy.dedup_minutes
        ):
            plans.append((route, "suppressed", "duplicate"))
        else:
            plans.append((route, "pending", None))
            last_sent[route.key] = {"at": now.isoformat(), "condition": sent["condition"]}
    if suppressed is None and plans and all(status != "pending" for _, status, _ in plans):
        suppressed = "duplicate"
    alert_id = conn.execute(
        insert(Alert)
        .values(
            event_key=event_key,
            tag=alert.get("tag") or f"{core.TAG_PREFIX}{kind}",
            kind=kind,
            node=node,
            subject=subject,
            state=sent["state"],
            condition=sent["condition"],
            severity=sent["severity"],
            summary=sent["summary"],
            data=sent.get("data") or {},
            raised_at=alert.get("raised_at") or now,
            received_at=now,
            master=master,
            suppressed=suppressed,
        )
        .returning(Alert.id)
    ).scalar_one()
    deliveries = []
    for route, status, reason in plans:
        delivery_id = conn.execute(
            insert(AlertDelivery)
            .values(
                alert_id=alert_id,
                route=route.key,
                destination=route.destination,
                status=status,
                attempts=0,
                next_at=now if status == "pending" else None,
                created_at=now,
                last_error=reason,
            )
            .returning(AlertDelivery.id)
        ).scalar_one()
        deliveries.append(
            {
                "id": delivery_id,
                "route": route.key,
                "destination": route.destination,
                "status": status,
            }
        )
    values: dict[str, Any] = {
        "state": alert["state"],
        "condition": alert["condition"],
        "severity": alert["severity"],
        "changes": list(flap.changes),
        "last_alert_id": alert_id,
        "last_sent": last_sent,
    }
    if changed:
        values["changed_at"] = now
    if flap.verdict == "start":
        values["flapping_since"] = now
    elif not flap.flapping:
        values["flapping_since"] = None
    if ack:
        values.update(ack)
    conn.execute(
        update(AlertCondition)
        .where(
            AlertCondition.kind == kind,
            AlertCondition.node == (node or ""),
            AlertCondition.subject == subject,
        )
        .values(**values)
    )
    return {
        "id": alert_id,
        "replayed": False,
        "suppressed": suppressed,
        "flapping": sent["condition"] == core.FLAPPING,
        "deliveries": deliveries,
    }


def settle(
    engine: Engine,
    routes: Sequence[core.Route],
    policy: core.Policy,
    master: str | None = None,
    now: dt.datetime | None = None,
) -> list[dict[str, Any]]:
    """Conditions that were flapping and have not changed for ``flap_minutes``: record an
    alert of each one's current condition (routed as usual: a drift that ended ``below``
    resolves the incident). Returns :func:`record_alert`'s answers."""
    now = now or utcnow()
    with engine.connect() as conn:
        rows = conn.execute(
            select(AlertCondition.__table__).where(AlertCondition.flapping_since.is_not(None))
        ).all()
    out = []
    for row in rows:
        if not core.settled(row.changes or [], now, policy.flap_minutes):
            continue
        with engine.begin() as conn:
            last = None
            if row.last_alert_id is not None:
                last = conn.execute(
                    select(Alert.__table__).where(Alert.id == row.last_alert_id)
                ).first()
            # its own condition again (unchanged: the flapping verdict clears, routes get it
            # as it is not a duplicate of the grouped alert)
            alert = {
                "kind": row.kind,
                "node": row.node or None,
                "subject": row.subject,
                "state": row.state,
                "condition": row.condition,
                "severity": row.severity,
                "summary": (
                    f"{row.node or '-'}: {row.kind} {row.subject} settled after flapping: "
                    f"now {row.condition}"
                ).replace("  ", " "),
                "raised_at": now,
                "tag": f"{core.TAG_PREFIX}{row.kind}",
                "data": {"settled": True, **dict(last.data if last is not None else {})},
            }
            key = hashlib.sha256(
                f"settle\n{row.kind}\n{row.node}\n{row.subject}\n{iso(row.flapping_since)}".encode()
            ).hexdigest()
            if conn.execute(select(Alert.id).where(Alert.event_key == key)).scalar() is not None:
                continue
        out.append(record_alert(engine, alert, routes, policy, key, master, now))
    return out


# -- delivering ------------------------------------------------------------------------------


def _delivery_row(row, ui_url: str | None = None) -> dict[str, Any]:
    alert = core.record(row._mapping, ui_url)
    alert["id"] = row.alert_id
    alert["delivery_id"] = row.id
    return {
        "id": row.id,
        "alert_id": row.alert_id,
        "route": row.route,
        "destination": row.destination,
        "attempts": row.attempts,
        "created_at": iso(row.created_at),
        "alert": alert,
    }


def _due_heads(now: dt.datetime):
    """The oldest pending delivery of each route, when it is due and nobody holds it."""
    d2 = AlertDelivery.__table__.alias("d2")
    oldest = (
        select(func.min(d2.c.alert_id))
        .where(d2.c.status == "pending", d2.c.route == AlertDelivery.route)
        .scalar_subquery()
    )
    return and_(
        AlertDelivery.status == "pending",
        AlertDelivery.alert_id == oldest,
        AlertDelivery.next_at <= now,
        or_(AlertDelivery.claimed_until.is_(None), AlertDelivery.claimed_until <= now),
    )


def claim_due(
    engine: Engine,
    master: str,
    now: dt.datetime | None = None,
    lease_s: float = LEASE_S,
    limit: int = 32,
    ui_url: str | None = None,
    per_route: int = 1,
) -> list[dict[str, Any]]:
    """Claim the due deliveries for ``master`` for ``lease_s`` seconds: the oldest pending
    one of each route (when it is due and nobody holds it) and, with ``per_route`` above 1,
    the due ones right behind it, up to ``per_route`` of the route, each by a conditional
    ``UPDATE`` that only one master can win. Returns at most ``limit`` (plus the followers)
    ``[{"id", "alert_id", "route", "destination", "attempts", "created_at", "alert": record}]``
    (the record carries ``delivery_id``), each route's in alert order: send them in that
    order, and :func:`release` what is left when one fails."""
    now = now or utcnow()
    until = now + dt.timedelta(seconds=lease_s)
    columns = [
        AlertDelivery.id,
        AlertDelivery.alert_id,
        AlertDelivery.route,
        AlertDelivery.destination,
        AlertDelivery.attempts,
        AlertDelivery.created_at,
        AlertDelivery.next_at,
        AlertDelivery.claimed_until,
        Alert.kind,
        Alert.node,
        Alert.subject,
        Alert.state,
        Alert.condition,
        Alert.severity,
        Alert.summary,
        Alert.raised_at,
        Alert.tag,
        Alert.master,
        Alert.data,
    ]
    free = or_(AlertDelivery.claimed_until.is_(None), AlertDelivery.claimed_until <= now)

    def take(conn, delivery_id) -> bool:
        return (
            conn.execute(
                update(AlertDelivery)
                .where(AlertDelivery.id == delivery_id, AlertDelivery.status == "pending", free)
                .values(claimed_by=master[:255], claimed_until=until)
            ).rowcount
            == 1
        )

    with engine.begin() as conn:
        rows = conn.execute(
            select(*columns)
            .join(Alert, Alert.id == AlertDelivery.alert_id)
            .where(_due_heads(now))
            .order_by(AlertDelivery.alert_id, AlertDelivery.id)
            .limit(limit)
        ).all()
        claimed = []
        for row in rows:
            if not take(conn, row.id):
                continue
            claimed.append(_delivery_row(row, ui_url))
            if per_route <= 1:
                continue
            followers = conn.execute(
                select(*columns)
                .join(Alert, Alert.id == AlertDelivery.alert_id)
                .where(
                    AlertDelivery.status == "pending",
                    AlertDelivery.route == row.route,
                    AlertDelivery.alert_id > row.alert_id,
                )
                .order_by(AlertDelivery.alert_id, AlertDelivery.id)
                .limit(per_route - 1)
            ).all()
            for follower in followers:
                due = follower.next_at is not None and aware(follower.next_at) <= now
                held = follower.claimed_until is not None and aware(follower.claimed_until) > now
                if not due or held or not take(conn, follower.id):
                    break  # only an unbroken run behind the head keeps the order
                claimed.append(_delivery_row(follower, ui_url))
    return claimed


def release(engine: Engine, ids: Iterable[int], master: str) -> int:
    """Give back claims of ``master`` not sent (the ones behind a delivery that failed)."""
    ids = list(ids)
    if not ids:
        return 0
    with engine.begin() as conn:
        return (
            conn.execute(
                update(AlertDelivery)
                .where(
                    AlertDelivery.id.in_(ids),
                    AlertDelivery.claimed_by == master[:255],
                    AlertDelivery.status == "pending",
                )
                .values(claimed_by=None, claimed_until=None)
            ).rowcount
            or 0
        )


def next_due(engine: Engine) -> dt.datetime | None:
    """When the next pending delivery is due (None: nothing pending)."""
    with engine.connect() as conn:
        at = conn.execute(
            select(func.min(AlertDelivery.next_at)).where(AlertDelivery.status == "pending")
        ).scalar()
    return aware(at) if at is not None else None


def finish(
    engine: Engine,
    delivery_id: int,
    master: str,
    outcome: Any,
    policy: core.Policy,
    now: dt.datetime | None = None,
    rand: random.Random | None = None,
    retry: bool = True,
) -> dict[str, Any]:
    """Record one attempt of ``delivery_id`` (``outcome``: the sender's ``Outcome``, or a
    mapping with ``ok``, ``status_code``, ``latency_ms``, ``error``, ``retry``,
    ``retry_after_s``) and mark the
    delivery ``delivered``, ``failed`` (not to be retried, or retried for
    ``give_up_after_h``) or ``pending`` again after the back-off. Returns ``{"id",
    "status", "attempts", "next_at"}``; ``status`` is ``lost`` when ``master`` no longer held
    the claim (its lease ran out and another master took it: the attempt is recorded all the
    same). ``retry`` False: a failure is final (a test send)."""
    now = now or utcnow()
    get = outcome.get if isinstance(outcome, Mapping) else lambda k: getattr(outcome, k, None)
    ok = bool(get("ok"))
    error = get("error")
    error = None if ok else (str(error) if error else "failed")[:2000]
    with engine.begin() as conn:
        conn.execute(
            insert(AlertAttempt).values(
                delivery_id=delivery_id,
                at=now,
                ok=ok,
                status_code=get("status_code"),
                latency_ms=get("latency_ms"),
                error=error,
                master=master[:255],
            )
        )
        row = conn.execute(
            _locked(
                conn,
                select(
                    AlertDelivery.attempts,
                    AlertDelivery.created_at,
                    AlertDelivery.claimed_by,
                    AlertDelivery.status,
                ).where(AlertDelivery.id == delivery_id),
            )
        ).first()
        if row is None:
            raise AlertStoreError(f"no alert delivery {delivery_id}")
        attempts = (row.attempts or 0) + 1
        if row.status != "pending" or row.claimed_by != master[:255]:
            conn.execute(
                update(AlertDelivery)
                .where(AlertDelivery.id == delivery_id)
                .values(attempts=AlertDelivery.attempts + 1)
            )
            return {"id": delivery_id, "status": "lost", "attempts": attempts, "next_at": None}
        values: dict[str, Any] = {
            "attempts": attempts,
            "claimed_by": None,
            "claimed_until": None,
            "last_error": error,
        }
        next_at = None
        if ok:
            values.update(status="delivered", delivered_at=now, next_at=None)
        elif not (retry and get("retry")) or core.gives_up(
            aware(row.created_at), now, policy.give_up_after_h
        ):
            values.update(status="failed", next_at=None)
        else:
            delay = core.retry_delay(attempts, policy.retry_first_s, policy.retry_max_s, rand)
            asked = get("retry_after_s")  # the receiver's Retry-After, within the cap
            if isinstance(asked, (int, float)) and asked > delay:
                delay = min(float(asked), policy.retry_max_s)
            next_at = now + dt.timedelta(seconds=delay)
            values.update(status="pending", next_at=next_at)
        conn.execute(update(AlertDelivery).where(AlertDelivery.id == delivery_id).values(**values))
    return {
        "id": delivery_id,
        "status": values["status"],
        "attempts": attempts,
        "next_at": iso(next_at),
    }


def record_test(
    engine: Engine,
    route: core.Route,
    master: str | None = None,
    actor: str | None = None,
    now: dt.datetime | None = None,
    ui_url: str | None = None,
    lease_s: float = LEASE_S,
) -> dict[str, Any]:
    """A test alert (kind ``test``) to ``route`` alone, recorded with its delivery already
    claimed by ``master``: the caller sends it now and :func:`finish`-es it. Returns the
    delivery as :func:`claim_due` does."""
    now = now or utcnow()
    master = (master or "?")[:255]
    alert = core.normalise(
        f"{core.TAG_PREFIX}test", {"route": route.key, "by": actor or "?"}, now=now
    )
    key = hashlib.sha256(f"test\n{route.key}\n{now.isoformat()}\n{random.random()}".encode())
    with engine.begin() as conn:
        alert_id = conn.execute(
            insert(Alert)
            .values(
                event_key=key.hexdigest(),
                tag=alert["tag"],
                kind="test",
                node=None,
                subject=alert["subject"],
                state=alert["state"],
                condition=alert["condition"],
                severity=alert["severity"],
                summary=alert["summary"],
                data=alert["data"],
                raised_at=now,
                received_at=now,
                master=master,
            )
            .returning(Alert.id)
        ).scalar_one()
        delivery_id = conn.execute(
            insert(AlertDelivery)
            .values(
                alert_id=alert_id,
                route=route.key,
                destination=route.destination,
                status="pending",
                attempts=0,
                next_at=now,
                created_at=now,
                claimed_by=master,
                claimed_until=now + dt.timedelta(seconds=lease_s),
            )
            .returning(AlertDelivery.id)
        ).scalar_one()
    record = core.record({**alert, "id": alert_id, "master": master}, ui_url)
    record["delivery_id"] = delivery_id
    return {
        "id": delivery_id,
        "alert_id": alert_id,
        "route": route.key,
        "destination": route.destination,
        "attempts": 0,
        "created_at": now.isoformat(),
        "alert": record,
    }


# -- acknowledgements ------------------------------------------------------------------------


def _condition_dict(row) -> dict[str, Any]:
    return {
        "kind": row.kind,
        "node": row.node or None,
        "subject": row.subject,
        "state": row.state,
        "condition": row.condition,
        "severity": row.severity,
        "changed_at": iso(row.changed_at),
        "flapping": row.flapping_since is not None,
        "flapping_since": iso(row.flapping_since),
        "last_alert_id": row.last_alert_id,
        "acked_by": row.acked_by,
        "acked_at": iso(row.acked_at),
        "acked_condition": row.acked_condition,
        "ack_comment": row.ack_comment,
    }


def _condition_key(kind: str, node: str | None, subject: str | None):
    return and_(
        AlertCondition.kind == kind,
        AlertCondition.node == (node or ""),
        AlertCondition.subject == (subject or ""),
    )


def ack(
    engine: Engine,
    kind: str,
    node: str | None,
    subject: str = "",
    actor: str = "?",
    comment: str = "",
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Acknowledge the current condition of (``kind``, ``node``, ``subject``): its alerts are
    recorded but not sent while the condition stays what it is now. Returns the condition
    (:func:`conditions`' shape); :class:`AlertStoreError` when there is none."""
    now = now or utcnow()
    with engine.begin() as conn:
        row = conn.execute(
            _locked(
                conn, select(AlertCondition.__table__).where(_condition_key(kind, node, subject))
            )
        ).first()
        if row is None:
            raise AlertStoreError(
                f"no alert condition kind={kind!r} node={node!r} subject={subject!r} "
                "(see salt-run fleet.alerts)"
            )
        conn.execute(
            update(AlertCondition)
            .where(_condition_key(kind, node, subject))
            .values(
                acked_by=str(actor)[:255],
                acked_at=now,
                acked_condition=row.condition,
                ack_comment=str(comment or "")[:2000],
            )
        )
        row = conn.execute(
            select(AlertCondition.__table__).where(_condition_key(kind, node, subject))
        ).one()
    return _condition_dict(row)


def unack(engine: Engine, kind: str, node: str | None, subject: str = "") -> bool:
    """Withdraw an acknowledgement; False when there was none."""
    with engine.begin() as conn:
        return bool(
            conn.execute(
                update(AlertCondition)
                .where(_condition_key(kind, node, subject))
                .where(AlertCondition.acked_condition.is_not(None))
                .values(acked_by=None, acked_at=None, acked_condition=None, ack_comment=None)
            ).rowcount
        )


def conditions(
    conn: Connection,
    kind: str | None = None,
    node: str | None = None,
    state: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Conditions, most recently changed first: ``[{"kind", "node", "subject", "state",
    "condition", "severity", "changed_at", "flapping", "flapping_since", "last_alert_id",
    "acked_by", "acked_at", "acked_condition", "ack_comment"}]``."""
    stmt = select(AlertCondition.__table__)
    if kind:
        stmt = stmt.where(AlertCondition.kind == kind)
    if node:
        stmt = stmt.where(AlertCondition.node == node)
    if state:
        stmt = stmt.where(AlertCondition.state == state)
    stmt = stmt.order_by(AlertCondition.changed_at.desc()).limit(check_limit(limit))
    return [_condition_dict(row) for row in conn.execute(stmt)]


def firing_nodes(conn: Connection, kind: str) -> list[str]:
    """Nodes whose (``kind``, node, "") condition is firing."""
    return sorted(
        conn.execute(
            select(AlertCondition.node).where(
                AlertCondition.kind == kind,
                AlertCondition.subject == "",
                AlertCondition.state == "firing",
            )
        ).scalars()
    )


# -- listing ---------------------------------------------------------------------------------


def counts(conn: Connection) -> dict[str, int]:
    """``{status: deliveries}`` for every status."""
    found = dict(
        conn.execute(
            select(AlertDelivery.status, func.count()).group_by(AlertDelivery.status)
        ).all()
    )
    return {status: int(found.get(status, 0)) for status in STATUSES}


# -- routes made in the web UI ---------------------------------------------------------------


def _route_of_row(row) -> core.Route:
    return core.route_of(
        row.name, "ui", row.destination, row.match or {}, row.target or {}, bool(row.enabled)
    )


def ui_routes(conn: Connection, enabled_only: bool = False) -> list[core.Route]:
    """The web UI's routes, by name (a stored route that no longer checks is left out)."""
    stmt = select(AlertRoute.__table__).order_by(AlertRoute.name)
    if enabled_only:
        stmt = stmt.where(AlertRoute.enabled.is_(True))
    out = []
    for row in conn.execute(stmt):
        try:
            out.append(_route_of_row(row))
        except core.AlertError:
            continue
    return out


def set_route(
    conn: Connection,
    vault: core_secrets.Vault | None,
    name: str,
    destination: str,
    match: Mapping[str, Any] | None,
    target: Mapping[str, Any] | None,
    secrets: Mapping[str, str] | None = None,
    enabled: bool = True,
    actor: str | None = None,
    now: dt.datetime | None = None,
) -> core.Route:
    """Create or replace the web UI's route ``name`` (checked: :class:`core.AlertError`
    names what is wrong) and store ``secrets`` (``{name: value}``) in the vault."""
    now = now or utcnow()
    route = core.route_of(name, "ui", destination, match, target, enabled)
    values = {
        "destination": route.destination,
        "match": route.match_dict(),
        "target": dict(route.target),
        "enabled": route.enabled,
        "updated_at": now,
    }
    stmt = dialect_insert(conn)(AlertRoute.__table__).values(
        name=route.name, created_by=(actor or None), created_at=now, **values
    )
    conn.execute(stmt.on_conflict_do_update(index_elements=["name"], set_=values))
    for secret, value in (secrets or {}).items():
        if value is None or value == "":
            continue
        if vault is None:
            raise AlertStoreError("secrets: the vault is needed to store them")
        put_route_secret(conn, vault, route.key, secret, value, now)
    return route


def delete_route(conn: Connection, name: str) -> bool:
    """Delete the web UI's route ``name`` and its secrets; its pending deliveries fail."""
    gone = bool(conn.execute(delete(AlertRoute).where(AlertRoute.name == name)).rowcount)
    store_secrets.drop_secrets(conn, SCOPE, f"ui:{name}")
    conn.execute(
        update(AlertDelivery)
        .where(AlertDelivery.route == f"ui:{name}", AlertDelivery.status == "pending")
        .values(status="failed", last_error="the route was deleted", next_at=None)
    )
    return gone


def put_route_secret(
    conn: Connection,
    vault: core_secrets.Vault,
    route_key: str,
    name: str,
    value: str,
    now: dt.datetime | None = None,
) -> None:
    """Store a route's secret (``hmac``, ``url``, ``routing_key``, ``password``) encrypted."""
    if not route_key.startswith(("config:", "ui:")):
        raise AlertStoreError(f"route: {route_key!r} is not config:<name> or ui:<name>")
    core.check_route_name(route_key.split(":", 1)[1], "route")
    core.check_route_name(name, "secret name")
    store_secrets.put_secret(conn, vault, SCOPE, route_key, name, value, now)


def route_secrets(
    conn: Connection, vault: core_secrets.Vault, route_key: str, names: Iterable[str]
) -> dict[str, str]:
    """``{name: value}`` of a route's secrets ``names`` that are set (decrypted)."""
    found = store_secrets.get_secrets(conn, vault, SCOPE, names, [route_key])
    return {name: value for (_owner, name), value in found.items()}
