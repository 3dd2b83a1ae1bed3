"""Alert routes' secrets in the vault (scope ``alert``, owner the route key), feeding a send."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.master import alertsend
from saltext_fleet.store import secrets as store_secrets
from saltext_fleet.store.models import Secret
from tests.support import alertsamples
from tests.support.alertreceiver import Receiver


@pytest.fixture
def vault(tmp_path):
    return core_secrets.Vault.open(tmp_path / "vault" / "fleet.keys")


def test_route_secrets_are_stored_encrypted_under_the_alert_scope(engine, vault):
    assert store_secrets.ALERT_SCOPE == "alert"
    with engine.begin() as conn:
        for destination, names in alertsend.SECRET_NAMES.items():
            for name in names:
                store_secrets.put_secret(
                    conn,
                    vault,
                    store_secrets.ALERT_SCOPE,
                    f"config:{destination}",
                    name,
                    f"{destination}-{name}-value",
                )
        raw = conn.execute(select(Secret.value).where(Secret.scope == "alert")).scalars().all()
        assert len(raw) == 4 and not any("-value" in str(token) for token in raw)
        got = store_secrets.get_secrets(
            conn, vault, store_secrets.ALERT_SCOPE, ["hmac", "url", "routing_key", "password"]
        )
    assert got == {
        ("config:webhook", "hmac"): "webhook-hmac-value",
        ("config:slack", "url"): "slack-url-value",
        ("config:pagerduty", "routing_key"): "pagerduty-routing_key-value",
        ("config:email", "password"): "email-password-value",
    }


def test_an_unknown_scope_is_still_refused(engine, vault):
    with engine.begin() as conn, pytest.raises(ValueError, match="scope: 'alerts'"):
        store_secrets.put_secret(conn, vault, "alerts", "config:x", "hmac", "v")


def test_a_secret_from_the_vault_signs_a_delivery(engine, vault):
    with engine.begin() as conn:
        store_secrets.put_secret(conn, vault, "alert", "ui:hook", "hmac", "from-the-vault")
    with engine.connect() as conn:
        secret = store_secrets.get_secret(conn, vault, "alert", "ui:hook", "hmac")
    with Receiver(secret="from-the-vault") as rx:
        assert alertsend.send("webhook", {"url": rx.url}, {"hmac": secret}, alertsamples.alert()).ok
        assert rx.requests[0].verified["id"] == 123
