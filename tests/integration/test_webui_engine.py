"""The ``fleet`` engine, started by the package's real master: the UI over real HTTP, and the
overview's live updates over a real websocket, fed by the master's event bus."""

from __future__ import annotations

import asyncio
import datetime as dt
import http.cookiejar
import json
import re
import urllib.error
import urllib.parse
import urllib.request

import pytest
import tornado.httpclient
import tornado.websocket
from saltfactories.utils import random_string
from sqlalchemy import insert, update

from saltext_fleet import config
from saltext_fleet.store import engine as store_engine
from saltext_fleet.store import users as store_users
from saltext_fleet.store.models import Node
from tests.integration.test_gate import fire
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(300)
PASSWORD = "engine test password"


@pytest.fixture(scope="module")
def base_url(salt_master):
    ui = config.load(salt_master.config).ui
    url = f"http://{ui.host}:{ui.port}"

    def answers():
        try:
            with urllib.request.urlopen(f"{url}/login", timeout=5) as resp:
                return resp.status == 200
        except OSError:
            return False

    wait_for("the engine to serve the UI", answers, timeout=60)
    return url


@pytest.fixture(scope="module")
def store(salt_master):
    engine = store_engine.get_engine(config.load(salt_master.config).db_url)
    store_engine.ensure_schema(engine)
    return engine


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def http_login(base_url, store, role="viewer", name=None):
    name = name or random_string("engine-").lower()
    with store.begin() as conn:
        store_users.create_user(conn, name, role, PASSWORD, rounds=4)
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(f"{base_url}/login", timeout=30) as resp:
        token = csrf_of(resp.read().decode())  # bound to the pre-login session
    body = urllib.parse.urlencode(
        {"username": name, "password": PASSWORD, "csrf_token": token}
    ).encode()
    with opener.open(f"{base_url}/login", data=body, timeout=30) as resp:
        assert resp.status == 200 and resp.url.rstrip("/") == base_url  # redirected to /
        page = resp.read().decode()
    cookie = next(c for c in jar if c.name == "fleet_session")
    assert cookie.has_nonstandard_attr("HttpOnly")
    return opener, cookie, page


def test_the_engine_serves_pages_and_refuses_strangers(base_url, store):
    # no session: the pages redirect to the login form, the API answers 401 in its envelope
    with urllib.request.urlopen(f"{base_url}/", timeout=10) as resp:
        assert "/login" in resp.url
        assert resp.headers["Content-Security-Policy"].startswith("default-src 'self'")
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(f"{base_url}/api/v1/nodes", timeout=10)
    assert exc.value.code == 401
    assert json.loads(exc.value.read())["error"]["code"] == 401
    opener, _cookie, page = http_login(base_url, store)
    assert 'data-live="overview"' in page
    with opener.open(f"{base_url}/static/fleet.css", timeout=10) as resp:
        assert resp.status == 200 and b"{" in resp.read()


def _ws(base_url, headers):
    request = tornado.httpclient.HTTPRequest(
        base_url.replace("http", "ws", 1) + "/ws/live", headers=headers
    )
    return tornado.websocket.websocket_connect(request)


def test_live_updates_reach_a_logged_in_socket_only(base_url, store, salt_master):
    """The update comes through the master's event bus: the engine's periodic look at the
    store is switched off, so only an event (here the one fired below) makes the hub look."""
    assert config.load(salt_master.config).ui.live_poll_seconds == 0
    _opener, cookie, _page = http_login(base_url, store)
    minion_id = random_string("live-node-").lower()
    with store.begin() as conn:
        conn.execute(insert(Node).values(minion_id=minion_id, facts={}, comment=""))

    async def scenario():
        # no cookie, or a page of another origin: refused
        for headers in (
            {},
            {"Cookie": f"fleet_session={cookie.value}", "Origin": "http://evil.example"},
        ):
            with pytest.raises(tornado.httpclient.HTTPClientError) as exc:
                await _ws(base_url, headers)
            assert exc.value.code in (401, 403)
        sock = await _ws(base_url, {"Cookie": f"fleet_session={cookie.value}", "Origin": base_url})
        first = json.loads(await asyncio.wait_for(sock.read_message(), 30))
        assert first["type"] in ("node", "counts")
        # the node goes online in the store; an event on the master's bus wakes the hub
        # (with the poll off nothing else would look at the store again)
        with store.begin() as conn:
            conn.execute(
                update(Node)
                .where(Node.minion_id == minion_id)
                .values(status="online", status_at=dt.datetime.now(dt.timezone.utc))
            )
        fire(salt_master, f"fleet/node/{minion_id}", {"id": minion_id})
        deadline = asyncio.get_running_loop().time() + 30
        while asyncio.get_running_loop().time() < deadline:
            message = json.loads(await asyncio.wait_for(sock.read_message(), 30))
            # (an earlier look may have sent the node as it was before: unknown)
            if message.get("type") == "node" and message["id"] == minion_id:
                if message["status"] == "online":
                    sock.close()
                    return message
        raise AssertionError("no live update for the node")

    message = asyncio.run(scenario())
    assert re.match(r"\d{4}-\d\d-\d\d", message["last_seen"] or "2026-01-01")


