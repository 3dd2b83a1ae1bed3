"""The package-key index: every inventory snapshot's packages as 64-bit keys.

``snapshot_keys`` holds each snapshot's keys as one packed blob, written by
:func:`index_snapshots` the first time drift needs them; ``package_keys`` is the dictionary
``key -> (ecosystem, name, version)`` (:func:`add_package_keys`, :func:`resolve_keys`,
:func:`named_keys`). The blobs are read back all at once (:func:`snapshot_blobs`) or a chunk at a
time while the caller compares (:func:`stream_snapshot_blobs`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.engine import Connection, Engine

from saltext_fleet.core import drift as core_drift
from saltext_fleet.store.drift.common import CHUNK, dialect_insert, in_chunks
from saltext_fleet.store.models import InventorySnapshot, PackageKey, SnapshotKeys


def index_snapshots(conn: Connection, digests: Iterable[str]) -> int:
    """Write the ``snapshot_keys`` of the given snapshots that have none; returns how many."""
    wanted = set(digests)
    if len(wanted) > CHUNK:  # one scan of a small table beats thousands of parameters
        have = set(conn.execute(select(SnapshotKeys.digest)).scalars())
    else:
        have = set()
        for chunk in in_chunks(sorted(wanted)):
            have.update(
                conn.execute(
                    select(SnapshotKeys.digest).where(SnapshotKeys.digest.in_(chunk))
                ).scalars()
            )
    todo = sorted(wanted - have)
    done = 0
    for chunk in in_chunks(todo, 500):
        rows = conn.execute(
            select(InventorySnapshot.digest, InventorySnapshot.packages).where(
                InventorySnapshot.digest.in_(chunk)
            )
        ).all()
        names: dict[int, tuple[str, str, str]] = {}
        keyed_rows = []
        for digest, packages in rows:
            keyed = {}
            for eco, pkgs in clean_packages(packages).items():
                eco_keys = keyed[eco] = {}
                for name, version in pkgs.items():
                    key = core_drift.package_key(eco, name, version)
                    eco_keys[name] = key
                    names[key] = (eco, name, version)
            keyed_rows.append({"digest": digest, "keys": core_drift.pack_package_keys(keyed)})
        add_package_keys(conn, names)
        if keyed_rows:
            conn.execute(
                dialect_insert(conn)(SnapshotKeys.__table__).on_conflict_do_nothing(
                    index_elements=["digest"]
                ),
                keyed_rows,
            )
        done += len(keyed_rows)
    return done


def clean_packages(packages: Any) -> dict[str, dict[str, str]]:
    """The packages of a stored snapshot, strings only (stored data can be anything)."""
    out = {}
    if not isinstance(packages, dict):
        return out
    for eco, pkgs in packages.items():
        if isinstance(eco, str) and isinstance(pkgs, dict):
            if all(type(v) is str for v in pkgs.values()):  # the usual case: as it is
                out[eco] = pkgs
            else:
                out[eco] = {str(n): str(v) for n, v in pkgs.items() if v is not None}
    return out


def add_package_keys(conn: Connection, names: Mapping[int, tuple[str, str, str]]) -> None:
    """Add dictionary rows ``{key: (ecosystem, name, version)}``, skipping known keys."""
    keys = sorted(names)
    if not keys:
        return
    if conn.dialect.name == "postgresql":
        for chunk in in_chunks(keys, 20_000):
            conn.execute(
                text(
                    "INSERT INTO package_keys (key, ecosystem, name, version) "
                    "SELECT * FROM unnest(CAST(:k AS bigint[]), CAST(:e AS text[]), "
                    "CAST(:n AS text[]), CAST(:v AS text[])) ON CONFLICT (key) DO NOTHING"
                ),
                {
                    "k": chunk,
                    "e": [names[k][0] for k in chunk],
                    "n": [names[k][1] for k in chunk],
                    "v": [names[k][2] for k in chunk],
                },
            )
        return
    stmt = text(
        "INSERT OR IGNORE INTO package_keys (key, ecosystem, name, version) "
        "VALUES (:key, :e, :n, :v)"
    )
    conn.execute(
        stmt, [{"key": k, "e": names[k][0], "n": names[k][1], "v": names[k][2]} for k in keys]
    )


def resolve_keys(conn: Connection, keys: Iterable[int]) -> dict[int, tuple[str, str, str]]:
    out = {}
    keys = list(keys)
    size = 50_000 if conn.dialect.name == "postgresql" else 5000
    for chunk in in_chunks(keys, size):
        if conn.dialect.name == "postgresql":
            rows = conn.execute(
                text(
                    "SELECT key, ecosystem, name, version FROM package_keys "
                    "WHERE key = ANY(CAST(:keys AS bigint[]))"
                ),
                {"keys": chunk},
            )
        else:
            stmt = select(PackageKey.key, PackageKey.ecosystem, PackageKey.name, PackageKey.version)
            rows = conn.execute(stmt.where(PackageKey.key.in_(chunk)))
        for key, eco, name, version in rows:
            out[key] = (eco, name, version)
    return out


def named_keys(conn: Connection, spec: Mapping[str, Any]) -> list[tuple[int, str, str, str]]:
    """Every known key of a version of a package the baseline names."""
    out = []
    for eco, rules in spec["packages"].items():
        for chunk in in_chunks(sorted(rules), 1000):
            stmt = select(
                PackageKey.key, PackageKey.ecosystem, PackageKey.name, PackageKey.version
            ).where(PackageKey.ecosystem == eco, PackageKey.name.in_(chunk))
            out.extend(tuple(row) for row in conn.execute(stmt))
    return out


def snapshot_blobs(conn: Connection, digests: list[str]) -> dict[str, bytes]:
    """``{digest: snapshot keys blob}`` of ``digests``."""
    return dict(_blob_chunk(conn, digests))


def _blob_chunk(conn: Connection, digests: list[str]) -> list[tuple[str, bytes]]:
    if conn.dialect.name == "postgresql":
        # psycopg's binary format: the keys come as they are stored, not as hex text
        raw = conn.connection.driver_connection
        with raw.cursor(binary=True) as cur:
            cur.execute(
                "SELECT digest, keys FROM snapshot_keys WHERE digest = ANY(%s)",
                [digests],
            )
            return [(digest, bytes(blob) if blob is not None else b"") for digest, blob in cur]
    out = []
    for chunk in in_chunks(digests, 5000):
        stmt = select(SnapshotKeys.digest, SnapshotKeys.keys).where(SnapshotKeys.digest.in_(chunk))
        out.extend((d, b or b"") for d, b in conn.execute(stmt))
    return out


#: Snapshots per read of :func:`stream_snapshot_blobs`.
STREAM_CHUNK = 1000


def stream_snapshot_blobs(engine: Engine, digests: list[str], chunk: int = STREAM_CHUNK):
    """``(digest, keys blob)`` pairs of ``digests``, read ``chunk`` snapshots at a time.

    On PostgreSQL a thread of its own (with a connection of its own) reads the next chunks
    while the caller works on this one: the server, the socket and numpy all release the GIL,
    so reading and comparing overlap. At most two chunks wait in memory.
    """
    if engine.dialect.name != "postgresql" or len(digests) <= chunk:
        with engine.connect() as conn:
            for start in range(0, len(digests), chunk):
                yield from _blob_chunk(conn, digests[start : start + chunk])
        return
    chunks: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def read() -> None:
        try:
            with engine.connect() as conn:
                for start in range(0, len(digests), chunk):
                    if stop.is_set():
                        return
                    chunks.put(("ok", _blob_chunk(conn, digests[start : start + chunk])))
            chunks.put(("done", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
            chunks.put(("error", exc))

    reader = threading.Thread(target=read, name="fleet-drift-blobs", daemon=True)
    reader.start()
    try:
        while True:
            kind, value = chunks.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield from value
    finally:
        stop.set()
        while reader.is_alive():  # let a reader blocked on a full queue finish
            try:
                chunks.get(timeout=0.05)
            except queue.Empty:
                pass
        reader.join()
