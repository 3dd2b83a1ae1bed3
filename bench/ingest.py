#!/usr/bin/env python
"""Returner ingest benchmark: the ``fleet`` returner against Salt's ``pgjsonb`` and raw COPY.

The same synthetic Salt job returns (``test.ping``, ``cmd.run`` with a few KB of output,
``fleet.inventory`` with 1,500 packages) and ``salt/job/<jid>/ret/<id>`` events go

(a) through the ``fleet`` returner, loaded by Salt's own loader from a master config with
    ``fleet:db_url`` pointing at a fresh PostgreSQL database: ``returner(ret)`` once per
    return, ``event_return(batch)`` per batch of events (Salt's default
    ``event_return_queue: 0`` hands over one event at a time). The clock stops when
    everything is committed (``Writer.drain()``), node updates and inventory snapshots
    included; the ``fleet/inventory/changed`` events the returner fires afterwards on the
    master's event bus (this script starts the IPC publisher ``salt-master`` runs) are
    counted, and the rate with the clock stopped after them is reported too;
(b) through Salt's built-in ``pgjsonb`` returner, loaded the same way, into its own fresh
    database with the schema from its docstring (it needs psycopg2: ``bench/requirements.txt``);
(c) through raw ``COPY ... FROM STDIN`` (psycopg 3) of the equivalent rows into the
    ``returns`` and ``events`` tables of a third fresh database with the fleet schema (same
    columns, JSONB, same indexes): the ceiling. JSON encoding is inside the clock; node and
    inventory bookkeeping is not done at all.

Every run is verified in the database afterwards: every return and event is there exactly once
(per ``(jid, minion)`` and per tag), nothing was quarantined. A missing or duplicated row is a
failure (exit status 1), never a figure.

pgjsonb opens a connection and commits per return, so it gets a smaller sample by default
(``--pgjsonb-n``); the return sequence is interleaved so that every prefix has the requested
mix, which keeps the rates comparable. The output says so.

Usage (from the repository root)::

    .venv/bin/pip install -r bench/requirements.txt
    .venv/bin/python bench/ingest.py [--n 3000] [--events 3000] [--pg-url URL] [--mix ...]

The last line of the output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import getpass
import json
import logging
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid

# this checkout's code first (a bench run from another worktree measures that worktree's code)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peakmem  # bench/peakmem.py, beside this script

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_MIX = "test.ping=50,cmd.run=40,fleet.inventory=10"
PACKAGES_PER_INVENTORY = 1500
#: Targets: fleet >= 10x pgjsonb (issue 3), and at least 0.8x raw COPY for returns and for
#: events (issue 17).
TARGET_VS_PGJSONB = 10.0
TARGET_VS_COPY = 0.8

log = logging.getLogger("bench.ingest")


# -- synthetic data ---------------------------------------------------------------------------

_SYLLABLES = (
    "ac ad al an ar as at ba be bi bo ca ce ci co cu da de di do du el em en er es ex fa fe fi "
    "fo ga ge gi go gr ha he hi ho id il im in io is ka ke ki ko la le li lo lu ma me mi mo mu "
    "na ne ni no nu ob od ol om on op or os pa pe pi po pr qu ra re ri ro ru sa se si so st su "
    "ta te ti to tr tu ul um un ur us va ve vi vo xa xe ya yo za ze zo"
).split()
_DEB_SUFFIXES = ("", "", "", "-dev", "-common", "-bin", "-data", "-doc", "-utils", "3", "6")


def _name(rng: random.Random, parts: int) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(parts))


def _unique_names(rng: random.Random, count: int, make) -> list[str]:
    names: set[str] = set()
    while len(names) < count:
        names.add(make())
    return sorted(names)


def _deb_version(rng: random.Random) -> str:
    upstream = f"{rng.randint(0, 12)}.{rng.randint(0, 40)}.{rng.randint(0, 20)}"
    rev = rng.choice(("-1", "-2", "-3+b1", "-1+deb12u1", "-5", "-0.1"))
    return upstream + rev


def _semver(rng: random.Random) -> str:
    return f"{rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 15)}"


class Universe:
    """Package sets per kind of node, generated once from the seed."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.deb = {
            n: _deb_version(rng)
            for n in _unique_names(
                rng,
                1200,
                lambda: (
                    ("lib" if rng.random() < 0.45 else "")
                    + _name(rng, rng.randint(2, 4))
                    + rng.choice(_DEB_SUFFIXES)
                ),
            )
        }
        self.deb_sources = {
            n: {"name": n.removeprefix("lib").split("-")[0] or n, "version": v.split("+")[0]}
            for n, v in self.deb.items()
        }
        self.pypi = {
            n: _semver(rng)
            for n in _unique_names(
                rng, 500, lambda: _name(rng, rng.randint(2, 3)) + rng.choice(("", "-py", "lib"))
            )
        }
        self.brew = {n: _semver(rng) for n in _unique_names(rng, 900, lambda: _name(rng, 3))}
        self.casks = {
            n: _semver(rng) for n in _unique_names(rng, 100, lambda: _name(rng, 2) + "-app")
        }
        self.nix = {
            n: _semver(rng) for n in _unique_names(rng, 1300, lambda: _name(rng, rng.randint(2, 4)))
        }

    def inventory(self, kind: str, variant: int) -> dict:
        """A fleet.inventory document of exactly PACKAGES_PER_INVENTORY packages."""
        from saltext_fleet.core import inventory as core

        rng = random.Random(f"{kind}-{variant}")

        def bumped(table: dict, count: int) -> dict:
            # Each variant differs from its siblings by a few upgraded packages.
            out = dict(list(table.items())[:count])
            for name in rng.sample(sorted(out), 5):
                out[name] = out[name] + f".{variant}"
            return out

        if kind == "linux":
            packages = {"deb": bumped(self.deb, 1200), "pypi": bumped(self.pypi, 300)}
            sources = {"deb": {n: self.deb_sources[n] for n in packages["deb"]}}
            facts = {"os": "Debian", "os_family": "Debian", "osrelease": "12", "osarch": "amd64"}
        elif kind == "mac":
            packages = {
                "brew": bumped(self.brew, 900),
                "brew-cask": bumped(self.casks, 100),
                "pypi": bumped(self.pypi, 500),
            }
            sources = {}
            facts = {"os": "MacOS", "os_family": "MacOS", "osrelease": "14.6", "osarch": "arm64"}
        else:
            packages = {"nix": bumped(self.nix, 1300), "pypi": bumped(self.pypi, 200)}
            sources = {}
            facts = {"os": "NixOS", "os_family": "NixOS", "osrelease": "24.05", "osarch": "x86_64"}
        facts.update(kernelrelease="6.1.0-23-amd64", saltversion="3008.3")
        doc = core.build_inventory(packages, sources, facts)
        assert sum(len(t) for t in doc["packages"].values()) == PACKAGES_PER_INVENTORY
        return doc


