"""bench/scale.py's small run in the suite: two real hot-hot masters on one PostgreSQL and six
real salt-minions, enrolled, onboarded, one inventory + drift cycle and a burst of jobs
(``--quick``). Only the counts are asserted, never the times (they are printed): each return
stored once, one accepted key per minion by its enrolment (on both masters), one onboarding,
each inventory ingested and its drift recomputed once, nothing quarantined."""

import pytest

from tests.store.test_bench_quick import run_bench

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]


def test_four_minions_on_two_masters_are_counted_exactly_once(pg_server_url):
    summary = run_bench("scale.py", "--quick", "--pg-url", pg_server_url, timeout=360)
    n = summary["minions"]
    assert (n, summary["masters"], summary["quick"]) == (4, 2, True)
    assert summary["ok"] is True and summary["exactly_once"] is True, summary["failures"]
    assert all(summary["checks"].values()), summary["checks"]
    # each return once: rows == distinct (jid, minion) == distinct rid, and the burst's all there
    assert summary["returns"] == summary["returns_distinct_jid_minion"]
    assert summary["returns"] == summary["returns_distinct_rid"]
    assert summary["burst_returns"] == n * summary["burst_jobs"]
    # one node and one accepted key per minion, accepted by its enrolment, on both masters
    assert summary["nodes"] == n
    assert summary["keys_accepted"] == summary["keys_accepted_by_enrolment"] == n
    assert summary["keys_accepted_per_master"] == [n, n]
    assert summary["enrol_accept_audits"] == n and summary["enrolments"] == {"used": n}
    # onboarded once (both masters heard each start), the first inventory and the cycle's
    # ingested once each, the cycle's drift recomputed once per node
    assert summary["onboard_audits"] == summary["onboard_claims"] == n
    assert summary["onboarding_runner_jobs"]["runner.fleet.node_started"] == 2 * n
    assert summary["inventory_changes"] == 2 * n
    assert summary["drift_points"] == n
    assert summary["quarantine"] == 0
