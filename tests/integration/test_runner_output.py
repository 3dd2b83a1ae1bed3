"""Every ``fleet`` runner through the ``salt-run`` CLI prints one document a script can parse.

``salt-run fleet.X --out=json | python3 -m json.tool`` must work: the runners' progress events
go to the event bus (where the web UI and the tests follow them) and are printed only with the
default outputter, for a person. The package's master runs every runner once, by the CLI as a
script would (no salt-factories parsing in between), on a node and names of this test's own.
"""

from __future__ import annotations

import datetime
import hashlib
import inspect
import json
import os
import pathlib
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml
from saltfactories.utils import random_string

from saltext_fleet import config
from saltext_fleet.core.inventory import build_inventory
from saltext_fleet.master import eventsig
from saltext_fleet.runners import fleet as fleet_runner
from saltext_fleet.store import engine as store_engine
from tests.support.certs import JANE, OLD, fixture_identities, mac_grains, store_grains
from tests.support.certs import xcode as xcode_bundle
from tests.support.fakekvmd import FakeKvmd
from tests.support.sshd import free_port
from tests.support.store import write
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

SALT_RUN = pathlib.Path(sys.executable).with_name("salt-run")
KVM_PASSWORD = "out-kvm-pw-2207"
IDNA_ADVISORY = pathlib.Path(__file__).parents[1] / "fixtures" / "osv" / "pypi" / "idna"


def salt_run(salt_master, *args, out="json"):
    """``salt-run -c <config> [--out=<out>] <args>``, as a script runs it."""
    cmd = [str(SALT_RUN), "-c", str(salt_master.config_dir)]
    if out:
        cmd.append(f"--out={out}")
    return subprocess.run(
        [*cmd, *map(str, args)], capture_output=True, text=True, timeout=180, check=False
    )


def one_json_document(proc, args):
    try:
        return json.loads(proc.stdout)
    except ValueError as exc:
        raise AssertionError(
            f"salt-run {args} --out=json: not one document ({exc}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
        ) from exc


@pytest.fixture(scope="module")
def node(salt_master):
    """A node of this test's own: its inventory stored as the job cache stores a return."""
    minion = random_string("out-node-")
    engine = store_engine.get_engine(config.load(salt_master.config).db_url)
    store_engine.ensure_schema(engine)
    inv = build_inventory({"pypi": {"fleet-ok": "1.0", "fleet-more": "2.0"}}, {}, {"os": "Debian"})
    ret = {"id": minion, "jid": "20261205060000000001", "fun": "fleet.inventory", "return": inv}
    write(engine, [{"kind": "return", "rid": uuid.uuid4().hex, "ret": {**ret, "success": True}}])
    return minion


@pytest.fixture(scope="module")
def mac(salt_master):
    """A macOS node of this test's own whose grains (stored as the job cache stores them)
    report the fixtures' identities, one of them expiring in three days."""
    minion = random_string("out-mac-")
    engine = store_engine.get_engine(config.load(salt_master.config).db_url)
    store_engine.ensure_schema(engine)
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=3, hours=1)
    ids = fixture_identities()
    ids[0] = {**ids[0], "not_after": soon.strftime("%Y-%m-%dT%H:%M:%SZ")}
    store_grains(engine, minion, mac_grains(ids, [xcode_bundle("16.2", True, "16C5032a")]))
    return minion


def progress_messages(event_listener, salt_master, since) -> list[str]:
    """The messages of the runner progress events on the master's bus since ``since``."""
    found = event_listener.get_events([(salt_master.id, "salt/run/*/progress")], after_time=since)
    return [e.data["message"] for e in sorted(found, key=lambda e: e.stamp)]


@pytest.fixture(scope="module")
def kvmd():
    """A fake kvmd (real HTTPS on loopback) running hot: its first poll alerts."""
    with FakeKvmd(password=KVM_PASSWORD) as fake:
        fake.cpu_temp = 91.0
        yield fake


