"""The key gate against a real master and real minions.

The package master runs the shipped reactor (``salt/auth`` -> ``keys.sls``) and accepts only
the harness's own minions itself (``tests.support.harness``): every minion started here is a
stranger to it unless the gate lets it in.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import salt.key
import salt.runner
import salt.utils.event
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from saltfactories.utils import random_string
from sqlalchemy import func, select, update

from saltext_fleet import config
from saltext_fleet.core import gate as core_gate
from saltext_fleet.store import engine as store_engine
from saltext_fleet.store import gate as store_gate
from saltext_fleet.store.models import AuditEvent, MinionKey, Secret
from tests.support.waiting import ask, run, wait_for

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def store(salt_master):
    engine = store_engine.get_engine(config.load(salt_master.config).db_url)
    store_engine.ensure_schema(engine)
    return engine


class Stranger:
    """A real salt-minion whose key nobody accepted (started without waiting for it to be
    accepted, which salt-factories' ``started()`` would do)."""

    def __init__(self, salt_master, minion_id, overrides=None):
        self.master = salt_master
        self.factory = salt_master.salt_minion_daemon(minion_id, overrides=overrides or {})
        self.id = minion_id
        self.proc = None

    def start(self):
        script = self.factory.factories_manager.get_salt_script_path("salt-minion")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(script),
                f"--config-dir={self.factory.config_dir}",
                "--log-level=warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(Path(self.factory.config_dir) / "stderr.log", "ab"),
            # its own process group: kill() finds every process it forked, however retitled
            start_new_session=True,
        )
        return self

    def processes(self):
        """Every live process of this minion: its process group, processes whose command
        line names its config dir, and their children."""
        marker = f"--config-dir={self.factory.config_dir}"
        group = self.proc.pid if self.proc is not None else None
        procs = []
        for proc in psutil.process_iter(["cmdline", "status"]):
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            try:
                in_group = group is not None and os.getpgid(proc.pid) == group
            except OSError:
                in_group = False
            if in_group or marker in " ".join(proc.info["cmdline"] or []):
                procs.append(proc)
        for proc in list(procs):
            try:
                procs.extend(c for c in proc.children(recursive=True) if c not in procs)
            except psutil.Error:
                pass
        return procs

    def kill(self):
        """Kill the minion (all its processes) at once, and leave its key where it is. (A
        minion waiting for its key takes half a minute to honour SIGTERM.) Returns once none
        of its processes is left (a zombie answers nothing)."""
        deadline = time.monotonic() + 30
        while procs := self.processes():
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.id}: processes outlived SIGKILL: {procs}")
            for proc in procs:
                try:
                    proc.kill()
                except psutil.Error:
                    pass
            time.sleep(0.2)
        if self.proc is not None:
            self.proc.wait(15)
        # A killed minion leaves its pidfile and Salt's "process responsibility" file behind,
        # naming a process that may linger as a zombie until something reaps it: the next
        # start would take it for "an instance is already running" and exit. Nothing of this
        # minion runs any more, so both are stale.
        pidfile = self.factory.config.get("pidfile")
        if pidfile:
            # relative to the minion's root_dir, as Salt reads it
            path = Path(self.factory.config["root_dir"], pidfile)
            path.unlink(missing_ok=True)
            path.with_name(f"process_responsibility_{path.name}").unlink(missing_ok=True)

    def log_tail(self, lines=40):
        """The end of the minion's own log, for an assertion's message."""
        log = Path(self.factory.config["log_file"])
        if not log.is_file():
            return f"(no log at {log})"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self):
        self.kill()
        # leave no key behind for the package master's later '*' jobs
        self.master.salt_key_cli().run("-d", self.id, "-y")


@pytest.fixture
def strangers(salt_master):
    started = []

    def make(prefix=None, overrides=None, minion_id=None):
        minion = Stranger(salt_master, minion_id or random_string(prefix), overrides)
        started.append(minion)
        return minion

    yield make
    for minion in started:
        minion.stop()


def key_entry(runner, minion_id):
    """``fleet.keys``' entry of ``minion_id`` ({} when it has none), asked in this process."""
    return ask(runner, "fleet.keys").get(minion_id) or {}


def key_state(runner, minion_id):
    return key_entry(runner, minion_id).get("state")


def fire(salt_master, tag, data):
    fire_many(salt_master, tag, [data])


