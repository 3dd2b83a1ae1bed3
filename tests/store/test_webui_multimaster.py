"""Two masters' web UIs on one store (SQLite and PostgreSQL): two Flask apps, each with its
own :class:`~saltext_fleet.webui.base.WebContext` and vault as two ``fleet`` engines would
have, and nothing shared but the store and the vault's key file. A session made through one
is a session on the other; a TOTP code used on one is refused on the other; a lockout from
failed passwords on one holds on the other."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pyotp
import pytest
from sqlalchemy import func, select

from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.core import webauth
from saltext_fleet.store import secrets as store_secrets
from saltext_fleet.store import users as store_users
from saltext_fleet.store.models import Secret, UiEndedSession
from saltext_fleet.webui.security import fleet_secret_key
from tests.support.web import PASSWORD, account_csrf, make_app, post_code, post_login


def master_app(engine, key_file, legacy=None):
    """What a master's engine builds (webui/server.py ``build``): its own vault over the
    shared key file, the fleet's session key from the store."""
    vault = core_secrets.Vault.open(str(key_file))
    return make_app(
        engine, key_file, vault=vault, secret_key=fleet_secret_key(engine, vault, legacy)
    )


@pytest.fixture
def key_file(tmp_path):
    return tmp_path / "shared" / "fleet.fernet"


@pytest.fixture
def masters(engine, key_file):
    key_file.parent.mkdir()
    a, b = master_app(engine, key_file), master_app(engine, key_file)
    with engine.begin() as conn:
        store_users.create_user(conn, "alice", "operator", PASSWORD, rounds=4)
    return a, b


def test_the_session_key_is_stored_once_encrypted_and_kept(engine, tmp_path):
    vault = core_secrets.Vault.open(str(tmp_path / "k.fernet"))
    with engine.begin() as conn:
        first = store_secrets.shared_key(conn, vault, "ui", "session_key", "first-candidate")
        second = store_secrets.shared_key(conn, vault, "ui", "session_key", "second-candidate")
        token = conn.execute(select(Secret.value).where(Secret.scope == "fleet")).scalar_one()
    assert first == second == "first-candidate"
    assert "first-candidate" not in token
    # a master with another vault key cannot use it: it stops, naming the vault
    other = core_secrets.Vault.open(str(tmp_path / "other.fernet"))
    with engine.begin() as conn, pytest.raises(core_secrets.SecretsError, match="decrypt"):
        store_secrets.shared_key(conn, other, "ui", "session_key", "x")


def test_masters_starting_together_end_with_one_session_key(engine, tmp_path):
    key_file = tmp_path / "k.fernet"
    core_secrets.Vault.open(str(key_file))  # made once, as the shared file is
    keys, errors = [], []
    start = threading.Barrier(6)

    def master():
        try:
            vault = core_secrets.Vault.open(str(key_file))
            start.wait()
            keys.append(fleet_secret_key(engine, vault))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=master) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(keys) == 6 and len(set(keys)) == 1 and len(keys[0]) == 64
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Secret)).scalar() == 1


def test_the_old_key_file_seeds_the_fleet_key(engine, tmp_path):
    """An upgraded master's sessions survive: its old ``fleet-ui.secret`` becomes the fleet's
    key when it is the first to store one; a second master's own old file is then unused."""
    vault = core_secrets.Vault.open(str(tmp_path / "k.fernet"))
    old = tmp_path / "fleet-ui.secret"
    old.write_bytes(b"a" * 64)
    old.chmod(0o600)
    assert fleet_secret_key(engine, vault, str(old)) == b"a" * 64
    other = tmp_path / "other-ui.secret"
    other.write_bytes(b"b" * 64)
    other.chmod(0o600)
    assert fleet_secret_key(engine, vault, str(other)) == b"a" * 64


