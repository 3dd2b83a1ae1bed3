"""Spool first, then batches: the returner's write path, one writer per process and database.

``submit`` appends the record to this process's durable spool (a crash right after it returns
loses nothing) and wakes the flusher thread, which writes everything pending in one transaction
(group commit: the busier the master, the bigger the batches) and then marks it done in the
spool. When the database is down or slow the records wait in the spool, in order, and are
written exactly once when it is back (``rid`` is unique in the tables). Spools left behind by
dead processes (a master restart, a killed worker) are adopted and replayed.
"""

from __future__ import annotations

import atexit
import collections
import logging
import multiprocessing.util
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable

from saltext_fleet.store import batch as batch_mod
from saltext_fleet.store import engine as store_engine
from saltext_fleet.store import minion as minion_store
from saltext_fleet.store.spool import Spool, spool_status

log = logging.getLogger(__name__)

#: How often the flusher looks for spools of dead processes.
ADOPT_EVERY = 30.0
#: In a burst (records submitted less than BURST_GAP seconds apart), a batch of fewer records
#: than LINGER_BELOW waits LINGER_SECONDS for more before it is written.
LINGER_BELOW = 100
LINGER_SECONDS = 0.02
BURST_GAP = 0.005
#: Back-off while the database is unreachable (seconds, doubling up to the max).
RETRY_MIN, RETRY_MAX = 0.5, 5.0
#: How long a process that exits waits for its spool to reach the database (the rest waits
#: in the spool for another process to adopt).
EXIT_FLUSH_SECONDS = 5.0

#: ``callback(tag, data)``: announces what a committed batch changed (see :func:`announcements`).
AnnounceCallback = Callable[[str, dict], None]

INVENTORY_CHANGED_TAG = "fleet/inventory/changed"
STATES_RAN_TAG = "fleet/states/ran"
CERTS_CHANGED_TAG = "fleet/certs/changed"


def announcements(result: batch_mod.BatchResult) -> list[tuple[str, dict]]:
    """The events a committed batch calls for: inventory changes, state runs and nodes that
    report other signing identities."""
    out = [
        (INVENTORY_CHANGED_TAG, {"id": minion, "digest": digest, "previous": previous})
        for minion, digest, previous in result.inventory_changed
    ]
    out += [
        (STATES_RAN_TAG, {"id": minion, "pending_states": pending, "test": test})
        for minion, pending, test in result.states_run
    ]
    out += [(CERTS_CHANGED_TAG, {"id": minion}) for minion in dict.fromkeys(result.certs_changed)]
    return out


_writers: dict[tuple[int, str, str], Writer] = {}
_writers_lock = threading.Lock()


#: (pid, db_url, spool_dir) as the caller spelled them -> the key in ``_writers``: the
#: returner calls get_writer() for every return, so skip parsing the URL each time.
_keys: dict[tuple[int, str, str], tuple[int, str, str]] = {}


def _key(db_url: str, spool_dir: str) -> tuple[int, str, str]:
    raw = (os.getpid(), db_url, spool_dir)
    key = _keys.get(raw)
    if key is None:
        key = (raw[0], store_engine.normalise_url(db_url), os.path.abspath(spool_dir))
        if len(_keys) > 1000:  # URLs or folders that keep changing: do not grow forever
            _keys.clear()
        _keys[raw] = key
    return key


def get_writer(
    db_url: str,
    spool_dir: str,
    on_announce: AnnounceCallback | None = None,
    minion: bool = False,
) -> Writer:
    """The writer of this process for ``db_url`` (created, with its thread, on first use).

    ``minion``: the minion returner's writer (see :mod:`saltext_fleet.store.minion`): it checks
    that the URL's role may only append, runs no migrations and ingests nothing.
    """
    key = _key(db_url, spool_dir)
    writer = _writers.get(key)
    if (
        writer is not None
        and writer.alive
        and writer.on_announce is on_announce
        and writer.minion == minion
    ):
        return writer  # the common case, without the lock
    with _writers_lock:
        writer = _writers.get(key)
        if writer is not None and writer.alive and writer.minion != minion:
            # one spool, two roles (a master and a minion returner in one process): never
            # hand the master's writer (which ingests and migrates) to the minion side
            raise ValueError(
                f"the spool {spool_dir} is in use by a {'minion' if writer.minion else 'master'}"
                " writer of this process"
            )
        if writer is None or not writer.alive:
            writer = Writer(db_url, spool_dir, on_announce, minion=minion)
            _writers[key] = writer
            _register_exit_flush()
        elif on_announce is not None:
            writer.on_announce = on_announce
        return writer


_exit_registered_pid: int | None = None


