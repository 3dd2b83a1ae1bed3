#!/usr/bin/env python
"""Fleet-wide drift page benchmark: the packages that drift on the most nodes, with their
nodes, over a synthetic fleet where every node's inventory is distinct (the worst case for
:mod:`saltext_fleet.store.reports`, which computes findings once per baseline and snapshot).

The fleet is :mod:`bench.drift`'s (``--nodes`` nodes of ``--packages`` packages, about a
tenth of them drifting on each node), loaded through the real write path and scored with
``store.drift.recompute``. Timed, on each backend:

- ``cold``: the first :func:`~saltext_fleet.store.reports.fleet_drift` of a process (every
  pair's findings computed);
- ``warm``: later pages (``--requests`` of them; the pairs come from the process's cache);
- ``node``: one node's findings with their rules (:func:`~saltext_fleet.store.reports.
  node_findings`), and ``compare``: two nodes side by side.

``--images N`` makes the nodes share N inventories instead (node ``i`` runs image
``i % N``), as a fleet built from a few images does.

Checked, not only timed: the top package's node count equals a count over the generated
inventories. The process's peak memory after the cold page is reported too. The last line of
the output is one JSON object with the figures.

Usage (from the repository root)::

    .venv/bin/python bench/drift_report.py [--nodes 10000] [--packages 1000]
                                           [--backend postgresql,sqlite]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

# after the path above: this file runs as a script from the checkout
from bench.drift import (
    BASELINE,
    DEFAULT_PG_URL,
    Fleet,
    Store,
    inventory_doc,
    inventory_record,
    load,
    new_jid,
)


class SharedFleet(Fleet):
    """:class:`bench.drift.Fleet` whose nodes run one of ``images`` inventories (node ``i``
    has image ``i % images``): a fleet built from a few images."""

    def __init__(self, nodes: int, packages: int, seed: int, images: int):
        super().__init__(images, packages, seed)
        self.nodes = nodes
        self.images = images

    def node(self, i: int):
        return super().node(i % self.images)


def load_shared(engine, fleet: SharedFleet) -> None:
    from saltext_fleet.store.batch import write_batch

    docs = [inventory_doc(*fleet.node(i)[1:]) for i in range(fleet.images)]
    jid = new_jid()
    for start in range(0, fleet.nodes, 500):
        records = [
            inventory_record(fleet.minion(i), jid, docs[i % fleet.images])
            for i in range(start, min(fleet.nodes, start + 500))
        ]
        with engine.begin() as conn:
            write_batch(conn, records)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_backend(backend: str, args, fleet: Fleet, root: str) -> dict:
    from saltext_fleet.core import baseline as core_baseline
    from saltext_fleet.core import drift as core_drift
    from saltext_fleet.store import drift as store_drift
    from saltext_fleet.store import engine as store_engine
    from saltext_fleet.store import reports

    store = Store(backend, args.pg_url, root)
    try:
        engine = store_engine.get_engine(store.url)
        store_engine.ensure_schema(engine)
        print(f"{backend}: loading {fleet.nodes} nodes", flush=True)
        if isinstance(fleet, SharedFleet):
            load_shared(engine, fleet)
        else:
            load(engine, fleet, 500)
        pinned = fleet.minion(next(i for i in range(fleet.nodes) if fleet.node(i)[0] == 2))
        spec = core_baseline.from_inventory(BASELINE, store_drift.node_inventory(engine, pinned))
        store_drift.save_baseline(engine, spec, f"pin:{pinned}")
        minions = [fleet.minion(i) for i in range(fleet.nodes)]
        store_drift.recompute(engine, dict.fromkeys(minions, BASELINE), details=False)
        store.maintain()
        reports.clear_cache()
        before = peak_mb()
        t0 = time.perf_counter()
        with engine.connect() as conn:
            page = reports.fleet_drift(conn, reports.FleetDriftQuery())
        cold = time.perf_counter() - t0
        after = peak_mb()
        warm = []
        for i in range(args.requests):
            query = reports.FleetDriftQuery(page=1 + i % 3)
            t0 = time.perf_counter()
            with engine.connect() as conn:
                reports.fleet_drift(conn, query)
            warm.append(time.perf_counter() - t0)
        top = page["rows"][0]
        # check the top package's count against the generated inventories
        compiled = core_drift.CompiledBaseline(spec)
        want = 0
        for i in range(fleet.nodes):
            _, packages, facts = fleet.node(i)
            result = compiled.compute(packages, core_drift.NodeInput(facts))
            for kind in ("missing", "changed", "extra"):
                want += any(
                    e["ecosystem"] == top["ecosystem"] and e["name"] == top["name"]
                    for e in result[kind]
                )
        if want != top["nodes"]:
            raise SystemExit(f"{top['name']}: {top['nodes']} nodes on the page, {want} expected")
        node_ms, compare_ms = [], []
        for i in range(args.requests):
            t0 = time.perf_counter()
            with engine.connect() as conn:
                reports.node_findings(conn, minions[(i * 7919) % fleet.nodes])
            node_ms.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            with engine.connect() as conn:
                reports.compare_nodes(conn, pinned, minions[(i * 104729) % fleet.nodes])
            compare_ms.append((time.perf_counter() - t0) * 1000)
        out = {
            "backend": backend,
            "cold_s": round(cold, 3),
            "warm_median_ms": round(statistics.median(warm) * 1000, 1),
            "warm_max_ms": round(max(warm) * 1000, 1),
            "node_findings_median_ms": round(statistics.median(node_ms), 1),
            "compare_median_ms": round(statistics.median(compare_ms), 1),
            "peak_rss_mb_before": round(before),
            "peak_rss_mb_after_cold": round(after),
            "packages_drifting": page["total"],
            "top": f"{top['ecosystem']}/{top['name']} on {top['nodes']} nodes",
        }
        print(json.dumps(out), flush=True)
        return out
    finally:
        store_engine.dispose_all()
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--packages", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--images", type=int, default=0, help="nodes share this many inventories (0: none)"
    )
    parser.add_argument("--backend", default="postgresql,sqlite")
    parser.add_argument("--pg-url", default=os.environ.get("FLEET_BENCH_PG_URL", DEFAULT_PG_URL))
    args = parser.parse_args()
    if args.images:
        fleet = SharedFleet(args.nodes, args.packages, args.seed, args.images)
    else:
        fleet = Fleet(args.nodes, args.packages, args.seed)
    results = []
    for backend in args.backend.split(","):
        root = tempfile.mkdtemp(prefix="fleet-bench-report-")
        try:
            results.append(run_backend(backend, args, fleet, root))
        finally:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({"nodes": args.nodes, "packages": args.packages, "results": results}))


if __name__ == "__main__":
    main()
