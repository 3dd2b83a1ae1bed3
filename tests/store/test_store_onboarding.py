"""Keys, enrolments, node groups, secrets and the audit chain in each store."""

import datetime as dt
import multiprocessing

import pytest
from sqlalchemy import text, update

from saltext_fleet.core import audit as core_audit
from saltext_fleet.core import gate as core_gate
from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.store import audit as store_audit
from saltext_fleet.store import engine as store_engine
from saltext_fleet.store import gate as store_gate
from saltext_fleet.store import secrets as store_secrets
from saltext_fleet.store.models import AuditEvent

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.timezone.utc)


def test_a_key_is_new_once_and_its_retries_counted(engine):
    with engine.begin() as conn:
        assert store_gate.key_seen(conn, "web1", "aa:bb", "PUB", NOW) == (True, "pending")
        later = NOW + dt.timedelta(minutes=5)
        assert store_gate.key_seen(conn, "web1", "aa:bb", "PUB", later) == (False, "pending")
        # another key for the same id is another row
        assert store_gate.key_seen(conn, "web1", "cc:dd", "PUB2", later)[0] is True
        store_gate.set_key_state(conn, "web1", "accepted", "user:alice", fingerprint="aa:bb")
        rows = {r["fingerprint"]: r for r in store_gate.key_rows(conn, ["web1"])}
    assert rows["aa:bb"]["attempts"] == 2 and rows["aa:bb"]["state"] == "accepted"
    assert rows["aa:bb"]["first_seen"] == NOW.isoformat()
    assert rows["aa:bb"]["last_seen"] == later.isoformat()
    assert rows["aa:bb"]["decided_by"] == "user:alice"
    assert rows["cc:dd"]["state"] == "pending"
    with engine.begin() as conn, pytest.raises(ValueError, match="state"):
        store_gate.set_key_state(conn, "web1", "approved", "x")


def test_enrolments_are_one_time_and_one_live_per_id(engine):
    with engine.begin() as conn:
        first = store_gate.create_enrolment(
            conn, "web1", "a" * 43, dt.timedelta(hours=1), "u", now=NOW
        )
        second = store_gate.create_enrolment(
            conn, "web1", "b" * 43, dt.timedelta(hours=1), "u", node_group="builders", now=NOW
        )
        assert second["revoked"] == 1
        old = store_gate.find_enrolment(conn, "web1", "a" * 43)
        new = store_gate.find_enrolment(conn, "web1", "b" * 43)
        assert old.state == "revoked" and new.state == "live" and new.node_group == "builders"
        assert store_gate.find_enrolment(conn, "web1", "c" * 43) is None
        decision = core_gate.decide("web1", "fp", "b" * 43, new, NOW)
        assert decision.accept
        assert store_gate.use_enrolment(conn, new.id, "fp", NOW) is True
        assert store_gate.use_enrolment(conn, new.id, "fp", NOW) is False  # once
        again = store_gate.find_enrolment(conn, "web1", "b" * 43)
        assert core_gate.decide("web1", "fp", "b" * 43, again, NOW).reason == "used"
        # expiry
        store_gate.create_enrolment(conn, "web2", "d" * 43, dt.timedelta(seconds=1), "u", now=NOW)
        assert store_gate.expire_enrolments(conn, NOW + dt.timedelta(seconds=2)) == 1
        listed = {e["id"]: e for e in store_gate.enrolments(conn)}
    assert first["enrolment"] != second["enrolment"]
    assert listed["web2"]["state"] == "expired"
    # only hashes are stored
    with engine.connect() as conn:
        dump = str(conn.execute(text("SELECT * FROM enrolments")).all())
    assert "a" * 43 not in dump and "b" * 43 not in dump and core_gate.token_hash("b" * 43) in dump


def test_ids_expecting_a_key_are_those_with_a_live_fingerprint_enrolment(engine):
    """The recorder asks which pending ids may be accepted without a token: only a live
    enrolment that names a fingerprint counts (not a token-only one, not a used one)."""
    hour = dt.timedelta(hours=1)
    with engine.begin() as conn:
        store_gate.create_enrolment(conn, "fp-live", "e" * 43, hour, "u", fingerprint="aa", now=NOW)
        store_gate.create_enrolment(conn, "token-only", "f" * 43, hour, "u", now=NOW)
        used = store_gate.create_enrolment(
            conn, "fp-used", "g" * 43, hour, "u", fingerprint="bb", now=NOW
        )
        store_gate.use_enrolment(conn, used["enrolment"], "bb", NOW)
        many = [f"other-{i}" for i in range(1200)] + ["fp-live", "token-only", "fp-used"]
        assert store_gate.ids_expecting_a_key(conn, many) == {"fp-live"}
        assert store_gate.ids_expecting_a_key(conn, []) == set()


