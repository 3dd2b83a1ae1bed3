"""The benchmarks' correctness checks run in the suite, so they cannot rot unnoticed.

Each benchmark compares what it stored (or served) with what it generated, row by row, and
fails (exit status 1, ``"ok": false``) on any difference. ``--quick`` runs those checks on a
few hundred records, in fresh databases the script creates and drops itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_bench(script: str, *args: str, timeout: int = 240) -> dict:
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    out = proc.stdout.strip().splitlines()
    assert proc.returncode == 0, (
        f"{script} {args}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    summary = json.loads(out[-1])
    return summary


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_ingest_quick_verifies_every_row(backend, pg_server_url):
    summary = run_bench("ingest.py", "--quick", "--backend", backend, "--pg-url", pg_server_url)
    assert summary["ok"] is True and summary["quick"] is True
    assert summary["backend"] == backend
    n = summary["n"]
    assert 100 <= n <= 1000 and summary["events"] == n
    inventories = summary["sizes"]["fleet.inventory"]["count"]
    assert inventories > 0
    # the fleet returner's rows were checked against the generated data
    fleet = summary["checks"]["fleet"]
    assert fleet["returns"] == n and fleet["events"] == n
    assert fleet["inventory_returns_whole"] == inventories
    assert fleet["quarantined"] == 0
    assert fleet["nodes"] == summary["minions"]
    assert 0 < fleet["inventory_snapshots"] <= inventories
    assert fleet["inventory_changed_events"] > 0
    if backend == "postgresql":
        # ...and so were raw COPY's, the ceiling the returner is measured against
        assert summary["contenders"] == ["fleet", "copy"]
        assert summary["checks"]["copy"]["returns"] == n
        assert summary["checks"]["copy"]["events"] == n
    else:
        assert summary["contenders"] == ["fleet"]


def test_ui_quick_checks_the_rows_of_filtered_and_sorted_pages(pg_server_url):
    summary = run_bench("ui.py", "--quick", "--pg-url", pg_server_url)
    assert summary["quick"] is True and summary["sizes"] == [1000]
    for backend in ("postgresql", "sqlite"):
        run = summary["results"]["1000"][backend]
        assert run["nodes"] == 1000 and run["target_overview_p95_ms"] == 50.0
        assert run["memory"]["peak_rss_mb"] >= run["memory"]["rss_start_mb"] > 0
        checks = run["checks"]
        # every row of each page was compared with the generated data (the filtered page
        # holds a handful of the 1,000 nodes; the sorted one is page 7 of 50 rows)
        assert checks["overview_first_page"] == 50
        assert checks["overview_sorted"] == 50
        assert 0 < checks["overview_filtered"] <= 50
        assert checks["node_page"] == 48


def test_drift_quick_checks_against_the_reference_computation(pg_server_url):
    summary = run_bench("drift.py", "--quick", "--pg-url", pg_server_url)
    assert summary["ok"] is True and summary["quick"] is True
    for backend in ("postgresql", "sqlite"):
        figures = summary["backends"][backend]
        assert figures["checked_nodes"] == 5 and figures["node_changes"] == 5
        assert figures["drift_current_rows"] == summary["nodes"]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_alerts_quick_delivers_every_alert_once_in_order(backend, pg_server_url):
    summary = run_bench("alerts.py", "--quick", "--backend", backend, "--pg-url", pg_server_url)
    assert summary["ok"] is True and summary["backend"] == backend
    assert summary["received"] == summary["delivered"] == summary["alerts"] == 40
    assert summary["in_order_once"] is True and summary["signatures_valid"] is True
    assert summary["latency_ms_median"] <= summary["budget_ms"]
