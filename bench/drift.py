#!/usr/bin/env python
"""Drift engine benchmark: a whole fleet against one baseline, and one node at a time.

A synthetic Debian fleet (``--nodes`` nodes of exactly ``--packages`` packages each, ``deb``
plus ``pypi``) is generated from ``--seed``: about 90 % of every node's packages are a base set
shared by all (their versions from one of three image cohorts, most nodes on the newest), about
5 % are picked from a pool of ~3,000 optional packages, about 5 % are the node's own
(``proj-<node>-<i>``). Every inventory is distinct.

For each backend (``--backend postgresql,sqlite``), in a fresh store:

1. the inventories go in through the real write path (``store.batch.write_batch``, as the
   returner writes them), batches of ``--batch`` returns in one transaction each;
2. a baseline is pinned from a newest-cohort node (``core.baseline.from_inventory``,
   ``store.drift.save_baseline``) and assigned to every node;
3. timed: the first full ``store.drift.recompute`` (it indexes the package keys of every
   snapshot), then ``--rounds`` steady-state full recomputes (target: at most 2 s for 10,000
   nodes of 1,000 packages), then ``--changes`` single-node ``recompute_node`` calls after an
   inventory change (target: at most 10 ms), alone and with ``index_snapshots`` of the new
   snapshot, and a last full recompute that indexes the changed snapshots.

Results are checked, not only timed: the pinned node scores 0, every node has a result, and
the results of a sample of nodes (``--sample``) equal ``core.drift.CompiledBaseline.compute``
on the generated inventories; so does every ``recompute_node`` result. A mismatch is a failure
(exit status 1), never a figure.

Usage (from the repository root)::

    .venv/bin/python bench/drift.py [--nodes 10000] [--packages 1000] [--rounds 3]
                                    [--backend postgresql,sqlite] [--pg-url URL]

The last line of the output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import inspect
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
BACKENDS = ("postgresql", "sqlite")
#: Targets (10,000 nodes x 1,000 packages), each an upper bound on a figure of every backend.
TARGETS = {
    "first_full_s": 10.0,  # the first full recompute, which indexes every snapshot
    "full_s_median": 0.5,  # scores and counts, every node compared again
    "full_after_changes_s": 1.0,  # the full recompute after 50 nodes changed
    "detailed_s_median": 2.0,  # every finding listed
    "node_indexed_ms_median": 10.0,  # a node whose inventory just changed, new snapshot indexed
    "node_indexed_ms_p95": 20.0,
    "drift_peak_rss_mb": 1024.0,  # this process's peak RSS during the drift passes
}
#: SQLite's figures within this factor of PostgreSQL's (when both ran).
TARGET_SQLITE_FACTOR = 2.0
TARGET_FULL_S = TARGETS["full_s_median"]
TARGET_NODE_MS = TARGETS["node_indexed_ms_median"]
BASELINE = "bench"
ALERT_SCORE = 50.0  # the alert check after recompute_node (fleet:drift:alert_score)

log = logging.getLogger("bench.drift")


# -- synthetic fleet --------------------------------------------------------------------------

_SYLLABLES = (
    "ac ad al an ar as at ba be bi bo ca ce ci co cu da de di do du el em en er es ex fa fe fi "
    "fo ga ge gi go gr ha he hi ho id il im in io is ka ke ki ko la le li lo lu ma me mi mo mu "
    "na ne ni no nu ob od ol om on op or os pa pe pi po pr qu ra re ri ro ru sa se si so st su "
    "ta te ti to tr tu ul um un ur us va ve vi vo xa xe ya yo za ze zo"
).split()
_DEB_SUFFIXES = ("", "", "", "", "-dev", "-common", "-bin", "-data", "-doc", "-utils", "3", "6")
_OWN_PREFIXES = ("proj-", "site-")


class Version:
    """A version string in parts, so that cohorts can step one part of it.

    deb: ``[1:]A.B[.C][.dfsg|+dfsg]-R[+deb12uK|+b1]``; pypi: ``A.B.C`` or calendar ``Y.M.D``.
    """

    __slots__ = ("eco", "epoch", "nums", "middle", "rev", "suffix")

    def __init__(self, eco, epoch, nums, middle="", rev=None, suffix=""):
        self.eco, self.epoch, self.nums = eco, epoch, list(nums)
        self.middle, self.rev, self.suffix = middle, rev, suffix

    def copy(self) -> Version:
        return Version(self.eco, self.epoch, self.nums, self.middle, self.rev, self.suffix)

    def __str__(self) -> str:
        text = ".".join(str(n) for n in self.nums)
        if self.eco != "deb":
            return text + self.suffix
        epoch = f"{self.epoch}:" if self.epoch else ""
        return f"{epoch}{text}{self.middle}-{self.rev}{self.suffix}"

    def stepped(self, kind: str, up: bool = False) -> Version:
        """An older (or, with ``up``, newer) version differing in its ``kind`` part."""
        new = self.copy()
        sign = 1 if up else -1
        if kind == "major":
            new.nums[0] = max(0, new.nums[0] + sign)
            if new.nums[0] == self.nums[0]:
                new.nums[0] += 1
        elif kind == "minor":
            new.nums[1] = max(0, new.nums[1] + sign)
            if new.nums[1] == self.nums[1]:
                new.nums[1] += 1
        elif len(new.nums) >= 3:
            new.nums[2] = max(0, new.nums[2] + sign)
            if new.nums[2] == self.nums[2]:
                new.nums[2] += 1
        elif new.suffix.startswith("+deb12u"):  # a stable point release: +deb12uK
            k = int(new.suffix[7:]) + sign
            new.suffix = f"+deb12u{k}" if k > 0 else ""
        else:  # only the Debian revision moves
            new.rev = new.rev + 1 if up or new.rev <= 1 else new.rev - 1
        return new


def _deb_version(rng: random.Random) -> Version:
    style = rng.random()
    a, b, c = rng.randint(1, 9), rng.randint(1, 40), rng.randint(1, 20)
    rev = rng.randint(1, 12)
    if style < 0.30:  # 2.36-9+deb12u4
        return Version("deb", "", (a, b), "", rev, f"+deb12u{rng.randint(1, 6)}")
    if style < 0.40:  # 1:1.2.13.dfsg-1
        return Version("deb", "1", (a, b, c), ".dfsg", rev)
    if style < 0.50:  # 3.4.1+dfsg-2+b1
        return Version("deb", "", (a, b, c), "+dfsg", rev, "+b1")
    if style < 0.60:  # 2.9-3
        return Version("deb", "", (a, b), "", rev)
    return Version("deb", "", (a, b, c), "", rev)  # 7.88.1-10


def _pypi_version(rng: random.Random) -> Version:
    if rng.random() < 0.05:  # certifi-style calendar versions: 2024.8.30
        return Version(
            "pypi", "", (rng.randint(2019, 2025), rng.randint(1, 12), rng.randint(1, 28))
        )
    return Version("pypi", "", (rng.randint(0, 9), rng.randint(1, 40), rng.randint(1, 15)))


def _syllables(rng: random.Random, parts: int) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(parts))


def _deb_name(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.35:
        return "lib" + _syllables(rng, rng.randint(2, 3)) + rng.choice(("", "1", "2", "3", "6"))
    if r < 0.45:
        return "python3-" + _syllables(rng, rng.randint(2, 3))
    return _syllables(rng, rng.randint(2, 4)) + rng.choice(_DEB_SUFFIXES)


def _pypi_name(rng: random.Random) -> str:
    # Already in PEP 503 normal form, as the inventory files PyPI names.
    if rng.random() < 0.25:
        return _syllables(rng, 2) + "-" + _syllables(rng, rng.randint(1, 2))
    return _syllables(rng, rng.randint(2, 4)) + rng.choice(("", "", "", "py", "lib"))


class Fleet:
    """The fleet's shared parts, generated once; each node is rebuilt on demand from the seed."""

    def __init__(self, nodes: int, packages: int, seed: int):
        if packages < 20:
            raise SystemExit("--packages must be at least 20")
        rng = random.Random(seed)
        self.seed = seed
        self.nodes = nodes
        self.packages = packages
        self.n_base = round(packages * 0.90)
        self.n_optional = round(packages * 0.05)
        self.n_own = packages - self.n_base - self.n_optional
        taken: set[tuple[str, str]] = set()

        def names(eco: str, count: int) -> list[str]:
            make = _deb_name if eco == "deb" else _pypi_name
            out = []
            while len(out) < count:
                name = make(rng)
                if (eco, name) not in taken and not name.startswith(_OWN_PREFIXES):
                    taken.add((eco, name))
                    out.append(name)
            return out

        def version(eco: str) -> Version:
            return _deb_version(rng) if eco == "deb" else _pypi_version(rng)

        # The base image: 75 % deb, 25 % pypi; cohort 2 (the newest) at these versions.
        n_deb = round(self.n_base * 0.75)
        base = [("deb", n) for n in names("deb", n_deb)]
        base += [("pypi", n) for n in names("pypi", self.n_base - n_deb)]
        newest = {key: version(key[0]) for key in base}
        # Older cohorts: a few dozen packages one step back each (mostly patch, some minor, a
        # few major), cumulative: the oldest image lags on the previous one's packages too.
        step = max(3, min(40, round(self.n_base * 0.045)))
        self.cohort_steps: list[dict[str, int]] = []
        previous = dict(newest)
        cohorts = [newest]
        for _ in range(2):
            older = dict(previous)
            counts = {"patch": 0, "minor": 0, "major": 0}
            for key in rng.sample(base, step):
                kind = rng.choices(("patch", "minor", "major"), (70, 25, 5))[0]
                counts[kind] += 1
                older[key] = older[key].stepped(kind)
            cohorts.append(older)
            self.cohort_steps.append(counts)
            previous = older
        cohorts = [cohorts[2], cohorts[1], cohorts[0]]  # oldest first; index 2 is the newest
        self.cohort_versions: list[dict[tuple[str, str], Version]] = cohorts
        self.cohort_tables = [self._tables(c) for c in cohorts]
        self.cohort_weights = (10, 20, 70)
        # The optional pool: ~3,000 packages (2/3 deb), popularity ~ 1/(rank+10); a fifth of
        # them come in two versions across the fleet.
        pool = max(3000, 4 * self.n_optional)
        n_deb = round(pool * 2 / 3)
        self.optional = [("deb", n) for n in names("deb", n_deb)]
        self.optional += [("pypi", n) for n in names("pypi", pool - n_deb)]
        rng.shuffle(self.optional)
        self.optional_versions = []
        for eco, _ in self.optional:
            v = version(eco)
            alt = str(v.stepped(rng.choice(("patch", "minor")))) if rng.random() < 0.2 else None
            self.optional_versions.append((str(v), alt))
        acc, self.optional_cum = 0.0, []
        for rank in range(len(self.optional)):
            acc += 1.0 / (rank + 10)
            self.optional_cum.append(acc)

    @staticmethod
    def _tables(versions: dict) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {"deb": {}, "pypi": {}}
        for (eco, name), v in versions.items():
            out[eco][name] = str(v)
        return out

    def minion(self, i: int) -> str:
        return f"n{i:05d}.fleet.test"

    def node(self, i: int) -> tuple[int, dict[str, dict[str, str]], dict]:
        """``(cohort, packages, facts)`` of node ``i``: exactly ``packages`` packages."""
        rng = random.Random(f"{self.seed}/node/{i}")
        cohort = rng.choices((0, 1, 2), self.cohort_weights)[0]
        table = self.cohort_tables[cohort]
        packages = {"deb": dict(table["deb"]), "pypi": dict(table["pypi"])}
        chosen: set[int] = set()
        while len(chosen) < self.n_optional:
            chosen.update(
                rng.choices(
                    range(len(self.optional)),
                    cum_weights=self.optional_cum,
                    k=self.n_optional - len(chosen),
                )
            )
        for index in sorted(chosen):
            eco, name = self.optional[index]
            main, alt = self.optional_versions[index]
            packages[eco][name] = alt if alt and rng.random() < 0.3 else main
        for j in range(self.n_own):
            if j % 5 < 3:
                packages["pypi"][f"proj-{i:05d}-{j}"] = (
                    f"0.{rng.randint(1, 30)}.{rng.randint(0, 9)}"
                )
            else:
                packages["deb"][f"site-{i:05d}-cfg{j}"] = (
                    f"1.{rng.randint(0, 9)}-{rng.randint(1, 4)}"
                )
        packages = {eco: dict(sorted(pkgs.items())) for eco, pkgs in sorted(packages.items())}
        facts = {
            "os": "Debian",
            "os_family": "Debian",
            "osrelease": "12.8" if cohort == 2 else "12.7",
            "osarch": "amd64" if rng.random() < 0.85 else "arm64",
            "kernelrelease": "6.1.0-28-amd64" if cohort == 2 else "6.1.0-25-amd64",
            "saltversion": "3007.1",
        }
        return cohort, packages, facts

    def bumped(self, packages: dict, rng: random.Random) -> tuple[dict, str]:
        """A copy of ``packages`` with one base package moved up a patch release."""
        eco, name = rng.choice(sorted(self.cohort_versions[2]))
        current = packages[eco][name]
        for versions in self.cohort_versions:
            if str(versions[(eco, name)]) == current:
                new = str(versions[(eco, name)].stepped("patch", up=True))
                break
        else:  # bumped before: bump the bump
            new = current + ("+b1" if eco == "deb" else ".post1")
        out = {e: dict(p) for e, p in packages.items()}
        out[eco][name] = new
        return out, f"{eco}:{name} {current} -> {new}"


