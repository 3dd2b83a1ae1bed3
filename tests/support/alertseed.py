"""Alerts, conditions, deliveries and attempts written straight into a store (schema 0012), as
the alert worker leaves them, for the tests of what the UI reads and shows
(tests/store/test_store_alert_views.py, tests/web/test_alerts.py, the browser tests).

:func:`seed` writes one small fleet's history (times relative to ``now``):

- ``mac-01`` drift ``above`` (warning), delivered through ``ui:hook`` on the second attempt
  (a 503, then a 200), then the same condition again within the duplicate window
  (``suppressed="duplicate"``);
- ``mac-02`` KVM ``pikvm-2:reach`` flapping: two changes sent, then the grouped "flapping"
  alert (condition ``flapping``), and a change after it held back (``suppressed="flapping"``);
- ``linux-01`` CVE (critical) whose delivery through ``config:oncall`` failed three times and
  gave up; its drift resolved (info), pending through ``ui:hook``;
- ``mac-01`` certificate ``7d`` acknowledged by ``ui:oper`` (with a comment), and the alert
  that came after the acknowledgement (``suppressed="acknowledged"``).
"""

from __future__ import annotations

import datetime as dt
import itertools

from sqlalchemy import insert

from saltext_fleet.store.models import Alert, AlertAttempt, AlertCondition, AlertDelivery

NOW = dt.datetime(2026, 12, 5, 18, 0, tzinfo=dt.timezone.utc)
CERT_SHA1 = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567"


def _alert(conn, keys, at, kind, node, state, condition, severity, summary, **extra) -> int:
    values = {
        "event_key": f"seed-{next(keys)}-{at.timestamp()}",
        "tag": f"fleet/alert/{kind}",
        "kind": kind,
        "node": node,
        "subject": extra.pop("subject", ""),
        "state": state,
        "condition": condition,
        "severity": severity,
        "summary": summary,
        "data": extra.pop("data", {"id": node}),
        "raised_at": at,
        "received_at": at,
        "master": "master-a",
        "suppressed": extra.pop("suppressed", None),
    }
    assert not extra, extra
    return conn.execute(insert(Alert).values(**values).returning(Alert.id)).scalar_one()


def _delivery(conn, alert_id, route, destination, status, at, attempts=(), **extra) -> int:
    delivery_id = conn.execute(
        insert(AlertDelivery)
        .values(
            alert_id=alert_id,
            route=route,
            destination=destination,
            status=status,
            attempts=len(attempts),
            created_at=at,
            next_at=extra.get("next_at"),
            delivered_at=extra.get("delivered_at"),
            last_error=extra.get("last_error"),
        )
        .returning(AlertDelivery.id)
    ).scalar_one()
    for seconds, ok, code, latency, error in attempts:
        conn.execute(
            insert(AlertAttempt).values(
                delivery_id=delivery_id,
                at=at + dt.timedelta(seconds=seconds),
                ok=ok,
                status_code=code,
                latency_ms=latency,
                error=error,
                master="master-a",
            )
        )
    return delivery_id


def _condition(conn, kind, node, subject, state, condition, severity, at, last, **extra):
    conn.execute(
        insert(AlertCondition).values(
            kind=kind,
            node=node,
            subject=subject,
            state=state,
            condition=condition,
            severity=severity,
            changed_at=at,
            changes=extra.pop("changes", [at.isoformat()]),
            flapping_since=extra.pop("flapping_since", None),
            last_alert_id=last,
            last_sent={},
            **extra,
        )
    )


