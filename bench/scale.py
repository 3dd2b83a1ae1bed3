#!/usr/bin/env python
"""Scale benchmark: real salt-minion processes against two hot-hot masters on one store.

What runs, all on 127.0.0.1 under one temporary folder, stopped and removed at the end (also
on Ctrl-C or a failure):

- a fresh PostgreSQL database (``--pg-url``, dropped at the end), migrated once;
- two real ``salt-master`` processes of the worktree's virtualenv, hot-hot: one master key
  pair (made here, placed in both pki dirs), each configured with the snippet
  ``saltext-fleet config`` prints (:func:`saltext_fleet.snippet.master_snippet`: job cache,
  event return, reactor, schedule, external pillar and the ``fleet`` engine), the same
  ``fleet:db_url`` and the same ``fleet:key_file``; only ``fleet:ui:port`` differs (two web
  UIs on one host). The extension is loaded through its ``salt.loader`` entry point;
- ``--minions`` real ``salt-minion`` processes (``--disable-keepalive``: one process each) of
  the same virtualenv, each with ``master: [m1, m2]``, the enrolment configuration the
  ``fleet.enrol`` runner gives for it, and the memory-lean settings of :data:`LEAN_MINION`.

What is measured, in this order (progress on stderr, one JSON object on the last stdout line):

1. **Start-up** (Salt's own): one enrolment per minion is made first (``fleet.enrol``, run
   in this process through Salt's RunnerClient). Minions are spawned at most
   ``--spawn-parallel`` at a time (a new one when an earlier one's key reached a master): a
   minion's start-up is from its spawn until its key shows up (pending or accepted) in a
   master's key store, with the CPU seconds its process used until then (``startup_*``).
2. ``accept_s``: from the last minion process starting until every key is accepted on BOTH
   masters. Nothing but the key gate accepts: on one master the enrolment token is used, the
   other follows the fleet-wide decision at the key's next attempt (limit 60 s).
3. **Onboarding**: each minion's start event makes both masters run ``fleet.node_started``;
   one claims the onboarding in the store and runs it (sync, schedule, beacon, a first
   inventory). The bench waits until every node is onboarded and has its first inventory
   (``onboard_s``, from the last spawn) and counts the jobs this ran (``onboarding_jobs``).
4. ``cycle_s``: a baseline is pinned from the first node's inventory (the ``fleet.baseline_pin``
   runner, every package exact, facts ``os``, ``osrelease``, ``osarch``) and assigned to all
   nodes (``fleet.baseline_assign``). Then every node's ``osrelease`` grain is moved
   (``grains.setval``, outside the clock: a point release on every node), so each node's
   next inventory is a new one. The clock starts at the publish of ``fleet.inventory`` to all
   nodes through the first master and stops when every node's new inventory is stored,
   ingested (a new ``node_inventory`` row) and its drift recomputed by the reactor
   (``drift_current`` of that inventory, one ``osrelease`` fact finding) (limit 120 s).
5. ``returns_per_s``: ``--burst-jobs`` ``test.ping`` jobs to all minions, published back to
   back, alternately through each master; returns stored (rows in ``returns``) over the time
   from the first publish to the last row.
6. Memory and CPU: the masters' RSS and PSS (every process of each master), their CPU seconds
   per phase, each minion's RSS and PSS, the minions' CPU per phase.
7. Exactly once, counted in PostgreSQL: returns rows == distinct (jid, minion) == distinct
   rid; nodes == minions; one accepted key per minion decided by its enrolment, one
   ``enrol.accept``, every enrolment used once; one ``node.onboard`` and one onboarding claim
   per node; two inventory changes per node (onboarding, cycle), one drift point per node;
   quarantine 0. ``exactly_once`` is all of these; ``ok`` is ``exactly_once`` and both limits.

    .venv/bin/python bench/scale.py                  # 100 minions (several minutes here)
    .venv/bin/python bench/scale.py --minions 30
    .venv/bin/python bench/scale.py --quick          # 4 minions: the suite's run (the counts)

Exit status 0 when ``ok``, 1 otherwise (the reason in ``failures`` on the last line).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import psutil  # noqa: E402
import salt.client  # noqa: E402
import salt.config  # noqa: E402
import salt.crypt  # noqa: E402
import salt.runner  # noqa: E402
import yaml  # noqa: E402
from sqlalchemy import func, select, text  # noqa: E402

from saltext_fleet import snippet  # noqa: E402
from saltext_fleet.core import secrets as core_secrets  # noqa: E402
from saltext_fleet.store import engine as store_engine  # noqa: E402
from saltext_fleet.store.models import (  # noqa: E402
    AuditEvent,
    Claim,
    DriftCurrent,
    DriftHistory,
    Enrolment,
    MinionKey,
    Node,
    NodeInventory,
    Quarantine,
    Return,
)
from saltext_fleet.store.spool import spool_status  # noqa: E402
from tests.support.pgdb import fresh_database  # noqa: E402
from tests.support.sshd import free_port  # noqa: E402

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
BIN = os.path.dirname(sys.executable)
LOG_LEVEL = ["warning"]
LIMITS = {"accept_s": 60.0, "cycle_s": 120.0}
PREFIX = "scale-"
BASELINE = "scale-pin"

#: Minion settings that keep 100 minions on 2 cores and little memory (each exists in Salt
#: 3008's salt/config/__init__.py; nothing of the product is turned off).
LEAN_MINION = {
    # jobs run in a thread of the minion's one process, not a forked process each
    "multiprocessing": False,
    # no reverse DNS of every address, no lspci at start
    "enable_fqdns_grains": False,
    "enable_gpu_grains": False,
    # the grains computed at start are reused (5 min) instead of recomputed per refresh
    "grains_cache": True,
    "mine_enabled": False,
    # no job cache on the minion (it is the master's business)
    "cache_jobs": False,
    # reconnect at once after the master asks for a re-auth
    "random_reauth_delay": 0,
    "random_startup_delay": 0,
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def minion_ids(count: int) -> list[str]:
    return [f"{PREFIX}{n:03d}" for n in range(1, count + 1)]


def summary_stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "p95": None, "max": None}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return {
        "median": round(statistics.median(ordered), 2),
        "p95": round(p95, 2),
        "max": round(ordered[-1], 2),
    }


# -- processes ---------------------------------------------------------------------------------


class Daemons:
    """The salt-master and salt-minion processes this bench started, each in a session of its
    own (so a master's children are stopped with it)."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen] = {}

    def spawn(self, name: str, argv: list[str], logfile: str, nice: int = 0) -> subprocess.Popen:
        with open(logfile, "ab") as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=(lambda: os.nice(nice)) if nice else None,
            )
        self.procs[name] = proc
        return proc

    def stop(self, names: list[str], grace: float = 30.0) -> None:
        procs = [(n, self.procs[n]) for n in names if n in self.procs]
        for _name, proc in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for _name, proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for name, proc in procs:
            # the group: a master's children outlive their parent's SIGTERM handling at times
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            self.procs.pop(name, None)


