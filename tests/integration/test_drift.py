"""Drift with real daemons: two minions whose virtualenvs really differ.

The master is the package's (the ``saltext-fleet config`` snippet: job cache, event return,
shipped reactors, external pillar). These minions get virtualenvs of their own, because the
state test changes one of them.
"""

import json
import pathlib
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from saltfactories.utils import random_string
from sqlalchemy import select

from saltext_fleet import config
from saltext_fleet.store import engine as store_engine
from saltext_fleet.store import ui as store_ui
from saltext_fleet.store.models import Return
from tests.support.daemons import start_all, stop_all
from tests.support.harness import ACCEPTED_BY_HARNESS
from tests.support.venvs import make_venv, make_wheel, pip_install
from tests.support.waiting import ask, run, wait_for

pytestmark = pytest.mark.integration

BEACON = {"fleet_pkgset": [{"interval": 1}]}


@pytest.fixture(scope="module")
def drift_venvs(tmp_path_factory):
    root = tmp_path_factory.mktemp("drift-venvs")
    wheels = root / "wheels"
    # (side by side: each is a few seconds of pip, mostly waiting)
    with ThreadPoolExecutor(max_workers=2) as pool:
        good, other = pool.map(make_venv, (root / "good", root / "other"))
    pip_install(good, make_wheel(wheels, "fleet-alpha", "1.0.0"))
    pip_install(
        other, make_wheel(wheels, "fleet-alpha", "2.1.0"), make_wheel(wheels, "fleet-beta", "0.3")
    )
    make_wheel(wheels, "fleet-gamma", "4.5.6")
    return {"good": good, "other": other, "wheels": wheels}


def _start(salt_master, prefix, python):
    overrides = {
        "fleet": {"inventory": {"pip": [str(python)]}},
        # Salt counts a beacon's interval in loop_interval units (see the package conftest).
        "beacons": BEACON,
        "loop_interval": 1,
    }
    minion_id = random_string(prefix)
    ACCEPTED_BY_HARNESS.add(minion_id)
    return salt_master.salt_minion_daemon(minion_id, overrides=overrides)


@pytest.fixture(scope="module")
def drift_minions(salt_master, drift_venvs):
    """The good and the other minion, started (and stopped) side by side; afterwards their
    keys are deleted, so the package master's later ``'*'`` jobs do not wait for minions that
    are gone."""
    factories = [
        _start(salt_master, "fleet-drift-good-", drift_venvs["good"]),
        _start(salt_master, "fleet-drift-other-", drift_venvs["other"]),
    ]
    try:
        start_all(factories)
        yield factories
    finally:
        stop_all(factories)
        for factory in factories:
            ret = salt_master.salt_key_cli().run("-d", factory.id, "-y")
            assert ret.returncode == 0, ret


@pytest.fixture(scope="module")
def good_minion(drift_minions):
    return drift_minions[0]


@pytest.fixture(scope="module")
def other_minion(drift_minions):
    return drift_minions[1]


def pip_freeze(python):
    out = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(line.split("==", 1) for line in out.split())


def history(runner, minion):
    return ask(runner, "fleet.drift_history", minion)


def inventory_stored(runner, minion, digest):
    """True once the master's store holds ``digest`` as the node's inventory."""
    return any(
        row["minion_id"] == minion and row["digest"] == digest
        for row in ask(runner, "fleet.nodes", f"tgt={minion}")
    )


@pytest.fixture(scope="module")
def pinned(salt_master, salt_cli, salt_run_cli, runner, good_minion, other_minion):
    """Both inventories stored; baseline ``golden`` pinned from the good minion and assigned."""
    for minion in (good_minion, other_minion):
        ret = salt_cli.run("fleet.inventory", minion_tgt=minion.id, _timeout=120)
        assert ret.returncode == 0, ret
        digest = ret.data["digest"]
        wait_for(
            f"the inventory of {minion.id}",
            lambda m=minion.id, d=digest: inventory_stored(runner, m, d),
        )
    name = random_string("golden-")
    pin = run(salt_run_cli, "fleet.baseline_pin", good_minion.id, f"name={name}")
    assert pin["packages"]["pypi"] >= 1 and pin["packages"]["deb"] > 10
    run(salt_run_cli, "fleet.baseline_assign", name, "fleet-drift-*")
    return name