def test_every_runner_prints_one_json_document(
    salt_master, node, mac, event_listener, tmp_path, kvmd
):
    base, other, imported = (random_string(f"out-{n}-") for n in "abc")
    device = random_string("out-kvm-").lower()
    group = random_string("out-grp-").lower()
    stranger = random_string("out-stranger-")
    route = random_string("out-route-").lower()
    yaml_file = tmp_path / "baseline.yaml"
    yaml_file.write_text(f"name: {imported}\npackages:\n  pypi:\n    fleet-ok: '1.0'\n")
    iso_file = tmp_path / "image.iso"
    iso_file.write_bytes(os.urandom(64 * 1024))
    iso_sha = hashlib.sha256(iso_file.read_bytes()).hexdigest()
    iso_name = random_string("out-iso-").lower() + ".iso"
    # Phases of (runner, args, exits 0?): the writing runners on throwaway names, leaving
    # nothing behind; the refusals print their error as one document too. The runs of a phase
    # do not depend on each other and go side by side (a salt-run costs 1-2 s of CPU).
    phases = [
        [
            ("store_status", [], True),
            ("baseline_pin", [node, f"name={base}"], True),
            ("baseline_set", [other, "package=pypi:fleet-ok", "version=2.0", "create=True"], True),
            ("baseline_import", [str(yaml_file)], True),
            ("keys", [], True),
            ("key_seen", [stranger, "pub=not a key"], True),  # ignored: no key
            ("actor_for", ["someone"], True),
            ("group_set", [group, "user=root", "password=not-used-here-at-all"], True),
            ("presence", [f"lost=[{node}]", "confirm=False"], True),
            ("presence_check", ["timeout=5"], True),
            ("audit", ["limit=5"], True),
            ("node_started", [node, f"sender={stranger}"], True),  # refused: not its sender
            ("onboard", [node], False),  # no accepted key
            ("cve_import", [str(IDNA_ADVISORY)], True),  # one real advisory (PYSEC-2024-60)
            ("sbom", [node], True),
            (
                "kvm_add",
                [
                    device,
                    "host=127.0.0.1",
                    f"port={kvmd.port}",
                    f"password={KVM_PASSWORD}",
                    f"fingerprint={kvmd.fingerprint}",
                    f"node={node}",
                ],
                True,
            ),
            ("iso_add", [str(iso_file), f"sha256={iso_sha}", f"name={iso_name}"], True),
            (
                "alert_route_set",
                [
                    route,
                    "webhook",
                    "match={kinds: [drift], min_severity: warning}",
                    f"target={{url: 'http://127.0.0.1:{free_port()}/hook'}}",
                ],
                True,
            ),
            ("alerts", ["limit=5"], True),
            ("cert_check", [f"node={mac}"], True),
        ],
        [
            ("baseline_list", [], True),
            ("baseline_show", [base], True),
            ("baseline_show", [base, "yaml=True"], True),
            ("baseline_diff", [base, other], True),
            ("baseline_assign", [other, node, "tgt_type=list"], True),
            ("nodes", [node], True),
            ("enrol", [stranger, "ttl=60"], True),
            ("group_list", [], True),
            ("secret_set", ["group", group, "token", "value=not-a-real-token"], True),
            ("cve_recompute", [], True),
            ("cve_triage_list", [], True),
            ("cve_triage_revoke", ["999999999"], False),  # no such decision
            ("kvm_poll", [device], True),
            ("kvm_list", [f"node={node}"], True),
            ("iso_list", [], True),
            ("kvm_power", [device, "on"], True),
            ("kvm_iso_mount", [device, iso_name], True),
            ("alert_secret", [f"ui:{route}", "hmac", "value=out-hmac-secret-1"], True),
            ("alert_routes", [], True),
            ("alert_ack", ["drift", stranger], False),  # no such condition
            ("alert_unack", ["drift", stranger], True),  # nothing to withdraw
            ("certs", ["days=30"], True),
            ("xcode", [], True),
        ],
        [
            ("drift", [node], True),
            ("cve", [node], True),
            ("cve_node", [node], True),
            ("cve_history", [node], True),
            ("cve_triage", ["PYSEC-2024-60", "will_fix", f"node={stranger}"], False),  # no node
            ("enrolments", [stranger], True),
            ("keys_accept", [stranger], False),  # no pending key
            ("keys_reject", [stranger], False),
            ("secret_delete", ["group", group, "token"], True),
            ("kvm_history", [device], True),
            ("alert_test", [f"ui:{route}"], True),  # a closed port: recorded as failed
            ("kvm_click", [device, "no-such-button"], False),  # refused before anything is sent
            ("kvm_iso_eject", [device], True),
            ("certs", ["days=soon"], False),  # not a number of days
            # a closed loopback port: the steps up to the SSH connection, then a clear failure
            (
                "bootstrap",
                [
                    "host=127.0.0.1",
                    f"port={free_port()}",
                    f"id={stranger}",
                    f"group={group}",
                    "service=daemon",
                    "timeout=30",
                    "wait=5",
                ],
                False,
            ),
        ],
        [
            ("drift_node", [node], True),
            ("drift_history", [node], True),
            ("rotate_key", [], True),
            ("bootstraps", [f"id={stranger}"], True),
            ("keys_delete", [stranger], True),
            ("kvm_remove", [device], True),
            ("iso_remove", [iso_name], True),
            ("alert_route_delete", [route], True),
        ],
        [
            ("baseline_unassign", [other], True),
            ("group_delete", [group], True),
            ("baseline_delete", [base], True),
            ("baseline_delete", [other], True),
            ("baseline_delete", [imported], True),
        ],
        [("audit_verify", [], True)],
    ]
    runners = {
        name
        for name, fun in inspect.getmembers(fleet_runner, inspect.isfunction)
        if fun.__module__ == fleet_runner.__name__ and not name.startswith("_")
    }
    assert runners == {run[0] for phase in phases for run in phase}, "every runner is run here"

    def one(run):
        name, args, ok = run
        began = time.time()
        proc = salt_run(salt_master, f"fleet.{name}", *args)
        doc = one_json_document(proc, (name, *args))
        assert (proc.returncode == 0) == ok, (name, proc.returncode, doc)
        return name, doc, time.time() - began

    start = time.time()
    out, took, seen = {}, {}, set()
    with ThreadPoolExecutor(max_workers=3) as pool:
        for phase in phases:
            for name, doc, seconds in pool.map(one, phase):
                out.setdefault(name, doc)
                took[name] = round(took.get(name, 0) + seconds, 1)
            # (the listener forgets events after two minutes)
            seen.update(progress_messages(event_listener, salt_master, start))
    print(f"{len(took)} runners in {time.time() - start:.1f} s; salt-run seconds: {took}")

    # what came out is the result, not a progress event...
    assert set(out["drift"]) == {node} and out["drift"][node]["baseline"] == other
    assert set(out["rotate_key"]) == {"key_id", "reencrypted", "retired"}
    assert "127.0.0.1" in out["bootstrap"], out["bootstrap"]
    assert out["audit_verify"]["ok"] is True
    assert out["alert_test"]["ok"] is False and out["alert_test"]["error"], out["alert_test"]
    assert out["alert_route_delete"] == {"route": f"ui:{route}", "deleted": True}
    assert "out-hmac-secret-1" not in json.dumps(out)
    assert out["sbom"]["specVersion"] == "1.6"
    assert out["sbom"]["metadata"]["component"]["name"] == node
    assert set(out["cve_import"]["counts"]["total"]) >= {"added", "unchanged"}
    # (the package master's engine polls every 15 s too: whichever poll came first alerted)
    assert out["kvm_poll"][device]["poll"]["temperature"] == 91.0
    assert out["kvm_poll"][device]["alerts"] in ([], ["over_temperature"])
    assert out["kvm_list"][device]["node"] == node and KVM_PASSWORD not in json.dumps(out)
    assert {p["temperature"] for p in out["kvm_history"]} == {91.0}
    # the library's image went to the device once, the power click once, the bad button never
    assert len(kvmd.seen("/api/msd/write")) == 1 and len(kvmd.seen("/api/atx/power")) == 1
    assert kvmd.seen("/api/atx/click") == [] and out["iso_list"][iso_name]["sha256"] == iso_sha
    # the alert went to the master's bus, signed by the master
    alert = wait_for(
        "the fleet/alert/kvm event",
        lambda: [
            e
            for e in event_listener.get_events(
                [(salt_master.id, "fleet/alert/kvm")], after_time=start
            )
            if e.data.get("id") == device
        ],
        timeout=30,
    )[0]
    assert alert.data["alert"] == "over_temperature" and alert.data["node"] == node
    alerts = event_listener.get_events([(salt_master.id, "fleet/alert/kvm")], after_time=start)
    assert len([e for e in alerts if e.data.get("id") == device]) == 1  # on the transition only
    # the certificate due in three days fired once, signed, with the master's count of days
    fired = {
        (f["id"], f["sha1"], f["threshold"]): f["days_left"] for f in out["cert_check"]["fired"]
    }
    assert set(fired) == {(mac, JANE, "7d"), (mac, OLD, "expired")}
    assert fired[(mac, JANE, "7d")] == 3
    certs_alert = wait_for(
        "the fleet/alert/cert event",
        lambda: [
            e
            for e in event_listener.get_events(
                [(salt_master.id, "fleet/alert/cert")], after_time=start
            )
            if e.data.get("id") == mac and e.data.get("threshold") == "7d"
        ],
        timeout=30,
    )
    assert len(certs_alert) == 1
    eventsig.check(salt_master.config, "fleet/alert/cert", dict(certs_alert[0].data))
    mine = [c for c in out["certs"] if mac in c["nodes"]]
    assert [c["sha1"] for c in mine] == [OLD, JANE]  # soonest expiry first
    assert mine[1]["days_left"] == 3 and mine[0]["days_left"] < -900
    assert out["xcode"]["nodes"][mac]["selected"] == "16.2"
    assert "16.2" in out["xcode"]["versions"]
    # ...and the progress events went to the bus all the same
    wanted = (
        "computing drift of 1 nodes (of 1 targeted)",
        "re-encrypting every secret",
        f"{stranger}: claiming the bootstrap",
    )
    wait_for(
        f"the progress events on the bus: {wanted}",
        lambda: (
            seen.update(progress_messages(event_listener, salt_master, start))
            or all(any(w in m for m in seen) for w in wanted)
        ),
        timeout=30,
    )