def _post_form(opener, base_url, path, fields):
    """POST a form of this session, with the CSRF token of its account page."""
    with opener.open(f"{base_url}/account", timeout=30) as resp:
        token = csrf_of(resp.read().decode())
    body = urllib.parse.urlencode({**fields, "csrf_token": token}).encode()
    with opener.open(f"{base_url}{path}", data=body, timeout=30) as resp:
        return resp.status


def test_sockets_close_within_5_s_of_logout_disable_and_role_change(base_url, store, salt_master):
    """Each way a session ends closes its open websocket within 5 seconds: its logout, the
    user disabled in the store (as ``saltext-fleet users disable`` does, from another process:
    the hub's periodic check), the user's role changed on the users page (the page tells the
    hub). A socket of an untouched session stays open and keeps receiving."""
    names = {what: random_string(f"ws-{what}-").lower() for what in ("out", "off", "role", "ok")}
    logins = {what: http_login(base_url, store, name=name) for what, name in names.items()}
    admin, _cookie, _page = http_login(base_url, store, role="admin")
    node_id = random_string("ws-node-").lower()
    with store.begin() as conn:
        conn.execute(insert(Node).values(minion_id=node_id, facts={}, comment=""))

    def headers(what):
        return {"Cookie": f"fleet_session={logins[what][1].value}", "Origin": base_url}

    async def closed_within(sock, started, seconds=5.0):
        loop = asyncio.get_running_loop()
        while True:
            left = started + seconds - loop.time()
            assert left > 0, "the socket is still open"
            try:
                message = await asyncio.wait_for(sock.read_message(), left)
            except asyncio.TimeoutError:
                raise AssertionError(f"the socket is still open after {seconds} s") from None
            if message is None:
                return sock.close_code, loop.time() - started

    async def scenario():
        loop = asyncio.get_running_loop()
        socks = {what: await _ws(base_url, headers(what)) for what in logins}
        for sock in socks.values():  # each is open and hears the hub (positive control)
            assert await asyncio.wait_for(sock.read_message(), 30) is not None
        results = {}
        started = loop.time()
        await loop.run_in_executor(None, _post_form, logins["out"][0], base_url, "/logout", {})
        results["logout"] = await closed_within(socks["out"], started)
        started = loop.time()
        with store.begin() as conn:
            store_users.set_disabled(conn, names["off"], True)
        results["disable"] = await closed_within(socks["off"], started)
        started = loop.time()
        status = await loop.run_in_executor(
            None, _post_form, admin, base_url, f"/users/{names['role']}/role", {"role": "auditor"}
        )
        assert status == 200
        results["role"] = await closed_within(socks["role"], started)
        # the logged-out cookie opens a socket no more: it is closed at once
        again = await _ws(base_url, headers("out"))
        results["logged-out cookie"] = await closed_within(again, loop.time())
        # the untouched session's socket is open and still hears about the fleet
        with store.begin() as conn:
            conn.execute(
                update(Node)
                .where(Node.minion_id == node_id)
                .values(status="online", status_at=dt.datetime.now(dt.timezone.utc))
            )
        fire(salt_master, f"fleet/node/{node_id}", {"id": node_id})
        ok = socks["ok"]
        deadline = loop.time() + 30
        while True:
            message = await asyncio.wait_for(ok.read_message(), deadline - loop.time())
            assert message is not None, f"the untouched session's socket closed ({ok.close_code})"
            message = json.loads(message)
            if message.get("type") == "node" and message["id"] == node_id:
                break
        ok.close()
        return results

    results = asyncio.run(scenario())
    for what, (code, seconds) in results.items():
        assert code == 4401, (what, code)
        assert seconds < 5, (what, seconds)
