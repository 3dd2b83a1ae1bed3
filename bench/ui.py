#!/usr/bin/env python
"""Web UI benchmark: server time of the fleet overview and a node page, 10,000 and 100,000 nodes.

For each fleet size (``--nodes 10000,100000``) and each backend (``--backend postgresql,sqlite``),
in a fresh store: that many nodes with
facts (OS, release), status, group, criticality, a current drift result for 90 % of them and
``--history`` drift history points each for 100 nodes; one logged-in user. Then ``--requests``
requests of each kind go through the real Flask app (every layer the engine serves: session,
permission check, SQL, template), timed from the request entering the app to the response
leaving it, which is the server time (the network is not measured):

- the overview's first page (``/``), 50 rows, sorted by id;
- a filtered page (``/?status=offline&os=MacOS&drift_min=20``);
- a sorted page (``/?sort=-drift&page=7``);
- a node page with its drift history chart (``/nodes/<id>``).

Each response is checked, not only timed: status 200; each overview page holds exactly the
rows (ids, statuses and drift shown, in order) that filtering and sorting the generated data in
Python gives; the node page's chart has its points. ``--quick`` (1,000 nodes, 3 requests per
kind) runs those checks for the test suite.
Targets: overview p95 (all three kinds) at most 50 ms up to 10,000 nodes and at most 100 ms
at 100,000. The peak resident memory of this process (the Flask app and the store's client)
while it serves is reported per run. The last line of the output is one JSON object with the
figures.

Usage (from the repository root)::

    .venv/bin/python bench/ui.py [--nodes 10000,100000] [--requests 200] [--backend postgresql,sqlite]
    .venv/bin/python bench/ui.py --quick
"""

from __future__ import annotations

import argparse
import contextlib
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
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peakmem  # bench/peakmem.py, beside this script

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_SIZES = "10000,100000"


def target_p95_ms(nodes: int) -> float:
    """The overview's p95 target for a fleet of ``nodes``: 50 ms up to 10,000, 100 ms beyond."""
    return 50.0 if nodes <= 10_000 else 100.0


PER_PAGE = 50  # the overview's default page size
PASSWORD = "bench password 1234"


def make_store(backend: str, pg_url: str, workdir: str):
    """A fresh, migrated store: ``(url, cleanup)`` (PostgreSQL: the tests' own helper)."""
    if backend == "sqlite":
        return f"sqlite:///{os.path.join(workdir, 'fleet.db')}", lambda: None
    from tests.support import pgdb

    stack = contextlib.ExitStack()
    url = stack.enter_context(pgdb.fresh_database(pg_url, "fleet_bench_ui"))
    return url, stack.close