def test_node_status_and_group(engine):
    with engine.begin() as conn:
        assert store_gate.set_status(conn, ["web1", "web2"], "online", NOW) == 2
        store_gate.set_group(conn, "web1", "builders", NOW)
        store_gate.set_status(conn, ["web1"], "offline", NOW + dt.timedelta(minutes=1))
        one = store_gate.node_status(conn, "web1")
        two = store_gate.node_status(conn, "web2")
    assert (one["status"], one["group"]) == ("offline", "builders")
    assert two["status"] == "online" and two["group"] is None


def test_audit_chain_appends_verifies_and_names_an_edited_row(engine):
    for i in range(30):
        store_audit.record(engine, "user:alice", "key.accept", f"web{i}", {"n": i, "note": "ünï"})
    result = store_audit.verify(engine)
    assert result["ok"] is True and result["checked"] == 30
    events = store_audit.events(engine, limit=5)
    assert [e["target"] for e in events] == [f"web{i}" for i in range(29, 24, -1)]
    # an edited row is named
    with engine.begin() as conn:
        conn.execute(update(AuditEvent).where(AuditEvent.id == 17).values(actor="user:mallory"))
    broken = store_audit.verify(engine)
    assert broken["ok"] is False and broken["broken"] == 17 and broken["reason"] == "hash"
    assert broken["checked"] == 16


def test_audit_chain_notices_a_deleted_tail(engine):
    for i in range(5):
        store_audit.record(engine, "reactor", "key.pending", f"web{i}")
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_events WHERE id >= 4"))
    broken = store_audit.verify(engine)
    assert broken["ok"] is False and broken["reason"] == "head" and broken["broken"] == 5


def _append_many(url, n, barrier):
    from saltext_fleet.store import audit as child_audit
    from saltext_fleet.store import engine as child_engine

    child_engine.dispose_all()
    eng = child_engine.get_engine(url)
    barrier.wait()
    for i in range(n):
        child_audit.record(eng, "reactor", "key.pending", f"p{i}")


def test_appends_from_several_processes_keep_one_chain(db_url):
    engine = store_engine.get_engine(db_url)
    store_engine.ensure_schema(engine)
    store_engine.dispose_all()
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(3)
    children = [ctx.Process(target=_append_many, args=(db_url, 20, barrier)) for _ in range(3)]
    for child in children:
        child.start()
    for child in children:
        child.join(120)
    assert [c.exitcode for c in children] == [0, 0, 0]
    result = store_audit.verify(store_engine.get_engine(db_url))
    assert result == {**result, "ok": True, "checked": 60}


def test_secrets_are_encrypted_and_rotated(engine, tmp_path):
    key_file = str(tmp_path / "keys" / "fleet.fernet")
    vault = core_secrets.Vault.open(key_file)
    with engine.begin() as conn:
        store_secrets.set_group(
            conn,
            vault,
            "builders",
            ssh_user="admin",
            ssh_port=2222,
            states=["xcode"],
            credential_kind="password",
            credential="s3cret-pässword",
        )
        store_secrets.put_secret(conn, vault, "node", "web1", "api_token", "tok-123456")
        group = store_secrets.group(conn, "builders")
        assert store_secrets.group_credential(conn, vault, "builders") == (
            "password",
            "s3cret-pässword",
        )
    assert group["credential"] == "password" and group["secrets"] == ["ssh_credential"]
    assert "s3cret" not in str(group)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT value, key_id FROM secrets")).all()
    assert all(core_secrets.is_token(v) and k == vault.key_id for v, k in rows)
    # rotation: a new key re-encrypts everything; the old key can go
    new = core_secrets.rotate(key_file)
    assert store_secrets.reencrypt_all(engine, new) == {"reencrypted": 2}
    core_secrets.retire(key_file, keep=1)
    fresh = core_secrets.Vault.open(key_file)
    with engine.connect() as conn:
        assert store_secrets.get_secret(conn, fresh, "node", "web1", "api_token") == "tok-123456"
        keys = {k for (k,) in conn.execute(text("SELECT key_id FROM secrets"))}
    assert keys == {fresh.key_id} != {vault.key_id}
    with pytest.raises(core_secrets.SecretsError):
        vault.decrypt(rows[0][0]) and fresh.decrypt(rows[0][0])
    with engine.begin() as conn:
        store_gate.set_group(conn, "web7", "builders", NOW)
        store_gate.set_group(conn, "web8", "testers", NOW)
        assert store_secrets.delete_group(conn, "builders") is True
        assert store_secrets.secret_names(conn, "group", "builders") == []
        # the nodes that were in it are in no group now; others keep theirs
        assert store_gate.node_status(conn, "web7")["group"] is None
        assert store_gate.node_status(conn, "web8")["group"] == "testers"
        assert store_secrets.delete_group(conn, "builders") is False


def test_audit_rows_written_as_they_hash(engine):
    """What the database returns hashes the same as what was written (microseconds, UTC)."""
    at = dt.datetime(2026, 11, 29, 12, 0, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    with engine.begin() as conn:
        row = store_audit.append(conn, "user:bob", "baseline.set", "golden", {"x": 1.0}, at=at)
    assert row["at"] == "2026-11-29T10:00:00.123456Z"
    assert core_audit.verify([row])["ok"]
    assert store_audit.verify(engine)["ok"]
