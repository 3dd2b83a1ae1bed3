"""PiKVM devices in the store, on SQLite and real PostgreSQL: registration validated whole
with credentials only as vault tokens, polls recorded with the alerts their status changes
raise, history oldest first, removal taking polls and credentials along."""

import datetime as dt

import pytest
from sqlalchemy import select

from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.kvm import health
from saltext_fleet.store import kvm as store_kvm
from saltext_fleet.store import secrets as store_secrets
from saltext_fleet.store.models import KvmPoll, Secret
from tests.support.store import dump_tables

T0 = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.timezone.utc)
PASSWORD = "kvm-pa55-word-7731"
TOTP = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


@pytest.fixture
def vault(tmp_path):
    return core_secrets.Vault.open(tmp_path / "vault" / "fleet.keys")


def options(**extra):
    return {"host": "pikvm-1.lab.example", "password": PASSWORD, "fingerprint": "ab" * 32, **extra}


def test_register_keeps_credentials_in_the_vault_only(engine, vault):
    with engine.begin() as conn:
        assert store_kvm.add_device(conn, vault, "pikvm-1", options(totp_secret=TOTP), "web-1")
        assert not store_kvm.add_device(conn, vault, "pikvm-1", options(port=8443), "web-1")
    with engine.connect() as conn:
        found = store_kvm.device(conn, "pikvm-1")
        assert found["host"] == "pikvm-1.lab.example" and found["port"] == 8443
        assert found["node"] == "web-1" and found["state"] == "online"
        assert "password" not in found["options"] and "totp_secret" not in found["options"]
        opts = store_kvm.device_options(conn, vault, ["pikvm-1"])["pikvm-1"]
        assert opts.password == PASSWORD and opts.totp_secret is None  # the update dropped it
        assert opts.fingerprint == "ab" * 32 and opts.port == 8443
        names = conn.execute(
            select(Secret.name).where(Secret.scope == store_secrets.KVM_SCOPE)
        ).scalars()
        assert sorted(names) == ["password"]
        assert [d["name"] for d in store_kvm.devices(conn, node="web-1")] == ["pikvm-1"]
        assert store_kvm.devices(conn, node="web-2") == []
    dumped = dump_tables(engine)
    assert PASSWORD not in dumped and TOTP not in dumped


@pytest.mark.parametrize(
    ("name", "opts", "message"),
    [
        ("../etc", options(), "device name"),
        ("pikvm-2", {"host": "pikvm-2"}, "option 'password': required"),
        ("pikvm-2", options(port=70000), "option 'port'"),
        ("pikvm-2", options(colour="red"), "unknown option"),
        ("pikvm-2", "host=pikvm-2", "options must be a mapping"),
    ],
)
def test_a_bad_registration_stores_nothing(engine, vault, name, opts, message):
    with pytest.raises(store_kvm.KvmStoreError, match=message):
        with engine.begin() as conn:
            store_kvm.add_device(conn, vault, name, opts)
    with engine.connect() as conn:
        assert store_kvm.devices(conn) == []
        assert conn.execute(select(Secret.id)).first() is None


def test_polls_update_status_raise_alerts_once_and_make_history(engine, vault):
    with engine.begin() as conn:
        store_kvm.add_device(conn, vault, "pikvm-1", options())
        store_kvm.add_device(conn, vault, "pikvm-2", options(host="pikvm-2"))
    hot = health.Poll(online=True, power=True, temperature=85.0, uptime_s=60)
    raised = []
    for i in range(4):
        with engine.begin() as conn:
            raised.append(
                store_kvm.record_polls(
                    conn,
                    {
                        "pikvm-1": health.missed("kvm pikvm-1: timed out"),
                        "pikvm-2": hot,
                        "not-registered": hot,
                    },
                    now=T0 + dt.timedelta(seconds=15 * i),
                )
            )
    assert raised == [
        {"pikvm-2": ["over_temperature"]},
        {},
        {"pikvm-1": ["offline"]},
        {},
    ]
    with engine.connect() as conn:
        one = store_kvm.device(conn, "pikvm-1")
        assert one["state"] == "offline" and one["status"]["missed"] == 4
        assert one["last_poll"]["error"] == "kvm pikvm-1: timed out"
        assert store_kvm.device(conn, "pikvm-2")["status"]["hot"] is True
    history = store_kvm.poll_history(engine, "pikvm-2")
    assert [h["temperature"] for h in history] == [85.0] * 4
    assert history[0]["polled_at"] == T0.isoformat()  # aware UTC on both backends
    assert history[-1]["polled_at"] == (T0 + dt.timedelta(seconds=45)).isoformat()
    assert len(store_kvm.poll_history(engine, "pikvm-2", since=T0 + dt.timedelta(seconds=30))) == 2
    assert len(store_kvm.poll_history(engine, "pikvm-2", limit=3)) == 3
    with engine.begin() as conn:
        back = store_kvm.record_polls(
            conn, {"pikvm-1": health.Poll(online=True, temperature=40.0)}, now=T0 + dt.timedelta(1)
        )
    assert back == {"pikvm-1": ["online"]}


def test_remove_takes_polls_and_credentials_along(engine, vault):
    with engine.begin() as conn:
        store_kvm.add_device(conn, vault, "pikvm-1", options(totp_secret=TOTP))
        store_kvm.record_polls(conn, {"pikvm-1": health.Poll(online=True)}, now=T0)
    with engine.begin() as conn:
        assert store_kvm.remove_device(conn, "pikvm-1")
        assert not store_kvm.remove_device(conn, "pikvm-1")
    with engine.connect() as conn:
        assert conn.execute(select(KvmPoll.id)).first() is None
        assert conn.execute(select(Secret.id)).first() is None
        with pytest.raises(store_kvm.KvmStoreError, match="no KVM device named 'pikvm-1'"):
            store_kvm.device(conn, "pikvm-1")
        with pytest.raises(store_kvm.KvmStoreError, match="no KVM device named 'pikvm-1'"):
            store_kvm.device_options(conn, vault, ["pikvm-1"])


def test_every_devices_credentials_come_back_its_own(engine, vault):
    # device_options reads all credentials in one query: each device must get its own
    with engine.begin() as conn:
        for i in range(3):
            extra = {"totp_secret": TOTP} if i == 1 else {}
            store_kvm.add_device(
                conn, vault, f"pikvm-{i}", {**options(), "password": f"pw-{i}-x", **extra}
            )
        store_secrets.put_secret(conn, vault, "node", "pikvm-0", "password", "not-this")
    with engine.connect() as conn:
        every = store_kvm.device_options(conn, vault)
        some = store_kvm.device_options(conn, vault, ["pikvm-2"])
        found = store_secrets.get_secrets(
            conn, vault, store_secrets.KVM_SCOPE, ["password"], owners=["pikvm-0", "pikvm-9"]
        )
    assert {name: o.password for name, o in every.items()} == {
        "pikvm-0": "pw-0-x",
        "pikvm-1": "pw-1-x",
        "pikvm-2": "pw-2-x",
    }
    assert [n for n, o in every.items() if o.totp_secret] == ["pikvm-1"]
    assert list(some) == ["pikvm-2"] and some["pikvm-2"].password == "pw-2-x"
    assert found == {("pikvm-0", "password"): "pw-0-x"}
