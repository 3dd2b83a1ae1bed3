"""``salt-run fleet.bootstrap`` against a real sshd on loopback and the package's real master.

The machine is this one, reached as root through a private sshd (Debian's openssh-server) on
a free loopback port; the minion goes into a prefix under a short temporary folder and runs as a plain daemon.
From there on it is a stranger to the master like any other: it gets in only because the
gate finds the enrolment the bootstrap created for exactly its key.
"""

from __future__ import annotations

import json
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml
from saltfactories.utils import random_string

from saltext_fleet.core import gate as core_gate
from tests.support.sshd import HOST_PYTHON, SSH_KEYGEN, kill_minion, pid_alive, running_sshd
from tests.support.waiting import run, wait_for

pytestmark = pytest.mark.timeout(900)


def test_bootstrap_from_ssh_only_to_a_minion_that_answers(
    salt_master, salt_run_cli, short_tmp, event_listener
):
    base = short_tmp / "bootstrap"  # the minion's sockets go under it: a short path
    minion_id = random_string("fleet-boot-")
    prefix = base / "node"
    with running_sshd(base / "sshd") as sshd:
        group = random_string("lab-").lower()
        made = run(
            salt_run_cli,
            "fleet.group_set",
            group,
            "user=root",
            f"port={sshd['port']}",
            f"private_key_file={sshd['key']}",
        )
        assert made["credential"] == "private_key" and made["ssh_port"] == sshd["port"]
        args = [
            "fleet.bootstrap",
            "host=127.0.0.1",
            f"id={minion_id}",
            f"group={group}",
            f"python={HOST_PYTHON}",
            f"prefix={prefix}",
            "service=daemon",
            "wait=120",
        ]
        start = time.time()
        progress_seen = set()
        first = {}
        worker = threading.Thread(
            # a CLI object of its own: salt-factories' are not thread-safe
            target=lambda: first.update(
                ret=salt_master.salt_run_cli().run(*args, _timeout=900, merge_json_output=False)
            )
        )
        worker.start()
        try:
            wait_for(
                "the bootstrap to be running",
                # (salt-run exits 1 while the list is still empty)
                lambda: (
                    "ret" in first
                    or any(
                        isinstance(a, dict) and a.get("state") == "running"
                        for a in salt_run_cli.run("fleet.bootstraps", f"id={minion_id}").data or []
                    )
                ),
                timeout=60,
            )
            assert "ret" not in first, first["ret"].stdout[-3000:]  # it must not have ended
            # a second bootstrap of a node that is still bootstrapping is refused
            second = salt_run_cli.run(*args, _timeout=120)
            assert "still bootstrapping" in second.stdout + second.stderr, second
        finally:
            # the listener forgets events after two minutes: keep the progress as it comes
            while worker.is_alive() and time.time() - start < 900:
                progress_seen.update(
                    bootstrap_progress(event_listener, salt_master, minion_id, start)
                )
                worker.join(5)
            # the last step's event may still be on its way to the listener
            deadline = time.time() + 30
            while time.time() < deadline:
                progress_seen.update(
                    bootstrap_progress(event_listener, salt_master, minion_id, start)
                )
                if any(": done in " in message for _, message in progress_seen):
                    break
                time.sleep(0.5)
        try:
            ret = first["ret"]
            if ret.returncode != 0:
                print("KEYS", salt_run_cli.run("fleet.keys").data)
                print("AUDIT", salt_run_cli.run("fleet.audit", f"target={minion_id}").data)
                for log in prefix.rglob("*.log"):
                    print("LOG", log, log.read_text()[-3000:])
                root = Path(salt_master.config["root_dir"])
                for log in [*root.rglob("master*.log"), *root.rglob("log/salt/master")]:
                    print("MASTERLOG", log, log.read_text()[-5000:])
                for log in (prefix / "var" / "log").rglob("*"):
                    if log.is_file():
                        print("LOG", log, log.read_text()[-3000:])
            assert ret.returncode == 0, ret.stdout[-4000:]
            data = json.loads(ret.stdout)  # one document: the progress events are on the bus
            took = time.time() - start
            print(f"bootstrap: {took:.0f} s, steps {data['steps']}")
            assert data["ok"] is True and data["id"] == minion_id
            # every step was a progress event on the master's bus, in order
            messages = [message for _, message in sorted(progress_seen)]
            wanted = [
                "claiming",
                "key pair",
                "enrolment",
                "wheelhouse",
                "installing the minion",
                "start the minion",
                "key to be accepted",
                "first inventory",
                "done in",
            ]
            at = 0
            for message in messages:
                if at < len(wanted) and wanted[at] in message:
                    at += 1
            assert at == len(wanted), (wanted[at:], messages)
            # accepted by the gate through its enrolment, onboarded, answering
            key = run(salt_run_cli, "fleet.keys", "status=accepted")[minion_id]
            assert key["decided_by"].startswith("enrolment:")
            assert key["fingerprint"] == data["fingerprint"]
            ping = salt_master.salt_cli().run("test.ping", minion_tgt=minion_id, _timeout=60)
            assert ping.data is True, ping
            attempts = run(salt_run_cli, "fleet.bootstraps", f"id={minion_id}")
            assert [a["state"] for a in attempts] == ["done"]
            actions = [
                e["action"]
                for e in run(salt_run_cli, "fleet.audit", "limit=50", f"target={minion_id}")
            ]
            for action in ("bootstrap.start", "enrol.create", "enrol.accept", "bootstrap.done"):
                assert action in actions, actions
            # the group's private key is stored encrypted and never printed
            assert sshd["key"].read_text().strip() not in ret.stdout
            _check_the_installed_node(salt_master, sshd, prefix, minion_id)
        finally:
            kill_minion(prefix / "var" / "run" / "salt-minion.pid")
            salt_master.salt_key_cli().run("-d", minion_id, "-y")


