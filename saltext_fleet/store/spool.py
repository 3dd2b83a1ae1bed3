"""Durable local spool (write-ahead log) for the ``fleet`` returner.

Every job return and event is first appended here, then a flusher thread in the same process
reads batches (:meth:`Spool.read_batch`), writes them to the database and marks them stored
(:meth:`Spool.commit`). While the database is down the records stay on disk and are replayed, in
append order, once it is back. Records carry a unique ``rid`` and the database ignores duplicate
rids, so replaying a record twice (after a crash between the database write and the commit, or
after a distrusted checkpoint) stores it exactly once.

Pure Python: no Salt import, no database import.

Layout on disk
--------------

::

    <base>/                         mode 0700
      <pid>-<token>/                one spool per process, mode 0700
        lock                        flock(LOCK_EX) held by the owner for its lifetime
        checkpoint                  JSON {"segment", "offset", "count"}: everything before is stored
        000000000001.seg            segment files, rolled at ``segment_bytes``
        000000000002.seg

A process that dies leaves its directory behind with the lock released (the kernel drops flock
locks with the last descriptor). :meth:`Spool.adopt_orphans` takes over every directory whose lock
it can get and returns it for replay; a directory whose owner is alive is never adopted.

Frame format
------------

Each record is one frame, written with a single ``os.write`` on an ``O_APPEND`` descriptor::

    magic    2 bytes   b"\\xf1\\x5e"
    length   u32 BE    payload length
    time     f64 BE    append time (time.time())
    pcrc     u32 BE    CRC32 of the payload
    hcrc     u32 BE    CRC32 of the 18 bytes above
    payload  msgpack (use_bin_type=True)

The header has its own checksum, so a damaged length is recognised as damaged instead of being
followed into the weeds: the reader then scans forward for the next valid header and reports
the bytes in between as one corrupt record (when no valid header follows, that is the rest of the
segment). A frame whose header is good but whose payload checksum or msgpack decoding fails is
reported as one corrupt record and reading continues right after it. Corrupt records look like
``{"__corrupt__": True, "error": "...", "raw": <first 64 KiB>, "segment": n, "offset": n,
"spool": name}`` so the caller can quarantine them; they are committed like any other record.

A frame cut short at the end of a segment (the process died inside ``os.write``) is a *torn*
frame: the ``append`` call that wrote it never returned, so nothing acknowledged is lost. It is
ignored while the owner may still be writing, and dropped (logged) once the segment is final.

Durability
----------

``append`` returns after ``os.write`` has copied the frame into the kernel's page cache: a
process crash (SIGKILL, OOM kill, segfault) right after it returns loses nothing. A power loss or
kernel crash can lose the last few seconds of records. ``Spool.open(..., fsync=True)`` fsyncs the
segment after every ``append``/``append_many`` call, which survives power loss too but costs a
disk flush per call (milliseconds on most disks instead of microseconds): batch with
``append_many`` if you need it. Checkpoints are always written with temp file + fsync +
``os.replace``.

Serialisation
-------------

msgpack keeps str, bytes, int, float, bool, None, lists and dicts (any hashable scalar as key).
Tuples come back as lists. Sets and frozensets become sorted lists (sorted by ``repr`` when their
members do not compare). datetime/date/time become ISO 8601 strings; Decimal, UUID and paths
become ``str``; any other object becomes its ``repr``. Integers beyond 64 bits become decimal
strings, strings with lone surrogates are backslash-escaped, structures nested deeper than 100
levels or cyclic are cut with a ``repr``; a record that still cannot be packed is stored as
``{"__unserialisable__": True, "error": ..., "repr": ...}``. Appending never raises because of the
shape of a record (only for records over 1 GiB, or when the disk fails).

Forking
-------

A spool belongs to the process that opened (or adopted) it. In a forked child every inherited
spool is closed (the parent keeps its lock) and using it raises :class:`SpoolClosedError`:
check :attr:`Spool.pid` against ``os.getpid()`` and open a fresh spool in the child.
"""

from __future__ import annotations

import datetime
import decimal
import errno
import fcntl
import json
import logging
import os
import re
import secrets
import struct
import threading
import time
import uuid
import weakref
import zlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import msgpack

from saltext_fleet.core.errors import FleetError

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "Position",
    "Spool",
    "SpoolClosedError",
    "spool_status",
]

MAGIC = b"\xf1\x5e"
_HEAD = struct.Struct(">2sIdI")  # magic, payload length, append time, payload crc32
_HCRC = struct.Struct(">I")  # crc32 of the 18 bytes above
HEADER_SIZE = _HEAD.size + _HCRC.size  # 22
RAW_LIMIT = 64 * 1024  # bytes of a corrupt frame handed back for quarantine
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
MIN_SEGMENT_BYTES = 256
MAX_RECORD_BYTES = 1 << 30
LOCK_NAME = "lock"
CHECKPOINT_NAME = "checkpoint"
_CHECKPOINT_TMP = "checkpoint.tmp"
_SEG_RE = re.compile(r"^(\d{12})\.seg$")
_OWNER_RE = re.compile(r"^\d{1,10}-[0-9a-f]{8,64}$")
_STAGING_PREFIX = ".staging-"
_STALE_STAGING_SECONDS = 3600
_MAX_DEPTH = 100
_READ_CHUNK = 256 * 1024
_SCAN_CHUNK = 64 * 1024
_RESYNC_CHUNK = 256 * 1024