_LOG_LINES = (
    "[{p:3d}%] Building CXX object src/{m}/CMakeFiles/{m}.dir/{f}.cpp.o",
    "CompileSwift normal arm64 /Users/ci/builds/{m}/Sources/{f}.swift (in target '{m}')",
    "Ld /Users/ci/Library/Developer/Xcode/DerivedData/{m}/Build/Products/Release/{f} normal",
    "building '{m}.{f}' extension",
    "copying build/lib/{m}/{f}.py -> build/bdist.linux-x86_64/wheel/{m}",
    "  Downloaded {f} v{v} (registry `crates-io`)",
    "warning: unused variable `{f}` --> src/{m}.rs:{p}:9",
)


def _cmd_output(rng: random.Random) -> str:
    target = rng.randint(1500, 6000)
    lines, size = [], 0
    while size < target:
        line = rng.choice(_LOG_LINES).format(
            p=rng.randint(0, 100), m=_name(rng, 2), f=_name(rng, 3), v=_semver(rng)
        )
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)


def parse_mix(text: str) -> dict[str, float]:
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        name = name.strip()
        if name not in ("test.ping", "cmd.run", "fleet.inventory"):
            raise SystemExit(
                f"--mix: unknown function {name!r} (test.ping, cmd.run, fleet.inventory)"
            )
        try:
            mix[name] = float(weight)
        except ValueError:
            raise SystemExit(f"--mix: weight of {name} is not a number: {weight!r}") from None
        if mix[name] < 0:
            raise SystemExit(f"--mix: weight of {name} is negative")
    if not any(mix.values()):
        raise SystemExit("--mix: all weights are zero")
    return {k: v for k, v in mix.items() if v > 0}


def _interleave(mix: dict[str, float], n: int) -> list[str]:
    """Smooth weighted round robin: every prefix has the mix's proportions (within one)."""
    total = sum(mix.values())
    current = dict.fromkeys(mix, 0.0)
    out = []
    for _ in range(n):
        for k in current:
            current[k] += mix[k]
        best = max(current, key=lambda k: current[k])
        current[best] -= total
        out.append(best)
    return out


def generate(n: int, m: int, mix: dict[str, float], seed: int, minions: int, variants: int):
    """N return loads and M ``salt/job/<jid>/ret/<id>`` events, deterministic for ``seed``."""
    rng = random.Random(seed)
    kinds = ("linux", "mac", "nixos")
    nodes = []
    for i in range(minions):
        kind = kinds[i % 3]
        prefix = {"linux": "linux-build", "mac": "mac-mini", "nixos": "nixos-runner"}[kind]
        nodes.append((f"{prefix}-{i:04d}.ci.example.com", kind))
    universe = Universe(rng)
    inventories: dict[tuple[str, int], dict] = {}
    funs = _interleave(mix, n)
    base = dt.datetime(2026, 11, 23, 12, 0, 0)
    jid_seq = 0
    jobs: dict[str, tuple[str, int]] = {}  # fun -> (jid, next node index)
    fun_args = {
        "test.ping": [],
        "cmd.run": ["xcodebuild -scheme App -configuration Release build"],
        "fleet.inventory": [],
    }
    returns = []
    for fun in funs:
        jid, idx = jobs.get(fun, (None, minions))
        if idx >= minions:  # a new job, published to every node
            jid_seq += 1
            jid = (base + dt.timedelta(seconds=jid_seq)).strftime("%Y%m%d%H%M%S%f")
            idx = 0
        jobs[fun] = (jid, idx + 1)
        minion, kind = nodes[idx]
        if fun == "test.ping":
            value, retcode = True, 0
        elif fun == "cmd.run":
            value, retcode = _cmd_output(rng), rng.choice((0, 0, 0, 0, 1))
        else:
            key = (kind, rng.randrange(variants))
            if key not in inventories:
                inventories[key] = universe.inventory(*key)
            value, retcode = inventories[key], 0
        stamp = (base + dt.timedelta(seconds=jid_seq, microseconds=idx)).isoformat()
        returns.append(
            {
                "cmd": "_return",
                "id": minion,
                "success": retcode == 0,
                "return": value,
                "retcode": retcode,
                "jid": jid,
                "fun": fun,
                "fun_args": fun_args[fun],
                "_stamp": stamp,
            }
        )
    events = []
    for i in range(m):
        load = returns[i % n] if n else {"id": "m", "jid": "0", "fun": "test.ping", "return": True}
        data = {k: v for k, v in load.items() if k != "cmd"}
        events.append({"tag": f"salt/job/{load['jid']}/ret/{load['id']}", "data": data})
    digests = {inv["digest"] for inv in inventories.values()}
    return returns, events, digests