def fire_many(salt_master, tag, datas, per_second=None):
    """Fire ``tag`` once with each of ``datas``, over one connection to the master's bus, at
    most ``per_second`` events a second (as fast as it goes with None)."""
    opts = salt_master.config
    began = time.monotonic()
    with salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=False) as bus:
        for n, data in enumerate(datas):
            if per_second:
                time.sleep(max(0.0, began + n / per_second - time.monotonic()))
            assert bus.fire_event(data, tag)


def echo_latency(salt_master, event_listener, n, timeout=120):
    """Seconds from firing fleet/test/echo to the reactor's fleet/test/echoed answer."""
    start = time.time()
    fire(salt_master, "fleet/test/echo", {"n": n})
    while time.time() - start < timeout:
        events = event_listener.get_events(
            [(salt_master.id, "fleet/test/echoed")], after_time=start - 1
        )
        if any(e.data.get("n") == n for e in events):
            return time.time() - start
        time.sleep(0.05)
    raise AssertionError(f"fleet/test/echo {n} got no answer in {timeout} s")


def new_pub():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def test_an_unknown_minion_stays_pending_while_other_reactions_run(
    salt_master, salt_run_cli, event_listener, strangers, store, runner
):
    start = time.time()
    quiet = [echo_latency(salt_master, event_listener, n) for n in range(3)]

    stranger = strangers("fleet-stranger-").start()
    # fleet.keys shows Salt's own state at once; the gate's record (first seen, fingerprint
    # checked against the key store) follows within its flush interval
    wait_for(
        "the stranger's pending key recorded by the gate",
        lambda: key_entry(runner, stranger.id).get("first_seen"),
        timeout=60,
    )
    assert key_state(runner, stranger.id) == "pending"
    entry = ask(runner, "fleet.keys", "status=pending")[stranger.id]
    # the fingerprint is the one salt-key prints
    finger = salt_master.salt_key_cli().run("-f", stranger.id, "--out=json").data
    assert entry["fingerprint"] == finger["minions_pre"][stranger.id]
    assert entry["first_seen"] and entry["last_seen"]

    # A thousand more pending keys, each retrying: salt/auth events as the master fires them
    # for a minion that is not accepted (one real RSA key for all: generating a thousand
    # would take a minute and change nothing here), a hundred a second, twice: a thousand minions
    # retrying every 10 s (Salt's acceptance_wait_time).
    pub = new_pub()
    flood = [f"fleet-flood-{i:04d}" for i in range(1000)]
    # pending in Salt's key store, as the master files them (the gate records only keys
    # Salt really holds as pending)
    hold_pending(salt_master, dict.fromkeys(flood, pub))
    loud = []
    for round_ in range(2):  # the first round records each key, the second is retries
        fire_many(
            salt_master,
            "salt/auth",
            [{"result": True, "act": "pend", "id": minion_id, "pub": pub} for minion_id in flood],
            per_second=100,
        )
        loud.append(echo_latency(salt_master, event_listener, 100 + round_))
    print(f"echo reaction: {max(quiet):.2f} s quiet, {max(loud):.2f} s during the flood")
    # Other reactions still run promptly: the flood costs them seconds at most.
    assert max(loud) < max(quiet) + 5, (quiet, loud)

    def recorded():
        with store.connect() as conn:
            return conn.execute(
                select(func.count(), func.max(MinionKey.attempts)).where(
                    MinionKey.minion_id.like("fleet-flood-%")
                )
            ).one()

    count, attempts = wait_for(
        "the flood's keys in the store", lambda: recorded()[0] == 1000 and recorded(), timeout=120
    )
    # each key recorded once: the retries within fleet:gate:seen_window cost no write
    assert attempts == 1
    # the stranger is still pending, and fleet/key/pending fired once for it, however often
    # it retried
    time.sleep(3)
    assert key_state(runner, stranger.id) == "pending"
    pending = event_listener.get_events([(salt_master.id, "fleet/key/pending")], after_time=start)
    mine = [e for e in pending if e.data.get("id") == stranger.id]
    assert len(mine) == 1 and mine[0].data["fingerprint"] == entry["fingerprint"]
    flooded = {e.data["id"] for e in pending if e.data.get("id", "").startswith("fleet-flood-")}
    assert len(flooded) == 1000
    salt_key_store = salt.key.Key(salt_master.config.copy())
    salt_key_store.delete_key(match_dict={"minions_pre": flood})
    with store.connect() as conn:
        audited = conn.execute(
            select(func.count()).where(
                AuditEvent.action == "key.pending", AuditEvent.target == stranger.id
            )
        ).scalar()
    assert audited == 1

    # an operator accepts it; it answers
    accepted = run(
        salt_run_cli, "fleet.keys_accept", stranger.id, f"fingerprint={entry['fingerprint']}"
    )
    assert accepted["state"] == "accepted" and accepted["was"] == "pending"
    # once in, it starts and is onboarded by the reactor (scheduled jobs, online)
    wait_for(
        "the stranger to be onboarded",
        lambda: (
            "node.onboard"
            in [e["action"] for e in ask(runner, "fleet.audit", f"target={stranger.id}")]
        ),
        timeout=90,
    )
    ret = salt_master.salt_cli().run("test.ping", minion_tgt=stranger.id, _timeout=30)
    assert ret.data is True, ret
    events = ask(runner, "fleet.audit", "limit=20", f"target={stranger.id}")
    assert [e["action"] for e in events][-2:] == ["key.accept", "key.pending"]
    assert events[-2]["actor"].startswith("user:") and events[-1]["actor"] == "gate"
    with store.connect() as conn:
        assert store_gate.node_status(conn, stranger.id)["status"] == "online"
    schedule = salt_master.salt_cli().run(
        "schedule.list", "return_yaml=False", minion_tgt=stranger.id
    )
    assert {"fleet_inventory", "fleet_highstate_test"} <= set(schedule.data or {}), schedule
    # a node that stops answering is marked offline
    stranger.kill()
    began = time.monotonic()
    assert not stranger.processes()
    checked = run(salt_run_cli, "fleet.presence_check", "timeout=3")
    # its timeout is honoured (3 s, and Salt's find_job round), not Salt's default of 120 s
    assert time.monotonic() - began < 60
    # one missed check is not enough (unless the master saw it disconnect); two are
    assert stranger.id in checked["offline"] + checked["missed_once"], (
        checked,
        stranger.processes(),
        stranger.log_tail(),
    )
    # A return the stranger sent just before it died can still reach the store between the
    # checks and count as an answer (the misses start again): a miss after that is the first
    # of a new run. Two misses in a row make it offline, within a few checks.
    history = [checked]
    while stranger.id not in checked["offline"] and len(history) < 4:
        checked = run(salt_run_cli, "fleet.presence_check", "timeout=3")
        history.append(checked)
    assert stranger.id in checked["offline"], (history, stranger.processes())
    with store.connect() as conn:
        assert store_gate.node_status(conn, stranger.id)["status"] == "offline"


