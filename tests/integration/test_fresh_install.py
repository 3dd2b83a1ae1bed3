"""From a fresh virtualenv: ``pip install .`` and the demo's real master finds the extension.

This is what a user does on a new machine. The package is installed non-editable into a new
virtualenv; the demo then starts a real salt-master (with no ``extension_modules``) and three
real salt-minions from that virtualenv, accepts their keys, and prints the inventory summary.
"""

import json
import pathlib
import re
import subprocess
import sys

import pytest
import yaml

from tests.conftest import CODE_DIR

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory):
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    proc = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            str(CODE_DIR),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return venv


def test_installed_package_is_not_the_checkout(fresh_venv):
    out = subprocess.run(
        [
            str(fresh_venv / "bin" / "python"),
            "-c",
            "import saltext_fleet, importlib.metadata as m; print(saltext_fleet.__file__);"
            "print([e.value for e in m.entry_points(group='salt.loader')])",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    ).stdout.splitlines()
    assert str(fresh_venv) in out[0]
    assert "saltext_fleet" in out[1]


def test_demo_reaches_three_minions_and_prints_package_counts(fresh_venv, tmp_path):
    root = tmp_path / "demo"
    proc = subprocess.run(
        [str(fresh_venv / "bin" / "saltext-fleet"), "demo", "--once", "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd="/",
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    # The master the demo ran has no extension_modules: the entry point did the work.
    master_conf = yaml.safe_load((root / "master" / "master").read_text())
    assert "saltext_fleet" not in str(master_conf["extension_modules"])
    assert not master_conf.get("module_dirs")
    assert not list(pathlib.Path(master_conf["extension_modules"]).rglob("fleet*.py"))
    figures = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    assert figures["minions_answering"] == 3
    assert figures["seconds_to_answer"] < 60
    table = out.split("\n\n")[1].splitlines()
    assert table[0].split()[:3] == ["minion", "hostname", "os"]
    assert "deb" in table[0].split() and "pypi" in table[0].split()
    assert sorted(line.split()[0] for line in table[1:]) == ["demo-1", "demo-2", "demo-3"]
    counts = figures["packages"]
    assert set(counts) == {"demo-1", "demo-2", "demo-3"}
    for minion_counts in counts.values():
        assert minion_counts["deb"] > 100  # this machine's real Debian packages
    # Each minion lists a virtualenv of the demo's: demo-2's really differs.
    assert counts["demo-1"]["pypi"] == counts["demo-3"]["pypi"] == 3
    assert counts["demo-2"]["pypi"] == 3
    # The drift table and scores: baseline pinned from demo-1; demo-2 is the one that differs
    # (demo-app 1.4.2 -> 2.0.1 major 8, demo-lib patch 1, demo-extra extra 2, demo-tool
    # missing 10).
    assert figures["drift"] == {"demo-1": 0.0, "demo-2": 21.0, "demo-3": 0.0}
    drift_table = out.split("Drift from baseline 'demo' (pinned from demo-1):\n")[1]
    line = next(x for x in drift_table.splitlines() if x.startswith("demo-2"))
    assert "~pypi/demo-app 1.4.2->2.0.1 (major)" in line
    # the engine served the web UI; the demo logged in with the admin password it printed
    assert re.search(r"Web UI: http://127\.0\.0\.1:\d+/  \(user: admin, password: \S+\)", out)
    assert figures["ui"].startswith("http://127.0.0.1:")
    # only minions are nodes (not the master that ran the demo's runners), every one was
    # onboarded without a failed job, and none that answered was ever shown offline
    assert figures["nodes"] == ["demo-1", "demo-2", "demo-3"]
    assert figures["onboarded"] == ["demo-1", "demo-2", "demo-3"], _onboarding_log(root)
    assert figures["failed_jobs"] == {}
    assert figures["offline_seen"] == []
    assert re.search(r"stopped every daemon", out)


def _onboarding_log(root: pathlib.Path) -> str:
    """What the demo's master logged about starts and onboarding (to explain a failure)."""
    log = root / "master-root" / "log" / "master"
    if not log.exists():
        return f"{log} does not exist"
    words = ("onboard", "fleet.started", "start event", "refus", "not confirmed", "Traceback")
    lines = [
        line
        for line in log.read_text(errors="replace").splitlines()
        if any(w in line for w in words)
    ]
    return "\n".join(lines)[-4000:]