_FRAME, _CORRUPT, _TORN = 0, 1, 2

_now = time.time  # indirection so tests can move the clock


class SpoolClosedError(FleetError, RuntimeError):
    """The spool was closed, or inherited through ``fork`` (open a new one in the child)."""


class Position(NamedTuple):
    """Opaque, ordered token for one record returned by :meth:`Spool.read_batch`.

    ``segment``/``offset`` locate the end of the record's frame; ``index`` is its ordinal in the
    spool. Only ever pass back what ``read_batch`` returned.
    """

    segment: int
    offset: int
    index: int


class _Checkpoint(NamedTuple):
    segment: int
    offset: int
    count: int  # records stored so far (ordinal of the next record)


# --------------------------------------------------------------------------------------------
# serialisation


def _safe_repr(obj: Any) -> str:
    try:
        text = repr(obj)
    except Exception as exc:  # noqa: BLE001 - a hostile __repr__, or recursion
        return f"<unrepresentable {type(obj).__name__}: {type(exc).__name__}>"
    if len(text) > RAW_LIMIT:
        text = text[:RAW_LIMIT] + "...<truncated>"
    return text


def _default(obj: Any) -> Any:
    """msgpack ``default=``: turn what msgpack cannot pack into something it can."""
    if isinstance(obj, (set, frozenset)):
        try:
            return sorted(obj)
        except TypeError:
            return sorted(obj, key=_safe_repr)
    if isinstance(obj, (datetime.datetime, datetime.date, datetime.time)):
        return obj.isoformat()
    if isinstance(obj, (decimal.Decimal, uuid.UUID)):
        return str(obj)
    if isinstance(obj, os.PathLike):
        try:
            path = os.fspath(obj)
        except Exception:  # noqa: BLE001 - anything not a path is shown by its repr
            return _safe_repr(obj)
        return os.fsdecode(path) if isinstance(path, bytes) else path
    if isinstance(obj, (bytearray, memoryview)):
        return bytes(obj)
    if isinstance(obj, Mapping):
        try:
            return dict(obj)
        except Exception:  # noqa: BLE001 - anything not a mapping is shown by its repr
            return _safe_repr(obj)
    return _safe_repr(obj)


def _packb(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True, default=_default)


def _sanitise_scalar(obj: Any) -> Any:
    if isinstance(obj, bool) or obj is None or isinstance(obj, (float, bytes)):
        return obj
    if isinstance(obj, int):
        return obj if -(2**63) <= obj < 2**64 else str(obj)
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")
        except UnicodeEncodeError:
            return obj.encode("utf-8", "backslashreplace").decode("utf-8")
        return obj
    return _NOT_SCALAR


_NOT_SCALAR = object()


def _sanitise(obj: Any, depth: int = 0, seen: set[int] | None = None) -> Any:
    """Slow path: rebuild ``obj`` from packable parts (big ints, surrogates, cycles, depth)."""
    scalar = _sanitise_scalar(obj)
    if scalar is not _NOT_SCALAR:
        return scalar
    if depth >= _MAX_DEPTH:
        return _safe_repr(obj)
    if seen is None:
        seen = set()
    if isinstance(obj, (Mapping, list, tuple, set, frozenset)):
        if id(obj) in seen:
            return "<cycle>"
        seen.add(id(obj))
        try:
            if isinstance(obj, Mapping):
                out: dict[Any, Any] = {}
                for key, value in obj.items():
                    skey = _sanitise_scalar(key)
                    if skey is _NOT_SCALAR:
                        skey = _safe_repr(key)
                    out[skey] = _sanitise(value, depth + 1, seen)
                return out
            items = _default(obj) if isinstance(obj, (set, frozenset)) else obj
            return [_sanitise(item, depth + 1, seen) for item in items]
        finally:
            seen.discard(id(obj))
    converted = _default(obj)
    if converted is obj:
        return _safe_repr(obj)
    return _sanitise(converted, depth + 1, seen)


def _pack(record: Any) -> bytes:
    """Serialise one record; never raises because of its shape."""
    try:
        return _packb(record)
    except Exception as exc:  # noqa: BLE001 - retried on a sanitised copy below
        first = exc
    try:
        return _packb(_sanitise(record))
    except Exception as exc:  # noqa: BLE001 - a record is never lost: its repr is stored
        log.warning("fleet spool: record cannot be serialised (%s), storing its repr", exc)
        return _packb(
            {
                "__unserialisable__": True,
                "error": f"{type(first).__name__}: {first}",
                "repr": _safe_repr(record),
            }
        )


def _normalise(obj: Any) -> Any:
    """Tuples (from ``use_list=False``) back to lists; non-scalar keys to strings."""
    if isinstance(obj, (list, tuple)):
        return [_normalise(item) for item in obj]
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if isinstance(key, tuple):
                key = repr(_normalise(key))
            out[key] = _normalise(value)
        return out
    return obj