def tree(pid: int) -> list[psutil.Process]:
    try:
        top = psutil.Process(pid)
        return [top, *top.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(pid: int) -> float:
    """CPU seconds of a process tree: the live processes and the children they reaped."""
    total = 0.0
    for proc in tree(pid):
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def memory_mb(pid: int) -> dict[str, float]:
    """RSS and PSS (shared pages split among the processes sharing them) of a process tree."""
    rss = pss = 0
    for proc in tree(pid):
        with contextlib.suppress(psutil.Error):
            info = proc.memory_full_info()
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
    return {"rss_mb": round(rss / 2**20, 1), "pss_mb": round(pss / 2**20, 1)}


# -- configuration -------------------------------------------------------------------------------


def master_config(root: str, n: int, db_url: str, key_file: str) -> tuple[str, dict]:
    base = os.path.join(root, f"m{n}")
    conf = snippet.master_snippet(db_url=db_url)
    conf["fleet"]["key_file"] = key_file
    conf["fleet"].setdefault("ui", {})
    conf["fleet"]["ui"].update({"host": "127.0.0.1", "port": free_port()})
    conf.update(
        {
            "id": f"scale-m{n}",
            "user": psutil.Process().username(),
            "root_dir": base,
            "pki_dir": os.path.join(base, "pki"),
            "cachedir": os.path.join(base, "cache"),
            "sock_dir": os.path.join(base, "sock"),
            "log_file": os.path.join(base, "master.log"),
            "log_level_logfile": LOG_LEVEL[0],
            "interface": "127.0.0.1",
            "publish_port": free_port(),
            "ret_port": free_port(),
            "file_roots": {"base": [os.path.join(base, "srv", "salt")]},
            "pillar_roots": {"base": [os.path.join(base, "srv", "pillar")]},
            "open_mode": False,
            "auto_accept": False,
        }
    )
    for sub in ("pki", "cache", "sock", "srv/salt", "srv/pillar"):
        os.makedirs(os.path.join(base, sub), exist_ok=True)
    path = os.path.join(base, "master")
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(conf, handle, default_flow_style=False)
    return path, conf


def minion_config(root: str, minion: str, masters: list[dict], enrolment: dict) -> str:
    base = os.path.join(root, "minions", minion)
    os.makedirs(base, exist_ok=True)
    given = enrolment["minion_config"]
    conf = {
        # what fleet.enrol gives, but every master (hot-hot) instead of one
        **{k: v for k, v in given.items() if k not in ("master", "master_port")},
        "master": [f"127.0.0.1:{m['ret_port']}" for m in masters],
        "user": psutil.Process().username(),
        "root_dir": base,
        "pki_dir": os.path.join(base, "pki"),
        "cachedir": os.path.join(base, "cache"),
        "sock_dir": os.path.join(base, "sock"),
        "log_file": os.path.join(base, "minion.log"),
        "log_level_logfile": LOG_LEVEL[0],
        **LEAN_MINION,
    }
    assert conf["id"] == minion, given
    path = os.path.join(base, "minion")
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(conf, handle, default_flow_style=False)
    return path


# -- the store -------------------------------------------------------------------------------


def scalar(engine, stmt):
    with engine.connect() as conn:
        return conn.execute(stmt).scalar()


def db_now(engine) -> dt.datetime:
    return scalar(engine, text("SELECT now()"))


def spools_empty(confs: list[dict]) -> bool:
    return all(
        spool_status(os.path.join(c["cachedir"], "fleet", "spool"))["depth"] == 0 for c in confs
    )


def quiesce(engine, confs: list[dict], quiet_s: float = 4.0, timeout: float = 300.0) -> float:
    """Wait until no return or event has been stored for ``quiet_s`` and the masters' spools
    are empty; returns the seconds waited."""
    began = time.monotonic()
    last, since = None, time.monotonic()
    while time.monotonic() - began < timeout:
        with engine.connect() as conn:
            now = tuple(
                conn.execute(
                    text("SELECT (SELECT max(id) FROM returns), (SELECT max(id) FROM events)")
                ).one()
            )
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s and spools_empty(confs):
            break
        time.sleep(0.5)
    return time.monotonic() - began


def onboarded(engine, ids: list[str]) -> tuple[int, int]:
    with engine.connect() as conn:
        onboards = conn.execute(
            select(func.count(func.distinct(AuditEvent.target))).where(
                AuditEvent.action == "node.onboard", AuditEvent.target.in_(ids)
            )
        ).scalar()
        inventories = conn.execute(
            select(func.count()).where(Node.minion_id.in_(ids), Node.inventory_digest.is_not(None))
        ).scalar()
    return onboards, inventories


def cycle_progress(engine, ids: list[str], jid: str, since: dt.datetime) -> dict[str, int]:
    with engine.connect() as conn:
        returns = conn.execute(
            select(func.count()).select_from(Return).where(Return.jid == jid)
        ).scalar()
        ingested = conn.execute(
            select(func.count(func.distinct(NodeInventory.minion_id))).where(
                NodeInventory.minion_id.in_(ids), NodeInventory.seen_at >= since
            )
        ).scalar()
        drift = conn.execute(
            select(func.count())
            .select_from(DriftCurrent)
            .join(Node, Node.minion_id == DriftCurrent.minion_id)
            .where(
                DriftCurrent.minion_id.in_(ids),
                DriftCurrent.computed_at >= since,
                DriftCurrent.inventory_digest == Node.inventory_digest,
                DriftCurrent.facts >= 1,
            )
        ).scalar()
    return {"returns": returns, "ingested": ingested, "drift": drift}


def jobs_by_fun(engine, ids: list[str]) -> dict[str, int]:
    """Minion jobs so far, by function: ``{fun: jobs}`` (one per jid)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Return.fun, func.count(func.distinct(Return.jid)))
            .where(Return.minion_id.in_(ids))
            .group_by(Return.fun)
        ).all()
    return {fun: count for fun, count in sorted(rows)}


def runner_calls(engine) -> dict[str, int]:
    """Runner jobs the masters ran (their reactors', this bench's), by function."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT data->>'fun', count(*) FROM events WHERE tag LIKE 'salt/run/%/new'"
                " GROUP BY 1 ORDER BY 1"
            )
        ).all()
    return {str(fun): count for fun, count in rows}


