"""The returner's durable spool: real files under tmp_path, real processes where a crash matters."""

from __future__ import annotations

import datetime
import decimal
import json
import os
import pathlib
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest

from saltext_fleet.store import spool as spool_mod
from saltext_fleet.store.spool import Position, Spool, SpoolClosedError, spool_status

SMALL = 4096  # segment size that forces many segments


def segments(sp: Spool) -> list[pathlib.Path]:
    return sorted(pathlib.Path(sp.path).glob("*.seg"))


def drain(sp: Spool, max_records: int = 1000, max_bytes: int = 8 << 20) -> list:
    """Read everything pending, committing each batch; return the records."""
    out = []
    while True:
        batch = sp.read_batch(max_records=max_records, max_bytes=max_bytes)
        if not batch:
            return out
        out.extend(rec for _, rec in batch)
        sp.commit(batch[-1][0])


def frame_offsets(path: pathlib.Path) -> list[int]:
    """Start offset of every frame in a clean segment file."""
    data = path.read_bytes()
    offs, off = [], 0
    while off < len(data):
        offs.append(off)
        _magic, length, _ts, _crc = spool_mod._HEAD.unpack_from(data, off)
        off += spool_mod.HEADER_SIZE + length
    return offs


def close_keeping(sp: Spool) -> str:
    """Close with records pending: the directory stays for adoption."""
    path = sp.path
    sp.close()
    assert os.path.isdir(path)
    return path


# --------------------------------------------------------------------------- order, commit


def test_order_preserved_across_segments_and_batches(tmp_path):
    sp = Spool.open(tmp_path, segment_bytes=SMALL)
    for i in range(500):
        sp.append({"rid": f"r{i}", "i": i, "pad": "x" * (i % 97)})
    sp.append_many({"rid": f"r{i}", "i": i} for i in range(500, 1000))
    assert len(segments(sp)) > 10
    seen, positions = [], []
    while True:
        batch = sp.read_batch(max_records=37)
        if not batch:
            break
        assert len(batch) <= 37
        positions.extend(pos for pos, _ in batch)
        seen.extend(rec["i"] for _, rec in batch)
        sp.commit(batch[-1][0])
    assert seen == list(range(1000))
    assert positions == sorted(positions) and len(set(positions)) == 1000
    assert all(isinstance(p, Position) for p in positions)
    # consumed segments are deleted, only the active one is left
    assert len(segments(sp)) == 1
    assert sp.depth() == 0
    sp.close()
    assert not os.path.exists(sp.path)


def test_read_without_commit_returns_same_records_and_partial_commit(tmp_path):
    sp = Spool.open(tmp_path, segment_bytes=SMALL)
    sp.append_many({"i": i} for i in range(100))
    first = sp.read_batch(max_records=10)
    again = sp.read_batch(max_records=10)
    assert first == again
    sp.commit(first[4][0])  # commit in the middle of a batch
    assert [r["i"] for _, r in sp.read_batch(max_records=3)] == [5, 6, 7]
    assert sp.depth() == 95
    sp.commit(first[2][0])  # older position: no-op
    assert sp.depth() == 95
    assert [r["i"] for r in drain(sp)] == list(range(5, 100))
    sp.close()


def test_max_bytes_bounds_batch_but_returns_at_least_one(tmp_path):
    sp = Spool.open(tmp_path)
    sp.append_many({"i": i, "blob": "z" * 10_000} for i in range(10))
    batch = sp.read_batch(max_records=1000, max_bytes=25_000)
    assert [r["i"] for _, r in batch] == [0, 1]
    tiny = sp.read_batch(max_bytes=1)
    assert len(tiny) == 1 and tiny[0][1]["i"] == 0
    with pytest.raises(ValueError):
        sp.read_batch(max_records=0)
    sp.close()