def sizes_of(returns: list[dict], events: list[dict]) -> dict:
    by_fun: dict[str, list[int]] = collections.defaultdict(list)
    for ret in returns:
        by_fun[ret["fun"]].append(len(json.dumps(ret)))
    out = {
        fun: {"count": len(v), "avg_json_bytes": round(sum(v) / len(v))}
        for fun, v in sorted(by_fun.items())
    }
    out["returns_mb"] = round(sum(sum(v) for v in by_fun.values()) / 1e6, 2)
    out["events_mb"] = round(sum(len(json.dumps(e)) for e in events) / 1e6, 2)
    out["packages_per_inventory"] = PACKAGES_PER_INVENTORY
    return out


# -- databases --------------------------------------------------------------------------------


class Databases:
    """Fresh databases on the server of ``admin_url``, all dropped by :meth:`drop`."""

    def __init__(self, admin_url: str):
        import psycopg

        self.admin_url = admin_url
        self.token = uuid.uuid4().hex[:10]
        self.created: list[str] = []
        try:
            with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
                conn.execute("SELECT 1")
        except Exception as exc:
            raise SystemExit(f"PostgreSQL at {admin_url} is not reachable: {exc}") from exc

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql)

    def create(self, suffix: str) -> str:
        name = f"fleet_bench_{self.token}_{suffix}"
        self.admin(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return name

    def url(self, name: str, driver: str = "postgresql") -> str:
        from sqlalchemy.engine import make_url

        url = make_url(self.admin_url).set(drivername=driver, database=name)
        return url.render_as_string(hide_password=False)

    def checkpoint(self) -> None:
        """Start each timed run without the previous run's dirty pages to write."""
        with contextlib.suppress(Exception):
            self.admin("CHECKPOINT")

    def drop(self) -> None:
        for name in self.created:
            try:
                self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except Exception as exc:  # noqa: BLE001
                print(f"warning: could not drop database {name}: {exc}", file=sys.stderr)
        self.created.clear()


def query(url: str, sql: str) -> list[tuple]:
    if url.startswith("sqlite:///"):
        import sqlite3

        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(url, connect_timeout=5) as conn:
        return conn.execute(sql).fetchall()


class VerificationError(RuntimeError):
    pass


def check_multiset(what: str, expected: collections.Counter, found: collections.Counter) -> None:
    if expected == found:
        return
    missing = expected - found
    extra = found - expected
    raise VerificationError(
        f"{what}: expected {sum(expected.values())} rows, found {sum(found.values())}; "
        f"{sum(missing.values())} missing (e.g. {list(missing)[:3]}), "
        f"{sum(extra.values())} duplicated or unexpected (e.g. {list(extra)[:3]})"
    )


def verify(
    url: str,
    returns: list[dict],
    events: list[dict],
    returns_table: str,
    events_table: str,
    id_column: str,
    extra: str = "",
) -> dict:
    """Every return and event is stored exactly once, inventories whole; what was checked."""
    want_ret = collections.Counter((r["jid"], r["id"], r["fun"]) for r in returns)
    got_ret = collections.Counter(
        {
            (jid, mid, fun): c
            for jid, mid, fun, c in query(
                url,
                f"SELECT jid, {id_column}, fun, count(*) FROM {returns_table} GROUP BY 1, 2, 3",
            )
        }
    )
    check_multiset(f"{returns_table} in {url.rsplit('/', 1)[-1]}", want_ret, got_ret)
    want_ev = collections.Counter(e["tag"] for e in events)
    got_ev = collections.Counter(
        {tag: c for tag, c in query(url, f"SELECT tag, count(*) FROM {events_table} GROUP BY 1")}
    )
    check_multiset(f"{events_table} in {url.rsplit('/', 1)[-1]}", want_ev, got_ev)
    # The payload made it whole: the packages of every stored inventory return.
    if url.startswith("sqlite:"):
        packages = (
            "(SELECT count(*) FROM json_each(json_extract(\"return\", '$.packages')) e, "
            "json_each(e.value))"
        )
    else:
        packages = (
            "(SELECT count(*) FROM jsonb_each(\"return\"->'packages') e, "
            "jsonb_object_keys(e.value))"
        )
    inventories = query(url, f"SELECT count(*) FROM {returns_table} WHERE fun = 'fleet.inventory'")[
        0
    ][0]
    want_inv = sum(1 for r in returns if r["fun"] == "fleet.inventory")
    if inventories != want_inv:
        raise VerificationError(
            f"{returns_table}: {inventories} inventory returns, expected {want_inv}"
        )
    inv = query(
        url,
        f"SELECT count(*) FROM {returns_table} WHERE fun = 'fleet.inventory' AND "
        f"{packages} <> {PACKAGES_PER_INVENTORY}",
    )[0][0]
    if inv:
        raise VerificationError(f"{returns_table}: {inv} inventory returns lost packages")
    return {
        "returns": sum(want_ret.values()),
        "events": sum(want_ev.values()),
        "inventory_returns_whole": want_inv,
    }


# -- Salt -------------------------------------------------------------------------------------


def master_opts(root: str, name: str, fleet_url: str, pgjsonb: dict) -> dict:
    """Master opts as ``salt-master`` builds them from a config file.

    Every ``name`` shares ``root`` (so the event bus's socket folder) and has a cachedir (so a
    spool) of its own.
    """
    import salt.config

    os.makedirs(os.path.join(root, name), exist_ok=True)
    conf = os.path.join(root, name, "master")
    with open(conf, "w", encoding="utf-8") as fh:
        json.dump(
            {
                "root_dir": root,
                "cachedir": os.path.join(root, name, "cache"),
                "user": getpass.getuser(),
                "id": "bench-master",
                "fleet": {"db_url": fleet_url},
                "returner.pgjsonb.host": pgjsonb["host"],
                "returner.pgjsonb.port": pgjsonb["port"],
                "returner.pgjsonb.user": pgjsonb["user"],
                "returner.pgjsonb.pass": pgjsonb["pass"],
                "returner.pgjsonb.db": pgjsonb["db"],
                "returner.pgjsonb.connect_timeout": 5,
            },
            fh,
        )  # JSON is YAML
    opts = salt.config.master_config(conf)
    for key in ("cachedir", "sock_dir", "pki_dir"):
        os.makedirs(opts[key], exist_ok=True)
    return opts


@contextlib.contextmanager
def master_event_bus(opts: dict):
    """The master's IPC event publisher (what ``salt-master`` starts first)."""
    import salt.channel.server
    import salt.utils.process

    manager = salt.utils.process.ProcessManager(wait_for_kill=5)
    publisher = salt.channel.server.MasterPubServerChannel.factory(opts)
    publisher.pre_fork(manager)
    try:
        if not publisher.transport.started.wait(30):
            raise SystemExit("the master event publisher did not start within 30 s")
        yield
    finally:
        manager.stop_restarting()
        manager.kill_children()
        with contextlib.suppress(Exception):
            publisher.close()


class BusListener:
    """Counts ``fleet/inventory/changed`` events the fleet returner fires."""

    def __init__(self, opts: dict):
        import salt.utils.event

        self.event = salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True)
        self.event.subscribe("fleet/inventory/changed")

    def count(self, expected: int, timeout: float = 10.0) -> int:
        got, deadline = 0, time.monotonic() + timeout
        while got < expected and time.monotonic() < deadline:
            if self.event.get_event(wait=0.2, tag="fleet/inventory/changed", full=True):
                got += 1
        return got

    def close(self) -> None:
        self.event.destroy()