def test_pinned_node_scores_zero_and_the_other_names_its_exact_differences(
    salt_run_cli, good_minion, other_minion, pinned, salt_master, event_listener
):
    start = time.time()
    ret = salt_run_cli.run("fleet.drift", "fleet-drift-*", _timeout=120, merge_json_output=False)
    assert ret.returncode == 0, ret
    drift = json.loads(ret.stdout)  # the result alone: the progress events are on the bus
    progress = event_listener.wait_for_events(
        [(salt_master.id, "salt/run/*/progress")], after_time=start, timeout=30
    )
    assert "computing drift of 2 nodes" in " ".join(e.data["message"] for e in progress.matches)
    assert set(drift) == {good_minion.id, other_minion.id}
    good, other = drift[good_minion.id], drift[other_minion.id]
    assert good["score"] == 0 and good["baseline"] == pinned
    assert good["missing"] == good["extra"] == good["changed"] == good["facts"] == []
    assert other["baseline"] == pinned
    assert other["changed"] == [
        {
            "ecosystem": "pypi",
            "name": "fleet-alpha",
            "expected": "1.0.0",
            "actual": "2.1.0",
            "change": "major",
            "direction": "newer",
        }
    ]
    assert other["extra"] == [{"ecosystem": "pypi", "name": "fleet-beta", "version": "0.3"}]
    assert other["missing"] == [] and other["facts"] == []
    # default weights: major change 8 + extra 2
    assert other["score"] == 10.0
    assert other["computed_at"]
    # The package master's alert_score is 10: the other node crossed it.
    alerts = event_listener.wait_for_events(
        [(salt_master.id, "fleet/alert/drift")], after_time=start, timeout=30
    )
    assert alerts.found_all_events
    alert = [e.data for e in alerts.matches if e.data["id"] == other_minion.id][-1]
    assert alert["state"] == "above" and alert["score"] == 10.0


