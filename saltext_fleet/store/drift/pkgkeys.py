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

from sqlalchemy import Text, cast, select, text
from sqlalchemy.engine import Connection, Engine

from saltext_fleet.core import drift as core_drift
from saltext_fleet.store.drift.common import (
    CHUNK,
    copy_upsert,
    dialect_insert,
    in_chunks,
    json_loads,
)
from saltext_fleet.store.models import InventorySnapshot, PackageKey, SnapshotKeys


def index_snapshots(conn: Connection, digests: Iterable[str]) -> int:
    """Write the ``snapshot_keys`` of the given snapshots that have none; returns how many.

    The packages are read as JSON text and decoded here (a faster decoder than the driver's
    where there is one), a chunk at a time; each distinct (ecosystem, name, version) is hashed
    once per call (many snapshots: a memo of the call's own) or per process (a few:
    :data:`~saltext_fleet.core.drift.KEY_MEMO`) and sent to ``package_keys`` once per call.
    Up to :data:`INDEX_CHUNK` snapshots are written in the caller's transaction; more, on
    PostgreSQL, are read and written by threads with connections of their own (reading ahead,
    writing behind, see :class:`_Writer`), so the snapshots must be committed.
    """
    wanted = set(digests)
    if not wanted:
        return 0
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
    memo = core_drift.KeyMemo() if len(todo) > INDEX_CHUNK else core_drift.KEY_MEMO
    added: set[int] = set()  # keys this call sent to package_keys (in its transaction)
    insert_keys = _insert_snapshot_keys(conn)
    done = 0
    threaded = conn.dialect.name == "postgresql" and len(todo) > INDEX_CHUNK
    with _Writer(conn, insert_keys, threaded) as write:
        for rows in _stream_packages_text(conn, todo):
            names: dict[int, tuple[str, str, str]] = {}
            keyed_rows = []
            for digest, packages_text in rows:
                packages = json_loads(packages_text)
                blob = memo.snapshot_blob(
                    packages if isinstance(packages, dict) else {}, added, names
                )
                keyed_rows.append({"digest": digest, "keys": blob})
            write(names, keyed_rows)
            done += len(keyed_rows)
    return done


def _insert_snapshot_keys(conn: Connection):
    """``INSERT INTO snapshot_keys .. ON CONFLICT (digest) DO NOTHING`` in ``conn``'s dialect."""
    return dialect_insert(conn)(SnapshotKeys.__table__).on_conflict_do_nothing(
        index_elements=["digest"]
    )


def index_one(conn: Connection, digest: str, packages: Any, known: bytes | None = None) -> None:
    """Index one snapshot whose (decoded) ``packages`` the caller has read already and which
    has no ``snapshot_keys`` yet (:func:`recompute_node`'s path, in its transaction).

    ``known``: the keys blob of another indexed snapshot (the node's previous one): its keys
    are in ``package_keys`` already (a snapshot's keys and their names are written in one
    transaction, and neither is ever deleted), so of a changed inventory only the packages
    that changed are looked up and added, not all 1,000."""
    added: set[int] = set()
    if known:
        for keys in core_drift.unpack_keys(known).values():
            added.update(keys)
    names: dict[int, tuple[str, str, str]] = {}
    blob = core_drift.KEY_MEMO.snapshot_blob(
        packages if isinstance(packages, dict) else {}, added, names
    )
    _Writer(conn, _insert_snapshot_keys(conn), False)(names, [{"digest": digest, "keys": blob}])