def test_commit_then_reopen_resumes_after_checkpoint(tmp_path):
    sp = Spool.open(tmp_path, segment_bytes=SMALL)
    sp.append_many({"rid": f"r{i}", "i": i} for i in range(300))
    batch = sp.read_batch(max_records=120)
    sp.commit(batch[-1][0])
    ckpt = json.loads((pathlib.Path(sp.path) / "checkpoint").read_text())
    assert ckpt["count"] == 120
    assert not (pathlib.Path(sp.path) / "checkpoint.tmp").exists()
    path = close_keeping(sp)

    (adopted,) = Spool.adopt_orphans(tmp_path)
    assert adopted.path == path and not adopted.owned
    assert adopted.depth() == 180
    assert [r["i"] for r in drain(adopted, max_records=50)] == list(range(120, 300))
    with pytest.raises(SpoolClosedError):
        adopted.append({"i": -1})  # adopted spools are read-only
    adopted.close()
    assert not os.path.exists(path)
    assert Spool.adopt_orphans(tmp_path) == []


def test_close_removes_directory_only_when_all_committed(tmp_path):
    sp = Spool.open(tmp_path)
    assert stat.S_IMODE(os.stat(sp.path).st_mode) == 0o700
    sp.close()
    assert os.listdir(tmp_path) == []
    sp.close()  # idempotent
    with pytest.raises(SpoolClosedError):
        sp.append({"x": 1})


def test_new_base_dir_is_private(tmp_path):
    base = tmp_path / "cache" / "fleet-spool"
    sp = Spool.open(base)
    assert stat.S_IMODE(os.stat(base).st_mode) == 0o700
    assert pathlib.Path(sp.path).parent == base
    assert stat.S_IMODE(os.stat(pathlib.Path(sp.path) / "lock").st_mode) == 0o600
    sp.close()


# --------------------------------------------------------------------------- crashes, adoption

CHILD = textwrap.dedent(
    """
    import sys, time
    from saltext_fleet.store.spool import Spool
    base, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    sp = Spool.open(base, segment_bytes=8192)
    if mode == "fixed":
        for i in range(n):
            sp.append({"rid": "r%d" % i, "i": i, "blob": b"\\x00" * (i % 50)})
        print("ready", sp.path, flush=True)
        time.sleep(600)
    else:
        i = 0
        while True:
            sp.append({"rid": "r%d" % i, "i": i})
            i += 1
            if i % 100 == 0:
                print(i, flush=True)
    """
)


def start_child(base, n, mode):
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(base), str(n), mode],
        stdout=subprocess.PIPE,
        text=True,
    )