def test_the_default_output_is_a_table(salt_master, pinned, other_minion):
    """``salt-run fleet.drift`` with no ``--out``: the table, after the progress lines."""
    salt_run = pathlib.Path(sys.executable).with_name("salt-run")
    proc = subprocess.run(
        [str(salt_run), "-c", str(salt_master.config_dir), "fleet.drift", "fleet-drift-*"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout
    assert text.startswith("... computing drift of 2 nodes (of 2 targeted)\n"), text
    header = next(x for x in text.splitlines() if x.startswith("NODE"))
    assert header.split()[:3] == ["NODE", "BASELINE", "SCORE"]
    line = next(x for x in text.splitlines() if x.startswith(other_minion.id))
    assert "10.0" in line and "~pypi/fleet-alpha 1.0.0->2.1.0 (major)" in line
    assert "+pypi/fleet-beta 0.3" in line
    assert "2 nodes, 1 aligned, 1 drifting" in text


def test_an_install_adds_a_history_point_with_nobody_running_the_runner(
    salt_run_cli, runner, other_minion, drift_venvs, pinned
):
    before = history(runner, other_minion.id)
    assert before and before[-1]["extra"] == 1
    # The beacon records the package set on its first run (and says so in its state file);
    # wait for that run.
    state = pathlib.Path(other_minion.config["cachedir"]) / "fleet" / "pkgset_beacon.json"
    wait_for("the beacon's first run", state.exists, timeout=60)
    pip_install(drift_venvs["other"], drift_venvs["wheels"] / "fleet_gamma-4.5.6-py3-none-any.whl")
    # beacon -> fleet/pkgset/changed -> reactor runs fleet.inventory -> returner stores it
    # -> fleet/inventory/changed -> reactor runs fleet.drift_node -> a history point.
    points = wait_for(
        "a drift history point from the reactor",
        lambda: [
            p
            for p in history(runner, other_minion.id)[len(before) :]
            if p["trigger"] == "inventory"
        ],
        timeout=120,
    )
    assert points[-1]["extra"] == 2 and points[-1]["score"] == 12.0


# (The next two tests use nodes of their own, and run here on purpose: the reactor acts on
# one package-change hint per node a minute (fleet_gate.HINT_WINDOWS), so the install test's
# hint for the other minion holds back the baseline state test's for the rest of that minute.)


def test_a_package_name_with_escape_sequences_prints_inert(salt_master, salt_run_cli):
    """Names and versions are the minions' words: ``salt-run fleet.drift`` prints them with
    escape sequences and control characters taken out (a terminal would obey them)."""
    import uuid

    from saltext_fleet import config
    from saltext_fleet.core.inventory import build_inventory
    from saltext_fleet.store import engine as store_engine
    from tests.support.store import write

    hostile = "evil\x1b]0;pwned\x07pkg\x1b[2J\x1b[31m"
    node = random_string("hostile-esc-")
    engine = store_engine.get_engine(config.load(salt_master.config).db_url)

    def store_inventory(pypi, jid):
        # stored as the master's job cache stores a return of that node
        inv = build_inventory({"pypi": pypi}, {}, {"os": "Debian"})
        ret = {"id": node, "jid": jid, "fun": "fleet.inventory", "return": inv, "success": True}
        write(engine, [{"kind": "return", "rid": uuid.uuid4().hex, "ret": ret}])

    store_inventory({"fleet-ok": "1.0"}, "20261205050000000001")
    base = random_string("esc-")
    run(salt_run_cli, "fleet.baseline_pin", node, f"name={base}")
    store_inventory({"fleet-ok": "1.0", hostile: "6.6.6\x1b[1A\r"}, "20261205050000000002")
    salt_run = pathlib.Path(sys.executable).with_name("salt-run")
    proc = subprocess.run(
        [
            str(salt_run),
            "-c",
            str(salt_master.config_dir),
            "fleet.drift",
            node,
            f"baseline={base}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith(node))
    assert "+pypi/evil" in line and "6.6.6" in line  # the finding is there...
    assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout  # ...and inert
    assert "\r" not in proc.stdout


def test_onboarding_turns_on_the_beacon_and_an_install_changes_drift(
    salt_master, salt_cli, salt_run_cli, runner, drift_venvs, pinned, tmp_path
):
    """A minion with no beacon in its config: onboarding turns ``fleet_pkgset`` on (with
    ``fleet:onboard:beacon_interval``), without a failed job; a package installed into its
    watched virtualenv then changes its drift with no manual step."""
    python = make_venv(tmp_path / "watched")
    pip_install(python, drift_venvs["wheels"] / "fleet_alpha-1.0.0-py3-none-any.whl")
    minion_id = random_string("fleet-onboarded-")
    ACCEPTED_BY_HARNESS.add(minion_id)
    # no "beacons"; loop_interval 1: Salt counts beacon intervals in loop_interval units
    factory = salt_master.salt_minion_daemon(
        minion_id, overrides={"fleet": {"inventory": {"pip": [str(python)]}}, "loop_interval": 1}
    )
    with factory.started():
        try:
            wait_for(
                f"{minion_id} to be onboarded",
                lambda: any(
                    e["action"] == "node.onboard"
                    for e in ask(runner, "fleet.audit", f"target={minion_id}")
                ),
                timeout=120,
            )
            onboarded = [
                e
                for e in ask(runner, "fleet.audit", f"target={minion_id}")
                if e["action"] == "node.onboard"
            ][-1]
            assert onboarded["details"]["steps"]["beacon"] == 2
            listed = salt_cli.run("beacons.list", "return_yaml=False", minion_tgt=minion_id)
            assert listed.data["fleet_pkgset"] == [{"interval": 2}], listed
            saved = pathlib.Path(factory.config["conf_file"]).parent / "minion.d" / "beacons.conf"
            assert "fleet_pkgset" in saved.read_text()
            # no failed job from a normal onboarding (the schedule entries were not there)
            store = store_engine.get_engine(config.load(salt_master.config).db_url)
            with store.connect() as conn:
                failed = conn.execute(
                    select(Return.fun, Return.ret).where(
                        Return.minion_id == minion_id, Return.success.is_(False)
                    )
                ).all()
                assert not failed, failed
                assert store_ui.node(conn, minion_id)["beacon_interval"] == 2
            run(salt_run_cli, "fleet.baseline_assign", pinned, minion_id, "tgt_type=list")
            before = run(salt_run_cli, "fleet.drift", minion_id)[minion_id]
            assert before["extra"] == [] and before["score"] == 0
            # the beacon's first run records the package set (and says so in its state file)
            state = pathlib.Path(factory.config["cachedir"]) / "fleet" / "pkgset_beacon.json"
            wait_for("the beacon's first run", state.exists, timeout=60)
            pip_install(python, drift_venvs["wheels"] / "fleet_gamma-4.5.6-py3-none-any.whl")
            # beacon -> reactor -> inventory -> returner -> fleet/inventory/changed -> drift
            points = wait_for(
                "a drift history point from the beacon's inventory",
                lambda: [
                    p
                    for p in history(runner, minion_id)
                    if p["trigger"] == "inventory" and p["extra"] == 1
                ],
                timeout=120,
            )
            assert points[-1]["score"] == 2.0
        finally:
            ret = salt_master.salt_key_cli().run("-d", minion_id, "-y")
            assert ret.returncode == 0, ret


def test_the_baseline_state_lists_changes_under_test_and_then_aligns_the_node(
    salt_master, salt_run_cli, runner, other_minion, drift_venvs, pinned
):
    sls = f"""
bring-to-baseline:
  fleet.baseline:
    - pip_options:
        no_index: true
        find_links: {drift_venvs["wheels"]}
"""
    cli = other_minion.salt_call_cli()
    with salt_master.state_tree.base.temp_file("fleet_baseline_test.sls", sls):
        packages_before = pip_freeze(drift_venvs["other"])
        ret = cli.run("state.apply", "fleet_baseline_test", "test=True", _timeout=180)
        assert ret.returncode == 0, ret.stdout
        (state,) = ret.data.values()
        assert state["result"] is None
        assert state["changes"]["pypi"]["install"] == {"fleet-alpha": "==1.0.0"}
        assert sorted(state["changes"]["pypi"]["remove"]) == ["fleet-beta", "fleet-gamma"]
        assert pip_freeze(drift_venvs["other"]) == packages_before  # nothing changed

        ret = cli.run("state.apply", "fleet_baseline_test", _timeout=300)
        assert ret.returncode == 0, ret
        (state,) = ret.data.values()
        assert state["result"] is True, state
        after = pip_freeze(drift_venvs["other"])
        assert after["fleet-alpha"] == "1.0.0"
        assert "fleet-beta" not in after and "fleet-gamma" not in after

    # The state announced the change: the reactor re-inventories and records score 0.
    try:
        wait_for(
            "the node's drift to reach 0 after the state",
            lambda: (h := history(runner, other_minion.id)) and h[-1]["score"] == 0,
            timeout=120,
        )
    finally:
        print("history:", history(runner, other_minion.id)[-3:])
        print("nodes:", run(salt_run_cli, "fleet.nodes", other_minion.id))
    drift = run(salt_run_cli, "fleet.drift", other_minion.id)
    assert drift[other_minion.id]["score"] == 0
    assert drift[other_minion.id]["extra"] == drift[other_minion.id]["changed"] == []


def test_highstate_test_runs_count_as_pending_states(
    salt_master, salt_cli, salt_run_cli, runner, other_minion, pinned
):
    """A ``state.apply test=True`` published by the master: its pending changes join the score."""
    sls = """
would-change:
  test.succeed_with_changes: []
already-fine:
  test.succeed_without_changes: []
"""
    with salt_master.state_tree.base.temp_file("fleet_pending_test.sls", sls):
        before = len(history(runner, other_minion.id))
        ret = salt_cli.run(
            "state.apply",
            "fleet_pending_test",
            "test=True",
            minion_tgt=other_minion.id,
            _timeout=180,
        )
        assert ret.returncode == 0, ret
        # returner -> fleet/states/ran -> reactor -> fleet.drift_node -> a history point
        points = wait_for(
            "a history point from the highstate test run",
            lambda: [
                p for p in history(runner, other_minion.id)[before:] if p["trigger"] == "states"
            ],
        )
    assert points[-1]["pending_states"] == 1
    assert points[-1]["score"] == 1.0  # aligned packages; one pending state at weight 1
    drift = run(salt_run_cli, "fleet.drift", other_minion.id)
    assert drift[other_minion.id]["pending_states"] == 1