def _register_exit_flush() -> None:
    """Flush (briefly) at process exit, including multiprocessing children, which skip atexit."""
    global _exit_registered_pid
    if _exit_registered_pid == os.getpid():
        return
    _exit_registered_pid = os.getpid()
    atexit.register(close_all, EXIT_FLUSH_SECONDS)
    multiprocessing.util.Finalize(None, close_all, args=(EXIT_FLUSH_SECONDS,), exitpriority=100)


def existing_writer(db_url: str, spool_dir: str) -> Writer | None:
    """This process's writer for ``db_url``, if it has one (readers must not start one)."""
    key = _key(db_url, spool_dir)
    with _writers_lock:
        return _writers.get(key)


def close_all(timeout: float = 10.0) -> None:
    with _writers_lock:
        writers = [w for (pid, _, _), w in _writers.items() if pid == os.getpid()]
        _writers.clear()
    for writer in writers:
        writer.close(timeout=timeout)


class _ReadAhead:
    """``spool.read_batch(after=...)`` in a thread of its own; :meth:`result` waits for it.

    The flusher writes batch k while this reads and decodes batch k+1 (the decoding overlaps
    with the database's work). If writing batch k fails, the read-ahead is dropped and the
    flusher starts again from the spool's checkpoint, as before.
    """

    def __init__(self, spool: Spool, after, max_records: int, max_bytes: int):
        self._batch: list = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._read,
            args=(spool, after, max_records, max_bytes),
            name="saltext-fleet-readahead",
            daemon=True,
        )
        self._thread.start()

    def _read(self, spool: Spool, after, max_records: int, max_bytes: int) -> None:
        try:
            self._batch = spool.read_batch(max_records, max_bytes, after=after)
        except BaseException as exc:  # noqa: BLE001 - handed to the flusher
            self._error = exc

    def result(self) -> list:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._batch

    def discard(self) -> None:
        self._thread.join()