class _Writer:
    """Writes each chunk's names and blobs: on the caller's connection, or (``threaded``: on
    PostgreSQL with more than one chunk, whose snapshots are committed) in a thread of its own
    with a connection (and a transaction) of its own, so that the server stores chunk k while
    this process hashes chunk k+1. The rows are derived data, the same whoever writes them
    (``ON CONFLICT DO NOTHING``): committed apart from the caller's transaction they are as
    right as within it. Leaving the ``with`` waits for the writes and raises what they
    raised."""

    def __init__(self, conn: Connection, insert_keys, threaded: bool) -> None:
        self.conn = conn
        self.insert_keys = insert_keys
        self.threaded = threaded
        self.queue: queue.Queue | None = None
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def __enter__(self):
        return self

    def _write(self, conn: Connection, names, keyed_rows) -> None:
        add_package_keys(conn, names)
        if not keyed_rows:
            return
        if conn.dialect.name != "postgresql" or len(keyed_rows) < 50:
            conn.execute(self.insert_keys, keyed_rows)
            return
        # many blobs: binary COPY into a temporary table, then one INSERT .. ON CONFLICT
        copy_upsert(
            conn,
            "snapshot_keys",
            {"digest": "text", "keys": "bytea"},
            ((row["digest"], row["keys"]) for row in keyed_rows),
            ("digest",),
        )

    def __call__(self, names, keyed_rows) -> None:
        if not self.threaded:
            self._write(self.conn, names, keyed_rows)
            return
        if self.thread is None:  # the first chunk: start the writer
            self.queue = queue.Queue(maxsize=2)
            self.thread = threading.Thread(
                target=self._run, name="fleet-drift-index-writer", daemon=True
            )
            self.thread.start()
        if self.error is not None:
            raise self.error
        self.queue.put((names, keyed_rows))

    def _run(self) -> None:
        try:
            with self.conn.engine.begin() as conn:
                conn.execute(text("SET LOCAL synchronous_commit TO OFF"))  # derived data
                while True:
                    item = self.queue.get()
                    if item is None:
                        return
                    self._write(conn, *item)
        except BaseException as exc:  # noqa: BLE001 - raised in the indexing thread
            self.error = exc
            while self.queue.get() is not None:  # let the producer finish
                pass

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.thread is None:
            return
        self.queue.put(None)
        self.thread.join()
        if self.error is not None and exc_type is None:
            raise self.error


def _stream_packages_text(conn: Connection, digests: list[str]):
    """:func:`_packages_text` of ``digests``, :data:`INDEX_CHUNK` at a time.

    On PostgreSQL, with more than one chunk, a thread of its own (with a connection of its
    own: snapshots never change once written) reads the next chunk while the caller hashes
    this one; the server's work and the socket release the GIL.
    """
    chunks = list(in_chunks(digests, INDEX_CHUNK))
    if conn.dialect.name != "postgresql" or len(chunks) < 2:
        for chunk in chunks:
            yield _packages_text(conn, chunk)
        return
    yield from read_ahead(conn.engine, chunks, _packages_text, "fleet-drift-index")


