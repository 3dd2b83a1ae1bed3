"""The KVM action slots and the ISO library's rows on SQLite and real PostgreSQL: a power
slot frees itself after its interval, an ISO slot is held until given back or until its hold
lapses, two concurrent takers never both win (threads, one connection each), and schema 0011
goes down and up again."""

import datetime as dt
import threading

import pytest
from sqlalchemy import inspect

from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.kvm.errors import KvmRateLimitError
from saltext_fleet.store import engine as store_engine
from saltext_fleet.store import kvm as store_kvm
from saltext_fleet.store import kvm_actions as store_actions

T0 = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.timezone.utc)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


@pytest.fixture
def device(engine, tmp_path):
    vault = core_secrets.Vault.open(tmp_path / "vault" / "fleet.keys")
    with engine.begin() as conn:
        store_kvm.add_device(conn, vault, "pikvm-1", {"host": "10.0.0.1", "password": "pw"})
        store_kvm.add_device(conn, vault, "pikvm-2", {"host": "10.0.0.2", "password": "pw"})
    return "pikvm-1"


def test_a_power_slot_is_taken_once_per_interval(engine, device):
    assert store_actions.take(engine, device, "power", "ui:alice", 10, now=at(0))
    with pytest.raises(KvmRateLimitError) as refused:
        store_actions.take(engine, device, "click", "user:root", 10, now=at(9), interval=10)
    assert refused.value.retry_at == at(10) and "ui:alice" in str(refused.value)
    assert "kvm pikvm-1: click refused" in str(refused.value)
    # another device has its own slot, and the media slot of the same device is apart
    assert store_actions.take(engine, "pikvm-2", "power", "user:root", 10, now=at(9))
    assert store_actions.take(engine, device, "iso_eject", "user:root", 300, now=at(9))
    assert store_actions.take(engine, device, "power", "user:root", 10, now=at(10))
    with engine.connect() as conn:
        slot = store_actions.slots(conn, device)["power"]
    assert slot["actor"] == "user:root" and slot["until"] == at(20)


def test_a_media_slot_is_held_until_given_back_or_its_hold_lapses(engine, device):
    token = store_actions.take(
        engine, device, "iso_mount", "ui:alice", 300, now=at(0), image="a.iso", total_bytes=1000
    )
    assert store_actions.renew(engine, device, "media", token, 300, now=at(200), done_bytes=400)
    with engine.connect() as conn:
        running = store_actions.running_media(conn, device, now=at(250))
    assert running["image"] == "a.iso" and running["percent"] == 40
    assert running["actor"] == "ui:alice"
    with pytest.raises(KvmRateLimitError, match="40% uploaded") as refused:
        store_actions.take(engine, device, "iso_mount", "user:root", 300, now=at(499))
    assert refused.value.retry_at is None
    assert not store_actions.renew(engine, device, "media", "not-the-token", 300, now=at(1))
    assert not store_actions.release(engine, device, "media", "not-the-token")
    assert store_actions.release(engine, device, "media", token)
    with engine.connect() as conn:
        assert store_actions.running_media(conn, device, now=at(300)) is None
    second = store_actions.take(engine, device, "iso_eject", "user:root", 300, now=at(300))
    # a holder that stops making progress loses the slot when its hold lapses ...
    third = store_actions.take(engine, device, "iso_mount", "user:bob", 300, now=at(600))
    # ... and cannot renew or give back what it no longer holds
    assert not store_actions.renew(engine, device, "media", second, 300, now=at(601))
    assert not store_actions.release(engine, device, "media", second)
    assert store_actions.release(engine, device, "media", third)


def race(engine, device: str, action: str, now: dt.datetime) -> list[tuple[str, str]]:
    """Two threads released together at ``device``'s slot, each on a connection of its own:
    what each got (``won`` with its token, or ``refused`` with the message)."""
    barrier = threading.Barrier(2)
    outcomes: list[tuple[str, str]] = []

    def attempt(who: str) -> None:
        barrier.wait()
        try:
            outcomes.append(("won", store_actions.take(engine, device, action, who, 10, now=now)))
        except KvmRateLimitError as exc:
            outcomes.append(("refused", str(exc)))

    threads = [threading.Thread(target=attempt, args=(f"user:{n}",)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return outcomes


@pytest.mark.parametrize("action", ["power", "iso_mount"])
def test_two_concurrent_takers_exactly_one_wins(engine, device, action):
    """Eight rounds of two concurrent takers of the same slot: each round, exactly one wins."""
    for round_ in range(8):
        outcomes = race(engine, device, action, at(1000 * round_))
        assert sorted(kind for kind, _ in outcomes) == ["refused", "won"], outcomes


def test_removing_a_device_takes_its_slots_along(engine, device, tmp_path):
    store_actions.take(engine, device, "power", "user:root", 10, now=at(0))
    with engine.begin() as conn:
        assert store_kvm.remove_device(conn, device)
    with engine.connect() as conn:
        assert store_actions.slots(conn, device) == {}


def test_library_rows(engine):
    with engine.begin() as conn:
        assert (
            store_actions.add_iso(conn, "a.iso", "aa" * 32, 10, "/srv/a.iso", "user:root", now=T0)
            is None
        )
    with pytest.raises(store_kvm.KvmStoreError, match="already has an image named 'a.iso'"):
        with engine.begin() as conn:
            store_actions.add_iso(conn, "a.iso", "bb" * 32, 11, None, "user:root")
    with engine.begin() as conn:
        old = store_actions.add_iso(conn, "a.iso", "bb" * 32, 11, None, "ui:bob", overwrite=True)
    assert old["sha256"] == "aa" * 32 and old["added_by"] == "user:root"
    with engine.connect() as conn:
        found = store_actions.iso(conn, "a.iso")
        assert (found["sha256"], found["size"], found["added_by"]) == ("bb" * 32, 11, "ui:bob")
        assert [i["name"] for i in store_actions.isos(conn)] == ["a.iso"]
        with pytest.raises(store_kvm.KvmStoreError, match="no image named 'b.iso'"):
            store_actions.iso(conn, "b.iso")
    with engine.begin() as conn:
        assert store_actions.remove_iso(conn, "a.iso")["sha256"] == "bb" * 32
        assert store_actions.remove_iso(conn, "a.iso") is None


@pytest.mark.empty_db
def test_schema_0011_goes_down_and_up(db_url):
    engine = store_engine.get_engine(db_url)
    store_engine.upgrade(engine)
    assert {"kvm_isos", "kvm_action_slots"} <= set(inspect(engine).get_table_names())
    from alembic import command

    cfg = store_engine.alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0010")
    tables = set(inspect(engine).get_table_names())
    assert "kvm_isos" not in tables and "kvm_action_slots" not in tables and "kvm_devices" in tables
    store_engine.upgrade(engine)
    assert store_engine.current_revision(engine) == store_engine.head_revision()
