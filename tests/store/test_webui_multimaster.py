"""Two masters' web UIs on one store (SQLite and PostgreSQL): two Flask apps, each with its
own :class:`~saltext_fleet.webui.base.WebContext` and vault as two ``fleet`` engines would
have, and nothing shared but the store and the vault's key file. A session made through one
is a session on the other; a TOTP code used on one is refused on the other; failed logins
through both add up to one lockout of the user or the client address, the login rate of an
address is one for both, a TOTP enrolment shown by one is confirmed through the other."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import threading
import time

import pyotp
import pytest
from sqlalchemy import func, insert, select

from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.core import webauth
from saltext_fleet.store import engine as store_engine
from saltext_fleet.store import secrets as store_secrets
from saltext_fleet.store import ui_limits
from saltext_fleet.store import users as store_users
from saltext_fleet.store.models import Node, Secret, UiEndedSession, UiLoginLimit
from saltext_fleet.webui import live
from saltext_fleet.webui.security import fleet_secret_key
from tests.support.sshd import free_port
from tests.support.store import dump_tables
from tests.support.waiting import wait_for
from tests.support.web import (
    PASSWORD,
    account_csrf,
    csrf_of,
    form_token,
    make_app,
    post_code,
    post_login,
)


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
    refused = post_login(b.test_client(), "alice")
    assert refused.status_code == 429 and b"try again in" in refused.data


def client_at(app, address):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def test_failures_spread_over_the_masters_add_up_to_a_lockout(masters, engine):
    """3 wrong passwords through A and 2 through B lock alice (5 in 15 minutes), on both;
    each master alone saw fewer than 5."""
    a, b = masters
    on_a, on_b = client_at(a, "10.1.0.1"), client_at(b, "10.2.0.1")
    for client in (on_a, on_b, on_a, on_b):
        assert post_login(client, "alice", "not it at all").status_code == 401
    assert post_login(client_at(b, "10.2.0.1"), "alice").status_code == 302  # 4: a success
    assert post_login(client_at(a, "10.1.0.1"), "alice").status_code == 302  # clears them
    for client in (on_a, on_b, on_a, on_b, on_a):
        assert post_login(client, "alice", "not it at all").status_code == 401
    for app in (a, b):
        refused = post_login(client_at(app, "10.3.0.1"), "alice")
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 800
    with engine.connect() as conn:
        rows = conn.execute(select(UiLoginLimit.kind, UiLoginLimit.key)).all()
    assert ("fail", "user:alice") in rows


def test_an_address_locked_through_one_master_is_locked_on_all(masters, engine):
    """Failures from one address, for many usernames, spread over A and B: the address is
    locked on both (its own limit, 50 by default; 6 here), other addresses are not."""
    a, b = masters
    for app in (a, b):
        app.extensions["fleet"].address_throttle = ui_limits.SharedThrottle(engine, 6)
    for n in range(6):
        client = client_at(a if n % 2 else b, "192.0.2.7")
        assert post_login(client, f"guess{n}", "not it at all").status_code == 401
    for app in (a, b):
        refused = post_login(client_at(app, "192.0.2.7"), "alice")  # right password
        assert refused.status_code == 429 and b"too many failed attempts" in refused.data
        assert post_login(client_at(app, "192.0.2.8"), "alice").status_code == 302
    # an IPv6 client counts with its /64: another address of it is locked too
    for n in range(6):
        client = client_at(a, f"2001:db8::{n + 1}")
        assert post_login(client, f"v6guess{n}", "wrong").status_code == 401
    assert post_login(client_at(b, "2001:db8::ffff"), "alice").status_code == 429
    assert post_login(client_at(b, "2001:db8:0:1::1"), "alice").status_code == 302


def test_the_login_rate_of_an_address_is_shared(masters, engine):
    """20 login posts at once per address, then one a second, for the fleet: what one master
    let through counts on the other (4 here, and hardly any refill)."""
    a, b = masters
    for app in (a, b):
        app.extensions["fleet"].login_rate = ui_limits.SharedRateLimit(engine, 0.01, 4)
    for app in (a, b, a, b):
        assert post_login(client_at(app, "198.51.100.5"), "nobody", "wrong").status_code == 401
    for app in (a, b):
        refused = post_login(client_at(app, "198.51.100.5"), "alice")
        assert refused.status_code == 429 and b"too many logins from your address" in refused.data
        assert int(refused.headers["Retry-After"]) >= 50
    assert post_login(client_at(b, "198.51.100.6"), "alice").status_code == 302


def test_a_totp_enrolment_shown_on_one_master_is_finished_on_the_other(masters, engine):
    """The user scans the QR code through A and types the first code through B: the
    pending secret is in the store, encrypted (never in clear in any table)."""
    a, b = masters
    on_a = a.test_client()
    assert post_login(on_a, "alice").status_code == 302
    page = on_a.get("/account").get_data(as_text=True)
    shown = re.search(r'id="totp-secret"[^>]*>([^<]+)<', page).group(1).replace(" ", "")
    text = dump_tables(engine)
    assert "totp-enrol:" in text  # the pending enrolment is there ...
    for form in (shown, shown.lower(), base64.b32decode(shown).hex()):
        assert form not in text  # ... encrypted
    on_b = b.test_client()
    on_b.set_cookie("fleet_session", on_a.get_cookie("fleet_session").value)
    again = on_b.get("/account").get_data(as_text=True)
    assert shown in again.replace(" ", "")  # B shows the same key, not a new one
    code = pyotp.TOTP(shown).now()
    done = on_b.post("/account/totp", data={"code": code, "csrf_token": csrf_of(again)})
    assert done.status_code == 200 and b"recovery" in done.data.lower()
    with engine.connect() as conn:
        assert store_users.totp_secret(conn, b.extensions["fleet"].vault, "alice") == shown
        names = store_secrets.secret_names(conn, store_secrets.USER_SCOPE, "alice")
    assert names == ["totp"]  # the pending one is gone


def test_login_counters_stay_bounded(engine):
    """Expired rows go; beyond the cap the rows closest to expiring go first (a flood of
    made-up addresses cannot grow the table without end); hostile keys stay short."""
    t0 = dt.datetime(2026, 12, 5, 12, tzinfo=dt.timezone.utc)
    rate = ui_limits.SharedRateLimit(engine, 1.0, 20, max_rows=50, cleanup_seconds=3600)
    throttle = ui_limits.SharedThrottle(engine, 5, max_rows=50, cleanup_seconds=3600)
    for n in range(40):
        assert rate.wait(webauth.address_key(f"10.0.{n}.1"), now=t0) == 0.0
    throttle.failure(webauth.user_key("x" * 10_000), now=t0)
    throttle.failure(webauth.address_key("\x00" * 500), now=t0)
    for _ in range(5):
        throttle.failure(webauth.user_key("bob"), now=t0)
    with engine.connect() as conn:
        keys = conn.execute(select(UiLoginLimit.key)).scalars().all()
    assert len(keys) == 43 and max(len(k) for k in keys) <= webauth.LIMIT_KEY_MAX
    with engine.begin() as conn:
        # a bucket that took one token is full again after a second: its row is worth nothing
        assert ui_limits.cleanup(conn, t0 + dt.timedelta(seconds=2), max_rows=50) == 40
        for n in range(60):
            conn.execute(
                insert(UiLoginLimit).values(
                    kind="rate",
                    key=f"ip:10.1.{n}.1",
                    count=0.0,
                    since=t0,
                    expires_at=t0 + dt.timedelta(seconds=20 + n),
                )
            )
        assert ui_limits.cleanup(conn, t0 + dt.timedelta(seconds=2), max_rows=50) == 13
        left = conn.execute(select(UiLoginLimit.key)).scalars().all()
    assert "user:bob" in left and "ip:10.1.0.1" not in left and len(left) == 50
    assert throttle.locked("user:bob", now=t0 + dt.timedelta(seconds=60)) > 800


def test_concurrent_failures_through_two_masters_are_all_counted(engine):
    """Two masters' threads counting failures of one key at once: none is lost (the row
    lock on PostgreSQL, the write lock on SQLite)."""
    throttles = [ui_limits.SharedThrottle(engine, 1000) for _ in range(2)]
    start = threading.Barrier(8)
    errors = []

    def fail(throttle):
        try:
            start.wait()
            for _ in range(10):
                throttle.failure("ip:203.0.113.9")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=fail, args=(throttles[n % 2],)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    with engine.connect() as conn:
        count = conn.execute(
            select(UiLoginLimit.count).where(UiLoginLimit.key == "ip:203.0.113.9")
        ).scalar_one()
    assert count == 80


def test_logins_fail_closed_when_the_store_is_away(tmp_path):
    """The database away (a PostgreSQL that refuses connections): a login is refused with
    503 saying why, never let in, never a traceback page."""
    dead = store_engine.get_engine(f"postgresql+psycopg://fleet@127.0.0.1:{free_port()}/fleet")
    app = make_app(dead, tmp_path / "fleet.fernet")
    client = app.test_client()
    token = form_token(client)
    resp = client.post(
        "/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token}
    )
    assert resp.status_code == 503, resp.data[:300]
    assert b"database cannot be reached" in resp.data and resp.headers["Retry-After"] == "5"
    assert client.get("/api/v1/nodes").status_code in (401, 503)


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


class LiveSocket:
    """A browser's live-update socket as A's hub sees it (the handshake is
    tests/store/test_webui_sessions.py's)."""

    def __init__(self):
        self.messages = []

    def write_message(self, text):
        self.messages.append(json.loads(text))

    def close(self, code, reason):
        self.closed = (code, reason)


def test_a_change_through_one_master_reaches_the_others_live_updates(masters, engine):
    """An operator edits a node through B's UI; a browser on A's overview gets the change
    from A's hub, which B never told (no event: only A's poll of the store finds it)."""
    a, b = masters
    hour_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    with engine.begin() as conn:
        conn.execute(
            insert(Node).values(
                minion_id="web1",
                first_seen=hour_ago,
                last_seen=hour_ago,
                facts={},
                status="online",
                status_at=hour_ago,
            )
        )
    ctx_a = a.extensions["fleet"]
    hub = live.Hub(
        ctx_a.engine, schedule=lambda fn: fn(), idle_seconds=0.2, ended=ctx_a.ended_sessions
    )
    socket = LiveSocket()
    with hub._lock:
        hub._sockets.add(socket)
        hub._sessions[socket] = live.SocketSession(1, 1, "sid", time.time() + 3600)
    looker = threading.Thread(target=hub.run_looker, kwargs={"min_interval": 0}, daemon=True)
    looker.start()
    try:
        wait_for("A's first look", lambda: hub.looks >= 1, timeout=10)
        assert not [m for m in socket.messages if m["type"] == "node"]  # nothing new yet
        on_b = b.test_client()
        assert post_login(on_b, "alice").status_code == 302
        edit = {
            "criticality": "critical",
            "comment": "edited on B",
            "csrf_token": account_csrf(on_b),
        }
        assert on_b.post("/nodes/web1/meta", data=edit).status_code in (302, 303)

        def web1_on_a():
            return [m for m in socket.messages if m["type"] == "node" and m["id"] == "web1"]

        wait_for("B's change in A's live updates", web1_on_a, timeout=10)
    finally:
        hub.stop()
        looker.join(10)
    change = web1_on_a()[-1]
    assert (change["criticality"], change["comment"], change["status"]) == (
        "critical",
        "edited on B",
        "online",
    )