def read_ahead(engine: Engine, chunks: list, read, name: str):
    """``read(conn, chunk)`` of each of ``chunks``, in order, read by a thread of its own with
    a connection of its own while the caller works on the chunk before (the server's work and
    the socket release the GIL); at most two chunks wait in memory. Stopping early stops the
    reader; what it raises is raised here."""
    ahead: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def run() -> None:
        try:
            with engine.connect() as conn:
                for chunk in chunks:
                    if stop.is_set():
                        return
                    ahead.put(("ok", read(conn, chunk)))
            ahead.put(("done", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
            ahead.put(("error", exc))

    reader = threading.Thread(target=run, name=name, daemon=True)
    reader.start()
    try:
        while True:
            kind, value = ahead.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        while reader.is_alive():  # let a reader blocked on a full queue finish
            try:
                ahead.get(timeout=0.05)
            except queue.Empty:
                pass
        reader.join()


#: Snapshots read and indexed at a time by :func:`index_snapshots`.
INDEX_CHUNK = 500


def _packages_text(conn: Connection, digests: list[str]) -> list[tuple[str, str | None]]:
    """``(digest, packages as JSON text)`` of the stored snapshots among ``digests``."""
    if conn.dialect.name == "postgresql":
        raw = conn.connection.driver_connection
        with raw.cursor() as cur:
            cur.execute(
                "SELECT digest, packages::text FROM inventory_snapshots WHERE digest = ANY(%s)",
                [digests],
            )
            return cur.fetchall()
    stmt = select(InventorySnapshot.digest, cast(InventorySnapshot.packages, Text)).where(
        InventorySnapshot.digest.in_(digests)
    )
    return [tuple(row) for row in conn.execute(stmt)]


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


#: Up to this many keys, :func:`add_package_keys` looks up which are known first.
PROBE_MAX = 5000


def add_package_keys(conn: Connection, names: Mapping[int, tuple[str, str, str]]) -> None:
    """Add dictionary rows ``{key: (ecosystem, name, version)}``, skipping known keys."""
    keys = sorted(names)
    if not keys:
        return
    if conn.dialect.name == "postgresql" and len(keys) <= PROBE_MAX:
        # a few (one new snapshot's): most are known already; look them up in one round trip
        # and insert only the others (ON CONFLICT costs a speculative insertion per row)
        with conn.connection.driver_connection.cursor(binary=True) as cur:
            cur.execute("SELECT key FROM package_keys WHERE key = ANY(%s)", [keys])
            known = {key for (key,) in cur}
        keys = [k for k in keys if k not in known]
        if keys:
            conn.execute(
                text(
                    "INSERT INTO package_keys (key, ecosystem, name, version) "
                    "SELECT * FROM unnest(CAST(:k AS bigint[]), CAST(:e AS text[]), "
                    "CAST(:n AS text[]), CAST(:v AS text[])) ON CONFLICT (key) DO NOTHING"
                ),
                {
                    "k": keys,
                    "e": [names[k][0] for k in keys],
                    "n": [names[k][1] for k in keys],
                    "v": [names[k][2] for k in keys],
                },
            )
        return
    if conn.dialect.name == "postgresql":
        # binary COPY into a temporary table, then one INSERT .. ON CONFLICT from it: the rows
        # are written by psycopg in C (text arrays as parameters were escaped in Python)
        copy_upsert(
            conn,
            "package_keys",
            {"key": "int8", "ecosystem": "text", "name": "text", "version": "text"},
            ((key, *names[key]) for key in keys),
            ("key",),
        )
        return
    raw = conn.connection.driver_connection  # sqlite3, in the caller's transaction
    if len(keys) <= PROBE_MAX:  # a few: skip those known (most of one snapshot's)
        known = set()
        for chunk in in_chunks(keys, 900):  # under SQLite's old 999-parameter limit
            marks = ",".join("?" * len(chunk))
            known.update(
                key
                for (key,) in raw.execute(
                    f"SELECT key FROM package_keys WHERE key IN ({marks})", chunk
                )
            )
        keys = [k for k in keys if k not in known]
    stmt = text(
        "INSERT OR IGNORE INTO package_keys (key, ecosystem, name, version) "
        "VALUES (:key, :e, :n, :v)"
    )
    if keys:
        conn.execute(
            stmt,
            [{"key": k, "e": names[k][0], "n": names[k][1], "v": names[k][2]} for k in keys],
        )


def resolve_keys(conn: Connection, keys: Iterable[int]) -> dict[int, tuple[str, str, str]]:
    """``{key: (ecosystem, name, version)}`` of the known ``keys``."""
    out: dict[int, tuple[str, str, str]] = {}
    keys = list(keys)
    if conn.dialect.name == "postgresql":
        # the driver's cursor, binary both ways: no SQLAlchemy row per key, no text array
        raw = conn.connection.driver_connection
        with raw.cursor(binary=True) as cur:
            for chunk in in_chunks(keys, 50_000):
                cur.execute(
                    "SELECT key, ecosystem, name, version FROM package_keys WHERE key = ANY(%b)",
                    [chunk],
                )
                for key, eco, name, version in cur.fetchall():
                    out[key] = (eco, name, version)
        return out
    raw = conn.connection.driver_connection  # sqlite3: tuples as they come
    for chunk in in_chunks(keys, 5000):
        marks = ",".join("?" * len(chunk))
        for key, eco, name, version in raw.execute(
            f"SELECT key, ecosystem, name, version FROM package_keys WHERE key IN ({marks})",
            chunk,
        ):
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
    parts = [digests[start : start + chunk] for start in range(0, len(digests), chunk)]
    for pairs in read_ahead(engine, parts, _blob_chunk, "fleet-drift-blobs"):
        yield from pairs
