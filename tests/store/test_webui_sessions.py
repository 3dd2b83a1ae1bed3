"""Web sessions and page sizes, through the Flask app on a real store (SQLite and PostgreSQL):
the login and TOTP forms' CSRF tokens, the login rate per client address (before bcrypt), the
TOTP secret being enrolled kept out of the session cookie, logged-out cookies, the request
size limit, and the pages that page what could be large (a job's returns, a node's inventory).

The websockets closed by logout, disable and role change are tests/integration/
test_webui_engine.py (the real engine)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import threading
import zlib

import pyotp
import pytest
from sqlalchemy import insert, select, update

from saltext_fleet.core import webauth
from saltext_fleet.store import secrets as store_secrets
from saltext_fleet.store import users as store_users
from saltext_fleet.store.models import AuditEvent, InventorySnapshot, Job, Node, Return, Secret
from saltext_fleet.webui import live
from saltext_fleet.webui.auth import parse_session_id, session_owner
from tests.support.web import PASSWORD, csrf_of, form_token, make_app
from tests.support.web import login as login_as


@pytest.fixture
def web(engine, tmp_path):
    app = make_app(engine, tmp_path / "fleet.fernet")
    with engine.begin() as conn:
        for name, role in (("alice", "operator"), ("victor", "viewer")):
            store_users.create_user(conn, name, role, PASSWORD, rounds=4)
    return app


def login(web, username="alice", address="127.0.0.1"):
    return login_as(web, username, address=address)


def cookie_payload(client) -> bytes:
    """The session cookie's payload as anyone who holds the cookie can read it (Flask signs
    its session cookie; it does not encrypt it)."""
    value = client.get_cookie("fleet_session").value
    compressed = value.startswith(".")
    data = value.lstrip(".").split(".")[0]
    raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    return zlib.decompress(raw) if compressed else raw


def audit_actions(engine, target):
    with engine.connect() as conn:
        return [
            a for (a,) in conn.execute(select(AuditEvent.action).where(AuditEvent.target == target))
        ]


# -- CSRF on the login forms -------------------------------------------------------------------


def test_the_login_form_needs_the_token_of_its_own_session(web, engine):
    client = web.test_client()
    token = form_token(client)
    other_token = form_token(web.test_client())  # another browser's login form
    form = {"username": "alice", "password": PASSWORD}
    for bad in (None, "", "garbage", other_token, token[:-1] + ("A" if token[-1] != "A" else "B")):
        data = dict(form) if bad is None else {**form, "csrf_token": bad}
        resp = client.post("/login", data=data)
        assert resp.status_code == 403, (bad, resp.status_code)
        assert b"CSRF token" in resp.data and b"reload the login page" in resp.data
    # refused before the password was looked at: no login, no failure counted
    assert client.get("/").status_code == 302
    assert audit_actions(engine, "alice") == []
    # a POST with no session at all (a page elsewhere posting the form) is refused too
    assert web.test_client().post("/login", data=form).status_code == 403
    # positive control: the form's own token lets the right password in
    resp = client.post("/login", data={**form, "csrf_token": token})
    assert resp.status_code == 302
    assert client.get("/").status_code == 200
    assert audit_actions(engine, "alice") == ["ui.login"]


def test_the_totp_form_needs_a_token_of_the_pending_login(web, engine):
    with engine.begin() as conn:
        store_users.create_user(conn, "tina", "viewer", PASSWORD, rounds=4)
        secret = webauth.new_totp_secret()
        store_users.set_totp(conn, web.extensions["fleet"].vault, "tina", secret)
    client = web.test_client()
    login_token = form_token(client)
    resp = client.post(
        "/login", data={"username": "tina", "password": PASSWORD, "csrf_token": login_token}
    )
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/login/totp")
    code = pyotp.TOTP(secret).now()
    # no token, and the login form's token (the session id changed with the password step)
    for data in ({"code": code}, {"code": code, "csrf_token": login_token}):
        resp = client.post("/login/totp", data=data)
        assert resp.status_code == 403 and b"CSRF token" in resp.data
    assert client.get("/").status_code == 302
    totp_token = form_token(client, "/login/totp")
    resp = client.post("/login/totp", data={"code": code, "csrf_token": totp_token})
    assert resp.status_code == 302 and client.get("/").status_code == 200


# -- the login rate per address, before bcrypt -------------------------------------------------


@pytest.fixture
def bcrypt_calls(monkeypatch):
    calls = []
    real = webauth.bcrypt.checkpw

    def counting(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(webauth.bcrypt, "checkpw", counting)
    return calls


def test_logins_are_rate_limited_per_address_before_bcrypt(web, bcrypt_calls):
    ctx = web.extensions["fleet"]
    ctx.login_rate = webauth.RateLimit(per_second=0.01, burst=3)
    client = web.test_client()
    client.environ_base["REMOTE_ADDR"] = "10.9.8.7"
    token = form_token(client)
    wrong = {"username": "alice", "password": "not the password", "csrf_token": token}
    for _ in range(3):
        assert client.post("/login", data=wrong).status_code == 401
    assert len(bcrypt_calls) == 3
    for data in (wrong, {**wrong, "password": PASSWORD}, {"username": "nobody"}):
        resp = client.post("/login", data=data)
        assert resp.status_code == 429, resp.status_code
        assert 1 <= int(resp.headers["Retry-After"]) <= 100
        assert b"too many logins from your address" in resp.data
    assert len(bcrypt_calls) == 3  # no bcrypt for a refused request, right password or not
    # the API's envelope says the same
    resp = client.post("/login", data=wrong, headers={"Accept": "application/json"})
    assert resp.status_code == 429 and resp.get_json()["error"]["code"] == 429
    assert int(resp.headers["Retry-After"]) >= 1
    # another address is not held up by it
    login(web, "alice", address="10.9.8.6")
    assert len(bcrypt_calls) == 4
    # the form page itself is not limited
    assert client.get("/login").status_code == 200


def test_password_checks_at_once_are_bounded(web, bcrypt_calls):
    """However many addresses ask, at most ``password_checks`` threads run bcrypt at once;
    the others are answered 429 at once instead of waiting in a worker thread."""
    ctx = web.extensions["fleet"]
    ctx.password_checks = threading.BoundedSemaphore(1)
    client = web.test_client()
    token = form_token(client)
    form = {"username": "alice", "password": PASSWORD, "csrf_token": token}
    assert ctx.password_checks.acquire(blocking=False)  # a check in progress elsewhere
    try:
        resp = client.post("/login", data=form)
        assert resp.status_code == 429 and resp.headers["Retry-After"] == "1"
        assert b"at once" in resp.data and not bcrypt_calls
    finally:
        ctx.password_checks.release()
    assert client.post("/login", data=form).status_code == 302
    assert len(bcrypt_calls) == 1


def test_a_lockout_says_when_to_come_back(web):
    client = web.test_client()
    token = form_token(client)
    wrong = {"username": "victor", "password": "not the password", "csrf_token": token}
    for _ in range(5):
        assert client.post("/login", data=wrong).status_code == 401
    resp = client.post("/login", data={**wrong, "password": PASSWORD})
    assert resp.status_code == 429 and int(resp.headers["Retry-After"]) > 60


# -- the TOTP secret being enrolled ------------------------------------------------------------


def test_the_totp_secret_being_enrolled_is_not_in_the_cookie(web, engine):
    client = login(web, "alice")
    page = client.get("/account").get_data(as_text=True)
    shown = re.search(r'id="totp-secret"[^>]*>([^<]+)<', page).group(1).replace(" ", "")
    assert len(shown) == 32
    payload = cookie_payload(client)
    session = json.loads(payload)
    # the decoding is right (positive control) and the cookie names only the enrolment
    assert "_user_id" in session and session.get("totp_enrol")
    assert shown.encode() not in payload and shown.lower().encode() not in payload
    assert base64.b32decode(shown) not in payload
    # the same secret is shown again on reload (what the app scanned stays good)
    again = client.get("/account").get_data(as_text=True)
    assert shown in again.replace(" ", "")
    # another session of the same user cannot confirm this enrolment with its own id
    other = login(web, "alice")
    other_csrf = csrf_of(other.get("/account").get_data(as_text=True))
    assert json.loads(cookie_payload(other))["totp_enrol"] != session["totp_enrol"]
    csrf = csrf_of(again)
    resp = client.post("/account/totp", data={"code": pyotp.TOTP(shown).now(), "csrf_token": csrf})
    assert resp.status_code == 200 and b"recovery" in resp.data.lower()
    with engine.connect() as conn:
        assert store_users.get_user(conn, "alice")["totp"]
        assert store_users.totp_secret(conn, web.extensions["fleet"].vault, "alice") == shown
    assert "totp_enrol" not in json.loads(cookie_payload(client))
    assert pending_enrolments(engine, "alice") == 1  # the other session's only
    # the other session ended with the new second factor: it cannot enrol another one
    resp = other.post("/account/totp", data={"code": "123456", "csrf_token": other_csrf})
    assert resp.status_code == 401


def pending_enrolments(engine, username):
    """How many TOTP enrolments of ``username`` the store holds (encrypted, in ``secrets``)."""
    with engine.connect() as conn:
        names = store_secrets.secret_names(conn, store_secrets.USER_SCOPE, username)
    return sum(name.startswith(store_users.TOTP_ENROL_PREFIX) for name in names)


def test_an_expired_enrolment_asks_for_the_new_key(web, engine):
    client = login(web, "victor")
    page = client.get("/account").get_data(as_text=True)
    shown = re.search(r'id="totp-secret"[^>]*>([^<]+)<', page).group(1).replace(" ", "")
    # an engine restart keeps it now (it is in the store); 15 minutes do not
    with engine.begin() as conn:
        old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=15, seconds=1)
        conn.execute(update(Secret).where(Secret.owner == "victor").values(updated_at=old))
    resp = client.post(
        "/account/totp", data={"code": pyotp.TOTP(shown).now(), "csrf_token": csrf_of(page)}
    )
    assert resp.status_code == 303
    page = client.get("/account").get_data(as_text=True)
    assert "expired" in page
    assert re.search(r'id="totp-secret"[^>]*>([^<]+)<', page).group(1).replace(" ", "") != shown


# -- logged-out cookies, request size ----------------------------------------------------------


def test_a_logged_out_cookie_opens_nothing(web):
    client = login(web, "alice")
    cookie = client.get_cookie("fleet_session").value
    csrf = csrf_of(client.get("/account").get_data(as_text=True))
    assert client.post("/logout", data={"csrf_token": csrf}).status_code == 302
    replay = web.test_client()
    replay.set_cookie("fleet_session", cookie)
    assert replay.get("/").status_code == 302
    assert replay.get("/api/v1/me").status_code == 401
    # positive control: another session of the same user goes on
    assert login(web, "alice").get("/").status_code == 200


def test_requests_larger_than_the_limit_are_refused(web):
    client = web.test_client()
    token = form_token(client)
    big = "x" * (web.config["MAX_CONTENT_LENGTH"] + 1)
    resp = client.post("/login", data={"username": "alice", "password": big, "csrf_token": token})
    assert resp.status_code == 413
    assert client.get("/").status_code == 302


# -- pages that page ---------------------------------------------------------------------------


def test_a_job_page_pages_its_returns_and_cuts_large_ones(web, engine):
    jid = "20261205000000000001"
    minions = [f"node-{i:04d}" for i in range(1000)]
    big = {"lines": ["y" * 100] * 200}  # about 22,000 characters of JSON
    now = dt.datetime.now(dt.timezone.utc)
    with engine.begin() as conn:
        conn.execute(
            insert(Job).values(
                jid=jid,
                fun="cmd.run",
                load={"fun": "cmd.run", "arg": ["id"]},
                minions=[*minions, "silent-1"],
                publish=True,
            )
        )
        conn.execute(
            insert(Return.__table__),  # the column is "return"
            [
                {
                    "rid": f"{jid}-{m}",
                    "jid": jid,
                    "minion_id": m,
                    "fun": "cmd.run",
                    "success": True,
                    "return": big if m == "node-0007" else f"uid=0 {m}",
                    "stored_at": now,
                    "authenticated": True,  # stored by the master's job cache
                }
                for m in minions
            ],
        )
    client = login(web, "alice")
    resp = client.get(f"/jobs/{jid}")
    page = resp.get_data(as_text=True)
    rows = re.findall(r'<tr data-minion="([^"]+)"', page)
    assert rows == minions[:50]
    assert 'id="returns-total">1000<' in page and "page 1 of 20" in page
    assert len(page) < 200_000, len(page)
    assert "uid=0 node-0003" in page
    assert "y" * 100 in page and page.count("y" * 100) < 40  # cut, not all 200 lines
    first, whole_chars = re.search(r"The first (\d+) of (\d+) characters", page).groups()
    assert int(first) == 4000 and int(whole_chars) > 20_000
    assert page.count("The first ") == 1  # the small returns are whole
    full_link = f"/jobs/{jid}?minion=node-0007"
    assert f'class="full-return" href="{full_link}"' in page
    assert "silent-1" in re.search(r'id="no-return">([^<]*)<', page).group(1)
    # the last page, and one past it
    last = client.get(f"/jobs/{jid}?page=20").get_data(as_text=True)
    assert re.findall(r'<tr data-minion="([^"]+)"', last) == minions[950:]
    assert 'id="page-next"' not in last and 'id="page-prev"' in last
    assert 'data-minion="' not in client.get(f"/jobs/{jid}?page=21").get_data(as_text=True)
    # the whole return of one minion
    whole = client.get(full_link).get_data(as_text=True)
    assert re.findall(r'<tr data-minion="([^"]+)"', whole) == ["node-0007"]
    assert whole.count("y" * 100) == 200 and "full-return" not in whole
    for bad in ("0", "-1", "x", "1" * 12):
        resp = client.get(f"/jobs/{jid}?page={bad}")
        assert resp.status_code == 400 and b"page: a whole number" in resp.data
    assert client.get(f"/jobs/{jid}?minion=../etc").status_code == 404


def test_the_node_page_pages_the_inventory(web, engine):
    pip = {f"pkg-{i:04d}": f"1.{i}" for i in range(1100)}
    deb = {"libc6": "2.36", "passwd": "1:4.13"}
    digest = "d" * 64
    with engine.begin() as conn:
        conn.execute(
            insert(InventorySnapshot).values(
                digest=digest, packages={"pip": pip, "deb": deb}, package_count=1102
            )
        )
        conn.execute(
            insert(Node).values(minion_id="inv-node", facts={}, comment="", inventory_digest=digest)
        )
    client = login(web, "victor")

    def listed(url):
        page = client.get(url).get_data(as_text=True)
        table = re.search(
            r'<table class="data compact packages" id="packages"(.*?)</table>', page, re.S
        )
        return page, re.findall(r"<tr><td>([^<]+)</td>", table.group(1))

    page, names = listed("/nodes/inv-node")
    assert names == ["libc6", "passwd"]  # the first ecosystem
    assert 'data-ecosystem="pip"' in page and ">1100<" in page
    page, names = listed("/nodes/inv-node?eco=pip")
    assert names == sorted(pip)[:200] and "page 1 of 6" in page
    assert len(page) < 150_000
    page, names = listed("/nodes/inv-node?eco=pip&inv_page=6")
    assert names == sorted(pip)[1000:]
    assert 'id="packages-next"' not in page and 'id="packages-prev"' in page
    assert client.get("/nodes/inv-node?eco=pip&inv_page=x").status_code == 400


# -- the live hub's session checks (the engine's websockets: tests/integration) ----------------


class FakeSocket:
    """What the hub needs of the server's websocket handler: its user, the Flask app and
    the session cookie it was opened with; ``close`` records the code."""

    def __init__(self, web, client):
        self.flask_app = web
        self.cookie = client.get_cookie("fleet_session").value
        data = web.session_interface.get_signing_serializer(web).loads(self.cookie)
        self.user = session_owner(
            web.extensions["fleet"].engine, *parse_session_id(data["_user_id"])
        )
        self.closed = None

    def get_cookie(self, name):
        return self.cookie if name == "fleet_session" else None

    def close(self, code=None, reason=None):
        self.closed = (code, reason)


def test_the_hub_closes_the_sockets_of_ended_sessions(web, engine, monkeypatch):
    hub = live.Hub(engine, schedule=lambda fn: fn(), check_seconds=3600)
    with engine.begin() as conn:
        for name in ("dora", "rolf", "gone", "kept"):
            store_users.create_user(conn, name, "viewer", PASSWORD, rounds=4)
    out = login(web, "alice")
    socks = {
        "logout": FakeSocket(web, out),
        **{name: FakeSocket(web, login(web, name)) for name in ("dora", "rolf", "gone", "kept")},
    }
    try:
        for sock in socks.values():
            hub.add(sock)
        assert len(hub) == 5 and hub.check_sessions() == 0  # positive control
        csrf = csrf_of(out.get("/account").get_data(as_text=True))
        web.extensions["fleet"].live = hub
        assert out.post("/logout", data={"csrf_token": csrf}).status_code == 302
        assert socks["logout"].closed == (live.SESSION_ENDED, "session ended: log in again")
        with engine.begin() as conn:
            store_users.set_disabled(conn, "dora", True)
            store_users.set_role(conn, "rolf", "auditor")
            store_users.delete_user(conn, "gone")
        assert hub.check_sessions() == 3
        assert all(socks[n].closed[0] == live.SESSION_ENDED for n in ("dora", "rolf", "gone"))
        assert socks["kept"].closed is None and len(hub) == 1
        # a logged-out cookie's new socket is closed at once; so is a cookie that expired
        again = FakeSocket(web, login(web, "kept"))
        again.cookie = socks["logout"].cookie
        hub.add(again)
        assert again.closed[0] == live.SESSION_ENDED and len(hub) == 1
        monkeypatch.setattr(live.time, "time", lambda: 4_000_000_000.0)
        assert hub.check_sessions() == 1 and socks["kept"].closed[0] == live.SESSION_ENDED
    finally:
        hub.stop()


def test_a_password_change_cannot_be_used_to_run_bcrypt_without_end(web, bcrypt_calls):
    """The current password asked on the account page is a password check like a login's:
    after 5 wrong ones the user is locked, and no more bcrypt runs for it."""
    client = login(web, "victor")
    assert len(bcrypt_calls) == 1
    csrf = csrf_of(client.get("/account").get_data(as_text=True))
    wrong = {"current": "not the password", "new": "another long password", "csrf_token": csrf}
    for _ in range(5):
        assert client.post("/account/password", data=wrong).status_code == 303
    assert len(bcrypt_calls) == 6
    resp = client.post("/account/password", data={**wrong, "current": PASSWORD})
    assert resp.status_code == 429 and int(resp.headers["Retry-After"]) > 60
    assert len(bcrypt_calls) == 6