def fill(engine, nodes: int, history: int, seed: int) -> dict:
    from sqlalchemy import insert

    from saltext_fleet.store import drift as store_drift
    from saltext_fleet.store.models import DriftCurrent, DriftHistory, Node

    rng = random.Random(seed)
    width = max(5, len(str(nodes - 1)))  # fixed width: the ids sort as their numbers do
    ids = [f"node-{i:0{width}d}" for i in range(nodes)]
    now = dt.datetime.now(dt.timezone.utc)
    oses = [("Debian", "12"), ("MacOS", "15.1"), ("NixOS", "24.11"), ("Ubuntu", "24.04")]
    rows, drift = [], []
    for i in range(nodes):
        os_name, release = oses[i % len(oses)]
        rows.append(
            {
                "minion_id": ids[i],
                "first_seen": now - dt.timedelta(days=30),
                "last_seen": now - dt.timedelta(seconds=rng.randint(0, 86400)),
                "facts": {"os": os_name, "osrelease": release, "kernel": "6.1.0"},
                "status": "offline" if rng.random() < 0.1 else "online",
                "status_at": now,
                "node_group": f"group-{i % 20}",
                "criticality": ("low", "normal", "high", "critical")[i % 4],
                "audited": i % 7 == 0,
                "comment": "",
            }
        )
        if i % 10:
            drift.append(
                {
                    "minion_id": ids[i],
                    "baseline": "base",
                    "score": round(rng.expovariate(1 / 15), 1),
                    "computed_at": now,
                }
            )
    with engine.begin() as conn:
        for start in range(0, len(rows), 2000):
            conn.execute(insert(Node), rows[start : start + 2000])
        for start in range(0, len(drift), 2000):
            conn.execute(insert(DriftCurrent), drift[start : start + 2000])
        points = []
        for i in range(1, 101):
            for h in range(history):
                points.append(
                    {
                        "minion_id": ids[i],
                        "computed_at": now - dt.timedelta(hours=h),
                        "score": float(h % 30),
                        "baseline": "base",
                    }
                )
        for day in range(0, history // 24 + 2):
            store_drift.ensure_partition(conn, now - dt.timedelta(days=day))
        conn.execute(insert(DriftHistory), points)
    return {"drift_results": len(drift), "history_points": 100 * history}, rows, drift


def expected_page(nodes: list[dict], drift: list[dict], case: dict) -> list[tuple]:
    """The rows a page must show, computed straight from the generated data (not the store):
    ``[(id, status, drift shown), ...]`` in page order."""
    scores = {d["minion_id"]: d["score"] for d in drift}
    picked = [
        n
        for n in nodes
        if (case.get("status") is None or n["status"] == case["status"])
        and (case.get("os") is None or n["facts"]["os"] == case["os"])
        and (
            case.get("drift_min") is None
            or (
                scores.get(n["minion_id"]) is not None
                and scores[n["minion_id"]] >= case["drift_min"]
            )
        )
    ]
    if case.get("sort") == "-drift":
        # highest drift first, nodes without a result last, ties by id
        with_score = sorted(
            (n for n in picked if n["minion_id"] in scores),
            key=lambda n: (-scores[n["minion_id"]], n["minion_id"]),
        )
        without = sorted(
            (n for n in picked if n["minion_id"] not in scores), key=lambda n: n["minion_id"]
        )
        picked = with_score + without
    else:
        picked = sorted(picked, key=lambda n: n["minion_id"])
    page = case.get("page", 1)
    shown = picked[(page - 1) * PER_PAGE : page * PER_PAGE]

    def drift_text(minion_id):
        score = scores.get(minion_id)
        return "\u2014" if score is None else f"{score:.1f}"

    return [(n["minion_id"], n["status"], drift_text(n["minion_id"])) for n in shown]


ROW = re.compile(
    r'<tr data-node="([^"]+)">.*?data-field="status">([^<]*)<.*?data-field="drift">([^<]*)<',
    re.S,
)


def shown_rows(body: str) -> list[tuple]:
    """``[(id, status, drift shown), ...]`` of an overview page, in page order."""
    return [(m.group(1), m.group(2).strip(), m.group(3).strip()) for m in ROW.finditer(body)]


def percentile(values, q):
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def run_backend(backend: str, nodes_wanted: int, args) -> dict:
    from saltext_fleet.core import secrets as core_secrets
    from saltext_fleet.store import engine as store_engine
    from saltext_fleet.store import users as store_users
    from saltext_fleet.webui.app import WebContext, create_app

    workdir = tempfile.mkdtemp(prefix="fleet-bench-ui-")
    url, cleanup = make_store(backend, args.pg_url, workdir)
    try:
        engine = store_engine.get_engine(url)
        store_engine.ensure_schema(engine)
        began = time.perf_counter()
        filled, nodes, drift = fill(engine, nodes_wanted, args.history, args.seed)
        fill_s = time.perf_counter() - began
        if backend == "postgresql":
            with engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE")
        with engine.begin() as conn:
            store_users.create_user(conn, "bench", "viewer", PASSWORD, rounds=4)
        ctx = WebContext(
            engine=engine,
            vault=core_secrets.Vault.open(os.path.join(workdir, "fleet.fernet")),
            secret_key=secrets.token_bytes(32),
            bcrypt_rounds=4,
        )
        app = create_app(ctx)
        client = app.test_client()
        form = client.get("/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
        resp = client.post(
            "/login", data={"username": "bench", "password": PASSWORD, "csrf_token": token}
        )
        assert resp.status_code == 302, resp.status_code
        cases = {
            "overview_first_page": "/",
            "overview_filtered": "/?status=offline&os=MacOS&drift_min=20",
            "overview_sorted": "/?sort=-drift&page=7",
            "node_page": f"/nodes/{nodes[42]['minion_id']}",
        }
        # what each overview page must hold, from the generated data
        wanted = {
            "overview_first_page": expected_page(nodes, drift, {}),
            "overview_filtered": expected_page(
                nodes, drift, {"status": "offline", "os": "MacOS", "drift_min": 20}
            ),
            "overview_sorted": expected_page(nodes, drift, {"sort": "-drift", "page": 7}),
        }
        for name, rows in wanted.items():
            if not rows:
                raise SystemExit(f"{name}: --nodes {nodes_wanted} is too few for this page")
        figures = {}
        checked = {}
        serving = peakmem.Peak().__enter__()
        for name, path in cases.items():
            for _ in range(5):  # warm caches, templates, the connection pool
                client.get(path)
            times = []
            for _ in range(args.requests):
                started = time.perf_counter()
                resp = client.get(path)
                times.append((time.perf_counter() - started) * 1000)
                assert resp.status_code == 200, (path, resp.status_code)
            body = resp.get_data(as_text=True)
            rows = len(re.findall(r"<tr data-node=", body))
            if name.startswith("overview"):
                got = shown_rows(body)
                if got != wanted[name]:
                    missing = [r for r in wanted[name] if r not in got]
                    extra = [r for r in got if r not in wanted[name]]
                    raise AssertionError(
                        f"{backend} {name} ({path}): {len(got)} rows shown, {len(wanted[name])}"
                        f" expected; missing {missing[:3]}, unexpected {extra[:3]}"
                        + ("" if missing or extra else "; the order differs")
                    )
                checked[name] = len(got)
            else:
                chart = re.search(r'<figure id="drift-chart">(.*?)</figure>', body, re.S).group(1)
                assert chart.count("<circle") == args.history, chart.count("<circle")
                checked[name] = args.history
            figures[name] = {
                "p50_ms": round(statistics.median(times), 2),
                "p95_ms": round(percentile(times, 95), 2),
                "rows": rows,
            }
            print(
                f"{backend:10} {name:22} p50 {figures[name]['p50_ms']:7.2f} ms   "
                f"p95 {figures[name]['p95_ms']:7.2f} ms",
                flush=True,
            )
        serving.__exit__(None, None, None)
        overview_p95 = max(v["p95_ms"] for k, v in figures.items() if k.startswith("overview"))
        target = target_p95_ms(nodes_wanted)
        return {
            "nodes": nodes_wanted,
            "fill_s": round(fill_s, 2),
            **filled,
            "cases": figures,
            "overview_p95_ms": overview_p95,
            "target_overview_p95_ms": target,
            "target_met": overview_p95 <= target,
            # this process's resident memory while it served the requests
            "memory": serving.figures(),
            # rows (chart points) of each page compared with the generated data
            "checks": checked,
        }
    finally:
        cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--nodes",
        default=None,
        help=f"fleet sizes, comma-separated (default {DEFAULT_SIZES}; --quick 1000)",
    )
    parser.add_argument(
        "--requests", type=int, default=None, help="requests per kind (default 200; --quick 3)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1,000 nodes, 3 requests per kind: the row checks, for the test suite",
    )
    parser.add_argument("--history", type=int, default=48, help="drift points per charted node")
    parser.add_argument("--backend", default="postgresql,sqlite")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="a role that may create databases")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    if args.nodes is None:
        args.nodes = "1000" if args.quick else DEFAULT_SIZES
    try:
        sizes = [int(n) for n in str(args.nodes).split(",") if n.strip()]
    except ValueError:
        parser.error(f"--nodes: {args.nodes!r} is not a comma-separated list of numbers")
    if args.requests is None:
        args.requests = 3 if args.quick else 200
    if not sizes or min(sizes) < 400 or args.requests < 1:
        parser.error("--nodes must be at least 400 (the sorted page is page 7), --requests 1")
    backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    for backend in backends:
        if backend not in ("postgresql", "sqlite"):
            parser.error(f"--backend: {backend!r} is not postgresql or sqlite")
    results = {}
    for size in sizes:
        print(
            f"== {size:,} nodes (target: overview p95 <= {target_p95_ms(size):g} ms) ==", flush=True
        )
        results[str(size)] = {backend: run_backend(backend, size, args) for backend in backends}
    met = all(r["target_met"] for by_backend in results.values() for r in by_backend.values())
    print(
        json.dumps(
            {"quick": args.quick, "sizes": sizes, "seed": args.seed, "met": met, "results": results}
        )
    )
    if args.quick:
        return 0  # a correctness run: every page was checked; its times mean little
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
