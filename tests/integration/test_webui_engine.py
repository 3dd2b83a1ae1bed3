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


def http_login(base_url, store):
    name = random_string("engine-").lower()
    with store.begin() as conn:
        store_users.create_user(conn, name, "viewer", PASSWORD, rounds=4)
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    body = urllib.parse.urlencode({"username": name, "password": PASSWORD}).encode()
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