def bootstrap_progress(event_listener, salt_master, minion_id, since) -> set:
    """``{(stamp, message)}`` of the bootstrap's progress events on the master's bus."""
    events = event_listener.get_events([(salt_master.id, "salt/run/*/progress")], after_time=since)
    return {
        (e.stamp, e.data["message"])
        for e in events
        if e.data.get("message", "").startswith(f"{minion_id}: ")
    }


def _check_the_installed_node(salt_master, sshd, prefix: Path, minion_id: str) -> None:
    """What the bootstrap left on the node and on the master: a running daemon from its pid
    file, private files with private modes, the key pair the master made, a venv that imports
    salt and this package, nothing secret in the master's temporary folder, and the node's
    SSH host key recorded (not ignored)."""
    pidfile = prefix / "var" / "run" / "salt-minion.pid"
    pid = int(pidfile.read_text().strip())
    assert pid_alive(pid)
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        assert b"salt-minion" in fh.read()
    conf = prefix / "etc" / "salt" / "minion"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    data = yaml.safe_load(conf.read_text())
    assert data["id"] == minion_id and data["root_dir"] == str(prefix)
    pki = prefix / "etc" / "salt" / "pki" / "minion"
    assert stat.S_IMODE((pki / "minion.pem").stat().st_mode) == 0o400
    held = salt_master.salt_key_cli().run("-f", minion_id, "--out=json").data
    assert held["minions"][minion_id] == core_gate.fingerprint((pki / "minion.pub").read_text())
    check = subprocess.run(
        [str(prefix / "venv" / "bin" / "python"), "-c", "import salt, saltext_fleet"],
        capture_output=True,
        text=True,
        cwd=prefix,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    cachedir = Path(salt_master.config["cachedir"], "fleet")
    assert list((cachedir / "bootstrap-tmp").iterdir()) == []
    found = subprocess.run(
        [SSH_KEYGEN, "-F", f"[127.0.0.1]:{sshd['port']}", "-f", str(cachedir / "known_hosts")],
        capture_output=True,
        check=False,
    )
    assert found.returncode == 0
