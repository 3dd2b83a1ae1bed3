"""Alert delivery end to end with real daemons: a real minion's inventory changes, the
shipped reactor recomputes its drift, the master fires ``fleet/alert/drift`` (signed), the
``fleet`` engine's alert worker records it and sends it to this test's webhook receiver,
which verifies the signature and timestamp. A forged ``fleet/alert/drift`` from the minion
never reaches it.

The route is made for this test (``fleet.alert_route_set``, a route of the web UI's kind)
and matches only this test's minion, so the package master's other alerts never reach it.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import subprocess

import pytest
from saltfactories.utils import random_string

from saltext_fleet import config
from saltext_fleet.store import alert_views
from saltext_fleet.store import engine as store_engine
from tests.support.alertreceiver import Receiver
from tests.support.forge import send_batch
from tests.support.harness import ACCEPTED_BY_HARNESS
from tests.support.venvs import make_venv, make_wheel, pip_install
from tests.support.waiting import ask, run, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

HMAC = "e2e-webhook-hmac-secret-9876"
CROSSINGS = 4  # above, below, above, below: four changes (the fifth would be flapping)


@pytest.fixture(scope="module")
def alert_venv(tmp_path_factory):
    root = tmp_path_factory.mktemp("alert-venv")
    python = make_venv(root / "venv")
    wheel = make_wheel(root / "wheels", "fleet-alerted", "1.0.0")
    pip_install(python, wheel)
    return {"python": python, "wheel": wheel}


@pytest.fixture(scope="module")
def alert_minion(salt_master, alert_venv):
    minion_id = random_string("fleet-alerted-")
    ACCEPTED_BY_HARNESS.add(minion_id)
    factory = salt_master.salt_minion_daemon(
        minion_id, overrides={"fleet": {"inventory": {"pip": [str(alert_venv["python"])]}}}
    )
    with factory.started():
        yield factory
    ret = salt_master.salt_key_cli().run("-d", minion_id, "-y")
    assert ret.returncode == 0, ret


def inventory(salt_cli, runner, minion):
    """Take the minion's inventory now (its return goes through the job cache, whose
    returner fires fleet/inventory/changed when it changed) and wait until it is stored."""
    ret = salt_cli.run("fleet.inventory", minion_tgt=minion, _timeout=120)
    assert ret.returncode == 0, ret
    digest = ret.data["digest"]
    wait_for(
        f"the inventory {digest[:12]} of {minion}",
        lambda: any(
            n["minion_id"] == minion and n["digest"] == digest
            for n in ask(runner, "fleet.nodes", f"tgt={minion}")
        ),
        timeout=60,
        interval=0.2,
    )


def pip(python, *args):
    subprocess.run(
        [str(python), "-m", "pip", *args, "--disable-pip-version-check", "-q"],
        check=True,
        capture_output=True,
    )


def test_a_real_minions_drift_reaches_the_webhook_signed_and_fast(
    salt_master, salt_cli, salt_run_cli, runner, alert_minion, alert_venv
):
    minion = alert_minion.id
    engine = store_engine.get_engine(config.load(salt_master.config).db_url)
    inventory(salt_cli, runner, minion)
    baseline = random_string("alerted-")
    run(salt_run_cli, "fleet.baseline_pin", minion, f"name={baseline}")
    run(salt_run_cli, "fleet.baseline_assign", baseline, minion, "tgt_type=list")
    route = random_string("e2e-").lower()
    with Receiver(secret=HMAC) as receiver:
        made = run(
            salt_run_cli,
            "fleet.alert_route_set",
            route,
            "webhook",
            f"match={{kinds: [drift], node: '{minion}'}}",
            f"target={{url: '{receiver.url}', timeout: 5}}",
            f"secrets={{hmac: {HMAC}}}",
        )
        assert made["key"] == f"ui:{route}" and made["secrets"] == ["hmac"]
        try:
            # a forgery first: the minion fires fleet/alert/drift about itself, unsigned and
            # with a made-up signature (an events batch, fired exactly as written)
            forged = {
                "id": minion,
                "state": "above",
                "score": 999.0,
                "previous_score": 0.0,
                "alert_score": 10.0,
                "baseline": baseline,
            }
            send_batch(
                alert_minion,
                [
                    {"tag": "fleet/alert/drift", "data": forged},
                    {"tag": "fleet/alert/drift", "data": {**forged, "sig": "ab" * 32}},
                ],
            )
            # then the real thing: remove and put back a package the baseline has
            # (missing: weight 10 = the package master's alert_score)
            for n in range(CROSSINGS):
                if n % 2 == 0:
                    pip(alert_venv["python"], "uninstall", "-y", "fleet-alerted")
                else:
                    pip(alert_venv["python"], "install", "--no-index", str(alert_venv["wheel"]))
                inventory(salt_cli, runner, minion)
                wait_for(
                    f"delivery {n + 1} at the receiver",
                    lambda k=n + 1: len(receiver.requests) >= k,
                    timeout=60,
                    interval=0.05,
                )
        finally:
            run(salt_run_cli, "fleet.alert_route_delete", route)
    got = receiver.requests
    records = [r.verified for r in got]
    assert all(isinstance(r, dict) for r in records), records  # HMAC and timestamp verified
    assert [(r["node"], r["condition"]) for r in records] == [
        (minion, "above"),
        (minion, "below"),
        (minion, "above"),
        (minion, "below"),
    ]
    assert [r["state"] for r in records] == ["firing", "resolved"] * 2
    assert len({r["dedup_key"] for r in records}) == 1  # what PagerDuty resolves by
    assert all(r["data"]["score"] != 999.0 for r in records)  # the forgery never came
    with engine.connect() as conn:
        stored = alert_views.alert_log(conn, node=minion, limit=50)
    assert [a["data"]["score"] for a in stored if a["data"].get("score") == 999.0] == []
    assert sorted(a["id"] for a in stored) == sorted(r["id"] for r in records)
    assert all(a["deliveries"][0]["status"] == "delivered" for a in stored)
    # latency: from the event's time (raised_at, set when the master fired it) to arrival
    latencies = [
        r.at - dt.datetime.fromisoformat(rec["raised_at"]).timestamp()
        for r, rec in zip(got, records, strict=True)
    ]
    median = statistics.median(latencies)
    print(
        "\nend to end (fleet/alert/drift fired -> receiver): "
        + json.dumps(
            {
                "alerts": len(latencies),
                "median_s": round(median, 3),
                "max_s": round(max(latencies), 3),
                "each_s": [round(x, 3) for x in latencies],
            }
        )  # fmt: skip
    )
    assert all(x >= 0 for x in latencies)
    assert median <= 2.0, latencies