def _unpack(payload: Any) -> Any:
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception:  # noqa: BLE001 - retried with a tolerant decoder below
        # e.g. a set used as a dict key was packed as an array key (unhashable as a list)
        obj = msgpack.unpackb(
            payload,
            raw=False,
            strict_map_key=False,
            use_list=False,
            unicode_errors="backslashreplace",
        )
        return _normalise(obj)


def _frame(payload: bytes, ts: float) -> bytes:
    head = _HEAD.pack(MAGIC, len(payload), ts, zlib.crc32(payload))
    return head + _HCRC.pack(zlib.crc32(head)) + payload


# --------------------------------------------------------------------------------------------
# reading frames


def _header_ok(data: bytes, i: int) -> bool:
    return (
        data[i : i + 2] == MAGIC
        and zlib.crc32(data[i : i + _HEAD.size]) == _HCRC.unpack_from(data, i + _HEAD.size)[0]
    )


def _find_header(fd: int, pos: int, limit: int) -> int:
    """Offset of the next valid frame header in ``[pos, limit)``, or ``limit``.

    A header cut off by ``limit`` counts as found (the frame reader then treats it as torn).
    """
    while pos < limit:
        data = os.pread(fd, min(_RESYNC_CHUNK, limit - pos), pos)
        if not data:
            return limit
        at_end = pos + len(data) >= limit
        i = data.find(MAGIC)
        while i != -1:
            if i + HEADER_SIZE <= len(data):
                if _header_ok(data, i):
                    return pos + i
            elif at_end:
                return pos + i
            else:
                break
            i = data.find(MAGIC, i + 1)
        if at_end:
            return limit
        pos += max(len(data) - (HEADER_SIZE - 1), 1)
    return limit


def _iter_frames(
    fd: int, start: int, limit: int, *, payloads: bool, chunk: int = _READ_CHUNK
) -> Iterator[tuple[int, int, int, float, Any]]:
    """Yield ``(kind, offset, end, time, data)`` for the frames in ``[start, limit)``.

    kind ``_FRAME``: data is the payload (memoryview) or None when ``payloads`` is false;
    ``_CORRUPT``: data is ``(error, raw bytes)``; ``_TORN``: an incomplete frame runs up to
    ``limit`` (always the last item). OSError from the file propagates.
    """
    buf = b""
    view = memoryview(buf)
    base = start
    off = start
    while off < limit:
        rel = off - base
        if rel + HEADER_SIZE > len(buf):
            buf = os.pread(fd, min(max(chunk, HEADER_SIZE), limit - off), off)
            view = memoryview(buf)
            base, rel = off, 0
        avail = len(buf) - rel
        if avail < HEADER_SIZE:
            tail = bytes(buf[rel:])
            if not tail:  # the file shrank under us
                return
            if MAGIC.startswith(tail[:2]):
                yield (_TORN, off, limit, 0.0, None)
                return
            yield (_CORRUPT, off, limit, 0.0, ("unframed bytes at end of segment", tail))
            return
        magic, length, ts, pcrc = _HEAD.unpack_from(buf, rel)
        if (
            magic != MAGIC
            or zlib.crc32(view[rel : rel + _HEAD.size])
            != (_HCRC.unpack_from(buf, rel + _HEAD.size)[0])
        ):
            nxt = _find_header(fd, off + 1, limit)
            raw = os.pread(fd, min(nxt - off, RAW_LIMIT), off)
            yield (_CORRUPT, off, nxt, 0.0, (f"bad frame header, skipped {nxt - off} bytes", raw))
            off = nxt
            buf, view, base = b"", memoryview(b""), off
            continue
        end = off + HEADER_SIZE + length
        if end > limit:
            yield (_TORN, off, limit, ts, None)
            return
        if not payloads:
            yield (_FRAME, off, end, ts, None)
            off = end
            continue
        if end - base > len(buf):
            buf = os.pread(fd, min(max(chunk, end - off), limit - off), off)
            view = memoryview(buf)
            base, rel = off, 0
            if len(buf) < end - off:  # shrank under us
                yield (_TORN, off, limit, ts, None)
                return
        payload = view[rel + HEADER_SIZE : rel + HEADER_SIZE + length]
        if zlib.crc32(payload) != pcrc:
            yield (
                _CORRUPT,
                off,
                end,
                ts,
                ("payload checksum mismatch", bytes(payload[:RAW_LIMIT])),
            )
        else:
            yield (_FRAME, off, end, ts, payload)
        off = end


# --------------------------------------------------------------------------------------------
# directory helpers


def _seg_name(seq: int) -> str:
    return f"{seq:012d}.seg"


def _list_segments(path: str) -> list[int]:
    segs = []
    with os.scandir(path) as entries:
        for entry in entries:
            match = _SEG_RE.match(entry.name)
            if match and entry.is_file(follow_symlinks=False):
                segs.append(int(match.group(1)))
    segs.sort()
    return segs


def _open_ro(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)


