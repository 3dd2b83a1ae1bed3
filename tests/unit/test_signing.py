"""Signatures on the master's own fleet/... events (core/signing, master/eventsig)."""

import multiprocessing
import os

import pytest

from saltext_fleet.core import signing
from saltext_fleet.master import eventsig

KEY = bytes(range(32))


def test_a_signed_event_checks_and_any_change_breaks_it():
    data = {"id": "web-1", "digest": "a" * 64, "previous": None}
    good = signing.signed(KEY, "fleet/inventory/changed", data)
    signing.check(KEY, "fleet/inventory/changed", good)
    signing.check(KEY, "fleet/inventory/changed", {**good, "_stamp": "2026-12-05T00:00:00"})
    with pytest.raises(signing.SignatureError, match="not this master's"):
        signing.check(KEY, "fleet/inventory/changed", {**good, "id": "web-2"})
    with pytest.raises(signing.SignatureError, match="not this master's"):
        signing.check(KEY, "fleet/states/ran", good)
    with pytest.raises(signing.SignatureError, match="not this master's"):
        signing.check(bytes(32), "fleet/inventory/changed", good)
    with pytest.raises(signing.SignatureError, match="not signed"):
        signing.check(KEY, "fleet/inventory/changed", data)
    with pytest.raises(signing.SignatureError, match="not a mapping"):
        signing.check(KEY, "fleet/inventory/changed", ["id", "web-1"])
    with pytest.raises(signing.SignatureError, match="not signed"):
        signing.check(KEY, "fleet/inventory/changed", {**data, "sig": 12})


def _key_of(cachedir, queue):
    queue.put(eventsig.signing_key({"cachedir": cachedir}))


def test_every_process_of_a_master_gets_the_same_private_key(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_key_of, args=(str(tmp_path), queue)) for _ in range(4)]
    for proc in procs:
        proc.start()
    keys = {queue.get(timeout=60) for _ in procs}
    for proc in procs:
        proc.join(30)
    assert len(keys) == 1 and len(next(iter(keys))) == 32
    path = eventsig.key_path({"cachedir": str(tmp_path)})
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700
    assert [p for p in os.listdir(os.path.dirname(path)) if p.endswith(".tmp")] == []


def test_a_broken_key_file_is_a_clear_error(tmp_path):
    path = eventsig.key_path({"cachedir": str(tmp_path)})
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as fh:
        fh.write(b"short")
    with pytest.raises(signing.SignatureError, match="5 bytes, not a 32-byte event key"):
        eventsig.signing_key({"cachedir": str(tmp_path)})