def exactly_once_counts(engine, ids: list[str], masters: list[dict]) -> dict:
    n = len(ids)
    with engine.connect() as conn:
        returns, pairs, rids = conn.execute(
            text(
                "SELECT count(*), count(DISTINCT (jid, minion_id)), count(DISTINCT rid)"
                " FROM returns"
            )
        ).one()
        nodes = sorted(conn.execute(select(Node.minion_id)).scalars())
        accepted = dict(
            conn.execute(
                select(MinionKey.minion_id, func.count())
                .where(MinionKey.state == "accepted")
                .group_by(MinionKey.minion_id)
            ).all()
        )
        by_enrolment = conn.execute(
            select(func.count()).where(
                MinionKey.state == "accepted", MinionKey.decided_by.like("enrolment:%")
            )
        ).scalar()

        def audited(action: str) -> tuple[int, int]:
            return tuple(
                conn.execute(
                    select(func.count(), func.count(func.distinct(AuditEvent.target))).where(
                        AuditEvent.action == action, AuditEvent.target.in_(ids)
                    )
                ).one()
            )

        enrol_accepts = audited("enrol.accept")
        onboards = audited("node.onboard")
        enrolments = dict(
            conn.execute(select(Enrolment.state, func.count()).group_by(Enrolment.state)).all()
        )
        claims = conn.execute(
            select(func.count()).where(Claim.kind == "onboard", Claim.subject.in_(ids))
        ).scalar()
        inventory_changes = conn.execute(
            select(func.count()).where(NodeInventory.minion_id.in_(ids))
        ).scalar()
        drift_points = conn.execute(
            select(func.count()).where(DriftHistory.minion_id.in_(ids))
        ).scalar()
        quarantine = conn.execute(select(func.count()).select_from(Quarantine)).scalar()
    salt_accepted = [
        len(set(os.listdir(os.path.join(m["pki_dir"], "minions"))) & set(ids)) for m in masters
    ]
    counts = {
        "returns": returns,
        "returns_distinct_jid_minion": pairs,
        "returns_distinct_rid": rids,
        "nodes": len(nodes),
        "keys_accepted": sum(accepted.values()),
        "keys_accepted_by_enrolment": by_enrolment,
        "keys_accepted_per_master": salt_accepted,
        "enrol_accept_audits": enrol_accepts[0],
        "enrolments": enrolments,
        "onboard_audits": onboards[0],
        "onboard_claims": claims,
        "inventory_changes": inventory_changes,
        "drift_points": drift_points,
        "quarantine": quarantine,
    }
    checks = {
        "returns_once": returns == pairs == rids,
        "nodes": nodes == sorted(ids),
        "one_accepted_key_each": sorted(accepted) == sorted(ids)
        and set(accepted.values()) == {1}
        and by_enrolment == n,
        "accepted_on_every_master": salt_accepted == [n] * len(masters),
        "enrolment_used_once": enrol_accepts == (n, n) and enrolments == {"used": n},
        "onboarded_once": onboards == (n, n) and claims == n,
        "inventory_ingested_once": inventory_changes == 2 * n,
        "drift_once": drift_points == n,
        "quarantine_empty": quarantine == 0,
    }
    return {"counts": counts, "checks": checks, "exactly_once": all(checks.values())}