def test_an_enrolled_minion_is_accepted_within_seconds(
    salt_master, salt_run_cli, event_listener, strangers, store, runner
):
    minion_id = random_string("fleet-enrolled-")
    made = run(salt_run_cli, "fleet.enrol", minion_id, "ttl=10m", "group=builders")
    token = made["token"]
    conf = made["minion_config"]
    assert conf["grains"] == {core_gate.TOKEN_GRAIN: token}
    assert conf["autosign_grains"] == [core_gate.TOKEN_GRAIN]
    assert conf["id"] == minion_id and conf["master"] == "127.0.0.1"
    # the store keeps only the token's hash
    listed = ask(runner, "fleet.enrolments", minion_id)
    assert listed[0]["state"] == "live" and "token" not in str(listed)

    carried = {k: conf[k] for k in ("grains", "autosign_grains")}
    minion = strangers(overrides=carried, minion_id=minion_id)
    start = time.time()
    minion.start()
    wait_for(
        "the enrolled minion to be accepted",
        lambda: key_entry(runner, minion_id).get("state") == "accepted",
        timeout=60,
        interval=0.25,
    )
    took = time.time() - start
    print(f"enrolled minion accepted {took:.1f} s after it started")
    assert took < 20
    wait_for(
        "the enrolled minion to answer",
        lambda: (
            salt_master.salt_cli().run("test.ping", minion_tgt=minion_id, _timeout=30).data is True
        ),
        timeout=90,
    )
    listed = ask(runner, "fleet.enrolments", minion_id)
    assert listed[-1]["state"] == "used" and listed[-1]["used_fingerprint"]
    keys = ask(runner, "fleet.keys", "status=accepted")
    assert keys[minion_id]["decided_by"] == f"enrolment:{made['enrolment']}"
    accepted = event_listener.get_events([(salt_master.id, "fleet/key/accepted")], after_time=start)
    assert [e.data["id"] for e in accepted if e.data["id"] == minion_id] == [minion_id]

    # Re-imaged: the machine gets a new key. Salt still holds its old key as accepted; the
    # operator enrols it again, which deletes that key first.
    minion.kill()
    for name in ("minion.pem", "minion.pub"):
        (Path(minion.factory.config["pki_dir"]) / name).unlink()
    fresh = run(salt_run_cli, "fleet.enrol", minion_id)
    assert fresh["deleted_keys"] == ["accepted"]
    assert key_state(runner, minion_id) is None
    # It comes back with its old configuration first: the used token is refused, the new
    # key stays pending.
    minion.start()
    try:
        entry = wait_for(
            "the used token to be refused",
            lambda: key_entry(runner, minion_id).get("note"),
            timeout=60,
        )
    except AssertionError:
        print("STDERR", (Path(minion.factory.config_dir) / "stderr.log").read_text()[-3000:])
        raise
    assert "used" in entry
    assert key_state(runner, minion_id) == "pending"
    # With its new configuration (the new token) it is in within seconds.
    minion.kill()
    config_file = Path(minion.factory.config_file)
    config = yaml.safe_load(config_file.read_text())
    config["grains"] = fresh["minion_config"]["grains"]
    config_file.write_text(yaml.safe_dump(config))
    start = time.time()
    minion.start()
    try:
        wait_for(
            "the re-enrolled minion to be accepted",
            lambda: key_entry(runner, minion_id).get("state") == "accepted",
            timeout=60,
            interval=0.25,
        )
    except AssertionError:
        print("AUDIT", ask(runner, "fleet.audit", f"target={minion_id}")[:3])
        print("KEYS", ask(runner, "fleet.keys").get(minion_id))
        print("STDERR", (Path(minion.factory.config_dir) / "stderr.log").read_text()[-2000:])
        raise
    assert time.time() - start < 20
    audit = [e["action"] for e in ask(runner, "fleet.audit", f"target={minion_id}")]
    assert audit[:5] == [
        "enrol.accept",
        "enrol.refuse",
        "key.pending",
        "enrol.create",
        "key.delete",
    ]