def pgjsonb_schema_sql() -> list[str]:
    """The schema from the pgjsonb returner's own docstring, without CREATE DATABASE."""
    import salt.returners.pgjsonb as pgjsonb

    doc = pgjsonb.__doc__ or ""
    start = doc.index("Use the following Pg database schema:")
    block = doc[start:].split(".. code-block:: sql", 1)[1]
    end = block.find("Required python modules")
    block = block[: end if end != -1 else None]
    lines = [ln for ln in block.splitlines() if not ln.strip().startswith("--")]
    statements = [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
    out = [s for s in statements if not s.upper().startswith("CREATE DATABASE")]
    if not any("salt_returns" in s for s in out):
        raise SystemExit("could not read the pgjsonb schema from salt.returners.pgjsonb")
    return out


def run_events(event_fn, events: list[dict], batch: int) -> None:
    for i in range(0, len(events), batch):
        event_fn(events[i : i + batch])


# -- the three contenders ---------------------------------------------------------------------


def expected_changes(returns: list[dict], events: list[dict]) -> int:
    """How many fleet/inventory/changed events storing these in order must fire.

    Only returns count: job return events are stored as events and never feed a node's
    inventory (anybody can fire one), so ``events`` change nothing here.
    """
    del events
    current: dict[str, str] = {}
    changes = 0
    for load in returns:
        if load.get("fun") == "fleet.inventory" and load.get("success") is not False:
            digest = load["return"]["digest"]
            if current.get(load["id"]) != digest:
                current[load["id"]] = digest
                changes += 1
    return changes


def bench_fleet(opts, loader, url, returns, events, batch) -> dict:
    from saltext_fleet.store import engine as store_engine
    from saltext_fleet.store import writer as store_writer

    # The schema exists before the clock starts (a running master migrated it long ago).
    store_engine.ensure_schema(store_engine.get_engine(url))
    spool_dir = os.path.join(opts["cachedir"], "fleet", "spool")
    returner, event_return = loader["fleet.returner"], loader["fleet.event_return"]
    listener = BusListener(opts)
    out = {}
    try:
        t0 = time.perf_counter()
        for ret in returns:
            returner(ret)
        accepted = time.perf_counter() - t0
        writer = store_writer.existing_writer(url, spool_dir)
        if writer is None or not writer.drain(600):
            raise VerificationError("fleet: the writer did not drain its spool within 600 s")
        out["returns_seconds"] = time.perf_counter() - t0
        out["returns_accept_seconds"] = accepted
        # Inventory changes are announced on the bus after the commit, by a thread of their
        # own; the clock above stops at the commit. This one also waits for the announcements.
        if not writer.wait_announced(600):
            raise VerificationError("fleet: inventory changes not announced within 600 s")
        out["returns_announced_seconds"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        run_events(event_return, events, batch)
        accepted = time.perf_counter() - t0
        if not writer.drain(600):
            raise VerificationError("fleet: the writer did not drain its spool within 600 s")
        out["events_seconds"] = time.perf_counter() - t0
        out["events_accept_seconds"] = accepted
        if writer.last_error:
            raise VerificationError(f"fleet: the writer reported an error: {writer.last_error}")
        want = expected_changes(returns, events)
        got = listener.count(want)
        if got != want:
            raise VerificationError(
                f"fleet: {got} fleet/inventory/changed events on the bus, expected {want}"
            )
        out["inventory_changed_events"] = got
    finally:
        listener.close()
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    checks = verify(plain, returns, events, "returns", "events", "minion_id")
    quarantined = query(plain, "SELECT count(*) FROM quarantine")[0][0]
    if quarantined:
        raise VerificationError(f"fleet: {quarantined} records were quarantined")
    snapshots = query(plain, "SELECT count(*) FROM inventory_snapshots")[0][0]
    used = {r["return"]["digest"] for r in returns if r["fun"] == "fleet.inventory"}
    if snapshots != len(used):
        raise VerificationError(f"fleet: {snapshots} inventory snapshots, expected {len(used)}")
    nodes = query(plain, "SELECT count(*) FROM nodes")[0][0]
    expected_nodes = len({r["id"] for r in returns})
    if nodes != expected_nodes:
        raise VerificationError(f"fleet: {nodes} nodes, expected {expected_nodes}")
    out["inventory_snapshots"] = snapshots
    out["checks"] = {
        **checks,
        "quarantined": 0,
        "inventory_snapshots": snapshots,
        "nodes": nodes,
        "inventory_changed_events": out["inventory_changed_events"],
    }
    return out


def bench_pgjsonb(loader, url, returns, events, batch) -> dict:
    returner, event_return = loader["pgjsonb.returner"], loader["pgjsonb.event_return"]
    t0 = time.perf_counter()
    for ret in returns:
        returner(ret)
    out = {"returns_seconds": time.perf_counter() - t0}
    t0 = time.perf_counter()
    run_events(event_return, events, batch)
    out["events_seconds"] = time.perf_counter() - t0
    out["checks"] = verify(url, returns, events, "salt_returns", "salt_events", "id")
    return out


_RETURN_TYPES = [
    "varchar",
    "varchar",
    "varchar",
    "varchar",
    "bool",
    "int4",
    "jsonb",
    "jsonb",
    "timestamptz",
]
_EVENT_TYPES = ["varchar", "text", "jsonb", "varchar", "timestamptz"]


def bench_copy(url, returns, events, master_id, fmt) -> dict:
    """Raw COPY of the rows the fleet returner stores, JSON encoding inside the clock.

    ``fmt`` "binary" (the default, and the faster) sends the JSON text as jsonb's binary form
    (version byte 1 + the text); "text" is COPY's text format.
    """
    import psycopg
    from psycopg.adapt import Dumper
    from psycopg.pq import Format

    from saltext_fleet.store import engine as store_engine

    class JsonbText(Dumper):
        format = Format.BINARY
        oid = psycopg.postgres.types["jsonb"].oid

        def dump(self, obj):
            return b"\x01" + obj.encode("utf-8")

    class Marker(str):
        pass

    store_engine.ensure_schema(store_engine.get_engine(url))
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    suffix = " (FORMAT BINARY)" if fmt == "binary" else ""
    out = {}
    encode = json.JSONEncoder(separators=(",", ":")).encode
    with psycopg.connect(plain) as conn:
        conn.adapters.register_dumper(Marker, JsonbText)
        t0 = time.perf_counter()
        now = dt.datetime.now(dt.timezone.utc)
        with (
            conn.cursor() as cur,
            cur.copy(
                'COPY returns (rid, jid, minion_id, fun, success, retcode, "return", full_ret, '
                f"stored_at) FROM STDIN{suffix}"
            ) as copy,
        ):
            if fmt == "binary":
                copy.set_types(_RETURN_TYPES)
            for r in returns:
                copy.write_row(
                    (
                        uuid.uuid4().hex,
                        r["jid"],
                        r["id"],
                        r["fun"],
                        r["success"],
                        r["retcode"],
                        encode(r["return"]),
                        encode(r),
                        now,
                    )
                )
        conn.commit()
        out["returns_seconds"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        now = dt.datetime.now(dt.timezone.utc)
        with (
            conn.cursor() as cur,
            cur.copy(
                f"COPY events (rid, tag, data, master_id, stored_at) FROM STDIN{suffix}"
            ) as copy,
        ):
            if fmt == "binary":
                copy.set_types(_EVENT_TYPES)
            for e in events:
                copy.write_row((uuid.uuid4().hex, e["tag"], encode(e["data"]), master_id, now))
        conn.commit()
        out["events_seconds"] = time.perf_counter() - t0
    out["checks"] = verify(plain, returns, events, "returns", "events", "minion_id")
    return out


# -- main -------------------------------------------------------------------------------------


QUICK = {"n": 300, "minions": 30, "variants": 2, "repeat": 1, "pgjsonb_n": 50}
NORMAL = {"n": 3000, "minions": 300, "variants": 4, "repeat": 3, "pgjsonb_n": 300}
CONTENDERS = ("fleet", "pgjsonb", "copy")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=None, help="returns (default 3000; --quick 300)")
    parser.add_argument(
        "--events", type=int, default=None, help="salt/job/.../ret events (default: --n)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a few hundred records, one round, every row check: a correctness run for the "
        "test suite (fleet and COPY on PostgreSQL, unless --contenders says otherwise)",
    )
    parser.add_argument(
        "--backend",
        choices=("postgresql", "sqlite"),
        default="postgresql",
        help="the fleet returner's database (default postgresql; sqlite runs the fleet "
        "returner alone, in a fresh file)",
    )
    parser.add_argument(
        "--contenders",
        default=None,
        help="comma-separated, from fleet,pgjsonb,copy (default all three; --quick: fleet,copy; "
        "--backend sqlite: fleet)",
    )
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="a role that may create databases")
    parser.add_argument("--mix", default=DEFAULT_MIX, help=f"weights (default {DEFAULT_MIX})")
    parser.add_argument(
        "--pgjsonb-n",
        type=int,
        default=None,
        help="returns sent through pgjsonb, which commits one connection per return "
        "(default 300, --quick 50; its events are scaled the same way)",
    )
    parser.add_argument(
        "--event-batch",
        type=int,
        default=None,
        help="events per event_return call (default: Salt's event_return_queue, 0 meaning 1)",
    )
    parser.add_argument(
        "--minions", type=int, default=None, help="distinct minion ids (default 300; --quick 30)"
    )
    parser.add_argument(
        "--variants",
        type=int,
        default=None,
        help="distinct inventories per OS kind (linux, mac, nixos; default 4, --quick 2)",
    )
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="rounds (each contender once per round, fresh databases; default 3, --quick 1); "
        "medians are reported",
    )
    parser.add_argument(
        "--copy-format",
        choices=("binary", "text"),
        default="binary",
        help="COPY format of the ceiling (default binary, the faster)",
    )
    parser.add_argument(
        "--toast-compression",
        choices=("default", "pglz", "lz4"),
        default="default",
        help="default_toast_compression of all three databases (default: the server's)",
    )
    parser.add_argument(
        "--check-targets", action="store_true", help="exit with status 2 when a target is missed"
    )
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else NORMAL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.contenders is None:
        if args.backend == "sqlite":
            args.contenders = "fleet"
        else:
            args.contenders = "fleet,copy" if args.quick else ",".join(CONTENDERS)
    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = [c for c in contenders if c not in CONTENDERS]
    if unknown:
        parser.error(f"--contenders: {', '.join(unknown)} not among {', '.join(CONTENDERS)}")
    if "fleet" not in contenders:
        parser.error("--contenders: fleet (the returner under test) must be one of them")
    if args.backend == "sqlite" and contenders != ["fleet"]:
        parser.error("--backend sqlite runs the fleet returner only (--contenders fleet)")
    if args.check_targets and set(contenders) != set(CONTENDERS):
        parser.error("--check-targets needs all three contenders (fleet, pgjsonb, copy)")
    args.contenders = [c for c in CONTENDERS if c in contenders]
    if args.n < 1 or args.repeat < 1:
        parser.error("--n and --repeat must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    contenders = args.contenders
    events_n = args.n if args.events is None else args.events
    mix = parse_mix(args.mix)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    if "pgjsonb" in contenders:
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            raise SystemExit(
                "the pgjsonb returner needs psycopg2: "
                ".venv/bin/pip install -r bench/requirements.txt"
            ) from None
    import salt.loader
    from sqlalchemy.engine import make_url

    from saltext_fleet.store import engine as store_engine
    from saltext_fleet.store import writer as store_writer

    t_gen = time.perf_counter()
    returns, events, _ = generate(args.n, events_n, mix, args.seed, args.minions, args.variants)
    sizes = sizes_of(returns, events)
    print(
        f"generated {len(returns)} returns and {len(events)} events in "
        f"{time.perf_counter() - t_gen:.1f} s: " + json.dumps(sizes)
    )
    nb = min(args.pgjsonb_n, args.n)
    mb = round(events_n * nb / args.n)
    returns_b, events_b = returns[:nb], events[:mb]
    counts = {
        "fleet": (len(returns), len(events)),
        "copy": (len(returns), len(events)),
        "pgjsonb": (len(returns_b), len(events_b)),
    }

    dbs = Databases(args.pg_url) if args.backend == "postgresql" else None
    admin = make_url(args.pg_url)
    root = tempfile.mkdtemp(prefix="fleet-bench-")
    samples: dict[str, list[dict]] = {name: [] for name in contenders}
    extra: dict = {}
    error = None
    batch = 1
    none = {"db": "-", "host": "-", "port": 5432, "user": "-", "pass": ""}
    try:
        bus_opts = master_opts(root, "bus", "sqlite://", none)
        batch = args.event_batch or max(1, int(bus_opts.get("event_return_queue") or 0))
        with master_event_bus(bus_opts):
            for rnd in range(1, args.repeat + 1):
                pg_opts = none
                if dbs is None:
                    url_a = "sqlite:///" + os.path.join(root, f"fleet{rnd}.db")
                else:
                    made = {name: dbs.create(f"{name}{rnd}") for name in contenders}
                    if args.toast_compression != "default":
                        for name in made.values():
                            dbs.admin(
                                f'ALTER DATABASE "{name}" SET default_toast_compression = '
                                f"{args.toast_compression}"
                            )
                    url_a = dbs.url(made["fleet"], "postgresql+psycopg")
                    if "pgjsonb" in made:
                        url_b = dbs.url(made["pgjsonb"])
                        for statement in pgjsonb_schema_sql():
                            query_exec(url_b, statement)
                        pg_opts = {
                            "host": admin.host or "127.0.0.1",
                            "port": admin.port or 5432,
                            "user": admin.username or "postgres",
                            "pass": admin.password or "",
                            "db": made["pgjsonb"],
                        }
                    if "copy" in made:
                        url_c = dbs.url(made["copy"], "postgresql+psycopg")
                opts = master_opts(root, f"round{rnd}", url_a, pg_opts)
                loader = salt.loader.returners(opts, {})
                for name in contenders:
                    if name == "copy":
                        continue
                    for fn in (f"{name}.returner", f"{name}.event_return"):
                        if fn not in loader:
                            raise SystemExit(
                                f"Salt's loader has no {fn}: {loader.missing_fun_string(fn)}"
                            )
                print(f"round {rnd}/{args.repeat}:", end="", flush=True)
                if "copy" in contenders:
                    dbs.checkpoint()
                    samples["copy"].append(
                        bench_copy(url_c, returns, events, opts["id"], args.copy_format)
                    )
                    print(" (c) COPY done,", end="", flush=True)
                if dbs is not None:
                    dbs.checkpoint()
                with peakmem.Peak() as peak:
                    fleet_run = bench_fleet(opts, loader, url_a, returns, events, batch)
                fleet_run["memory"] = peak.figures()
                samples["fleet"].append(fleet_run)
                print(" (a) fleet done,", end="", flush=True)
                if "pgjsonb" in contenders:
                    dbs.checkpoint()
                    samples["pgjsonb"].append(
                        bench_pgjsonb(loader, url_b, returns_b, events_b, batch)
                    )
                    print(" (b) pgjsonb done,", end="", flush=True)
                print(" all rows verified", flush=True)
                extra = samples["fleet"][-1]
                store_writer.close_all(5)
                store_engine.dispose_all()
                if dbs is not None:
                    dbs.drop()
    except VerificationError as exc:
        error = str(exc)
    finally:
        try:
            store_writer.close_all(5)
            store_engine.dispose_all()
        finally:
            if dbs is not None:
                dbs.drop()
            shutil.rmtree(root, ignore_errors=True)
    if error:
        print(file=sys.stderr)
        print(f"FAILED: {error}", file=sys.stderr)
        print(json.dumps({"ok": False, "error": error}))
        return 1

    def rate(n: int, seconds: float) -> float:
        return n / seconds if n else 0.0

    rates: dict[str, dict] = {}
    for name, runs in samples.items():
        n_ret, n_ev = counts[name]
        ret_rates = [rate(n_ret, r["returns_seconds"]) for r in runs]
        ev_rates = [rate(n_ev, r["events_seconds"]) for r in runs]
        rates[name] = {
            "returns": n_ret,
            "returns_per_s": round(statistics.median(ret_rates), 1),
            "returns_per_s_rounds": [round(x, 1) for x in ret_rates],
            "events": n_ev,
            "events_per_s": round(statistics.median(ev_rates), 1) if n_ev else None,
            "events_per_s_rounds": [round(x, 1) for x in ev_rates],
        }

    def ratio(other: str, key: str) -> float | None:
        if other not in rates or not rates["fleet"][key] or not rates[other][key]:
            return None
        return rates["fleet"][key] / rates[other][key]

    ratio_pgjsonb, ratio_copy = ratio("pgjsonb", "returns_per_s"), ratio("copy", "returns_per_s")
    ev_ratio_pgjsonb, ev_ratio_copy = (
        ratio("pgjsonb", "events_per_s"),
        ratio("copy", "events_per_s"),
    )

    print()
    print(
        f"{'':24}{'returns':>8}{'returns/s':>11}  {'(rounds)':<22}"
        f"{'events':>7}{'events/s':>10}  (rounds)"
    )
    labels = {
        "fleet": f"(a) fleet returner{' (SQLite)' if dbs is None else ''}",
        "pgjsonb": "(b) pgjsonb returner",
        "copy": f"(c) raw COPY ({args.copy_format})",
    }
    for name in contenders:
        r = rates[name]
        rounds = "/".join(f"{x:.0f}" for x in r["returns_per_s_rounds"])
        ev_rounds = "/".join(f"{x:.0f}" for x in r["events_per_s_rounds"])
        print(
            f"{labels[name]:24}{r['returns']:>8}{r['returns_per_s']:>11.0f}  {rounds:<22}"
            f"{r['events']:>7}{(r['events_per_s'] or 0):>10.0f}  {ev_rounds}"
        )
    print()
    if ratio_pgjsonb is not None:
        print(
            f"fleet / pgjsonb : {ratio_pgjsonb:6.1f}x returns/s (target >= {TARGET_VS_PGJSONB:g}x)"
            + (f", {ev_ratio_pgjsonb:.1f}x events/s" if ev_ratio_pgjsonb else "")
        )
    if ratio_copy is not None:
        print(
            f"fleet / COPY    : {ratio_copy:6.2f}x returns/s (target >= {TARGET_VS_COPY:g}, "
            f"i.e. within 2x)" + (f", {ev_ratio_copy:.2f}x events/s" if ev_ratio_copy else "")
        )
    print(f"rates are medians of {args.repeat} rounds; every round's rows were verified.")
    if "pgjsonb" in contenders and nb < args.n:
        print(
            f"note: pgjsonb ran {nb} of the {args.n} returns and {mb} of the {events_n} events "
            "(prefixes with the same mix): it opens a connection and commits per return, so its "
            "rate does not depend on N."
        )
    announced = statistics.median(args.n / r["returns_announced_seconds"] for r in samples["fleet"])
    print(
        f"note: fleet's clock stops when all is committed, node upserts and "
        f"{extra.get('inventory_snapshots')} inventory snapshots included "
        f"({announced:.0f} returns/s if it also waits for the "
        f"{extra.get('inventory_changed_events')} fleet/inventory/changed events on the bus); "
        "COPY writes the returns and events rows only."
    )
    met_pgjsonb = ratio_pgjsonb >= TARGET_VS_PGJSONB if ratio_pgjsonb is not None else None
    met_copy = ratio_copy >= TARGET_VS_COPY if ratio_copy is not None else None
    met_events_copy = ev_ratio_copy >= TARGET_VS_COPY if ev_ratio_copy is not None else None
    peak_rss = max(r["memory"]["peak_rss_mb"] for r in samples["fleet"])
    print(
        f"this process (the fleet returner, its writer and the generated data) peaked at "
        f"{peak_rss:.0f} MB RSS while the fleet returner ran"
    )

    def rounded(value: float | None, digits: int) -> float | None:
        return round(value, digits) if value is not None else None

    summary = {
        "ok": True,
        "quick": args.quick,
        "backend": args.backend,
        "contenders": contenders,
        "n": args.n,
        "events": events_n,
        "pgjsonb_n": nb if "pgjsonb" in contenders else None,
        "pgjsonb_events": mb if "pgjsonb" in contenders else None,
        "repeat": args.repeat,
        "event_batch": batch,
        "copy_format": args.copy_format,
        "toast_compression": args.toast_compression,
        "mix": mix,
        "minions": args.minions,
        "sizes": sizes,
        "returns_per_s": {k: rates[k]["returns_per_s"] for k in contenders},
        "events_per_s": {k: rates[k]["events_per_s"] for k in contenders},
        "returns_per_s_rounds": {k: rates[k]["returns_per_s_rounds"] for k in contenders},
        "fleet_accept_returns_per_s": round(
            statistics.median(args.n / r["returns_accept_seconds"] for r in samples["fleet"]), 1
        ),
        "fleet_announced_returns_per_s": round(
            statistics.median(args.n / r["returns_announced_seconds"] for r in samples["fleet"]),
            1,
        ),
        "ratio_vs_pgjsonb": rounded(ratio_pgjsonb, 2),
        "ratio_vs_copy": rounded(ratio_copy, 3),
        "events_ratio_vs_pgjsonb": rounded(ev_ratio_pgjsonb, 2),
        "events_ratio_vs_copy": rounded(ev_ratio_copy, 3),
        "targets": {
            "vs_pgjsonb_min": TARGET_VS_PGJSONB,
            "vs_copy_min": TARGET_VS_COPY,
            "met_vs_pgjsonb": met_pgjsonb,
            "met_vs_copy": met_copy,
            "met_events_vs_copy": met_events_copy,
            "met": bool(met_pgjsonb is not False and met_copy and met_events_copy is not False),
        },
        # resident memory of this process (Salt's loader, the returner, its writer, the data)
        "fleet_peak_rss_mb": peak_rss,
        "fleet_memory_rounds": [r["memory"] for r in samples["fleet"]],
        # what was verified in the database after the last round (every round is verified)
        "checks": {name: samples[name][-1]["checks"] for name in contenders},
        "rounds_verified": args.repeat,
    }
    print(json.dumps(summary))
    if args.check_targets and not summary["targets"]["met"]:
        return 2
    return 0


def query_exec(url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)


if __name__ == "__main__":
    sys.exit(main())
