#!/usr/bin/env python
"""Alert pages benchmark: server time of the alerts page, a node page and the delivery log
with 100,000 alerts.

For each backend (``--backend postgresql,sqlite``), in a fresh store: ``--alerts`` alerts over
``--nodes`` nodes (four kinds each, newest every 20 s back from now), each with one delivery
(about 5 % failed after three attempts, 2 % pending, 20 % held back as duplicates, the rest
delivered after one or two attempts), the conditions they belong to (one in ten
acknowledged), and one logged-in operator. Then ``--requests`` requests of each kind go
through the real Flask app (session, permission check, SQL, template), timed from the request
entering the app to the response leaving it:

- the alerts page's first page (``/alerts``, 50 rows) and a deep page (``?page=200``, or
  the last one with fewer alerts);
- a filtered page (``/alerts?kind=drift&severity=error&suppressed=no``);
- the acknowledged conditions' alerts (``/alerts?acknowledged=yes``);
- a node page with its alerts section (``/nodes/<id>``);
- the delivery log's first page with its chart (``/alerts/deliveries``) and its failed ones.

Each response is checked, not only timed: status 200, and the alert (or delivery) ids each
page shows, in order, are those that filtering and ordering the generated data in Python
gives. ``--quick`` (5,000 alerts, 3 requests per kind) runs those checks for the test suite.
Target: p95 at most 150 ms for every kind. The last line of the output is one JSON object
with the figures.

Usage (from the repository root)::

    .venv/bin/python bench/alerts_ui.py [--alerts 100000] [--requests 100]
    .venv/bin/python bench/alerts_ui.py --quick
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench.ui import DEFAULT_PG_URL, make_store, percentile

TARGET_P95_MS = 150.0
PER_PAGE = 50
PASSWORD = "bench password 1234"
KINDS = ("drift", "cve", "kvm", "cert")
SEVERITIES = ("info", "warning", "error", "critical")


def fill(engine, alerts: int, nodes: int, seed: int) -> dict:
    """Write the data; what the checks need: the alerts and deliveries as generated."""
    from sqlalchemy import insert

    from saltext_fleet.store.models import (
        Alert,
        AlertAttempt,
        AlertCondition,
        AlertDelivery,
        Node,
    )

    rng = random.Random(seed)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    made, deliveries, attempts = [], [], []
    conditions: dict[tuple, dict] = {}
    for i in range(alerts):
        alert_id = i + 1
        node = f"node-{i % nodes:04d}"
        kind = KINDS[(i // nodes) % len(KINDS)]
        at = now - dt.timedelta(seconds=20 * (alerts - i))
        firing = rng.random() < 0.7
        roll = rng.random()
        suppressed = "duplicate" if roll < 0.2 else None
        made.append(
            {
                "id": alert_id,
                "event_key": f"bench-{alert_id}",
                "tag": f"fleet/alert/{kind}",
                "kind": kind,
                "node": node,
                "subject": "",
                "state": "firing" if firing else "resolved",
                "condition": "above" if firing else "below",
                "severity": SEVERITIES[rng.randrange(4)],
                "summary": f"{node}: {kind} alert {alert_id}",
                "data": {"id": node, "n": alert_id},
                "raised_at": at,
                "received_at": at,
                "master": "bench",
                "suppressed": suppressed,
            }
        )
        if suppressed:
            status, tries = "suppressed", 0
        elif roll < 0.25:
            status, tries = "failed", 3
        elif roll < 0.27:
            status, tries = "pending", 1
        else:
            status, tries = "delivered", 1 + (roll < 0.4)
        deliveries.append(
            {
                "id": alert_id,
                "alert_id": alert_id,
                "route": ("config:oncall", "ui:hook")[i % 2],
                "destination": ("pagerduty", "webhook")[i % 2],
                "status": status,
                "attempts": tries,
                "created_at": at,
                "next_at": now + dt.timedelta(days=365) if status == "pending" else None,
                "delivered_at": at + dt.timedelta(seconds=tries) if status == "delivered" else None,
                "last_error": "connection refused" if status == "failed" else None,
            }
        )
        for n in range(tries):
            ok = status == "delivered" and n == tries - 1
            attempts.append(
                {
                    "delivery_id": alert_id,
                    "at": at + dt.timedelta(seconds=n + 1),
                    "ok": ok,
                    "status_code": 200 if ok else 503,
                    "latency_ms": round(rng.uniform(5, 80), 1),
                    "error": None if ok else "HTTP 503",
                    "master": "bench",
                }
            )
        conditions[(kind, node)] = {
            "kind": kind,
            "node": node,
            "subject": "",
            "state": made[-1]["state"],
            "condition": made[-1]["condition"],
            "severity": made[-1]["severity"],
            "changed_at": at,
            "changes": [],
            "last_alert_id": alert_id,
            "last_sent": {},
            "acked_by": None,
            "acked_at": None,
            "acked_condition": None,
            "ack_comment": None,
        }
    for n, cond in enumerate(sorted(conditions.values(), key=lambda c: (c["kind"], c["node"]))):
        if n % 10 == 0:
            cond.update(
                acked_by="ui:bench",
                acked_at=now,
                acked_condition=cond["condition"],
                ack_comment="bench",
            )
    with engine.begin() as conn:
        conn.execute(
            insert(Node),
            [{"minion_id": f"node-{n:04d}", "facts": {}, "comment": ""} for n in range(nodes)],
        )
        for rows, model in ((made, Alert), (deliveries, AlertDelivery), (attempts, AlertAttempt)):
            for start in range(0, len(rows), 5000):
                conn.execute(insert(model), rows[start : start + 5000])
        conn.execute(insert(AlertCondition), list(conditions.values()))
        if conn.dialect.name == "postgresql":  # the ids were given: move the sequences on
            for table in ("alerts", "alert_deliveries"):
                conn.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"
                )
    acked = {(c["kind"], c["node"]) for c in conditions.values() if c.get("acked_condition")}
    return {"alerts": made, "deliveries": deliveries, "attempts": len(attempts), "acked": acked}


def newest(rows, key="raised_at"):
    return sorted(rows, key=lambda r: (r[key], r["id"]), reverse=True)


def expected(data: dict, nodes: int) -> dict[str, tuple[str, list[int]]]:
    """``{case: (path, ids shown in order)}``, from the generated data."""
    alerts = newest(data["alerts"])
    rank = {s: n for n, s in enumerate(SEVERITIES)}
    filtered = [
        a
        for a in alerts
        if a["kind"] == "drift" and rank[a["severity"]] >= 2 and a["suppressed"] is None
    ]
    acked = [a for a in alerts if (a["kind"], a["node"]) in data["acked"]]
    node = f"node-{42 % nodes:04d}"
    deliveries = newest(data["deliveries"], "created_at")
    failed = [d for d in deliveries if d["status"] == "failed"]
    deep = max(2, min(200, len(alerts) // PER_PAGE))
    return {
        "alerts_first_page": ("/alerts", [a["id"] for a in alerts[:PER_PAGE]]),
        "alerts_deep_page": (
            f"/alerts?page={deep}",
            [a["id"] for a in alerts[(deep - 1) * PER_PAGE : deep * PER_PAGE]],
        ),
        "alerts_filtered": (
            "/alerts?kind=drift&severity=error&suppressed=no",
            [a["id"] for a in filtered[:PER_PAGE]],
        ),
        "alerts_acknowledged": (
            "/alerts?acknowledged=yes",
            [a["id"] for a in acked[:PER_PAGE]],
        ),
        "node_page": (
            f"/nodes/{node}",
            [a["id"] for a in alerts if a["node"] == node][:20],
        ),
        "deliveries_first_page": ("/alerts/deliveries", [d["id"] for d in deliveries[:PER_PAGE]]),
        "deliveries_failed": (
            "/alerts/deliveries?status=failed",
            [d["id"] for d in failed[:PER_PAGE]],
        ),
    }


def shown(name: str, body: str) -> list[int]:
    if name.startswith("deliveries"):
        return [int(x) for x in re.findall(r'<tr data-delivery="(\d+)"', body)]
    if name == "node_page":
        section = body.split('id="node-alerts"', 1)[1].split("</table>", 1)[0]
        return [int(x) for x in re.findall(r'<tr data-alert="(\d+)"', section)]
    table = body.split('id="alerts"', 1)[1].split("</table>", 1)[0]
    return [int(x) for x in re.findall(r'<tr data-alert="(\d+)"', table)]


def run_backend(backend: str, args) -> dict:
    from saltext_fleet.core import secrets as core_secrets
    from saltext_fleet.store import engine as store_engine
    from saltext_fleet.store import users as store_users
    from saltext_fleet.webui.app import WebContext, create_app

    workdir = tempfile.mkdtemp(prefix="fleet-bench-alerts-ui-")
    url, cleanup = make_store(backend, args.pg_url, workdir)
    try:
        engine = store_engine.get_engine(url)
        store_engine.ensure_schema(engine)
        began = time.perf_counter()
        data = fill(engine, args.alerts, args.nodes, args.seed)
        fill_s = time.perf_counter() - began
        if backend == "postgresql":
            with engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE")
        with engine.begin() as conn:
            store_users.create_user(conn, "bench", "operator", PASSWORD, rounds=4)
        ctx = WebContext(
            engine=engine,
            vault=core_secrets.Vault.open(os.path.join(workdir, "fleet.fernet")),
            secret_key=secrets.token_bytes(32),
            bcrypt_rounds=4,
        )
        client = create_app(ctx).test_client()
        form = client.get("/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
        resp = client.post(
            "/login", data={"username": "bench", "password": PASSWORD, "csrf_token": token}
        )
        assert resp.status_code == 302, resp.status_code
        figures, checked = {}, {}
        for name, (path, want) in expected(data, args.nodes).items():
            if not want:
                raise SystemExit(f"{name}: --alerts {args.alerts} is too few for this page")
            for _ in range(3):  # warm caches, templates, the connection pool
                client.get(path)
            times = []
            for _ in range(args.requests):
                started = time.perf_counter()
                resp = client.get(path)
                times.append((time.perf_counter() - started) * 1000)
                assert resp.status_code == 200, (path, resp.status_code)
            got = shown(name, resp.get_data(as_text=True))
            if got != want:
                raise AssertionError(
                    f"{backend} {name} ({path}): shows {got[:5]}... ({len(got)}), "
                    f"expected {want[:5]}... ({len(want)})"
                )
            checked[name] = len(got)
            figures[name] = {
                "p50_ms": round(statistics.median(times), 2),
                "p95_ms": round(percentile(times, 95), 2),
            }
            print(
                f"{backend:10} {name:22} p50 {figures[name]['p50_ms']:7.2f} ms   "
                f"p95 {figures[name]['p95_ms']:7.2f} ms",
                flush=True,
            )
        worst = max(v["p95_ms"] for v in figures.values())
        return {
            "alerts": args.alerts,
            "attempts": data["attempts"],
            "fill_s": round(fill_s, 2),
            "cases": figures,
            "worst_p95_ms": worst,
            "target_met": worst <= TARGET_P95_MS,
            "checks": checked,
        }
    finally:
        cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alerts", type=int, default=None, help="default 100000; --quick 5000")
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--requests", type=int, default=None, help="default 100; --quick 3")
    parser.add_argument("--quick", action="store_true", help="the checks, for the test suite")
    parser.add_argument("--backend", default="postgresql,sqlite")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="a role that may create databases")
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args(argv)
    if args.alerts is None:
        args.alerts = 5000 if args.quick else 100_000
    if args.requests is None:
        args.requests = 3 if args.quick else 100
    if args.alerts < 2 * PER_PAGE or args.nodes < 50 or args.requests < 1:
        parser.error(f"--alerts at least {2 * PER_PAGE}, --nodes 50, --requests 1")
    results = {}
    for backend in [b.strip() for b in args.backend.split(",") if b.strip()]:
        if backend not in ("postgresql", "sqlite"):
            parser.error(f"--backend: {backend!r} is not postgresql or sqlite")
        results[backend] = run_backend(backend, args)
    print(json.dumps({"target_p95_ms": TARGET_P95_MS, "quick": args.quick, **results}))
    if args.quick:
        return 0  # a correctness run: every page was checked; its times mean little
    return 0 if all(r["target_met"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