def test_bad_tokens_are_refused_and_recorded(salt_master, salt_run_cli, strangers, store, runner):
    """An expired token, a token made for another id, and a token nobody made: three real
    minions at once; each stays pending, each refusal is recorded once."""
    tokens = {}
    for case in ("expired", "wrong-id", "unknown-token"):
        minion_id = random_string(f"fleet-{case}-")
        if case == "expired":
            token = run(salt_run_cli, "fleet.enrol", minion_id, "ttl=1")["token"]
        elif case == "wrong-id":
            token = run(salt_run_cli, "fleet.enrol", random_string("someone-else-"))["token"]
        else:
            token = core_gate.new_token()
        tokens[case] = (minion_id, token)
    time.sleep(1.5)  # the first one's ttl
    minions = {}
    for case, (minion_id, token) in tokens.items():
        grains = {
            "grains": {core_gate.TOKEN_GRAIN: token},
            "autosign_grains": [core_gate.TOKEN_GRAIN],
        }
        minions[case] = strangers(overrides=grains, minion_id=minion_id).start()
    for case, minion in minions.items():
        entry = wait_for(
            f"the {case} token to be refused",
            lambda m=minion: key_entry(runner, m.id).get("note"),
            timeout=60,
        )
        assert case in entry
    time.sleep(5)  # more retries with the same bad token
    keys = ask(runner, "fleet.keys")
    for case, minion in minions.items():
        assert keys[minion.id]["state"] == "pending"
        refusals = ask(runner, "fleet.audit", f"target={minion.id}", "action=enrol.refuse")
        assert [r["details"]["reason"] for r in refusals] == [case]  # recorded once
    assert ask(runner, "fleet.audit_verify")["ok"] is True


HOSTILE = ["../../etc/x", "a" * 300, "mïnion", "web/../../x", ".hidden", "-rf", "a b", ""]


def _tree(root: Path) -> set[str]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            out.add(os.path.relpath(os.path.join(dirpath, name), root))
    return out