def _size(path: str) -> int | None:
    try:
        return os.stat(path, follow_symlinks=False).st_size
    except OSError:
        return None


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _load_checkpoint(path: str) -> tuple[_Checkpoint, bool]:
    """Return (checkpoint, trusted). A missing checkpoint is the start of the spool."""
    file = os.path.join(path, CHECKPOINT_NAME)
    try:
        fd = _open_ro(file)
    except FileNotFoundError:
        return _Checkpoint(0, 0, 0), True
    except OSError as exc:
        log.warning(
            "fleet spool %s: cannot open checkpoint (%s), replaying from the start", path, exc
        )
        return _Checkpoint(0, 0, 0), False
    try:
        data = os.read(fd, 4096)
    except OSError as exc:
        log.warning(
            "fleet spool %s: cannot read checkpoint (%s), replaying from the start", path, exc
        )
        return _Checkpoint(0, 0, 0), False
    finally:
        os.close(fd)
    try:
        doc = json.loads(data.decode("utf-8"))
        values = [doc["segment"], doc["offset"], doc.get("count", 0)]
        if not all(type(v) is int and v >= 0 for v in values):
            raise ValueError("negative or non-integer field")
        return _Checkpoint(*values), True
    except Exception as exc:  # noqa: BLE001 - any damage means replay from the start
        log.warning(
            "fleet spool %s: checkpoint is damaged (%s), replaying from the start", path, exc
        )
        return _Checkpoint(0, 0, 0), False


def _start_of(path: str, ckpt: _Checkpoint, segs: list[int]) -> tuple[tuple[int, int] | None, bool]:
    """First unread (segment, offset) after ``ckpt``, and whether the checkpoint was consistent.

    A checkpoint that points past the end of its segment, or past every segment on disk, is
    distrusted: the affected records are replayed (the database drops duplicate rids).
    """
    if not segs:
        return None, True
    if ckpt.segment in segs:
        size = _size(os.path.join(path, _seg_name(ckpt.segment)))
        if size is not None and ckpt.offset > size:
            return (ckpt.segment, 0), False
        return (ckpt.segment, ckpt.offset), True
    later = [s for s in segs if s > ckpt.segment]
    if later:
        return (later[0], 0), True
    return (segs[0], 0), False


def _scan(
    path: str,
    segs: list[int],
    start: tuple[int, int] | None,
    *,
    limits: Mapping[int, int] | None = None,
    first_only: bool = False,
) -> tuple[int, float | None]:
    """Count records from ``start`` (corrupt regions count as one) and find the oldest time."""
    count = 0
    first_ts: float | None = None
    if start is None:
        return 0, None
    for seq in segs:
        if seq < start[0]:
            continue
        if limits is not None and seq > max(limits):
            break
        off = start[1] if seq == start[0] else 0
        try:
            fd = _open_ro(os.path.join(path, _seg_name(seq)))
        except FileNotFoundError:
            continue
        except OSError as exc:
            # Unreadable is not empty: count it, so nobody deletes it as consumed.
            log.warning("fleet spool %s: cannot open segment %s: %s", path, seq, exc)
            count += 1
            continue
        try:
            limit = limits[seq] if limits is not None and seq in limits else os.fstat(fd).st_size
            for kind, _off, _end, ts, _data in _iter_frames(
                fd, off, limit, payloads=False, chunk=_SCAN_CHUNK
            ):
                if kind == _TORN:
                    break
                count += 1
                if kind == _FRAME and first_ts is None:
                    first_ts = ts
                    if first_only:
                        return count, first_ts
        except OSError as exc:
            log.warning("fleet spool %s: cannot read segment %s: %s", path, seq, exc)
            count += 1
        finally:
            os.close(fd)
    return count, first_ts


def _ensure_base(base: str) -> None:
    if not os.path.isdir(base):
        os.makedirs(base, mode=0o700, exist_ok=True)
        os.chmod(base, 0o700)
    else:
        mode = os.stat(base).st_mode
        if mode & 0o077:
            log.warning(
                "fleet spool base %s is accessible to group/others (mode %o)", base, mode & 0o777
            )


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("fleet spool: cannot remove %s: %s", path, exc)


_LIVE: weakref.WeakSet[Spool] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for spool in list(_LIVE):
        spool._forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# --------------------------------------------------------------------------------------------
# the spool