# -- the run -----------------------------------------------------------------------------------


class Bench:
    def __init__(self, args, root: str, db_url: str) -> None:
        self.args = args
        self.root = root
        self.db_url = db_url
        self.ids = minion_ids(args.minions)
        self.daemons = Daemons()
        self.engine = store_engine.get_engine(db_url)
        self.confs: list[dict] = []
        self.paths: list[str] = []
        self.result: dict = {"minions": args.minions, "masters": 2}
        self.failures: list[str] = []

    # masters

    def start_masters(self) -> None:
        store_engine.ensure_schema(self.engine)
        shared = os.path.join(self.root, "shared")
        os.makedirs(shared)
        key_file = os.path.join(shared, "fleet.fernet")
        core_secrets.Vault.open(key_file)  # made once, named by both masters
        private, public = salt.crypt.gen_keys(2048)
        for n in (1, 2):
            path, conf = master_config(self.root, n, self.db_url, key_file)
            pki = pathlib.Path(conf["pki_dir"])
            (pki / "master.pem").write_text(private)
            (pki / "master.pub").write_text(public)
            (pki / "master.pem").chmod(0o400)
            self.paths.append(path)
            self.confs.append(conf)
            self.daemons.spawn(
                f"m{n}",
                [os.path.join(BIN, "salt-master"), "-c", os.path.dirname(path), "-l", "quiet"],
                os.path.join(os.path.dirname(path), "stdout.log"),
            )
        deadline = time.monotonic() + 120
        for conf in self.confs:
            pub = os.path.join(conf["sock_dir"], "master_event_pub.ipc")
            while not (os.path.exists(pub) and self._listening(conf["ret_port"])):
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"master {conf['id']} did not start (see {conf['log_file']})"
                    )
                self._check_alive()
                time.sleep(0.2)
        self.opts = [salt.config.master_config(p) for p in self.paths]
        self.runner = salt.runner.RunnerClient(self.opts[0])
        log(f"masters up: {', '.join(c['id'] for c in self.confs)} on one store")

    @staticmethod
    def _listening(port: int) -> bool:
        import socket

        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", port)) == 0

    def _check_alive(self) -> None:
        for name in ("m1", "m2"):
            proc = self.daemons.procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"salt-master {name} exited ({proc.returncode})")

    def master_cpu(self) -> list[float]:
        return [round(cpu_seconds(self.daemons.procs[f"m{n}"].pid), 1) for n in (1, 2)]

    def master_cpu_since(self, before: list[float]) -> list[float]:
        return [round(b - a, 1) for a, b in zip(before, self.master_cpu(), strict=True)]

    def minion_cpu(self) -> float:
        return sum(
            cpu_seconds(self.daemons.procs[m].pid) for m in self.ids if m in self.daemons.procs
        )

    def run_runner(self, fun: str, *args, **kwargs):
        return self.runner.cmd(fun, list(args), kwarg=kwargs, print_event=False)

    # minions

    def enrol_all(self) -> dict[str, dict]:
        began = time.monotonic()
        made = {m: self.run_runner("fleet.enrol", m, ttl="2h") for m in self.ids}
        bad = [m for m, r in made.items() if not (isinstance(r, dict) and r.get("token"))]
        if bad:
            raise RuntimeError(f"fleet.enrol failed for {bad[:3]}: {made[bad[0]]}")
        log(f"{len(made)} enrolments made with fleet.enrol in {time.monotonic() - began:.1f} s")
        return made

    def keys_in(self, conf: dict, kind: str) -> set[str]:
        try:
            return set(os.listdir(os.path.join(conf["pki_dir"], kind)))
        except FileNotFoundError:
            return set()

    def start_minions(self, enrolments: dict[str, dict]) -> None:
        args = self.args
        paths = {m: minion_config(self.root, m, self.confs, enrolments[m]) for m in self.ids}
        spawned: dict[str, float] = {}
        seen: dict[str, float] = {}
        seen_cpu: dict[str, float] = {}
        accepted: dict[str, list[float | None]] = {m: [None, None] for m in self.ids}
        waiting = list(self.ids)
        cpu0 = self.master_cpu()
        began = time.monotonic()
        last_spawn = None
        last_report = began
        deadline_after_last = 60.0 + LIMITS["accept_s"] * 10

        while True:
            now = time.monotonic()
            in_flight = [m for m in spawned if m not in seen]
            while waiting and len(in_flight) < args.spawn_parallel:
                minion = waiting.pop(0)
                self.daemons.spawn(
                    minion,
                    [
                        os.path.join(BIN, "salt-minion"),
                        "-c",
                        os.path.dirname(paths[minion]),
                        "--disable-keepalive",
                        "-l",
                        "quiet",
                    ],
                    os.path.join(os.path.dirname(paths[minion]), "stdout.log"),
                    nice=args.minion_nice,
                )
                spawned[minion] = last_spawn = time.monotonic()
                in_flight.append(minion)
            for idx, conf in enumerate(self.confs):
                pending = self.keys_in(conf, "minions_pre")
                acc = self.keys_in(conf, "minions")
                now = time.monotonic()
                for minion in (pending | acc) & set(spawned):
                    if minion not in seen:
                        seen[minion] = now
                        seen_cpu[minion] = cpu_seconds(self.daemons.procs[minion].pid)
                for minion in acc & set(spawned):
                    if accepted[minion][idx] is None:
                        accepted[minion][idx] = now
            for minion in spawned:
                proc = self.daemons.procs[minion]
                if proc.poll() is not None:
                    raise RuntimeError(f"salt-minion {minion} exited ({proc.returncode})")
            self._check_alive()
            done = not waiting and all(None not in a for a in accepted.values())
            if now - last_report >= 10 or done:
                both = sum(None not in a for a in accepted.values())
                log(
                    f"minions spawned {len(spawned)}/{len(self.ids)}, keys seen {len(seen)},"
                    f" accepted on both masters {both}"
                )
                last_report = now
            if done:
                break
            if not waiting and now - last_spawn > deadline_after_last:
                missing = [m for m, a in accepted.items() if None in a]
                self.result["startup_s"] = round(max(seen.values(), default=now) - began, 1)
                self.result["accepted_on_both"] = len(self.ids) - len(missing)
                raise RuntimeError(f"keys not accepted on both masters: {missing[:5]}...")
            time.sleep(0.2)

        all_accepted = max(max(a) for a in accepted.values())
        startup = [seen[m] - spawned[m] for m in self.ids]
        startup_cpu = [seen_cpu[m] for m in self.ids]
        follow = [abs(a[1] - a[0]) for a in accepted.values()]
        self.last_spawn = last_spawn
        self.result.update(
            {
                "spawn_parallel": args.spawn_parallel,
                "minion_nice": args.minion_nice,
                "startup_s": round(max(seen.values()) - began, 1),
                "startup_per_minion_s": summary_stats(startup),
                "startup_cpu_s": round(sum(startup_cpu), 1),
                "startup_cpu_per_minion_s": summary_stats(startup_cpu),
                "accept_s": round(all_accepted - last_spawn, 1),
                "accept_after_key_seen_s": summary_stats(
                    [min(a) - seen[m] for m, a in accepted.items()]
                ),
                "accept_second_master_after_first_s": summary_stats(follow),
                "master_cpu_s_startup": self.master_cpu_since(cpu0),
            }
        )
        log(
            f"start-up: all keys seen {self.result['startup_s']} s after the first spawn"
            f" ({self.result['startup_cpu_s']} CPU-s in the minions until then);"
            f" accept_s {self.result['accept_s']} s from the last spawn to all accepted on both"
        )

    # onboarding

    def wait_onboarded(self) -> None:
        n = len(self.ids)
        cpu0, mcpu0 = self.master_cpu(), self.minion_cpu()
        # a safety net, not a limit: onboarding is bound by the minions' own CPU (a sync and
        # two inventories each, about 7 CPU-s), which here is what the masters leave of 2 cores
        deadline = time.monotonic() + 120 + 12 * n
        last_report = 0.0
        while True:
            onboards, inventories = onboarded(self.engine, self.ids)
            now = time.monotonic()
            if now - last_report >= 10:
                log(f"onboarded {onboards}/{n}, first inventory stored {inventories}/{n}")
                last_report = now
            if onboards == n and inventories == n:
                break
            if now > deadline:
                raise RuntimeError(f"onboarding incomplete: {onboards}/{n}, {inventories}/{n}")
            self._check_alive()
            time.sleep(1)
        self.result["onboard_s"] = round(time.monotonic() - self.last_spawn, 1)
        waited = quiesce(self.engine, self.confs)
        self.result["onboarding_jobs"] = jobs_by_fun(self.engine, self.ids)
        self.result["onboarding_runner_jobs"] = runner_calls(self.engine)
        self.result["master_cpu_s_onboarding"] = self.master_cpu_since(cpu0)
        self.result["minion_cpu_s_onboarding"] = round(self.minion_cpu() - mcpu0, 1)
        log(
            f"every node onboarded with its first inventory {self.result['onboard_s']} s after"
            f" the last spawn (quiet {waited:.0f} s later); minion jobs:"
            f" {self.result['onboarding_jobs']}"
        )

    # the cycle

    def cycle(self) -> None:
        n = len(self.ids)
        pinned = self.run_runner("fleet.baseline_pin", self.ids[0], name=BASELINE)
        assigned = self.run_runner("fleet.baseline_assign", BASELINE, f"{PREFIX}*")
        if not (isinstance(pinned, dict) and isinstance(assigned, dict)):
            raise RuntimeError(f"baseline: {pinned!r} {assigned!r}")
        packages = sum(pinned.get("packages", {}).values())
        release = pinned.get("facts", {}).get("osrelease")
        log(f"baseline {BASELINE} pinned from {self.ids[0]} ({packages} packages), assigned")
        client = salt.client.LocalClient(mopts=self.opts[0])
        moved = client.cmd(
            self.ids,
            "grains.setval",
            ["osrelease", f"{release}.scale"],
            kwarg={"refresh_pillar": False},
            tgt_type="list",
            timeout=300,
        )
        if len(moved) != n:
            raise RuntimeError(f"grains.setval answered by {len(moved)}/{n}")
        quiesce(self.engine, self.confs)
        log(f"osrelease grain moved on {n} nodes; cycle: fleet.inventory to all")
        cpu0, mcpu0 = self.master_cpu(), self.minion_cpu()
        since = db_now(self.engine)
        began = time.monotonic()
        jid = client.cmd_async(self.ids, "fleet.inventory", tgt_type="list")
        if not jid:
            raise RuntimeError("fleet.inventory was not published")
        marks: dict[str, float] = {}
        last_report = 0.0
        while True:
            got = cycle_progress(self.engine, self.ids, jid, since)
            now = time.monotonic()
            for key, value in got.items():
                if value >= n and key not in marks:
                    marks[key] = round(now - began, 1)
            if now - last_report >= 10:
                log(f"cycle {now - began:.0f} s: {got}")
                last_report = now
            if "drift" in marks:
                break
            if now - began > (90 if self.args.quick else 4 * LIMITS["cycle_s"]):
                raise RuntimeError(f"cycle incomplete: {got}; {self.cycle_laggards(since)}")
            self._check_alive()
            time.sleep(0.5)
        self.result.update(
            {
                "cycle_s": marks["drift"],
                "cycle_returns_s": marks.get("returns"),
                "cycle_ingested_s": marks.get("ingested"),
                "baseline_packages": packages,
                "master_cpu_s_cycle": self.master_cpu_since(cpu0),
                "minion_cpu_s_cycle": round(self.minion_cpu() - mcpu0, 1),
            }
        )
        log(f"cycle_s {marks['drift']} s (returns all in {marks.get('returns')} s)")
        quiesce(self.engine, self.confs)

    def cycle_laggards(self, since: dt.datetime) -> dict:
        """What the store holds for the nodes whose drift was not recomputed in the cycle."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    Node.minion_id,
                    Node.inventory_digest,
                    DriftCurrent.inventory_digest,
                    DriftCurrent.computed_at,
                    DriftCurrent.facts,
                    DriftCurrent.score,
                ).outerjoin(DriftCurrent, DriftCurrent.minion_id == Node.minion_id)
            ).all()
        return {
            m: {
                "node": (d or "")[:12],
                "drift": (dd or "")[:12],
                "at": str(at),
                "facts": f,
                "score": sc,
            }
            for m, d, dd, at, f, sc in rows
            if not (at and at >= since and d == dd and (f or 0) >= 1)
        }

    # the burst

    def burst(self) -> None:
        n, jobs = len(self.ids), self.args.burst_jobs
        clients = [salt.client.LocalClient(mopts=o) for o in self.opts]
        cpu0 = self.master_cpu()
        began = time.monotonic()
        jids = []
        for j in range(jobs):
            jid = clients[j % 2].cmd_async(self.ids, "test.ping", tgt_type="list")
            if not jid:
                raise RuntimeError("test.ping was not published")
            jids.append(jid)
        published = time.monotonic() - began
        stmt = select(func.count()).select_from(Return).where(Return.jid.in_(jids))
        count, last_change = 0, began
        while count < n * jobs:
            time.sleep(0.25)
            now_count = scalar(self.engine, stmt)
            now = time.monotonic()
            if now_count != count:
                count, last_change = now_count, now
            elif now - last_change > 60:
                break
        elapsed = last_change - began
        self.result.update(
            {
                "burst_jobs": jobs,
                "burst_returns": count,
                "burst_publish_s": round(published, 2),
                "burst_s": round(elapsed, 2),
                "returns_per_s": round(count / elapsed, 1) if elapsed > 0 else None,
                "master_cpu_s_burst": self.master_cpu_since(cpu0),
            }
        )
        if count != n * jobs:
            self.failures.append(f"burst: {count} of {n * jobs} returns stored")
        log(f"burst: {count} returns in {elapsed:.1f} s = {self.result['returns_per_s']}/s")
        quiesce(self.engine, self.confs)

    # memory and the counts

    def measure(self) -> None:
        masters = [memory_mb(self.daemons.procs[f"m{n}"].pid) for n in (1, 2)]
        minions = [memory_mb(self.daemons.procs[m].pid) for m in self.ids]
        self.result.update(
            {
                "master_rss_mb": [m["rss_mb"] for m in masters],
                "master_pss_mb": [m["pss_mb"] for m in masters],
                "master_processes": [len(tree(self.daemons.procs[f"m{n}"].pid)) for n in (1, 2)],
                "master_cpu_s": self.master_cpu(),
                "minion_rss_mb": round(statistics.mean(m["rss_mb"] for m in minions), 1),
                "minion_pss_mb": round(statistics.mean(m["pss_mb"] for m in minions), 1),
                "minions_rss_total_mb": round(sum(m["rss_mb"] for m in minions)),
                "minion_processes": sum(len(tree(self.daemons.procs[m].pid)) for m in self.ids),
                "rss_per_minion_mb": round(statistics.mean(m["rss_mb"] for m in minions), 1),
                "rss_with_masters_per_minion_mb": round(
                    (sum(m["rss_mb"] for m in masters) + sum(m["rss_mb"] for m in minions))
                    / len(self.ids),
                    1,
                ),
            }
        )
        checked = exactly_once_counts(self.engine, self.ids, self.confs)
        self.result.update(checked["counts"])
        self.result["checks"] = checked["checks"]
        self.result["exactly_once"] = checked["exactly_once"]
        self.result["runner_jobs"] = runner_calls(self.engine)
        self.result["minion_jobs"] = jobs_by_fun(self.engine, self.ids)

    def stop(self) -> None:
        minions = [m for m in self.ids if m in self.daemons.procs]
        if minions:
            log(f"stopping {len(minions)} minions and the masters")
        self.daemons.stop(minions)
        self.daemons.stop(["m1", "m2"])


def verdict(result: dict, failures: list[str]) -> bool:
    for key, limit in LIMITS.items():
        value = result.get(key)
        if value is None or value > limit:
            failures.append(f"{key} {value} over its limit {limit}")
    if not result.get("exactly_once"):
        bad = [k for k, v in (result.get("checks") or {}).items() if not v]
        failures.append(f"exactly-once checks failed: {bad}")
    return not failures


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minions", type=int, default=100, help="salt-minion processes (100)")
    parser.add_argument(
        "--spawn-parallel",
        type=int,
        default=10,
        help="minions starting at once: a new one is spawned when an earlier one's key reached"
        " a master (10)",
    )
    parser.add_argument(
        "--burst-jobs", type=int, default=10, help="test.ping jobs to all minions (10)"
    )
    parser.add_argument(
        "--minion-nice",
        type=int,
        default=19,
        help="the minions' nice value (19): on a fleet each minion's CPU is its own; here 100"
        " minions share two cores with the masters, whose work must not wait behind theirs."
        " Linux shares CPU by weight (nice 0: 1024, nice 10: 110, nice 19: 15), so at nice 10"
        " a hundred busy minions still outweighed the masters' dozen processes and took about"
        " half the CPU; at 19 they take what the masters leave. 0 runs them at the masters'"
        " priority",
    )
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="a role that may create databases")
    parser.add_argument(
        "--quick", action="store_true", help="4 minions, 3 burst jobs: the suite's correctness run"
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary folder (logs at --log-level) and the database for a look",
    )
    parser.add_argument(
        "--log-level", default="warning", help="the daemons' log file level (warning)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.minions, args.burst_jobs, args.spawn_parallel = 4, 3, 4
    if args.minions < 1 or args.spawn_parallel < 1 or args.burst_jobs < 1:
        parser.error("--minions, --spawn-parallel and --burst-jobs must be at least 1")
    return args


def _interrupted(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    args = parse_args(argv)
    LOG_LEVEL[0] = args.log_level
    signal.signal(signal.SIGTERM, _interrupted)
    root = tempfile.mkdtemp(prefix="fleet-scale-", dir="/tmp")
    result: dict = {"minions": args.minions, "masters": 2, "quick": args.quick}
    failures: list[str] = []
    began = time.monotonic()
    try:
        with fresh_database(args.pg_url, "fleet_scale", keep=args.keep) as db_url:
            if args.keep:
                log(f"database {db_url} (kept)")
            bench = Bench(args, root, db_url)
            try:
                bench.start_masters()
                enrolments = bench.enrol_all()
                bench.start_minions(enrolments)
                bench.wait_onboarded()
                bench.cycle()
                bench.burst()
                bench.measure()
            except Exception as exc:  # noqa: BLE001 - reported on the last line, not a trace
                failures.append(f"{type(exc).__name__}: {exc}")
                log(f"failed: {exc} (logs under {root})")
            finally:
                result.update(bench.result)
                failures.extend(bench.failures)
                bench.stop()
    finally:
        store_engine.dispose_all()
        if args.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    result["quick"] = args.quick
    result["limits"] = LIMITS
    result["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    result["total_s"] = round(time.monotonic() - began, 1)
    result["ok"] = verdict(result, failures)
    result["failures"] = failures
    print(json.dumps(result, sort_keys=False))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