def hold_pending(salt_master, keys):
    """Put ``{minion id: pub}`` in Salt's key store as pending keys, as the master does when
    a new minion asks (salt/auth events are only hints: the gate records keys Salt holds)."""
    store = salt.key.Key(salt_master.config.copy()).cache
    for minion_id, pub in keys.items():
        store.store("keys", minion_id, {"pub": pub, "state": "pending"})


def test_hostile_minion_ids_touch_no_file(salt_master, salt_run_cli, store, tmp_path, runner):
    root = Path(salt_master.config["root_dir"])
    pki = Path(salt_master.config["pki_dir"])
    pub = new_pub()
    # the positive control: a valid id, really pending in Salt's key store, whose salt/auth
    # event is fired in the same batch as the hostile ones
    control = random_string("fleet-control-")
    hold_pending(salt_master, {control: pub})
    before = _tree(root.parent)
    keys_before = ask(runner, "fleet.keys")
    # The first id goes through salt-run; the others through Salt's RunnerClient in this
    # process (the same runners, loaded the same way, without a second of CLI start-up each).
    try:
        for n, bad in enumerate(HOSTILE):
            # what a minion could send (Salt refuses most such ids itself before any event)
            fire(salt_master, "salt/auth", {"result": True, "act": "pend", "id": bad, "pub": pub})
            for fun in (
                "fleet.keys_accept",
                "fleet.keys_reject",
                "fleet.keys_delete",
                "fleet.enrol",
                "fleet.drift_node",
                "fleet.onboard",
            ):
                if n == 0:
                    ret = salt_run_cli.run(fun, f"minion={bad}", _timeout=60)
                    assert ret.returncode != 0, (fun, bad, ret)
                    text = str(ret.data) + ret.stdout + ret.stderr
                else:
                    ret = runner.cmd(
                        fun, kwarg={"minion": bad}, print_event=False, full_return=True
                    )
                    assert ret["success"] is False, (fun, bad, ret)
                    text = str(ret["return"])
                assert "minion id" in text or "id:" in text, (fun, bad, text[:300])
        fire(salt_master, "salt/auth", {"result": True, "act": "pend", "id": control, "pub": pub})

        def recorded():
            with store.connect() as conn:
                return set(conn.execute(select(MinionKey.minion_id)).scalars())

        # once the valid id of the batch is recorded, the gate has handled the whole batch
        ids = wait_for(
            "the control id's pending key in the store",
            lambda: control in recorded() and recorded(),
            timeout=60,
        )
        assert not ids & set(HOSTILE)
        after = _tree(root.parent)
        changed = {p for p in before ^ after if not _churn(p)}
        assert not [
            p for p in changed if "etc/x" in p or "web" in p or "hidden" in p or "aaaa" in p
        ]
        assert not Path("/etc/x").exists()
        assert {p for p in changed if str(pki.relative_to(root.parent)) in p} == set()
        keys_after = ask(runner, "fleet.keys")
        assert keys_after[control]["state"] == "pending"
        keys_after.pop(control)
        keys_before.pop(control, None)
        assert {k: v["state"] for k, v in keys_after.items()} == {
            k: v["state"] for k, v in keys_before.items()
        }
    finally:
        salt_master.salt_key_cli().run("-d", control, "-y")


def test_lookalike_auth_events_record_nothing(salt_master, salt_run_cli, store):
    """salt/auth events for keys Salt does not hold as pending (junk ids, or another key
    under a real pending id) write no row, no note and no attempt; the real pending key,
    fired last, is recorded (the positive control)."""
    real_pub, other_pub = new_pub(), new_pub()
    pending = random_string("fleet-real-pending-")
    hold_pending(salt_master, {pending: real_pub})
    junk = [random_string("fleet-junk-") for _ in range(50)]
    try:
        for minion_id in junk:
            fire(
                salt_master,
                "salt/auth",
                {"result": True, "act": "pend", "id": minion_id, "pub": other_pub},
            )
        # a lookalike for the real pending id, with another key and a bogus enrolment token
        fire(
            salt_master,
            "salt/auth",
            {
                "result": True,
                "act": "pend",
                "id": pending,
                "pub": other_pub,
                "autosign_grains": {core_gate.TOKEN_GRAIN: core_gate.new_token()},
            },
        )
        fire(
            salt_master,
            "salt/auth",
            {"result": True, "act": "pend", "id": pending, "pub": real_pub},
        )

        def rows():
            with store.connect() as conn:
                return conn.execute(
                    select(
                        MinionKey.minion_id,
                        MinionKey.fingerprint,
                        MinionKey.attempts,
                        MinionKey.note,
                    ).where(MinionKey.minion_id.in_([*junk, pending]))
                ).all()

        # the lookalike with a token was handed to the gate's recorder thread before the real
        # key, and that thread decides the keys with a token of each batch before it writes
        # the others: once the real key is in the store, the lookalike was handled
        wait_for("the real pending key in the store", lambda: rows(), timeout=60)
        found = rows()
        assert [(r.minion_id, r.fingerprint) for r in found] == [
            (pending, core_gate.fingerprint(real_pub))
        ]
        assert found[0].attempts == 1 and not found[0].note
        with store.connect() as conn:
            audited = (
                conn.execute(
                    select(AuditEvent.target).where(AuditEvent.target.in_([*junk, pending]))
                )
                .scalars()
                .all()
            )
        assert audited == [pending]
    finally:
        salt_master.salt_key_cli().run("-d", pending, "-y")


