#!/usr/bin/env python
"""Alert delivery benchmark: event -> receiver latency through the real alert worker.

What runs: the ``fleet`` engine's alert worker (:class:`saltext_fleet.master.alertworker.
AlertWorker`: its dispatcher thread, its send pool, the real webhook sender) against a real
store (a fresh PostgreSQL database, or a SQLite file with ``--backend sqlite``) and a real
HTTP receiver on loopback that verifies each delivery's HMAC signature and timestamp. The
master's bus is not started: each event is signed by the master's key and handed to the
worker's :meth:`~AlertWorker.handle`, as its listener does with what it reads from the bus
(the end-to-end test with real daemons measures the bus as well).

``--n`` alerts (distinct nodes, so none is a duplicate) are fired at ``--rate`` per second,
each carrying its ``raised_at`` as :func:`saltext_fleet.master.eventsig.fire` sets it. The
latency of an alert is from that time to the receiver having read the whole request; the last
line has the median, p95 and max in milliseconds, and ``ok`` (every alert arrived exactly
once, in order, with a valid signature, and the median is within ``--budget-ms``).

    .venv/bin/python bench/alerts.py                      # 300 alerts, PostgreSQL
    .venv/bin/python bench/alerts.py --backend sqlite --n 100
    .venv/bin/python bench/alerts.py --quick              # 40 alerts: a correctness run
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.ui import DEFAULT_PG_URL, make_store, percentile
from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.master import alertworker, eventsig
from saltext_fleet.store import alerts as store_alerts
from saltext_fleet.store import engine as store_engine
from tests.support.alertreceiver import Receiver

HMAC = "bench-hmac-" + uuid.uuid4().hex
TAG = "fleet/alert/drift"


def run(args, root: str, db_url: str) -> dict:
    receiver = Receiver(secret=HMAC).start()
    opts = {
        "id": "bench-master",
        "cachedir": os.path.join(root, "cache"),
        "pki_dir": os.path.join(root, "pki"),
        "sock_dir": os.path.join(root, "sock"),
        "fleet": {
            "db_url": db_url,
            "alerts": {
                "routes": [
                    {
                        "name": "bench",
                        "destination": "webhook",
                        "target": {"url": receiver.url, "timeout": 5},
                    }
                ],
                "retry": {"first_s": 0.2, "max_s": 2},
            },
        },
    }
    engine = store_engine.get_engine(db_url)
    store_engine.ensure_schema(engine)
    vault = core_secrets.Vault.open(os.path.join(root, "pki", "fleet.fernet"))
    with engine.begin() as conn:
        store_alerts.put_route_secret(conn, vault, "config:bench", "hmac", HMAC)
    worker = alertworker.AlertWorker(opts, scan_interval=1.0).start(listen=False)
    ids = []
    try:
        gap = 1.0 / args.rate if args.rate else 0.0
        began = time.monotonic()
        for n in range(args.n):
            due = began + n * gap
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            data = {
                "id": f"bench-{n:05d}",
                "state": "above",
                "score": 60.0 + n % 40,
                "previous_score": 1.0,
                "alert_score": 50.0,
                "baseline": "bench",
                "raised_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            }
            ids.append(worker.handle(TAG, eventsig.sign(opts, TAG, data))["id"])
        deadline = time.time() + 60 + args.n * 0.05
        while len(receiver.requests) < args.n and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)  # a duplicate, if any, would come now
        fired_s = time.monotonic() - began
    finally:
        worker.stop()
        receiver.stop()
    got = receiver.requests
    records = [r.verified for r in got]
    signed = all(isinstance(r, dict) for r in records)
    order = [r["id"] for r in records] if signed else []
    latencies = [
        (r.at - dt.datetime.fromisoformat(rec["raised_at"]).timestamp()) * 1000
        for r, rec in zip(got, records, strict=False)
        if isinstance(rec, dict)
    ]
    with engine.connect() as conn:
        counts = store_alerts.counts(conn)
    median = statistics.median(latencies) if latencies else None
    ok = (
        signed
        and order == ids
        and len(got) == args.n
        and counts["delivered"] == args.n
        and median is not None
        and median <= args.budget_ms
    )
    return {
        "ok": ok,
        "backend": engine.dialect.name,
        "alerts": args.n,
        "rate_per_s": args.rate,
        "delivered": counts["delivered"],
        "received": len(got),
        "in_order_once": order == ids,
        "signatures_valid": signed,
        "latency_ms_median": round(median, 2) if median is not None else None,
        "latency_ms_p95": round(percentile(latencies, 95), 2) if latencies else None,
        "latency_ms_max": round(max(latencies), 2) if latencies else None,
        "seconds": round(fired_s, 2),
        "budget_ms": args.budget_ms,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--n", type=int, default=300, help="alerts (default 300)")
    parser.add_argument("--rate", type=float, default=50.0, help="alerts per second (0: burst)")
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--budget-ms", type=float, default=2000.0, help="median allowed")
    parser.add_argument("--quick", action="store_true", help="40 alerts at 40/s")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.rate = 40, 40.0
    root = tempfile.mkdtemp(prefix="fleet-bench-alerts-")
    cleanup = None
    try:
        db_url, cleanup = make_store(args.backend, args.pg_url, root)
        print(f"bench/alerts: {args.n} alerts at {args.rate}/s on {args.backend}", flush=True)
        out = run(args, root, db_url)
    except Exception as exc:  # noqa: BLE001 - the last line says what failed
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        store_engine.dispose_all()
        if cleanup is not None:
            cleanup()
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(out))
    return 0 if out.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
