"""The audit chain's anchor beside the key file, on each backend: a truncated or rewritten
chain is named even when the ``audit_head`` row went with it."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat

import pytest
from sqlalchemy import delete

from saltext_fleet.core import anchor as core_anchor
from saltext_fleet.core import audit as core_audit
from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.store import audit as store_audit
from saltext_fleet.store import engine as store_engine
from saltext_fleet.store.models import AuditEvent, AuditHead


@pytest.fixture
def key_file(tmp_path):
    path = str(tmp_path / "pki" / "fleet.fernet")
    core_secrets.Vault.open(path)
    return path


@pytest.fixture
def anchored(engine, key_file):
    anchor = store_audit.use_anchor(engine, key_file)
    yield anchor
    store_audit._anchors.pop(engine, None)  # the engine outlives the test (one per URL)


def _record(engine, n, start=0):
    for i in range(start, start + n):
        store_audit.record(engine, "user:alice", "key.accept", f"web{i}", {"n": i})


def _anchor_file(anchor):
    with open(anchor.path, encoding="ascii") as handle:
        return json.load(handle)


def test_each_append_moves_the_signed_anchor(engine, anchored, key_file):
    _record(engine, 5)
    assert anchored.path == key_file + ".audit-anchor"
    assert stat.S_IMODE(os.stat(anchored.path).st_mode) == 0o600
    on_disk = _anchor_file(anchored)
    newest = store_audit.events(engine, limit=1)[0]
    assert (on_disk["last_id"], on_disk["last_hash"]) == (5, newest["hash"])
    result = store_audit.verify(engine)
    assert result["ok"] is True and result["checked"] == 5
    assert result["anchor"]["last_id"] == 5 and "warning" not in result


def test_a_rolled_back_append_does_not_move_the_anchor(engine, anchored):
    _record(engine, 2)
    with pytest.raises(RuntimeError), engine.begin() as conn:
        store_audit.append(conn, "user:alice", "key.accept", "ghost")
        raise RuntimeError("the action failed after its audit event")
    assert _anchor_file(anchored)["last_id"] == 2
    _record(engine, 1, start=2)  # the next append on the same pooled connection
    assert _anchor_file(anchored)["last_id"] == 3
    assert store_audit.verify(engine)["ok"] is True


def test_a_truncation_with_the_head_row_is_named(engine, anchored):
    _record(engine, 5)
    with engine.begin() as conn:
        conn.execute(delete(AuditEvent).where(AuditEvent.id >= 4))
        conn.execute(delete(AuditHead))
    result = store_audit.verify(engine)
    assert result["ok"] is False and result["reason"] == "truncated"
    assert result["broken"] == 5
    assert "the chain ends at id 3 but the anchor says 5" in result["message"]
    # Without the anchor, this very database verifies: the anchor is what saw it.
    assert store_audit.verify(engine, anchor=None) == result
    store_audit._anchors.pop(engine)
    assert store_audit.verify(engine)["ok"] is True


def test_a_rewritten_chain_is_named(engine, anchored):
    _record(engine, 5)
    # Someone with the database alone writes a whole new, internally valid chain.
    forged = core_audit.chain(
        core_audit.GENESIS,
        [
            {"id": i, "at": core_audit.utc_now(), "actor": "user:mallory", "action": "x.y",
             "target": f"t{i}"}
            for i in range(1, 6)
        ],
    )  # fmt: skip
    with engine.begin() as conn:
        conn.execute(delete(AuditEvent))
        conn.execute(delete(AuditHead))
        for row in forged:
            conn.execute(
                AuditEvent.__table__.insert().values(**{**row, "at": store_audit._parse(row["at"])})
            )
    result = store_audit.verify(engine)
    assert result["ok"] is False and result["reason"] == "rewritten" and result["broken"] == 5
    assert "the chain was rewritten" in result["message"]


def test_events_after_the_anchor_are_reported_not_failed(engine, anchored):
    _record(engine, 2)
    store_audit._anchors.pop(engine)  # a writer without the key file
    _record(engine, 3, start=2)
    store_audit._anchors[engine] = anchored
    result = store_audit.verify(engine)
    assert result["ok"] is True and result["anchor"]["last_id"] == 2
    assert result["warning"].startswith("3 events after the anchor (id 2)")


def test_a_missing_or_altered_anchor_is_reported(engine, anchored):
    assert store_audit.verify(engine)["ok"] is True  # an empty chain needs no anchor
    _record(engine, 3)
    os.unlink(anchored.path)
    missing = store_audit.verify(engine)
    assert missing["ok"] is False and missing["reason"] == "anchor"
    assert "there is no audit anchor at" in missing["message"]
    _record(engine, 1, start=3)  # the next event writes it again
    assert store_audit.verify(engine)["ok"] is True
    record = _anchor_file(anchored)
    record["last_id"] = 2  # "moved back" without the key
    with open(anchored.path, "w", encoding="ascii") as handle:
        json.dump(record, handle)
    altered = store_audit.verify(engine)
    assert altered["ok"] is False and altered["reason"] == "anchor"
    assert "signature does not match" in altered["message"]
    with open(anchored.path, "w", encoding="ascii") as handle:
        handle.write("not json")
    assert "not an anchor file" in store_audit.verify(engine)["message"]


def test_the_anchor_only_moves_forward(engine, anchored):
    _record(engine, 4)
    vault = anchored.vault()
    first = store_audit.events(engine, limit=4)[-1]
    assert core_anchor.advance(anchored.path, vault, 1, first["hash"]) is False
    assert _anchor_file(anchored)["last_id"] == 4


def test_rotation_resigns_the_anchor(engine, anchored, key_file):
    _record(engine, 3)
    old_key = _anchor_file(anchored)["key_id"]
    new = core_secrets.rotate(key_file)
    assert store_audit.resign_anchor(engine) is True
    core_secrets.retire(key_file)
    assert _anchor_file(anchored)["key_id"] == new.key_id != old_key
    assert store_audit.verify(engine)["ok"] is True
    # Not re-signed before the old key is retired: the anchor no longer checks.
    _record(engine, 1, start=3)
    core_secrets.rotate(key_file)
    core_secrets.retire(key_file)
    result = store_audit.verify(engine)
    assert result["ok"] is False and result["reason"] == "anchor"


def _append_anchored(url, key_file, n, barrier):
    from saltext_fleet.store import audit as child_audit
    from saltext_fleet.store import engine as child_engine

    child_engine.dispose_all()
    eng = child_engine.get_engine(url)
    child_audit.use_anchor(eng, key_file)
    barrier.wait()
    for i in range(n):
        child_audit.record(eng, "reactor", "key.pending", f"p{i}")


def test_appends_from_several_processes_keep_the_anchor_at_the_end(db_url, key_file):
    engine = store_engine.get_engine(db_url)
    store_engine.ensure_schema(engine)
    store_engine.dispose_all()
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(3)
    children = [
        ctx.Process(target=_append_anchored, args=(db_url, key_file, 15, barrier)) for _ in range(3)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(120)
    assert [c.exitcode for c in children] == [0, 0, 0]
    engine = store_engine.get_engine(db_url)
    anchor = store_audit.Anchor(key_file)
    result = store_audit.verify(engine, anchor=anchor)
    assert result["ok"] is True and result["checked"] == 45
    assert result["anchor"]["last_id"] == 45 and "warning" not in result