def _churn(path: str) -> bool:
    """Files a running master writes all the time (job cache, logs, sockets, proc, and the
    audit anchor beside the key file, replaced through a temporary file at every audited
    change: the control key's record, say)."""
    return ".audit-anchor" in path or any(
        part in path
        for part in (
            "/jobs",
            "/proc",
            "/sock",
            "/logs",
            ".log",
            "/minions/",
            "fleet.db",
            "/cache",
            "/tokens",
        )
    )


def test_editing_an_audit_row_is_named_by_audit_verify(salt_master, salt_run_cli, store, runner):
    # something to audit, through the real runners
    minion_id = random_string("fleet-audited-")
    run(salt_run_cli, "fleet.enrol", minion_id, "ttl=1h")
    before = ask(runner, "fleet.audit_verify")
    assert before["ok"] is True and before["checked"] >= 1
    events = ask(runner, "fleet.audit", "limit=1000")
    victim = next(e for e in events if e["target"] == minion_id and e["action"] == "enrol.create")
    with store.begin() as conn:
        conn.execute(
            update(AuditEvent).where(AuditEvent.id == victim["id"]).values(actor="user:mallory")
        )
    try:
        broken = ask(runner, "fleet.audit_verify")
        assert broken["ok"] is False and broken["broken"] == victim["id"]
        assert broken["reason"] == "hash"
    finally:
        with store.begin() as conn:
            conn.execute(
                update(AuditEvent)
                .where(AuditEvent.id == victim["id"])
                .values(actor=victim["actor"])
            )
    assert ask(runner, "fleet.audit_verify")["ok"] is True


def test_rotating_the_vault_key_reencrypts_every_secret(salt_master, salt_run_cli, store, runner):
    from saltext_fleet.core import secrets as core_secrets
    from saltext_fleet.store import secrets as store_secrets

    group = random_string("vault-").lower()
    run(salt_run_cli, "fleet.group_set", group, "password=hunter2-but-longer")
    run(salt_run_cli, "fleet.secret_set", "node", "mini-09", "api_token", "value=tok-424242")
    key_file = config.load(salt_master.config).key_file
    before = core_secrets.Vault.open(key_file)
    rotated = run(salt_run_cli, "fleet.rotate_key")
    after = core_secrets.Vault.open(key_file)
    assert rotated["key_id"] == after.key_id != before.key_id
    assert rotated["reencrypted"] >= 2 and rotated["retired"] == [before.key_id]
    assert len(after) == 1 and oct(Path(key_file).stat().st_mode & 0o777) == "0o600"
    with store.connect() as conn:
        assert store_secrets.group_credential(conn, after, group) == (
            "password",
            "hunter2-but-longer",
        )
        assert store_secrets.get_secret(conn, after, "node", "mini-09", "api_token") == "tok-424242"
        key_ids = {k for (k,) in conn.execute(select(Secret.key_id))}
    assert key_ids == {after.key_id}
    actions = [e["action"] for e in ask(runner, "fleet.audit", "target=vault")]
    assert actions[0] == "secrets.rotate"