def seed(conn, now: dt.datetime = NOW, prefix: str = "") -> dict[str, int]:
    """Write the history above (node names with ``prefix``); the ids by name."""
    keys = itertools.count()
    mac1, mac2, lin1 = f"{prefix}mac-01", f"{prefix}mac-02", f"{prefix}linux-01"
    ids: dict[str, int] = {}

    def ago(minutes: float) -> dt.datetime:
        return now - dt.timedelta(minutes=minutes)

    # mac-01 drift: sent (a 503 first), then a duplicate within the window
    ids["drift"] = _alert(
        conn, keys, ago(50), "drift", mac1, "firing", "above", "warning", f"{mac1}: drift 62"
    )
    ids["drift_delivery"] = _delivery(
        conn,
        ids["drift"],
        "ui:hook",
        "webhook",
        "delivered",
        ago(50),
        attempts=[(1, False, 503, 41.5, "HTTP 503 from the receiver"), (3, True, 200, 12.25, None)],
        delivered_at=ago(50) + dt.timedelta(seconds=3),
    )
    ids["duplicate"] = _alert(
        conn,
        keys,
        ago(45),
        "drift",
        mac1,
        "firing",
        "above",
        "warning",
        f"{mac1}: drift 64",
        suppressed="duplicate",
    )
    _condition(conn, "drift", mac1, "", "firing", "above", "warning", ago(50), ids["duplicate"])

    # mac-02 KVM reach flapping: two sends, the grouped alert, one held back
    subject = "pikvm-2:reach"
    for n, (cond, state) in enumerate((("offline", "firing"), ("online", "resolved"))):
        ids[f"kvm_{n}"] = _alert(
            conn,
            keys,
            ago(40 - 5 * n),
            "kvm",
            mac2,
            state,
            cond,
            "error",
            f"pikvm-2 {cond}",
            subject=subject,
        )
        _delivery(
            conn,
            ids[f"kvm_{n}"],
            "ui:hook",
            "webhook",
            "delivered",
            ago(40 - 5 * n),
            attempts=[(1, True, 200, 9.0, None)],
            delivered_at=ago(40 - 5 * n),
        )
    changes = [ago(m).isoformat() for m in (40, 35, 30, 25)]
    # the grouped alert, as the worker records it (core.alerts.flapping_alert)
    ids["flapping"] = _alert(
        conn,
        keys,
        ago(30),
        "kvm",
        mac2,
        "firing",
        "flapping",
        "error",
        f"{mac2}: kvm {subject} is flapping: 3 changes in 30 minutes (now offline)",
        subject=subject,
        data={"id": mac2, "flapping": {"changes": changes[:3], "minutes": 30, "now": "offline"}},
    )
    ids["flapping_delivery"] = _delivery(
        conn,
        ids["flapping"],
        "ui:hook",
        "webhook",
        "delivered",
        ago(30),
        attempts=[(1, True, 204, 8.0, None)],
        delivered_at=ago(30),
    )
    ids["flap_held"] = _alert(
        conn,
        keys,
        ago(25),
        "kvm",
        mac2,
        "resolved",
        "online",
        "error",
        "pikvm-2 online",
        subject=subject,
        suppressed="flapping",
    )
    _condition(
        conn,
        "kvm",
        mac2,
        subject,
        "resolved",
        "online",
        "error",
        ago(25),
        ids["flap_held"],
        changes=changes,
        flapping_since=ago(30),
    )

    # linux-01: a CVE that could not be delivered; its drift resolved, still pending
    ids["cve"] = _alert(
        conn,
        keys,
        ago(20),
        "cve",
        lin1,
        "firing",
        "findings",
        "critical",
        f"{lin1}: 3 new critical findings",
    )
    ids["cve_delivery"] = _delivery(
        conn,
        ids["cve"],
        "config:oncall",
        "pagerduty",
        "failed",
        ago(20),
        attempts=[(s, False, None, 3000.0, "connection refused") for s in (1, 3, 7)],
        last_error="connection refused",
    )
    _condition(conn, "cve", lin1, "", "firing", "findings", "critical", ago(20), ids["cve"])
    ids["resolved"] = _alert(
        conn, keys, ago(10), "drift", lin1, "resolved", "below", "info", f"{lin1}: drift 0"
    )
    ids["pending_delivery"] = _delivery(
        conn,
        ids["resolved"],
        "ui:hook",
        "webhook",
        "pending",
        ago(10),
        next_at=now + dt.timedelta(days=365),  # no worker picks it up during a test
    )
    _condition(conn, "drift", lin1, "", "resolved", "below", "info", ago(10), ids["resolved"])

    # mac-01 certificate 7d: acknowledged, then held back while the condition stays
    ids["cert"] = _alert(
        conn,
        keys,
        ago(8),
        "cert",
        mac1,
        "firing",
        "7d",
        "warning",
        f"{mac1}: Apple Development: fleet expires in 7 days",
        subject=CERT_SHA1,
    )
    ids["cert_held"] = _alert(
        conn,
        keys,
        ago(2),
        "cert",
        mac1,
        "firing",
        "7d",
        "warning",
        f"{mac1}: Apple Development: fleet expires in 6 days",
        subject=CERT_SHA1,
        suppressed="acknowledged",
    )
    _condition(
        conn,
        "cert",
        mac1,
        CERT_SHA1,
        "firing",
        "7d",
        "warning",
        ago(8),
        ids["cert_held"],
        acked_by="ui:oper",
        acked_at=ago(5),
        acked_condition="7d",
        ack_comment="renewal ordered",
    )
    return ids