class Spool:
    """One process's spool directory. Create with :meth:`open` or :meth:`adopt_orphans`.

    ``append``/``append_many`` may be called from any number of threads; ``read_batch`` and
    ``commit`` are meant for one flusher thread but are serialised by a lock as well.
    """

    def __init__(
        self,
        path: str,
        lock_fd: int,
        *,
        owned: bool,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        fsync: bool = False,
    ):
        if segment_bytes < MIN_SEGMENT_BYTES:
            raise ValueError(f"segment_bytes must be at least {MIN_SEGMENT_BYTES}")
        self.path = path
        self.name = os.path.basename(path)
        self.pid = os.getpid()
        self.owned = owned
        self.segment_bytes = int(segment_bytes)
        self.fsync = bool(fsync)
        self._lock_fd: int | None = lock_fd
        self._lock = threading.Lock()  # write side and counters
        self._rlock = threading.RLock()  # read side: checkpoint, commit, close
        self._closed = False
        self._forked = False
        self._wfd: int | None = None
        self._wseq = 0
        self._wsize = 0
        self._roll_needed = False
        self._total = 0  # ordinal of the next record to be appended
        self._ckpt = _Checkpoint(0, 0, 0)
        self._depth_dirty = False
        self._oldest: float | None = None
        self._oldest_known = True
        self._reported: set[tuple[int, int]] = set()
        _LIVE.add(self)

    def __repr__(self) -> str:
        kind = "owned" if self.owned else "adopted"
        state = "closed" if self._closed else "open"
        return f"<Spool {self.path} {kind} {state}>"

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    # ---------------------------------------------------------------- construction

    @classmethod
    def open(
        cls,
        base_dir: str | os.PathLike[str],
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        fsync: bool = False,
    ) -> Spool:
        """Create and lock a new spool ``<base_dir>/<pid>-<token>`` owned by this process.

        ``fsync=True`` fsyncs after every append call (survives power loss, much slower).
        """
        if segment_bytes < MIN_SEGMENT_BYTES:
            raise ValueError(f"segment_bytes must be at least {MIN_SEGMENT_BYTES}")
        base = os.fspath(base_dir)
        _ensure_base(base)
        owner = f"{os.getpid()}-{secrets.token_hex(8)}"
        # Built under a dot name that adopters ignore, locked, then renamed into place: an
        # adopter can never see (and grab) a spool before its owner holds the lock.
        staging = os.path.join(base, _STAGING_PREFIX + owner)
        final = os.path.join(base, owner)
        os.mkdir(staging, 0o700)
        lock_fd = None
        try:
            os.chmod(staging, 0o700)
            lock_fd = os.open(
                os.path.join(staging, LOCK_NAME),
                os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
            )
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(lock_fd, f"{os.getpid()}\n".encode())
            os.rename(staging, final)
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            _remove_quietly(os.path.join(staging, LOCK_NAME))
            try:
                os.rmdir(staging)
            except OSError:
                pass
            raise
        spool = cls(final, lock_fd, owned=True, segment_bytes=segment_bytes, fsync=fsync)
        try:
            spool._open_segment(1)
        except BaseException:
            spool.close()
            raise
        if fsync:
            _fsync_dir(base)
        return spool

    @classmethod
    def adopt_orphans(cls, base_dir: str | os.PathLike[str]) -> list[Spool]:
        """Take over every spool under ``base_dir`` whose owner is gone; return those to replay.

        A spool is adopted only if its lock can be taken, i.e. no live process holds it.
        Adopted spools are read-only (``read_batch``/``commit``/``depth``/``oldest_age``); the
        caller replays them and must ``close()`` each one (which removes it once fully
        committed). Orphans with nothing left to replay are cleaned up instead of returned.
        """
        base = os.fspath(base_dir)
        adopted: list[Spool] = []
        try:
            entries = sorted(os.scandir(base), key=lambda e: e.name)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                log.warning("fleet spool: cannot list %s: %s", base, exc)
            return adopted
        for entry in entries:
            try:
                if not entry.is_dir(follow_symlinks=False):
                    continue
            except OSError:
                continue
            if entry.name.startswith(_STAGING_PREFIX):
                _clean_stale_staging(entry.path)
                continue
            if not _OWNER_RE.match(entry.name):
                continue
            try:
                spool = cls._try_adopt(entry.path)
            except Exception as exc:  # noqa: BLE001 - hostile directory: never let one spoil the rest
                log.warning("fleet spool: cannot adopt %s: %s", entry.path, exc)
                continue
            if spool is None:
                continue
            if spool.depth() == 0:
                spool.close()
                continue
            log.info("fleet spool: adopted %s with %s records to replay", entry.path, spool.depth())
            adopted.append(spool)
        return adopted

    @classmethod
    def _try_adopt(cls, path: str) -> Spool | None:
        lock_path = os.path.join(path, LOCK_NAME)
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None  # the owner is alive (or another process adopted it)
        try:
            held = os.fstat(fd)
            current = os.stat(lock_path, follow_symlinks=False)
        except OSError:
            os.close(fd)
            return None
        if (held.st_dev, held.st_ino) != (current.st_dev, current.st_ino):
            os.close(fd)  # the directory was removed and recreated under us
            return None
        spool = cls(path, fd, owned=False)
        try:
            spool._load_adopted()
        except BaseException:
            spool.close()
            raise
        return spool

    def _load_adopted(self) -> None:
        ckpt, trusted = _load_checkpoint(self.path)
        segs = _list_segments(self.path)
        start, consistent = _start_of(self.path, ckpt, segs)
        if not consistent:
            log.warning(
                "fleet spool %s: checkpoint %s points past the data, replaying from %s "
                "(duplicates are dropped by rid)",
                self.path,
                tuple(ckpt[:2]),
                start,
            )
        if start is not None and (not consistent or not trusted):
            ckpt = _Checkpoint(start[0], start[1], ckpt.count)
        self._ckpt = ckpt
        if start is not None:
            for seq in segs:
                if seq < start[0]:  # committed, removal was interrupted
                    _remove_quietly(os.path.join(self.path, _seg_name(seq)))
        pending, first_ts = _scan(self.path, segs, start)
        self._total = ckpt.count + pending
        self._oldest, self._oldest_known = first_ts, True

    # ---------------------------------------------------------------- writing

    def _check_usable(self) -> None:
        if self._closed:
            if self._forked:
                raise SpoolClosedError(
                    f"spool {self.path} was inherited through fork; open a new spool in this process"
                )
            raise SpoolClosedError(f"spool {self.path} is closed")

    def _open_segment(self, seq: int) -> None:
        fd = os.open(
            os.path.join(self.path, _seg_name(seq)),
            os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
        )
        self._wfd, self._wseq, self._wsize = fd, seq, 0
        self._roll_needed = False

    def _roll(self) -> None:
        old = self._wfd
        if old is not None and self.fsync:
            os.fsync(old)
        self._open_segment(self._wseq + 1)
        if old is not None:
            os.close(old)
        if self.fsync:
            _fsync_dir(self.path)

    def _write(self, data: bytes) -> None:
        fd = self._wfd
        assert fd is not None
        try:
            done = os.write(fd, data)
            if done < len(data):
                view = memoryview(data)
                while done < len(data):
                    done += os.write(fd, view[done:])
        except BaseException:
            # Never leave a partial frame that later frames would follow.
            try:
                os.ftruncate(fd, self._wsize)
            except OSError:
                self._roll_needed = True
            raise

    def _make_frame(self, record: Any, ts: float) -> bytes:
        payload = _pack(record)
        if len(payload) > MAX_RECORD_BYTES:
            raise ValueError(
                f"record serialises to {len(payload)} bytes, over the {MAX_RECORD_BYTES} limit"
            )
        return _frame(payload, ts)

    def append(self, record: dict) -> None:
        """Append one record. Durable against a process crash once this returns."""
        ts = _now()
        frame = self._make_frame(record, ts)
        with self._lock:
            self._check_usable()
            self._write_frames([frame], ts)

    def append_many(self, records: Iterable[dict]) -> None:
        """Append records in order, with as few ``os.write`` calls as the segment size allows."""
        ts = _now()
        frames = [self._make_frame(record, ts) for record in records]
        if not frames:
            return
        with self._lock:
            self._check_usable()
            self._write_frames(frames, ts)

    def _write_frames(self, frames: list[bytes], ts: float) -> None:
        if not self.owned:
            raise SpoolClosedError(f"spool {self.path} was adopted and is read-only")
        was_empty = self._total == self._ckpt.count
        i, n = 0, len(frames)
        while i < n:
            if self._roll_needed:
                self._roll()
            size = self._wsize
            group_start = i
            while i < n:
                flen = len(frames[i])
                if size > 0 and size + flen > self.segment_bytes:
                    break
                size += flen
                i += 1
            if i > group_start:
                group = frames[group_start:i]
                self._write(group[0] if len(group) == 1 else b"".join(group))
                self._wsize = size
                self._total += len(group)
            if i < n:
                self._roll()
        if self.fsync:
            os.fsync(self._wfd)
        if was_empty:
            self._oldest, self._oldest_known = ts, True

    # ---------------------------------------------------------------- reading

    def _snapshot(self) -> tuple[int, int] | None:
        """(active segment, bytes completely written) for the owner; None for an adopted spool."""
        if not self.owned:
            return None
        with self._lock:
            if self._wfd is None:
                return None
            return self._wseq, self._wsize

    def _start(self, segs: list[int]) -> tuple[int, int] | None:
        start, consistent = _start_of(self.path, self._ckpt, segs)
        if not consistent and start is not None:
            log.warning(
                "fleet spool %s: checkpoint past the data, replaying from %s", self.path, start
            )
            self._ckpt = _Checkpoint(start[0], start[1], self._ckpt.count)
        return start

    def read_batch(
        self,
        max_records: int = 1000,
        max_bytes: int = 8 * 1024 * 1024,
        after: Position | None = None,
    ) -> list[tuple[Position, Any]]:
        """The next records after the committed checkpoint, in append order, not removed.

        Calling again without :meth:`commit` returns the same records. At least one record is
        returned when any is pending, even if it is larger than ``max_bytes``. Damaged frames
        come back as ``{"__corrupt__": True, ...}`` records. Never raises for bad data on disk;
        an I/O error ends the batch early (logged) and the next call retries.

        ``after`` (the last position of a batch read before and not committed yet) reads the
        records that follow that batch instead, so the next batch can be read while the
        previous one is being written; a position at or before the checkpoint is ignored.
        """
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        with self._rlock:
            self._check_usable()
            snap = self._snapshot()
            out: list[tuple[Position, Any]] = []
            try:
                segs = _list_segments(self.path)
            except OSError as exc:
                log.error("fleet spool %s: cannot list segments: %s", self.path, exc)
                return out
            start = self._start(segs)
            if start is None:
                return out
            nbytes = 0
            index = self._ckpt.count
            if after is not None:
                after = Position(*after)
                if (after.segment, after.offset) > start and after.index >= index:
                    start, index = (after.segment, after.offset), after.index + 1
            chunk = max(_SCAN_CHUNK, min(max_bytes, _READ_CHUNK))
            for seq in segs:
                if seq < start[0]:
                    continue
                if snap is not None and seq > snap[0]:
                    break
                live = snap is not None and seq == snap[0]
                off = start[1] if seq == start[0] else 0
                try:
                    fd = _open_ro(os.path.join(self.path, _seg_name(seq)))
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    log.error("fleet spool %s: cannot open segment %s: %s", self.path, seq, exc)
                    return out
                try:
                    limit = snap[1] if live else os.fstat(fd).st_size
                    for kind, foff, end, _ts, data in _iter_frames(
                        fd, off, limit, payloads=True, chunk=chunk
                    ):
                        if kind == _TORN:
                            if not live:
                                self._report_torn(seq, foff, limit)
                            break
                        if out and (len(out) >= max_records or nbytes + end - foff > max_bytes):
                            return out
                        if kind == _FRAME:
                            try:
                                record = _unpack(data)
                            except Exception as exc:  # noqa: BLE001 - a corrupt frame is quarantined, not fatal
                                record = self._corrupt(
                                    seq,
                                    foff,
                                    f"undecodable payload: {exc}",
                                    bytes(data[:RAW_LIMIT]),
                                )
                        else:
                            record = self._corrupt(seq, foff, data[0], data[1])
                        out.append((Position(seq, end, index), record))
                        index += 1
                        nbytes += end - foff
                except OSError as exc:
                    log.error("fleet spool %s: cannot read segment %s: %s", self.path, seq, exc)
                    return out
                finally:
                    os.close(fd)
                if len(out) >= max_records:
                    break
            return out

    def _corrupt(self, seq: int, off: int, error: str, raw: bytes) -> dict:
        if self.owned:
            self._depth_dirty = True  # a resync may have merged frames: recount once
        if (seq, off) not in self._reported and len(self._reported) < 10000:
            self._reported.add((seq, off))
            log.warning(
                "fleet spool %s: corrupt record in segment %s at offset %s: %s",
                self.path,
                seq,
                off,
                error,
            )
        return {
            "__corrupt__": True,
            "error": error,
            "raw": raw[:RAW_LIMIT],
            "segment": seq,
            "offset": off,
            "spool": self.name,
        }

    def _report_torn(self, seq: int, off: int, limit: int) -> None:
        if (seq, -off) in self._reported:
            return
        self._reported.add((seq, -off))
        log.warning(
            "fleet spool %s: dropping torn frame (%s bytes) at the end of segment %s; "
            "its append never completed",
            self.path,
            limit - off,
            seq,
        )

    # ---------------------------------------------------------------- committing

    def commit(self, position: Position | tuple[int, int, int]) -> None:
        """Mark everything up to and including ``position`` as stored.

        Persists the checkpoint atomically (temp + fsync + rename) and deletes segments that are
        fully consumed. Committing a position at or before the current checkpoint is a no-op.
        """
        try:
            pos = Position(*position)
        except TypeError as exc:
            raise TypeError(f"not a spool position: {position!r}") from exc
        if not all(type(v) is int and v >= 0 for v in pos):
            raise TypeError(f"not a spool position: {position!r}")
        with self._rlock:
            self._check_usable()
            if (pos.segment, pos.offset) <= (self._ckpt.segment, self._ckpt.offset):
                return
            ckpt = _Checkpoint(pos.segment, pos.offset, pos.index + 1)
            self._write_checkpoint(ckpt)
            with self._lock:
                self._ckpt = ckpt
                self._oldest_known = False
                active = self._wseq if self.owned and self._wfd is not None else None
            self._drop_consumed(pos, active)

    def _write_checkpoint(self, ckpt: _Checkpoint) -> None:
        data = json.dumps(
            {"segment": ckpt.segment, "offset": ckpt.offset, "count": ckpt.count, "time": _now()}
        ).encode()
        tmp = os.path.join(self.path, _CHECKPOINT_TMP)
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, os.path.join(self.path, CHECKPOINT_NAME))
        _fsync_dir(self.path)

    def _drop_consumed(self, pos: Position, active: int | None) -> None:
        try:
            segs = _list_segments(self.path)
        except OSError:
            return
        for seq in segs:  # ascending, so an interrupted cleanup never leaves a gap
            if seq == active or seq > pos.segment:
                break
            path = os.path.join(self.path, _seg_name(seq))
            if seq == pos.segment:
                size = _size(path)
                if size is None or pos.offset < size:
                    break
            _remove_quietly(path)

    # ---------------------------------------------------------------- status

    def _depth_locked(self) -> int:
        """Pending records; caller holds ``_rlock``."""
        if self._depth_dirty:
            self._recount()
        with self._lock:
            return max(0, self._total - self._ckpt.count)

    def _recount(self) -> None:
        snap = self._snapshot()
        with self._lock:
            total_at_snap = self._total
        segs = _list_segments(self.path)
        start = self._start(segs)
        limits = {snap[0]: snap[1]} if snap is not None else None
        pending, _ = _scan(self.path, segs, start, limits=limits)
        with self._lock:
            self._total = self._ckpt.count + pending + (self._total - total_at_snap)
        self._depth_dirty = False

    def depth(self) -> int:
        """Records appended but not yet committed (corrupt regions count as one record)."""
        if self.owned and not self._depth_dirty:
            with self._lock:
                return max(0, self._total - self._ckpt.count)
        with self._rlock:
            try:
                return self._depth_locked()
            except OSError as exc:
                log.warning("fleet spool %s: cannot count records: %s", self.path, exc)
                with self._lock:
                    return max(0, self._total - self._ckpt.count)

    def oldest_age(self) -> float | None:
        """Seconds since the oldest uncommitted record was appended, or None when none is."""
        if self.depth() == 0:
            return None
        with self._lock:
            if self._oldest_known:
                oldest = self._oldest
                return None if oldest is None else max(0.0, _now() - oldest)
        with self._rlock:
            snap = self._snapshot()
            try:
                segs = _list_segments(self.path)
                start = self._start(segs)
                limits = {snap[0]: snap[1]} if snap is not None else None
                _, first_ts = _scan(self.path, segs, start, limits=limits, first_only=True)
            except OSError as exc:
                log.warning("fleet spool %s: cannot read oldest record: %s", self.path, exc)
                return None
            with self._lock:
                if not self._oldest_known:
                    self._oldest, self._oldest_known = first_ts, True
            return None if first_ts is None else max(0.0, _now() - first_ts)

    # ---------------------------------------------------------------- closing

    def close(self) -> None:
        """Release the lock. When nothing is pending, remove the spool directory first."""
        with self._rlock:
            with self._lock:
                if self._closed:
                    return
                self._closed = True
                wfd, self._wfd = self._wfd, None
            if wfd is not None:
                try:
                    os.fsync(wfd)  # once, cheap: a clean shutdown also survives power loss
                except OSError:
                    pass
                os.close(wfd)
            try:
                pending = self._depth_locked()
            except OSError:
                pending = 1
            if pending == 0:
                self._remove_all()
            lock_fd, self._lock_fd = self._lock_fd, None
            if lock_fd is not None:
                os.close(lock_fd)  # releases the flock
            _LIVE.discard(self)

    def _remove_all(self) -> None:
        try:
            segs = _list_segments(self.path)
        except OSError:
            segs = []
        for seq in segs:
            _remove_quietly(os.path.join(self.path, _seg_name(seq)))
        for name in (CHECKPOINT_NAME, _CHECKPOINT_TMP, LOCK_NAME):
            _remove_quietly(os.path.join(self.path, name))
        try:
            os.rmdir(self.path)
        except OSError as exc:
            log.warning("fleet spool: leaving %s behind: %s", self.path, exc)

    def _forget_after_fork(self) -> None:
        """In a forked child: drop the inherited descriptors; the parent keeps the lock."""
        self._lock = threading.Lock()
        self._rlock = threading.RLock()
        if self._closed:
            return
        self._closed = True
        self._forked = True
        for fd in (self._wfd, self._lock_fd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._wfd = self._lock_fd = None


def _clean_stale_staging(path: str) -> None:
    """Remove a staging directory left by a process that died inside :meth:`Spool.open`."""
    try:
        if _now() - os.stat(path, follow_symlinks=False).st_mtime < _STALE_STAGING_SECONDS:
            return
        fd = os.open(os.path.join(path, LOCK_NAME), os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return
    try:
        _remove_quietly(os.path.join(path, LOCK_NAME))
        os.rmdir(path)
    except OSError:
        pass
    finally:
        os.close(fd)


def spool_status(base_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Totals across every spool under ``base_dir``, without taking any lock.

    Returns ``{"spools": n, "depth": records pending, "oldest_age": seconds or None,
    "bytes": segment bytes on disk}``. A frame still being written by a live owner is not
    counted; spools that vanish while being read are skipped.
    """
    result: dict[str, Any] = {"spools": 0, "depth": 0, "oldest_age": None, "bytes": 0}
    base = os.fspath(base_dir)
    try:
        entries = sorted(os.scandir(base), key=lambda e: e.name)
    except OSError:
        return result
    oldest: float | None = None
    for entry in entries:
        try:
            if not _OWNER_RE.match(entry.name) or not entry.is_dir(follow_symlinks=False):
                continue
            ckpt, _ = _load_checkpoint(entry.path)
            segs = _list_segments(entry.path)
            start, _ = _start_of(entry.path, ckpt, segs)
            pending, first_ts = _scan(entry.path, segs, start)
            size = sum(_size(os.path.join(entry.path, _seg_name(seq))) or 0 for seq in segs)
        except OSError:
            continue
        result["spools"] += 1
        result["depth"] += pending
        result["bytes"] += size
        if first_ts is not None and (oldest is None or first_ts < oldest):
            oldest = first_ts
    if oldest is not None:
        result["oldest_age"] = max(0.0, _now() - oldest)
    return result