def test_an_expected_key_is_accepted_without_a_token(salt_master, salt_run_cli, strangers, runner):
    """Enrolled by fingerprint only: the machine's key was made elsewhere and its
    fingerprint told to the master; no token travels."""
    import salt.crypt

    minion_id = random_string("fleet-expected-")
    minion = strangers(minion_id=minion_id)
    pem, pub = salt.crypt.gen_keys(2048)
    pki = Path(minion.factory.config["pki_dir"])
    pki.mkdir(parents=True, exist_ok=True)
    (pki / "minion.pem").write_text(pem)
    (pki / "minion.pem").chmod(0o400)
    (pki / "minion.pub").write_text(pub)
    finger = core_gate.fingerprint(pub)
    made = run(salt_run_cli, "fleet.enrol", minion_id, f"fingerprint={finger}")
    start = time.time()
    minion.start()
    # Salt's key store says accepted a moment before the gate's transaction that recorded the
    # decision commits: wait for both.
    key = wait_for(
        "the expected key to be accepted and the decision recorded",
        lambda: (
            (entry := key_entry(runner, minion_id)).get("state") == "accepted"
            and entry.get("decided_by")
            and entry
        ),
        timeout=60,
        interval=0.5,
    )
    print(f"expected key accepted {time.time() - start:.1f} s after the minion started")
    assert key["fingerprint"] == finger
    assert key["decided_by"] == f"enrolment:{made['enrolment']}"


def test_no_secret_given_to_the_runners_reaches_the_store(salt_master, salt_run_cli, store):
    """Salt records each runner job (its arguments, its answer) in the job cache and the
    event store, which are this store: dump every table and find no password, secret value
    or enrolment token in clear."""
    from sqlalchemy import MetaData

    from saltext_fleet.store.models import Return

    group = random_string("dump-").lower()
    password = "pw-" + random_string("")
    value = "val-" + random_string("")
    run(salt_run_cli, "fleet.group_set", group, f"password={password}")
    run(salt_run_cli, "fleet.secret_set", "group", group, "signing", f"value={value}")
    token = run(salt_run_cli, "fleet.enrol", random_string("fleet-dump-"))["token"]

    def stored():
        with store.connect() as conn:
            return conn.execute(
                select(func.count()).where(Return.fun == "runner.fleet.enrol")
            ).scalar()

    wait_for("the runner jobs in the job cache", stored, timeout=60)
    time.sleep(2)  # the events of the same jobs
    meta = MetaData()
    meta.reflect(bind=store)
    with store.connect() as conn:
        dump = "\n".join(
            repr(tuple(row)) for table in meta.sorted_tables for row in conn.execute(select(table))
        )
    assert "runner.fleet.enrol" in dump and "runner.fleet.group_set" in dump
    for secret in (password, value, token):
        assert secret not in dump


def _keys_page(salt_master, store, username):
    """The web UI's keys page as an operator sees it (Flask's test client, the real runners)."""
    import re
    import secrets

    from saltext_fleet.core import secrets as core_secrets
    from saltext_fleet.store import users as store_users
    from saltext_fleet.webui.app import WebContext, create_app
    from saltext_fleet.webui.salt import SaltGateway

    cfg = config.load(salt_master.config)
    app = create_app(
        WebContext(
            engine=store,
            vault=core_secrets.Vault.open(cfg.key_file),
            secret_key=secrets.token_bytes(32),
            salt=SaltGateway(salt_master.config.copy()),
            config=cfg,
            bcrypt_rounds=4,
        )
    )
    app.testing = True
    password = "a long enough password"
    with store.begin() as conn:
        store_users.create_user(conn, username, "operator", password, rounds=4)
    client = app.test_client()
    form = {"username": username, "password": password}
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(True))
    if token:  # a login form with CSRF protection
        form["csrf_token"] = token.group(1)
    resp = client.post("/login", data=form)
    assert resp.status_code == 302, resp.data[:300]
    page = client.get("/keys").get_data(as_text=True)
    return {
        row.group(1): row.group(0)
        for row in re.finditer(r'<tr data-key="([^"]+)">.*?</tr>', page, re.S)
    }