def inventory_doc(packages: dict, facts: dict) -> dict:
    from saltext_fleet.core.inventory import inventory_digest

    sources: dict = {}
    return {
        "packages": packages,
        "sources": sources,
        "facts": facts,
        "digest": inventory_digest(packages, sources, facts),
    }


_JID_CLOCK = [dt.datetime(2026, 11, 28, 12, 0, 0, tzinfo=dt.timezone.utc)]


def new_jid() -> str:
    _JID_CLOCK[0] += dt.timedelta(seconds=1)
    return _JID_CLOCK[0].strftime("%Y%m%d%H%M%S%f")


def inventory_record(minion: str, jid: str, doc: dict) -> dict:
    """A ``fleet.inventory`` job return as the returner spools it."""
    return {
        "kind": "return",
        "rid": uuid.uuid4().hex,
        "ret": {
            "id": minion,
            "jid": jid,
            "fun": "fleet.inventory",
            "fun_args": [],
            "return": doc,
            "retcode": 0,
            "success": True,
        },
    }


# -- stores -----------------------------------------------------------------------------------


class Store:
    """A fresh store of one backend: a PostgreSQL database or a SQLite file, removed by close."""

    def __init__(self, backend: str, pg_url: str, root: str):
        from sqlalchemy.engine import make_url

        self.backend = backend
        self.db_name = None
        if backend == "postgresql":
            self.admin_url = make_url(pg_url).set(drivername="postgresql")
            self.db_name = f"fleet_bench_drift_{os.getpid()}"
            self.admin(f'DROP DATABASE IF EXISTS "{self.db_name}"')
            self.admin(f'CREATE DATABASE "{self.db_name}"')
            self.url = (
                make_url(pg_url)
                .set(drivername="postgresql+psycopg", database=self.db_name)
                .render_as_string(hide_password=False)
            )
        else:
            self.url = f"sqlite:///{os.path.join(root, 'fleet.sqlite')}"

    def admin(self, sql: str) -> None:
        import psycopg

        url = self.admin_url.render_as_string(hide_password=False)
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql)

    def maintain(self) -> None:
        """What autovacuum would have done by now (it is off on some servers), and a checkpoint.

        PostgreSQL: ``VACUUM (ANALYZE)`` of the database and ``CHECKPOINT``; SQLite: a WAL
        checkpoint. Not timed.
        """
        import psycopg

        if self.backend == "postgresql":
            plain = self.url.replace("postgresql+psycopg://", "postgresql://")
            with psycopg.connect(plain, autocommit=True, connect_timeout=5) as conn:
                conn.execute("VACUUM (ANALYZE)")
                conn.execute("CHECKPOINT")
        else:
            import sqlite3

            path = self.url.removeprefix("sqlite:///")
            with contextlib.closing(sqlite3.connect(path)) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def size(self) -> int | None:
        if self.backend == "postgresql":
            import psycopg

            url = self.admin_url.render_as_string(hide_password=False)
            with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
                return conn.execute("SELECT pg_database_size(%s)", (self.db_name,)).fetchone()[0]
        path = self.url.removeprefix("sqlite:///")
        return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))

    def close(self) -> None:
        if self.db_name:
            try:
                self.admin(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            except Exception as exc:  # noqa: BLE001
                print(f"warning: could not drop database {self.db_name}: {exc}", file=sys.stderr)


# -- checks -----------------------------------------------------------------------------------


class CheckFailed(RuntimeError):
    pass


_COMPARED = ("score", "missing", "extra", "changed", "facts")


def check_same(what: str, got: dict, want: dict) -> None:
    for key in _COMPARED:
        if got.get(key) != want.get(key):
            a, b = got.get(key), want.get(key)
            if isinstance(a, list) and isinstance(b, list):
                only_a = [x for x in a if x not in b][:3]
                only_b = [x for x in b if x not in a][:3]
                detail = f"{len(a)} vs {len(b)}; only in store: {only_a}, only expected: {only_b}"
            else:
                detail = f"{a!r} vs {b!r}"
            raise CheckFailed(f"{what}: {key} differs from CompiledBaseline.compute: {detail}")


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


# -- one backend ------------------------------------------------------------------------------


def load(engine, fleet: Fleet, batch_size: int) -> dict:
    from saltext_fleet.store.batch import write_batch

    jid = new_jid()
    t0 = time.perf_counter()
    digests = set()
    stored = 0
    gen_s = 0.0
    step = max(1, fleet.nodes // 10)
    for start in range(0, fleet.nodes, batch_size):
        g0 = time.perf_counter()
        records = []
        for i in range(start, min(fleet.nodes, start + batch_size)):
            _, packages, facts = fleet.node(i)
            doc = inventory_doc(packages, facts)
            digests.add(doc["digest"])
            records.append(inventory_record(fleet.minion(i), jid, doc))
        gen_s += time.perf_counter() - g0
        with engine.begin() as conn:
            result = write_batch(conn, records)
        if result.quarantined:
            raise CheckFailed(f"write_batch quarantined {result.quarantined} inventory returns")
        stored += result.stored
        done = min(fleet.nodes, start + batch_size)
        if done // step != (done - len(records)) // step or done == fleet.nodes:
            print(f"  loaded {done}/{fleet.nodes}", flush=True)
    total = time.perf_counter() - t0
    if len(digests) != fleet.nodes:
        raise CheckFailed(f"{len(digests)} distinct inventories for {fleet.nodes} nodes")
    return {"seconds": total, "generate_seconds": gen_s, "stored": stored}


def count_rows(engine, model) -> int:
    from sqlalchemy import func, select

    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(model)).scalar()


def run_backend(backend: str, args, fleet: Fleet, root: str) -> dict:
    from saltext_fleet.core import baseline as core_baseline
    from saltext_fleet.core import drift as core_drift
    from saltext_fleet.store import drift as store_drift
    from saltext_fleet.store import engine as store_engine
    from saltext_fleet.store.batch import write_batch
    from saltext_fleet.store.models import (
        DriftCurrent,
        DriftHistory,
        InventorySnapshot,
        Node,
        PackageKey,
    )

    out: dict = {"loadavg_1min_start": round(os.getloadavg()[0], 2)}
    print(f"\n== {backend} == (load average {out['loadavg_1min_start']:.2f})", flush=True)
    store = Store(backend, args.pg_url, root)
    try:
        engine = store_engine.get_engine(store.url)
        store_engine.ensure_schema(engine)

        # 1. the fleet goes in through the returner's write path
        loaded = load(engine, fleet, args.batch)
        snapshots = count_rows(engine, InventorySnapshot)
        nodes = count_rows(engine, Node)
        if snapshots != fleet.nodes or nodes != fleet.nodes:
            raise CheckFailed(f"stored {snapshots} snapshots and {nodes} nodes, not {fleet.nodes}")
        out["load_s"] = round(loaded["seconds"], 2)
        print(
            f"  load: {fleet.nodes} inventory returns through write_batch in "
            f"{loaded['seconds']:.1f} s ({loaded['generate_seconds']:.1f} s of it generating), "
            f"{snapshots} snapshots",
            flush=True,
        )

        # 2. the baseline, pinned from a newest-cohort amd64 node, assigned to every node
        pinned = None
        for i in range(fleet.nodes):
            cohort, packages, facts = fleet.node(i)
            if cohort == 2 and facts["osarch"] == "amd64":
                pinned = i
                break
        if pinned is None:
            raise CheckFailed("no newest-cohort amd64 node to pin the baseline from")
        _, packages, facts = fleet.node(pinned)
        spec = core_baseline.from_inventory(
            BASELINE, {"packages": packages, "facts": facts}, description="bench"
        )
        store_drift.save_baseline(engine, spec, f"pin:{fleet.minion(pinned)}")
        assignment = {fleet.minion(i): BASELINE for i in range(fleet.nodes)}
        store.maintain()

        # 3. the first full recompute indexes every snapshot's package keys
        gc.collect()
        memory = {}
        with peakmem.Peak() as peak:
            t0 = time.perf_counter()
            results = store_drift.recompute(engine, assignment)
            first = time.perf_counter() - t0
        memory["first_full"] = peak.figures()
        out["first_full_s"] = round(first, 3)
        print(f"  first full recompute (indexes {fleet.nodes} snapshots): {first:.2f} s")
        out["package_keys"] = count_rows(engine, PackageKey)
        check_results(fleet, results, pinned, "first recompute")
        first_counts = {m: _counts(r) for m, r in results.items()}
        store.maintain()

        # 4. steady state
        rounds = []
        for rnd in range(args.rounds):
            results = None  # not alive (for the collector to walk) during the next round
            gc.collect()
            with peakmem.Peak() as peak:
                t0 = time.perf_counter()
                results = store_drift.recompute(engine, assignment)
                rounds.append(time.perf_counter() - t0)
            memory[f"detailed_{rnd + 1}"] = peak.figures()
            print(
                f"  full recompute, round {rnd + 1}/{args.rounds}: {rounds[-1]:.3f} s", flush=True
            )
        out["detailed_s_median"] = round(statistics.median(rounds), 3)
        out["detailed_s_best"] = round(min(rounds), 3)
        out["detailed_s_rounds"] = [round(x, 3) for x in rounds]
        out["results"] = check_results(fleet, results, pinned, "steady recompute")
        detailed = {m: (r["score"], r["counts"]) for m, r in results.items()}

        # 4b. scores and counts (details=False), cold: the weights' digest changes each round
        # (the scores do not: no node has pending states), so every node's packages are
        # compared again, as after a baseline edit
        cold, warm = [], []
        for rnd in range(args.rounds):
            results = None
            weights = {"pending_state": 1.0 + (rnd + 1) * 1e-6}
            gc.collect()
            with peakmem.Peak() as peak:
                t0 = time.perf_counter()
                results = store_drift.recompute(engine, assignment, weights, details=False)
                cold.append(time.perf_counter() - t0)
            memory[f"scores_{rnd + 1}"] = peak.figures()
            print(f"  scores of every node, compared again, round {rnd + 1}: {cold[-1]:.3f} s")
            same_as_detailed(results, detailed, "summary recompute (cold)")
        # 4c. warm: nothing changed since the last run: package parts reused, facts and
        # pending states compared again, history and alerts as always
        for rnd in range(args.rounds):
            results = None
            gc.collect()
            t0 = time.perf_counter()
            results = store_drift.recompute(engine, assignment, weights, details=False)
            warm.append(time.perf_counter() - t0)
            print(f"  scores of every node, nothing changed, round {rnd + 1}: {warm[-1]:.3f} s")
            same_as_detailed(results, detailed, "summary recompute (warm)")
        results = None
        out["full_s_median"] = round(statistics.median(cold), 3)
        out["full_s_best"] = round(min(cold), 3)
        out["full_s_rounds"] = [round(x, 3) for x in cold]
        out["nodes_per_s"] = round(fleet.nodes / statistics.median(cold))
        out["warm_s_median"] = round(statistics.median(warm), 3)
        out["warm_s_rounds"] = [round(x, 3) for x in warm]
        results = store_drift.recompute(engine, assignment)
        differ = [m for m, r in results.items() if _counts(r) != first_counts.get(m)]
        if differ:
            raise CheckFailed(
                f"{len(differ)} nodes (e.g. {differ[0]}) score differently in the first "
                "(indexing) and the steady-state recompute"
            )
        del first_counts
        compiled = core_drift.CompiledBaseline(spec)
        rng = random.Random(f"{fleet.seed}/sample")
        sample = sorted(
            {pinned} | set(rng.sample(range(fleet.nodes), min(args.sample, fleet.nodes) - 1))
        )
        for i in sample:
            _, packages, facts = fleet.node(i)
            want = compiled.compute(packages, core_drift.NodeInput(facts=facts))
            check_same(f"node {fleet.minion(i)} (full recompute)", results[fleet.minion(i)], want)
        out["checked_nodes"] = len(sample)
        print(f"  results of {len(sample)} sampled nodes equal CompiledBaseline.compute")
        del results

        # 5. one node at a time, after its inventory changed
        candidates = [i for i in range(fleet.nodes) if i != pinned]
        changed = rng.sample(candidates, min(2 * args.changes, len(candidates)))
        plain_ms, indexed_ms = [], []
        expected: dict[str, dict] = {}
        one_call = "index" in inspect.signature(store_drift.recompute_node).parameters
        gc.collect()
        for n, i in enumerate(changed):
            minion = fleet.minion(i)
            _, packages, facts = fleet.node(i)
            packages, _what = fleet.bumped(packages, rng)
            doc = inventory_doc(packages, facts)
            with engine.begin() as conn:
                result = write_batch(conn, [inventory_record(minion, new_jid(), doc)])
            if [c[:2] for c in result.inventory_changed] != [(minion, doc["digest"])]:
                raise CheckFailed(f"{minion}: write_batch did not report the inventory change")
            with_index = n % 2 == 1
            t0 = time.perf_counter()
            if with_index and one_call:
                # what the reactor's fleet.drift_node does: the new snapshot indexed and the
                # node recomputed and recorded in one transaction
                got = store_drift.recompute_node(engine, minion, BASELINE, index=True)
            else:
                if with_index:  # (a store without recompute_node(index=True): two steps)
                    with engine.begin() as conn:
                        store_drift.index_snapshots(conn, [doc["digest"]])
                got = store_drift.recompute_node(engine, minion, BASELINE)
            # ... and the alert check on the score's crossing (a pure function)
            core_drift.crossing(got.get("previous_score"), got["score"], ALERT_SCORE)
            elapsed = (time.perf_counter() - t0) * 1000
            (indexed_ms if with_index else plain_ms).append(elapsed)
            if with_index and not indexed(engine, doc["digest"]):
                raise CheckFailed(f"{minion}: its new snapshot was not indexed")
            want = compiled.compute(packages, core_drift.NodeInput(facts=facts))
            check_same(f"node {minion} (recompute_node)", got, want)
            expected[minion] = want
        out["node_ms_median"] = round(statistics.median(plain_ms), 2)
        out["node_ms_p95"] = round(percentile(plain_ms, 95), 2)
        out["node_ms_max"] = round(max(plain_ms), 2)
        out["node_indexed_ms_median"] = round(statistics.median(indexed_ms), 2)
        out["node_indexed_ms_p95"] = round(percentile(indexed_ms, 95), 2)
        out["node_changes"] = len(plain_ms)
        print(
            f"  recompute_node after an inventory change ({len(plain_ms)} nodes): median "
            f"{out['node_ms_median']:.2f} ms, p95 {out['node_ms_p95']:.2f} ms; with "
            f"index_snapshots ({len(indexed_ms)} nodes): median "
            f"{out['node_indexed_ms_median']:.2f} ms, p95 {out['node_indexed_ms_p95']:.2f} ms"
        )

        # 6. the runner again: it indexes the snapshots the changes brought
        unindexed = len(plain_ms)
        results = None
        gc.collect()
        with peakmem.Peak() as peak:
            t0 = time.perf_counter()
            results = store_drift.recompute(engine, assignment)
            after = time.perf_counter() - t0
        memory["after_changes"] = peak.figures()
        out["full_after_changes_s"] = round(after, 3)
        out["memory"] = memory
        # the drift passes' peak: this process's RSS (the generated fleet included)
        out["drift_peak_rss_mb"] = max(m["peak_rss_mb"] for m in memory.values())
        print(f"  full recompute after the changes (indexes {unindexed} snapshots): {after:.3f} s")
        if len(results) != fleet.nodes:
            raise CheckFailed(f"recompute after the changes: {len(results)} results")
        for minion, want in expected.items():
            check_same(f"node {minion} (full recompute after its change)", results[minion], want)
        results = None
        out["drift_current_rows"] = count_rows(engine, DriftCurrent)
        out["drift_history_rows"] = count_rows(engine, DriftHistory)
        if out["drift_current_rows"] != fleet.nodes:
            raise CheckFailed(f"drift_current holds {out['drift_current_rows']} rows")
        out["store_bytes"] = store.size()
        out["loadavg_1min_end"] = round(os.getloadavg()[0], 2)
        out["met_full"] = out["full_s_median"] <= TARGET_FULL_S
        out["met_node"] = out["node_indexed_ms_median"] <= TARGET_NODE_MS
        out["targets_met"] = {key: out[key] <= limit for key, limit in TARGETS.items()}
        return out
    finally:
        store_engine.dispose_all()
        store.close()


def indexed(engine, digest: str) -> bool:
    from sqlalchemy import func, select

    from saltext_fleet.store.models import SnapshotKeys

    with engine.connect() as conn:
        return bool(
            conn.execute(select(func.count()).where(SnapshotKeys.digest == digest)).scalar_one()
        )


def _counts(result: dict) -> tuple:
    return (result["score"], *(len(result[k]) for k in ("missing", "extra", "changed", "facts")))


def same_as_detailed(results: dict, detailed: dict, what: str) -> None:
    """Scores and counts of a details=False run equal those of the detailed run."""
    if len(results) != len(detailed):
        raise CheckFailed(f"{what}: {len(results)} results, not {len(detailed)}")
    for minion, (score, counts) in detailed.items():
        got = results[minion]
        if got["score"] != score or got["counts"] != counts:
            raise CheckFailed(
                f"{what}: {minion} scores {got['score']} {got['counts']}, "
                f"the detailed run {score} {counts}"
            )


def check_results(fleet: Fleet, results: dict, pinned: int, what: str) -> dict:
    """Every node has a result, the pinned node scores 0; the score and finding statistics."""
    if len(results) != fleet.nodes:
        raise CheckFailed(f"{what}: {len(results)} results for {fleet.nodes} nodes")
    pinned_result = results[fleet.minion(pinned)]
    if pinned_result["score"] != 0 or any(
        pinned_result[k] for k in ("missing", "extra", "changed")
    ):
        raise CheckFailed(
            f"{what}: the pinned node {fleet.minion(pinned)} scores {pinned_result['score']}"
        )
    scores = [r["score"] for r in results.values()]
    stats = {
        "score_mean": round(statistics.fmean(scores), 2),
        "score_min": min(scores),
        "score_max": max(scores),
        "aligned_nodes": sum(1 for s in scores if s == 0),
    }
    for key in ("missing", "extra", "changed", "facts"):
        stats[f"{key}_mean"] = round(statistics.fmean(len(r[key]) for r in results.values()), 2)
    kinds: dict[str, int] = {}
    for r in results.values():
        for c in r["changed"]:
            kinds[c["change"]] = kinds.get(c["change"], 0) + 1
    stats["changed_kinds"] = dict(sorted(kinds.items()))
    return stats


# -- main -------------------------------------------------------------------------------------


def run_child(backend: str, argv) -> dict:
    """This script with ``--backend backend`` in a new process: its figures for ``backend``."""
    import subprocess

    argv = list(sys.argv[1:] if argv is None else argv)
    cleaned, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--backend":
            skip = True
            continue
        if arg.startswith("--backend="):
            continue
        cleaned.append(arg)
    cmd = [sys.executable, os.path.abspath(__file__), *cleaned, "--backend", backend]
    last = ""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1) as proc:
        for line in proc.stdout:
            if line.startswith("{"):
                last = line
                continue
            if not line.startswith("fleet: "):  # the child generates the same fleet
                print(line, end="", flush=True)
    try:
        summary = json.loads(last)
    except ValueError as exc:
        raise CheckFailed(
            f"{backend}: the run printed no figures (exit {proc.returncode})"
        ) from exc
    if not summary.get("ok"):
        raise CheckFailed(f"{backend}: {summary.get('error')}")
    return summary["backends"][backend]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="300 nodes x 100 packages, one round, 5 changes, 5 sampled nodes: the checks "
        "against CompiledBaseline.compute, for the test suite",
    )
    parser.add_argument("--nodes", type=int, default=None, help="nodes (default 10000)")
    parser.add_argument(
        "--packages", type=int, default=None, help="packages per node (default 1000)"
    )
    parser.add_argument(
        "--backend",
        default="postgresql,sqlite",
        help="comma-separated: postgresql, sqlite (default both)",
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="steady-state full recomputes (default 3)"
    )
    parser.add_argument(
        "--changes",
        type=int,
        default=None,
        help="nodes timed for recompute_node, and as many again with index_snapshots (default 50)",
    )
    parser.add_argument(
        "--sample",
        type=int,
        default=None,
        help="nodes checked against CompiledBaseline.compute (default 20)",
    )
    parser.add_argument("--batch", type=int, default=200, help="returns per write_batch")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="a role that may create databases")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--check-targets", action="store_true", help="exit with status 2 when a target is missed"
    )
    args = parser.parse_args(argv)
    defaults = (
        {"nodes": 300, "packages": 100, "rounds": 1, "changes": 5, "sample": 5}
        if args.quick
        else {"nodes": 10000, "packages": 1000, "rounds": 3, "changes": 50, "sample": 20}
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    for b in backends:
        if b not in BACKENDS:
            parser.error(f"--backend: unknown backend {b!r} (postgresql, sqlite)")
    if args.nodes < 2 or args.rounds < 1 or args.changes < 1 or args.sample < 1:
        parser.error("--nodes must be at least 2, --rounds, --changes and --sample at least 1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    t0 = time.perf_counter()
    fleet = Fleet(args.nodes, args.packages, args.seed)
    cohorts = [0, 0, 0]
    for i in range(min(args.nodes, 2000)):
        cohorts[fleet.node(i)[0]] += 1
    print(
        f"fleet: {args.nodes} nodes x {args.packages} packages (deb + pypi): "
        f"{fleet.n_base} base, {fleet.n_optional} optional (pool of {len(fleet.optional)}), "
        f"{fleet.n_own} node-specific; image cohorts oldest/previous/newest "
        f"{'/'.join(str(c) for c in cohorts)} of the first {min(args.nodes, 2000)} nodes; "
        f"each older cohort steps back {fleet.cohort_steps[0]} "
        f"(generated in {time.perf_counter() - t0:.1f} s)",
        flush=True,
    )

    root = tempfile.mkdtemp(prefix="fleet-bench-drift-")
    figures: dict[str, dict] = {}
    error = None
    try:
        for backend in backends:
            if len(backends) > 1:
                # a process of its own per backend: each one's memory figures are its own
                # (a process keeps what it allocated for the one before), and so are caches
                figures[backend] = run_child(backend, argv)
            else:
                figures[backend] = run_backend(backend, args, fleet, root)
    except CheckFailed as exc:
        error = str(exc)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if error:
        print(file=sys.stderr)
        print(f"FAILED: {error}", file=sys.stderr)
        print(json.dumps({"ok": False, "error": error}))
        return 1

    print()
    print(f"{args.nodes} nodes x {args.packages} packages, one baseline")
    header = f"{'':52}" + "".join(f"{b:>14}" for b in backends)
    print(header)

    def row(label: str, key: str, fmt: str) -> None:
        print(f"{label:52}" + "".join(f"{format(figures[b][key], fmt):>14}" for b in backends))

    row("load through write_batch (s)", "load_s", ".1f")
    row(f"first full recompute (indexes {args.nodes} snapshots) (s)", "first_full_s", ".3f")
    row(
        f"full recompute, scores, median of {args.rounds} (s)   [<= {TARGET_FULL_S:g}]",
        "full_s_median",
        ".3f",
    )
    row("full recompute, scores, best (s)", "full_s_best", ".3f")
    row("nodes per second (median)", "nodes_per_s", ",d")
    row("full recompute, scores, nothing changed (s)", "warm_s_median", ".3f")
    row("full recompute with every finding listed (s)", "detailed_s_median", ".3f")
    row("recompute_node median (ms)", "node_ms_median", ".2f")
    row("recompute_node p95 (ms)", "node_ms_p95", ".2f")
    row(
        f"index_snapshots + recompute_node median (ms) [<= {TARGET_NODE_MS:g}]",
        "node_indexed_ms_median",
        ".2f",
    )
    row("index_snapshots + recompute_node p95 (ms)", "node_indexed_ms_p95", ".2f")
    row("full recompute after the changes (s)", "full_after_changes_s", ".3f")
    row("package_keys rows", "package_keys", ",d")
    row("peak RSS during the drift passes (MB)", "drift_peak_rss_mb", ",.0f")
    for b in backends:
        r = figures[b]["results"]
        print(
            f"{b}: score mean {r['score_mean']} (min {r['score_min']}, max {r['score_max']}); "
            f"per node: {r['missing_mean']} missing, {r['extra_mean']} extra, "
            f"{r['changed_mean']} changed {r['changed_kinds']}, {r['facts_mean']} facts; "
            f"{figures[b]['checked_nodes']} sampled nodes and {2 * figures[b]['node_changes']} "
            "recompute_node results equal CompiledBaseline.compute"
        )
    for b in backends:
        f = figures[b]
        print(
            f"{b}: "
            + "; ".join(
                f"{key} {f[key]:g} {'meets' if ok else 'MISSES'} <= {TARGETS[key]:g}"
                for key, ok in f["targets_met"].items()
            )
        )
    sqlite_factor = {}
    if "postgresql" in figures and "sqlite" in figures:
        for key in TARGETS:
            if key.endswith("_rss_mb"):
                continue
            pg, lite = figures["postgresql"][key], figures["sqlite"][key]
            sqlite_factor[key] = round(lite / pg, 2) if pg else None
        slow = {
            k: v for k, v in sqlite_factor.items() if v is not None and v > TARGET_SQLITE_FACTOR
        }
        print(
            f"SQLite / PostgreSQL: {sqlite_factor}"
            + (f"; over {TARGET_SQLITE_FACTOR:g}x: {', '.join(slow)}" if slow else "")
        )
    loads = ", ".join(
        f"{b} {figures[b]['loadavg_1min_start']:.2f} -> {figures[b]['loadavg_1min_end']:.2f}"
        for b in backends
    )
    print(
        f"1-minute load average ({os.cpu_count()} CPUs) at the start and end of each run: {loads}"
    )
    met = all(all(f["targets_met"].values()) for f in figures.values()) and all(
        v is None or v <= TARGET_SQLITE_FACTOR for v in sqlite_factor.values()
    )
    summary = {
        "ok": True,
        "quick": args.quick,
        "nodes": args.nodes,
        "packages": args.packages,
        "rounds": args.rounds,
        "changes": args.changes,
        "seed": args.seed,
        "cpus": os.cpu_count(),
        "targets": TARGETS,
        "target_sqlite_factor": TARGET_SQLITE_FACTOR,
        "sqlite_factor": sqlite_factor,
        "backends": figures,
        "met": met,
    }
    print(json.dumps(summary))
    if args.check_targets and not met:
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