def test_a_session_made_on_one_master_works_on_the_other(masters):
    a, b = masters
    on_a = a.test_client()
    assert post_login(on_a, "alice").status_code == 302
    cookie = on_a.get_cookie("fleet_session").value
    on_b = b.test_client()
    on_b.set_cookie("fleet_session", cookie)
    assert on_b.get("/").status_code == 200
    assert on_b.get("/api/v1/nodes").status_code == 200
    # the CSRF token made on A is good on B (same key): a state change goes through
    token = account_csrf(on_a)
    revoke = {"revoke": "1"}
    assert (
        on_b.post("/account/token", data={**revoke, "csrf_token": "x" + token}).status_code == 403
    )
    assert on_b.post("/account/token", data={**revoke, "csrf_token": token}).status_code == 303
    # a cookie signed by a master with a key of its own opens nothing
    stray = make_app(a.extensions["fleet"].engine, None, vault=a.extensions["fleet"].vault)
    elsewhere = stray.test_client()
    elsewhere.set_cookie("fleet_session", cookie)
    assert elsewhere.get("/").status_code == 302


def test_a_totp_code_used_on_one_master_is_refused_on_the_other(masters, engine):
    a, b = masters
    secret = webauth.new_totp_secret()
    with engine.begin() as conn:
        store_users.set_totp(conn, a.extensions["fleet"].vault, "alice", secret)
    on_a, on_b = a.test_client(), b.test_client()
    assert post_login(on_a, "alice").status_code == 302
    assert post_login(on_b, "alice").status_code == 302
    code = pyotp.TOTP(secret).at(time.time())
    assert post_code(on_a, code).status_code == 302
    assert on_a.get("/").status_code == 200
    assert post_code(on_b, code).status_code == 401
    assert on_b.get("/").status_code == 302  # still only half logged in


def test_a_lockout_from_failures_on_one_master_holds_on_the_other(masters):
    a, b = masters
    on_a = a.test_client()
    for _ in range(5):
        assert post_login(on_a, "alice", "not it at all").status_code == 401
    assert post_login(on_a, "alice").status_code == 429
    # B saw no failure itself: the lock comes from the store
    assert b.extensions["fleet"].throttle.locked("user:alice") == 0.0
    refused = post_login(b.test_client(), "alice")
    assert refused.status_code == 429 and b"try again in" in refused.data


def test_a_logout_on_one_master_ends_the_session_on_the_other(masters, engine):
    a, b = masters
    on_a = a.test_client()
    assert post_login(on_a, "alice").status_code == 302
    cookie = on_a.get_cookie("fleet_session").value
    on_b = b.test_client()
    on_b.set_cookie("fleet_session", cookie)
    assert on_b.get("/").status_code == 200  # B has seen the session in use
    assert on_a.post("/logout", data={"csrf_token": account_csrf(on_a)}).status_code == 302
    assert on_b.get("/").status_code == 302
    replay = b.test_client()
    replay.set_cookie("fleet_session", cookie)
    assert replay.get("/api/v1/nodes").status_code == 401
    # B's live hub, which checks its sockets against the same record, sees it too
    sid = parse_session_id_of(a, cookie)
    assert sid in b.extensions["fleet"].ended_sessions


def parse_session_id_of(app, cookie):
    """The session id (``sid``) inside a session cookie, as the app reads it."""
    serializer = app.session_interface.get_signing_serializer(app)
    return serializer.loads(cookie)["sid"]


def test_ended_sessions_are_kept_until_their_cookies_expire(engine):
    t0 = dt.datetime(2026, 12, 5, 12, tzinfo=dt.timezone.utc)
    with engine.begin() as conn:
        store_users.end_session(conn, "s1", t0 + dt.timedelta(hours=12), now=t0)
        store_users.end_session(conn, "s1", t0 + dt.timedelta(hours=12), now=t0)  # twice: once
        assert store_users.session_ended(conn, "s1", now=t0 + dt.timedelta(hours=11))
        assert not store_users.session_ended(conn, "s2", now=t0)
        assert not store_users.session_ended(conn, "s1", now=t0 + dt.timedelta(hours=13))
        # a later logout drops the rows past their time
        store_users.end_session(
            conn, "s2", t0 + dt.timedelta(hours=30), now=t0 + dt.timedelta(hours=13)
        )
        rows = conn.execute(select(UiEndedSession.sid)).scalars().all()
    assert rows == ["s2"]