def test_keys_changed_with_salt_key_are_recorded_once(
    salt_master, salt_run_cli, strangers, store, runner
):
    """salt-key -a/-d (no fleet runner): the keys page and the audit chain show salt-key;
    a change made through fleet.keys_* is recorded once, by its user."""
    stranger = strangers("fleet-saltkey-").start()
    wait_for(
        "the stranger's pending key recorded by the gate",
        lambda: key_entry(runner, stranger.id).get("first_seen"),
        timeout=60,
    )
    assert key_state(runner, stranger.id) == "pending"
    ret = salt_master.salt_key_cli().run("-a", stranger.id, "-y")
    assert ret.returncode == 0, ret
    wait_for(
        "salt-key's acceptance in fleet.keys",
        lambda: key_entry(runner, stranger.id).get("decided_by") == "salt-key",
        timeout=30,
        interval=0.5,
    )
    assert key_state(runner, stranger.id) == "accepted"
    row = _keys_page(salt_master, store, random_string("keys-viewer-").lower())[stranger.id]
    assert "<td>salt-key</td>" in row  # "Accepted by", no longer "-"
    events = ask(runner, "fleet.audit", f"target={stranger.id}")
    accepts = [e for e in events if e["action"] == "key.accept"]
    assert len(accepts) == 1 and accepts[0]["actor"] == "salt-key"
    assert accepts[0]["details"]["source"] == "salt/key"
    assert accepts[0]["details"]["was"] == "pending"
    # the minion it let in answers
    ping = salt_master.salt_cli().run("test.ping", minion_tgt=stranger.id, _timeout=60)
    assert ping.data is True, ping

    # Through the runner: recorded by the runner's user, not a second time as salt-key.
    # salt-run names the real local user, never UNKNOWN.
    rejected = run(salt_run_cli, "fleet.keys_reject", stranger.id, "include_accepted=True")
    assert rejected["state"] == "rejected"
    # positive control: a later salt-key change is recorded, so the reject's salt/key event
    # (fired before it) has been handled
    ret = salt_master.salt_key_cli().run("-d", stranger.id, "-y")
    assert ret.returncode == 0, ret
    wait_for(
        "salt-key's deletion in the audit",
        lambda: any(
            e["action"] == "key.delete" and e["actor"] == "salt-key"
            for e in ask(runner, "fleet.audit", f"target={stranger.id}")
        ),
        timeout=30,
        interval=0.5,
    )
    events = ask(runner, "fleet.audit", f"target={stranger.id}")
    keyed = [e for e in reversed(events) if e["action"].startswith("key.")]
    assert [(e["action"], e["actor"].split(":")[0]) for e in keyed] == [
        ("key.pending", "gate"),
        ("key.accept", "salt-key"),
        ("key.reject", "user"),
        ("key.delete", "salt-key"),
    ]
    assert keyed[2]["actor"] != "user:UNKNOWN"
    # The same runner called from Python with no Salt user: the local user, not UNKNOWN.
    import salt.utils.user

    made = runner.cmd("fleet.enrol", [stranger.id, "ttl=1h"], print_event=False)
    assert made["id"] == stranger.id
    events = ask(runner, "fleet.audit", f"target={stranger.id}", "action=enrol.create")
    local = salt.utils.user.get_specific_user()
    expected = f"user:{local[5:]} (sudo)" if local.startswith("sudo_") else f"user:{local}"
    assert events[0]["actor"] == expected != "user:UNKNOWN"


def test_audit_verify_names_a_truncated_chain(salt_master, salt_run_cli, store, runner):
    from sqlalchemy import delete, insert

    from saltext_fleet.store.models import AuditHead

    for _ in range(3):  # at least three events, whichever tests ran before
        run(salt_run_cli, "fleet.enrol", random_string("fleet-anchored-"), "ttl=1h")
    before = ask(runner, "fleet.audit_verify")
    assert before["ok"] is True and before["anchor"]["last_id"] == before["last_id"]
    key_file = config.load(salt_master.config).key_file
    assert oct(Path(key_file + ".audit-anchor").stat().st_mode & 0o777) == "0o600"
    last = before["last_id"]
    with store.begin() as conn:
        saved = [
            dict(r._mapping)
            for r in conn.execute(select(AuditEvent).where(AuditEvent.id > last - 2))
        ]
        head = dict(conn.execute(select(AuditHead)).one()._mapping)
        conn.execute(delete(AuditEvent).where(AuditEvent.id > last - 2))
        conn.execute(delete(AuditHead))
    try:
        broken = ask(runner, "fleet.audit_verify")
        assert broken["ok"] is False and broken["reason"] == "truncated"
        assert f"the chain ends at id {last - 2} but the anchor says {last}" in broken["message"]
    finally:
        with store.begin() as conn:
            conn.execute(insert(AuditEvent), saved)
            conn.execute(insert(AuditHead).values(**head))
    assert ask(runner, "fleet.audit_verify")["ok"] is True