def kill(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_sigkilled_owner_is_adopted_and_replayed_exactly(tmp_path):
    n = 2500
    proc = start_child(tmp_path, n, "fixed")
    try:
        line = proc.stdout.readline().split()
        assert line and line[0] == "ready", line
        child_path = line[1]
        # the owner is alive: its spool must not be adopted, but status sees it
        assert Spool.adopt_orphans(tmp_path) == []
        status = spool_status(tmp_path)
        assert status["spools"] == 1 and status["depth"] == n
    finally:
        kill(proc)
    (adopted,) = Spool.adopt_orphans(tmp_path)
    assert adopted.path == child_path
    assert adopted.depth() == n
    records = drain(adopted, max_records=333)
    assert [r["i"] for r in records] == list(range(n))
    assert all(r["blob"] == b"\x00" * (r["i"] % 50) for r in records)
    adopted.close()
    assert spool_status(tmp_path) == {"spools": 0, "depth": 0, "oldest_age": None, "bytes": 0}


def test_sigkill_mid_stream_loses_no_acknowledged_record(tmp_path):
    proc = start_child(tmp_path, 0, "stream")
    acked = 0
    try:
        while acked < 3000:
            line = proc.stdout.readline()
            assert line, "child died"
            acked = int(line)
    finally:
        kill(proc)
    (adopted,) = Spool.adopt_orphans(tmp_path)
    got = [r["i"] for r in drain(adopted)]
    assert len(got) >= acked  # everything the child saw append() return for
    assert got == list(range(len(got)))  # in order, no gaps, no duplicates
    adopted.close()


def test_adoption_refuses_live_owner_in_same_process(tmp_path):
    owner = Spool.open(tmp_path)
    owner.append({"i": 1})
    assert Spool.adopt_orphans(tmp_path) == []
    owner.append({"i": 2})
    assert [r["i"] for r in drain(owner)] == [1, 2]
    owner.close()


def test_concurrent_adopters_get_each_orphan_once(tmp_path):
    for k in range(4):
        sp = Spool.open(tmp_path)
        sp.append_many({"k": k, "i": i} for i in range(10))
        close_keeping(sp)
    first = Spool.adopt_orphans(tmp_path)
    second = Spool.adopt_orphans(tmp_path)  # first still holds all four locks
    assert len(first) == 4 and second == []
    got = sorted((r["k"], r["i"]) for sp in first for r in drain(sp))
    assert got == [(k, i) for k in range(4) for i in range(10)]
    for sp in first:
        sp.close()
    assert os.listdir(tmp_path) == []


def test_fork_child_cannot_use_or_steal_parent_spool(tmp_path):
    sp = Spool.open(tmp_path)
    sp.append({"i": 0})
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            try:
                sp.append({"i": 99})
            except SpoolClosedError:
                code = 2 if Spool.adopt_orphans(tmp_path) else 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    sp.append({"i": 1})  # the parent's spool is intact and still locked
    assert Spool.adopt_orphans(tmp_path) == []
    assert [r["i"] for r in drain(sp)] == [0, 1]
    sp.close()


# --------------------------------------------------------------------------- damage on disk


def test_torn_tail_frame_is_dropped_on_adoption(tmp_path):
    sp = Spool.open(tmp_path)
    sp.append_many({"i": i, "pad": "p" * 50} for i in range(10))
    (seg,) = segments(sp)
    path = close_keeping(sp)
    size = seg.stat().st_size
    os.truncate(seg, size - 7)  # cut inside the last frame's payload
    (adopted,) = Spool.adopt_orphans(tmp_path)
    assert adopted.depth() == 9
    assert [r["i"] for r in drain(adopted)] == list(range(9))
    adopted.close()
    assert not os.path.exists(path)


def test_torn_header_at_tail_is_dropped(tmp_path):
    sp = Spool.open(tmp_path)
    sp.append_many({"i": i} for i in range(5))
    (seg,) = segments(sp)
    last = frame_offsets(seg)[-1]
    close_keeping(sp)
    os.truncate(seg, last + 3)  # only 3 bytes of the last header made it
    (adopted,) = Spool.adopt_orphans(tmp_path)
    records = drain(adopted)
    assert [r["i"] for r in records] == [0, 1, 2, 3]
    adopted.close()


def test_frame_being_written_is_ignored_while_owner_lives(tmp_path):
    sp = Spool.open(tmp_path)
    sp.append_many({"i": i} for i in range(5))
    (seg,) = segments(sp)
    partial = spool_mod._frame(spool_mod._pack({"i": 5}), time.time())[:-4]
    with open(seg, "ab") as fh:  # a write in progress, as another reader may see it
        fh.write(partial)
    assert spool_status(tmp_path)["depth"] == 5
    assert [r["i"] for _, r in sp.read_batch()] == [0, 1, 2, 3, 4]
    sp.close()


def test_flipped_payload_byte_yields_one_corrupt_record(tmp_path):
    sp = Spool.open(tmp_path)
    sp.append_many({"i": i, "pad": "q" * 40} for i in range(20))
    (seg,) = segments(sp)
    offs = frame_offsets(seg)
    data = bytearray(seg.read_bytes())
    data[offs[7] + spool_mod.HEADER_SIZE + 10] ^= 0xFF
    seg.write_bytes(bytes(data))
    close_keeping(sp)
    (adopted,) = Spool.adopt_orphans(tmp_path)
    records = drain(adopted)
    assert len(records) == 20
    corrupt = [r for r in records if r.get("__corrupt__")]
    assert len(corrupt) == 1
    assert "checksum" in corrupt[0]["error"]
    assert isinstance(corrupt[0]["raw"], bytes) and b"qqqq" in corrupt[0]["raw"]
    assert [r["i"] for r in records if "i" in r] == [i for i in range(20) if i != 7]
    adopted.close()


def test_garbage_length_resyncs_to_next_frame(tmp_path):
    sp = Spool.open(tmp_path)
    sp.append_many({"i": i} for i in range(20))
    (seg,) = segments(sp)
    offs = frame_offsets(seg)
    data = bytearray(seg.read_bytes())
    data[offs[5] + 2 : offs[5] + 6] = b"\xff\xff\xff\x7f"  # absurd length
    seg.write_bytes(bytes(data))
    close_keeping(sp)
    (adopted,) = Spool.adopt_orphans(tmp_path)
    assert adopted.depth() == 20
    records = drain(adopted)
    assert [r.get("i", "X") for r in records] == [*range(5), "X", *range(6, 20)]
    bad = records[5]
    assert bad["__corrupt__"] and "header" in bad["error"]
    assert len(bad["raw"]) == offs[6] - offs[5]
    adopted.close()


def test_damaged_last_header_skips_to_next_segment(tmp_path):
    sp = Spool.open(tmp_path, segment_bytes=1024)
    sp.append_many({"i": i, "pad": "w" * 30} for i in range(60))
    segs = segments(sp)
    assert len(segs) >= 3
    first = segs[0]
    offs = frame_offsets(first)
    data = bytearray(first.read_bytes())
    data[offs[-1]] ^= 0xFF  # magic of the segment's last frame
    first.write_bytes(bytes(data))
    records = drain(sp)  # the owner reads its own damaged spool without raising
    assert sum(1 for r in records if r.get("__corrupt__")) == 1
    good = [r["i"] for r in records if "i" in r]
    assert good == [i for i in range(60) if i != len(offs) - 1]
    assert sp.depth() == 0
    sp.close()


def test_random_bytes_segment_and_junk_never_raise(tmp_path):
    sp = Spool.open(tmp_path, segment_bytes=1024)
    sp.append_many({"i": i, "pad": "v" * 30} for i in range(60))
    segs = segments(sp)
    assert len(segs) >= 3
    per_seg = {s: len(frame_offsets(s)) for s in segs}
    path = pathlib.Path(close_keeping(sp))
    victim = segs[1]
    victim.write_bytes(os.urandom(victim.stat().st_size))
    (path / "junk.txt").write_text("hello")
    (path / "notes.seg").write_bytes(b"\x00" * 10)
    (path / "000000000099.seg.bak").write_bytes(os.urandom(100))
    os.symlink("/etc/passwd", path / "link")
    (tmp_path / "not-a-spool").mkdir()
    (tmp_path / "stray-file").write_bytes(os.urandom(50))

    (adopted,) = Spool.adopt_orphans(tmp_path)
    records = drain(adopted)
    good = [r["i"] for r in records if "i" in r]
    lost = set(range(per_seg[segs[0]], per_seg[segs[0]] + per_seg[segs[1]]))
    assert good == [i for i in range(60) if i not in lost]
    assert any(r.get("__corrupt__") for r in records)
    assert all(len(r["raw"]) <= 64 * 1024 for r in records if r.get("__corrupt__"))
    status = spool_status(tmp_path)
    assert status["depth"] == 0
    adopted.close()
    assert (path / "junk.txt").exists()  # unknown files are never deleted


def test_unreadable_segment_is_never_taken_for_empty(tmp_path, monkeypatch):
    sp = Spool.open(tmp_path)
    sp.append_many({"i": i} for i in range(5))
    (seg,) = segments(sp)
    close_keeping(sp)
    real_open_ro = spool_mod._open_ro

    def denied(path):
        if path.endswith(".seg"):
            raise PermissionError(13, "Permission denied", path)
        return real_open_ro(path)

    monkeypatch.setattr(spool_mod, "_open_ro", denied)
    (adopted,) = Spool.adopt_orphans(tmp_path)
    assert adopted.depth() >= 1
    assert spool_status(tmp_path)["depth"] >= 1
    assert adopted.read_batch() == []  # logged, retried later; never raises
    adopted.close()
    assert seg.exists()
    monkeypatch.undo()
    (adopted,) = Spool.adopt_orphans(tmp_path)
    assert [r["i"] for r in drain(adopted)] == list(range(5))
    adopted.close()


@pytest.mark.parametrize(
    "checkpoint",
    [b'{"segm', b"", b"\xff\xfe garbage", b'{"segment": -1, "offset": 0}', b"[1, 2]"],
)
def test_damaged_checkpoint_replays_everything(tmp_path, checkpoint):
    sp = Spool.open(tmp_path, segment_bytes=SMALL)
    sp.append_many({"i": i} for i in range(200))
    batch = sp.read_batch(max_records=50)
    sp.commit(batch[-1][0])
    path = pathlib.Path(close_keeping(sp))
    (path / "checkpoint").write_bytes(checkpoint)
    assert spool_status(tmp_path)["depth"] >= 150
    (adopted,) = Spool.adopt_orphans(tmp_path)
    got = [r["i"] for r in drain(adopted)]
    # nothing uncommitted is lost; replayed duplicates are harmless (rid dedup)
    assert got == sorted(got) and set(range(50, 200)) <= set(got)
    adopted.close()


@pytest.mark.parametrize("where", ["offset", "segment"])
def test_checkpoint_past_the_end_is_distrusted(tmp_path, where):
    sp = Spool.open(tmp_path, segment_bytes=SMALL)
    sp.append_many({"i": i} for i in range(200))
    batch = sp.read_batch(max_records=50)
    sp.commit(batch[-1][0])
    pos = batch[-1][0]
    path = pathlib.Path(close_keeping(sp))
    if where == "offset":
        bogus = {"segment": pos.segment, "offset": 10**9, "count": 50}
    else:
        bogus = {"segment": 10**6, "offset": 0, "count": 50}
    (path / "checkpoint").write_text(json.dumps(bogus))
    (adopted,) = Spool.adopt_orphans(tmp_path)
    got = [r["i"] for r in drain(adopted)]
    assert set(range(50, 200)) <= set(got) and got == sorted(got)
    adopted.close()


def test_write_error_leaves_no_partial_frame(tmp_path, monkeypatch):
    sp = Spool.open(tmp_path)
    sp.append({"i": 0})
    real_write = os.write

    def half_then_enospc(fd, data):
        if fd == sp._wfd:
            real_write(fd, bytes(data)[: len(data) // 2])
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(spool_mod.os, "write", half_then_enospc)
    with pytest.raises(OSError):
        sp.append({"i": 1, "pad": "x" * 100})
    monkeypatch.undo()
    sp.append({"i": 2})
    records = drain(sp)
    assert [r["i"] for r in records] == [0, 2]
    sp.close()


# --------------------------------------------------------------------------- numbers


def test_depth_oldest_age_and_status(tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(spool_mod, "_now", lambda: clock[0])
    a = Spool.open(tmp_path, segment_bytes=SMALL)
    assert a.depth() == 0 and a.oldest_age() is None
    a.append_many({"i": i} for i in range(3))
    clock[0] = 1010.0
    a.append({"i": 3})
    a.append({"i": 4})
    clock[0] = 1030.0
    assert a.depth() == 5
    assert a.oldest_age() == pytest.approx(30.0)
    batch = a.read_batch(max_records=3)
    a.commit(batch[-1][0])
    assert a.depth() == 2
    assert a.oldest_age() == pytest.approx(20.0)

    clock[0] = 1005.0
    b = Spool.open(tmp_path, segment_bytes=SMALL)
    b.append_many({"j": j, "pad": "y" * 100} for j in range(40))  # several segments
    b_path = close_keeping(b)
    clock[0] = 1040.0

    status = spool_status(tmp_path)
    seg_bytes = sum(p.stat().st_size for p in tmp_path.glob("*/*.seg"))
    assert status == {
        "spools": 2,
        "depth": 2 + 40,
        "oldest_age": pytest.approx(35.0),
        "bytes": seg_bytes,
    }

    (adopted,) = Spool.adopt_orphans(tmp_path)
    assert adopted.path == b_path
    assert adopted.depth() == 40
    assert adopted.oldest_age() == pytest.approx(35.0)
    batch = adopted.read_batch(max_records=15)
    adopted.commit(batch[-1][0])
    assert adopted.depth() == 25
    assert spool_status(tmp_path)["depth"] == 2 + 25

    drain(a)
    assert a.depth() == 0 and a.oldest_age() is None
    drain(adopted)
    assert spool_status(tmp_path)["depth"] == 0
    a.close()
    adopted.close()
    assert spool_status(tmp_path) == {"spools": 0, "depth": 0, "oldest_age": None, "bytes": 0}


def test_status_of_missing_base(tmp_path):
    assert spool_status(tmp_path / "nope") == {
        "spools": 0,
        "depth": 0,
        "oldest_age": None,
        "bytes": 0,
    }
    assert Spool.adopt_orphans(tmp_path / "nope") == []


def test_owner_depth_recounts_after_resync(tmp_path):
    sp = Spool.open(tmp_path)
    sp.append_many({"i": i} for i in range(10))
    (seg,) = segments(sp)
    offs = frame_offsets(seg)
    data = bytearray(seg.read_bytes())
    for k in (3, 4, 5):  # three neighbouring headers destroyed: one corrupt region
        data[offs[k]] ^= 0xFF
    with open(seg, "r+b") as fh:
        fh.write(bytes(data))
    records = [r for _, r in sp.read_batch()]
    assert len(records) == 8 and records[3]["__corrupt__"]
    assert sp.depth() == 8
    sp.append({"i": 10})
    assert sp.depth() == 9
    assert len(drain(sp)) == 9 and sp.depth() == 0
    sp.close()


# --------------------------------------------------------------------------- threads


def test_threads_append_concurrently_each_record_read_once(tmp_path):
    sp = Spool.open(tmp_path, segment_bytes=64 * 1024)
    threads_n, per_thread = 8, 2500
    got: list = []
    stop = threading.Event()

    def writer(t):
        for i in range(per_thread):
            if i % 10 == 0:
                sp.append_many([{"t": t, "i": i + k} for k in range(5)])
            elif i % 10 < 5:
                continue
            else:
                sp.append({"t": t, "i": i})

    def flusher():
        while not stop.is_set():
            batch = sp.read_batch(max_records=500)
            if batch:
                got.extend(rec for _, rec in batch)
                sp.commit(batch[-1][0])

    reader = threading.Thread(target=flusher)
    reader.start()
    writers = [threading.Thread(target=writer, args=(t,)) for t in range(threads_n)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    reader.join()
    got.extend(drain(sp))
    pairs = [(r["t"], r["i"]) for r in got]
    assert len(pairs) == len(set(pairs)) == threads_n * per_thread
    assert sorted(pairs) == [(t, i) for t in range(threads_n) for i in range(per_thread)]
    for t in range(threads_n):  # each thread's own order survives interleaving
        mine = [i for tt, i in pairs if tt == t]
        assert mine == list(range(per_thread))
    assert sp.depth() == 0
    sp.close()


# --------------------------------------------------------------------------- odd shapes


class Weird:
    def __repr__(self):
        return "<Weird thing>"


class BadRepr:
    def __repr__(self):
        raise RuntimeError("no")


def test_odd_records_round_trip(tmp_path):
    big = "s" * (1 << 20)
    cyclic: list = [1]
    cyclic.append(cyclic)
    deep: list = []
    cur = deep
    for _ in range(3000):  # beyond msgpack's nesting limit
        nxt: list = []
        cur.append(nxt)
        cur = nxt
    when = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc)
    uid = uuid.UUID("12345678-1234-5678-1234-567812345678")
    records = [
        {
            "rid": "a",
            "bytes": b"\x00\xff\x80",
            "nul": "a\x00b",
            "big": big,
            "bigb": b"B" * (1 << 20),
        },
        {"rid": "b", "set": {3, 1, 2}, "fset": frozenset({"b", "a"}), "mixed": {1, "x"}},
        {
            "rid": "c",
            "tuple": (1, (2, 3)),
            "when": when,
            "dec": decimal.Decimal("1.50"),
            "uuid": uid,
        },
        {"rid": "d", "path": pathlib.PurePosixPath("/srv/x"), "obj": Weird(), "bad": BadRepr()},
        {"rid": "e", "huge": 2**70, "neg": -(2**70), "surrogate": "x\udcff"},
        {"rid": "f", "setkey": {frozenset({1}): "v"}, 1: "intkey", b"k": "byteskey"},
        {"rid": "g", "cyclic": cyclic},
        {"rid": "h", "deep": deep},
        {"rid": "i", "nested": {"a": [{"b": [None, True, 1.5, -3]}]}, "empty": {}, "none": None},
    ]
    sp = Spool.open(tmp_path)
    for rec in records:
        sp.append(rec)
    out = {r["rid"]: r for r in drain(sp)}
    assert list(out) == list("abcdefghi")
    assert not any(r.get("__corrupt__") for r in out.values())

    a = out["a"]
    assert a["bytes"] == b"\x00\xff\x80" and a["nul"] == "a\x00b"
    assert a["big"] == big and a["bigb"] == b"B" * (1 << 20)
    b = out["b"]
    assert b["set"] == [1, 2, 3] and b["fset"] == ["a", "b"]  # sets become sorted lists
    assert sorted(b["mixed"], key=repr) == sorted([1, "x"], key=repr)
    c = out["c"]
    assert c["tuple"] == [1, [2, 3]]
    assert c["when"] == "2024-05-06T07:08:09+00:00"
    assert c["dec"] == "1.50" and c["uuid"] == str(uid)
    d = out["d"]
    assert d["path"] == "/srv/x" and d["obj"] == "<Weird thing>"
    assert d["bad"].startswith("<unrepresentable BadRepr")
    e = out["e"]
    assert e["huge"] == str(2**70) and e["neg"] == str(-(2**70))
    assert e["surrogate"] == "x\\udcff"
    f = out["f"]
    assert f["setkey"] == {"[1]": "v"} and f[1] == "intkey" and f[b"k"] == "byteskey"
    assert out["g"]["cyclic"] == [1, "<cycle>"]
    depth, cur = 0, out["h"]["deep"]
    while isinstance(cur, list) and cur:
        cur, depth = cur[0], depth + 1
    assert 50 < depth < 3000 and isinstance(cur, str)  # cut off with a repr, never raised
    assert out["i"] == records[-1]
    sp.close()


def test_oversized_record_is_refused_cleanly(tmp_path, monkeypatch):
    monkeypatch.setattr(spool_mod, "MAX_RECORD_BYTES", 1000)
    sp = Spool.open(tmp_path)
    with pytest.raises(ValueError, match="limit"):
        sp.append_many([{"i": 0}, {"blob": "x" * 2000}])
    sp.append({"i": 1})
    assert [r["i"] for r in drain(sp)] == [1]
    sp.close()


def test_fsync_mode_and_big_record_larger_than_segment(tmp_path):
    sp = Spool.open(tmp_path, segment_bytes=SMALL, fsync=True)
    sp.append({"i": 0})
    sp.append({"i": 1, "blob": "b" * (3 * SMALL)})  # alone in its own segment
    sp.append_many({"i": i} for i in range(2, 50))
    assert len(segments(sp)) >= 3
    assert [r["i"] for r in drain(sp, max_bytes=100)] == list(range(50))
    sp.close()


def test_append_and_read_100k_small_records_is_fast(tmp_path):
    rec = {
        "rid": "r" * 32,
        "id": "minion-001",
        "fun": "test.ping",
        "return": True,
        "pad": "p" * 100,
    }
    sp = Spool.open(tmp_path)
    started = time.perf_counter()
    for i in range(100_000):
        rec["i"] = i
        sp.append(rec)
    appended = time.perf_counter() - started
    started = time.perf_counter()
    count = len(drain(sp))
    read = time.perf_counter() - started
    assert count == 100_000
    # ~0.5 s each on the development box; generous bounds catch only real regressions
    assert appended < 6.0, appended
    assert read < 6.0, read
    sp.close()