def test_yaml_is_one_document_and_the_default_output_shows_progress(salt_master, node):
    nodes_json = one_json_document(salt_run(salt_master, "fleet.nodes", node), "nodes")
    proc = salt_run(salt_master, "fleet.nodes", node, out="yaml")
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout) == nodes_json
    # (PyYAML takes two mappings printed one after the other as one: look for the keys)
    name = random_string("out-y-")
    made = salt_run(salt_master, "fleet.baseline_pin", node, f"name={name}", out="yaml")
    assert made.returncode == 0, made.stderr
    try:
        proc = salt_run(salt_master, "fleet.drift", node, f"baseline={name}", out="yaml")
        assert proc.returncode == 0, proc.stderr
        drift = yaml.safe_load(proc.stdout)
        assert set(drift) == {node} and drift[node]["score"] == 0, proc.stdout
        # with no --out, a person at a terminal: the progress lines, then the table
        proc = salt_run(salt_master, "fleet.drift", node, f"baseline={name}", out=None)
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[0] == "... computing drift of 1 nodes (of 1 targeted)", lines
        assert lines[1].startswith("... drift of 1 nodes recorded"), lines
        assert lines[2].split()[:3] == ["NODE", "BASELINE", "SCORE"], lines
    finally:
        salt_run(salt_master, "fleet.baseline_delete", name)