class Writer:
    def __init__(
        self,
        db_url: str,
        spool_dir: str,
        on_announce: AnnounceCallback | None = None,
        batch_records: int = 2000,
        batch_bytes: int = 32 * 1024 * 1024,
        minion: bool = False,
    ):
        self.db_url = db_url
        self.minion = minion
        self.spool_dir = spool_dir
        self.on_announce = on_announce
        self.batch_records = batch_records
        self.batch_bytes = batch_bytes
        self.spool = Spool.open(spool_dir)
        self._adopted: list[Spool] = []
        self._cv = threading.Condition()
        self._stop = False
        self._busy = False
        self._last_adopt = 0.0
        self._last_submit = self._burst_at = float("-inf")
        self._down_since: float | None = None
        self._unexpected: dict[object, int] = {}
        self.last_error: str | None = None
        # Inventory changes to announce, in commit order, by a thread of their own: a slow
        # event bus must not hold up the writes.
        self._notes: collections.deque = collections.deque()
        self._notes_cv = threading.Condition()
        self._notifier: threading.Thread | None = None
        self._thread = threading.Thread(target=self._run, name="saltext-fleet-writer", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stop

    # -- producers ------------------------------------------------------------------------------

    def submit(self, record: dict) -> str:
        """Spool one record (``kind`` set by the caller), its secrets masked first; returns
        its rid."""
        batch_mod.redact_record(record)
        if "rid" not in record:
            record["rid"] = self._rid(record)
        self.spool.append(self._encoded(record))
        self._submitted()
        self._wake()
        return record["rid"]

    def submit_many(self, records: Iterable[dict]) -> int:
        records = list(records)
        for record in records:
            batch_mod.redact_record(record)  # no secret reaches the spool in clear
            if "rid" not in record:
                record["rid"] = self._rid(record)
            self._encoded(record)
        if records:
            self.spool.append_many(records)
            self._submitted()
            self._wake()
        return len(records)

    def _rid(self, record: dict) -> str:
        """A record's id: for a return the master stores, derived from the return (the same
        on every master of the fleet, :func:`~saltext_fleet.store.batch.return_rid`); for
        anything else (and a minion's own writes) a random one."""
        if not self.minion and record.get("kind") == "return":
            return batch_mod.return_rid(record.get("ret"))
        return uuid.uuid4().hex

    def _topped_up(self, spool: Spool, batch: list) -> list:
        """The read-ahead ``batch`` and, when it is short, the records spooled after it while
        the batch before was written: the next write takes everything there is (up to the
        batch size) instead of what there was when it began, so a stream of records is
        written in fewer, larger batches."""
        if not batch or len(batch) >= self.batch_records:
            return batch
        more = spool.read_batch(
            self.batch_records - len(batch), self.batch_bytes // 2, after=batch[-1][0]
        )
        return batch + more if more else batch

    def _submitted(self) -> None:
        now = time.monotonic()
        self._burst_at = now if now - self._last_submit < BURST_GAP else self._burst_at
        self._last_submit = now

    def _in_burst(self) -> bool:
        """Whether records came in quick succession just now (a minion writes its own
        records one job at a time: never)."""
        return not self.minion and time.monotonic() - self._burst_at < 2 * BURST_GAP

    def _encoded(self, record: dict) -> dict:
        """The master's returns and events spooled as JSON text, encoded once, here
        (:func:`~saltext_fleet.store.batch.encode_record`); a minion's own records as they are
        (its role writes through :mod:`~saltext_fleet.store.minion`)."""
        return record if self.minion else batch_mod.encode_record(record)

    def _wake(self) -> None:
        with self._cv:
            self._cv.notify()

    # -- waiting --------------------------------------------------------------------------------

    def database_up(self) -> bool:
        """False while this writer's last attempt found the database unreachable."""
        return self._down_since is None

    def pending(self) -> int:
        return self.spool.depth() + sum(s.depth() for s in self._adopted)

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until everything spooled so far is in the database; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cv:
                if self.pending() == 0 and not self._busy:
                    return True
                self._cv.notify()
                self._cv.wait(0.02)
        return self.pending() == 0

    def wait_announced(self, timeout: float = 30.0) -> bool:
        """Wait until the inventory changes written so far have been announced (or failed to).

        Announcements run in a thread of their own, after the commit: :meth:`drain` does not
        wait for them (an event bus that is slow or down must not hold up readers).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cv:
                if not self._notes:
                    return True
                self._cv.wait(0.02)
        return not self._notes

    def close(self, timeout: float = 10.0) -> None:
        """Flush what can be flushed within ``timeout``, then stop; the rest stays spooled."""
        deadline = time.monotonic() + timeout
        self.drain(timeout)
        self.wait_announced(max(0.0, deadline - time.monotonic()))
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        with self._notes_cv:
            self._notes_cv.notify_all()
        self._thread.join(timeout)
        if self._notifier is not None:
            self._notifier.join(timeout)
        for spool in [self.spool, *self._adopted]:
            spool.close()

    def status(self) -> dict:
        return {
            "spool": spool_status(self.spool_dir),
            "database_down_since": self._down_since,
            "last_error": self.last_error,
        }

    # -- the flusher ----------------------------------------------------------------------------

    def _run(self) -> None:
        retry = RETRY_MIN
        while True:
            with self._cv:
                if self._stop:
                    return
            if time.monotonic() - self._last_adopt > ADOPT_EVERY:
                self._adopt()
            wrote_any = False
            try:
                for spool in [*self._adopted, self.spool]:
                    batch = spool.read_batch(self.batch_records, self.batch_bytes)
                    if 0 < len(batch) < LINGER_BELOW and self._in_burst() and not self._stop:
                        # A few records of a burst (returns of a job to many minions): wait a
                        # moment for more, so the burst is written in a few large batches
                        # instead of a tiny one first (each batch costs a transaction and a
                        # checkpoint). A lone record is written at once.
                        time.sleep(LINGER_SECONDS)
                        batch = spool.read_batch(self.batch_records, self.batch_bytes)
                    while batch:
                        self._busy = True
                        # Read (and decode) the next batch while this one is written.
                        ahead = _ReadAhead(
                            spool, batch[-1][0], self.batch_records, self.batch_bytes
                        )
                        try:
                            self._write(spool, batch)
                        except BaseException:
                            ahead.discard()
                            raise
                        wrote_any = True
                        batch = self._topped_up(spool, ahead.result())
                self._retire_adopted()
                retry = RETRY_MIN
            except Exception as exc:  # the flusher must never die
                self._busy = False
                if batch_mod.is_connection_error(exc):
                    if self._down_since is None:
                        self._down_since = time.time()
                        log.warning(
                            "saltext-fleet: the database is unreachable (%s); records wait in the spool",
                            exc.__class__.__name__,
                        )
                elif isinstance(exc, minion_store.MinionRoleError):
                    if self.last_error != f"{type(exc).__name__}: {str(exc)[:300]}":
                        log.error("saltext-fleet: records stay spooled: %s", exc)
                elif batch_mod.is_transient(exc):
                    log.warning(
                        "saltext-fleet: a batch met another writer (%s); writing it again",
                        exc.__class__.__name__,
                    )
                else:
                    log.exception("saltext-fleet: writing a batch failed")
                self.last_error = (
                    f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
                )
                # Back off for the whole period: new records wake the flusher, and while the
                # database is away every wake would read and decode a batch again for nothing.
                deadline = time.monotonic() + retry
                with self._cv:
                    while not self._stop and (left := deadline - time.monotonic()) > 0:
                        self._cv.wait(left)
                retry = min(retry * 2, RETRY_MAX)
                continue
            finally:
                self._busy = False
            with self._cv:
                if not wrote_any and not self._stop:
                    self._cv.notify_all()  # wake drain() waiters
                    self._cv.wait(1.0)

    def _write(self, spool: Spool, batch: list) -> None:
        engine = store_engine.get_engine(self.db_url)
        if self.minion:
            minion_store.verify_role(engine)  # no migrations: the role could not run them
        else:
            store_engine.ensure_schema(engine)
        records = [record for _, record in batch]
        key = (id(spool), batch[0][0])
        write = minion_store.write_minion_batch if self.minion else batch_mod.write_batch
        try:
            with engine.begin() as conn:
                result = write(conn, records)
        except Exception as exc:
            if batch_mod.is_connection_error(exc):
                raise
            # Not the database being away, and not a record write_batch could isolate: a bug
            # or an odd record. Retry a few times, then write the batch record by record so
            # one poison record cannot block the spool forever.
            self._unexpected[key] = self._unexpected.get(key, 0) + 1
            if self._unexpected[key] < 3:
                raise
            result = self._write_one_by_one(engine, records)
        self._unexpected.pop(key, None)
        spool.commit(batch[-1][0])
        if self._down_since is not None:
            log.warning(
                "saltext-fleet: the database is back after %.0f s; spool replayed",
                time.time() - self._down_since,
            )
            self._down_since = None
        self.last_error = None
        with self._cv:
            self._cv.notify_all()
        self._announce(announcements(result))

    def _write_one_by_one(self, engine, records: list) -> batch_mod.BatchResult:
        total = batch_mod.BatchResult()
        write = minion_store.write_minion_batch if self.minion else batch_mod.write_batch
        for record in records:
            try:
                with engine.begin() as conn:
                    result = write(conn, [record])
            except Exception as exc:
                if batch_mod.is_connection_error(exc) or isinstance(
                    exc, minion_store.MinionRoleError
                ):
                    raise
                if self.minion:  # the minion role may not write the quarantine
                    minion_store.drop_record(
                        record, str(record.get("kind")), f"{type(exc).__name__}: {exc}"
                    )
                    total.quarantined += 1
                    continue
                with engine.begin() as conn:
                    batch_mod.quarantine_record(
                        conn,
                        record,
                        str(record.get("kind", "unknown"))[:32],
                        f"{type(exc).__name__}: {exc}",
                    )
                total.quarantined += 1
                continue
            total.stored += result.stored
            total.quarantined += result.quarantined
            total.inventory_changed.extend(result.inventory_changed)
            total.states_run.extend(result.states_run)
            total.certs_changed.extend(result.certs_changed)
        return total

    def _announce(self, changes: list) -> None:
        if not changes or self.on_announce is None:
            return
        with self._notes_cv:
            self._notes.extend(changes)
            if self._notifier is None or not self._notifier.is_alive():
                self._notifier = threading.Thread(
                    target=self._run_notifier, name="saltext-fleet-notifier", daemon=True
                )
                self._notifier.start()
            self._notes_cv.notify()

    def _run_notifier(self) -> None:
        while True:
            with self._notes_cv:
                while not self._notes:
                    if self._stop:
                        return
                    self._notes_cv.wait(1.0)
                if self._stop and not self._thread.is_alive():
                    # close() gave up waiting: what is left is not announced.
                    log.warning(
                        "saltext-fleet: %d inventory changes not announced at exit",
                        len(self._notes),
                    )
                    self._notes.clear()
                    return
                change = self._notes[0]
            self._notify(change)
            with self._notes_cv:
                self._notes.popleft()
            with self._cv:
                self._cv.notify_all()  # wake drain()

    def _notify(self, change) -> None:
        if self.on_announce is None:
            return
        try:
            self.on_announce(*change)
        except Exception:  # a failed notification must not lose the batch
            log.exception(
                "saltext-fleet: could not announce %s of %r", change[0], change[1].get("id")
            )

    def _adopt(self) -> None:
        self._last_adopt = time.monotonic()
        try:
            adopted = Spool.adopt_orphans(self.spool_dir)
        except Exception:
            log.exception("saltext-fleet: could not look for orphaned spools in %s", self.spool_dir)
            return
        if adopted:
            log.info("saltext-fleet: replaying %d spool(s) left by stopped processes", len(adopted))
            self._adopted.extend(adopted)

    def _retire_adopted(self) -> None:
        for spool in list(self._adopted):
            if spool.depth() == 0:
                spool.close()
                self._adopted.remove(spool)
