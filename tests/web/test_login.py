"""Logging in: the password, then the second factor; single-use codes; no session fixation;
lockout after failed passwords."""

from __future__ import annotations

import time
from urllib.parse import urlencode

import pyotp
from sqlalchemy import select

from saltext_fleet.core import webauth
from saltext_fleet.store import users as store_users
from saltext_fleet.store.models import AuditEvent
from tests.support.web import PASSWORD, account_csrf, form_token, post_code, post_login


def test_password_then_totp_and_codes_are_single_use(app, engine, people):
    admin = people["admin"]
    with engine.begin() as conn:
        totp = webauth.new_totp_secret()
        codes = store_users.set_totp(conn, app.extensions["fleet"].vault, admin, totp)
    client = app.test_client()
    token = form_token(client, "/login?next=/keys")
    before = client.get_cookie("fleet_session").value  # the session before logging in
    form = {"username": admin, "csrf_token": token}
    assert client.post("/login", data={**form, "password": "wrong one!!"}).status_code == 401
    resp = client.post("/login", data={**form, "password": PASSWORD})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/login/totp")
    # a pending login opens nothing
    assert client.get("/").status_code == 302
    assert client.get("/api/v1/nodes").status_code == 401
    assert post_code(client, "000000").status_code == 401
    now = time.time()
    resp = post_code(client, pyotp.TOTP(totp).at(now))
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/keys")
    assert client.get("/").status_code == 200
    # the session was replaced at login: its cookie before opens nothing (no fixation)
    after = client.get_cookie("fleet_session")
    assert after.value != before and after.http_only and after.same_site == "Lax"
    stale = app.test_client()
    stale.set_cookie("fleet_session", before)
    assert stale.get("/").status_code == 302
    # the same code again (another login) is refused: replay
    other = app.test_client()
    post_login(other, admin)
    assert post_code(other, pyotp.TOTP(totp).at(now)).status_code == 401
    # a recovery code works once
    assert post_code(other, codes[0]).status_code == 302
    third = app.test_client()
    post_login(third, admin)
    assert post_code(third, codes[0]).status_code == 401
    with engine.connect() as conn:
        actions = [
            a for (a,) in conn.execute(select(AuditEvent.action).where(AuditEvent.target == admin))
        ]
    assert actions.count("ui.login") == 2 and "ui.login_failed" in actions
    # logout is POST only, with the CSRF token
    token = account_csrf(client)
    assert client.get("/logout").status_code == 405
    assert client.post("/logout").status_code == 403
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/").status_code == 302


def test_failed_passwords_lock_the_account_for_a_while(app, people):
    ctx = app.extensions["fleet"]
    name = people["viewer"]
    client = app.test_client()
    for _ in range(5):
        assert post_login(client, name, "not it at all").status_code == 401
    locked = post_login(client, name)
    assert locked.status_code == 429 and b"try again in" in locked.data
    # the lock is kept in the store too (it outlives a restart of the engine)
    with ctx.engine.connect() as conn:
        assert store_users.get_user(conn, name)["locked_until"] is not None
    ctx.throttle.reset(f"user:{name}")
    assert post_login(client, name).status_code == 429
    with ctx.engine.begin() as conn:
        store_users.lock(conn, name, None)  # what the users page's "unlock" does
    assert post_login(client, name).status_code == 302


def test_an_unsafe_next_goes_to_the_overview(client, people):
    targets = ("https://elsewhere.example/", "//elsewhere.example/x", "/\\elsewhere", "/jobs")
    for target in targets:
        token = form_token(client, "/login?" + urlencode({"next": target}))
        resp = client.post(
            "/login",
            data={"username": people["viewer"], "password": PASSWORD, "csrf_token": token},
        )
        expected = "/jobs" if target == "/jobs" else "/"  # the positive control
        assert resp.status_code == 302 and resp.headers["Location"] == expected, target
        client.post("/logout", data={"csrf_token": account_csrf(client)})
