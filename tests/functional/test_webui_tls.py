"""The engine's server with TLS configured (``fleet:ui:tls_cert``/``tls_key``): HTTPS only,
and the session cookie marked ``Secure``. The server runs in this process on a free loopback
port with a certificate made for the test; a client that trusts that certificate logs in."""

from __future__ import annotations

import asyncio
import http.cookiejar
import logging
import re
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from saltext_fleet.store import engine as store_engine
from saltext_fleet.store import users as store_users
from saltext_fleet.webui import server
from tests.support.sshd import free_port
from tests.support.tlscert import self_signed

PASSWORD = "tls test password"


@pytest.fixture
def tls_server(tmp_path):
    cert, key = (str(f) for f in self_signed(tmp_path, "ui"))
    port = free_port()
    db_url = f"sqlite:///{tmp_path / 'fleet.db'}"
    opts = {
        "cachedir": str(tmp_path / "cache"),
        "pki_dir": str(tmp_path / "pki"),
        "sock_dir": str(tmp_path / "sock"),
        "fleet": {
            "db_url": db_url,
            "ui": {"host": "127.0.0.1", "port": port, "tls_cert": cert, "tls_key": key},
        },
    }
    (tmp_path / "pki").mkdir(mode=0o700)
    engine = store_engine.get_engine(db_url)
    store_engine.ensure_schema(engine)
    with engine.begin() as conn:
        store_users.create_user(conn, "tls-admin", "admin", PASSWORD, rounds=4)
    loop = asyncio.new_event_loop()
    ready, stop = threading.Event(), None

    def run():
        nonlocal stop
        asyncio.set_event_loop(loop)
        stop = asyncio.Event()
        loop.run_until_complete(server.serve(opts, ready=ready, stop=stop))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(30), "the server did not start"
    trust = ssl.create_default_context(cafile=cert)
    yield {"url": f"https://127.0.0.1:{port}", "trust": trust, "port": port}
    loop.call_soon_threadsafe(stop.set)
    thread.join(15)
    store_engine.dispose_all()


def test_https_only_and_a_secure_session_cookie(tls_server):
    url, trust = tls_server["url"], tls_server["trust"]
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=trust), urllib.request.HTTPCookieProcessor(jar)
    )
    with opener.open(f"{url}/login", timeout=30) as resp:  # the form's CSRF token
        token = re.search(r'name="csrf_token" value="([^"]+)"', resp.read().decode()).group(1)
    fields = {"username": "tls-admin", "password": PASSWORD, "csrf_token": token}
    body = urllib.parse.urlencode(fields).encode()
    with opener.open(f"{url}/login", data=body, timeout=30) as resp:
        assert resp.status == 200 and 'id="fleet"' in resp.read().decode()
    cookie = next(c for c in jar if c.name == "fleet_session")
    assert cookie.secure and cookie.has_nonstandard_attr("HttpOnly")
    # plain HTTP on the same port is not served
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{tls_server['port']}/login", timeout=10).read()
    assert refused.value.code == 400
    # and a client that does not trust the certificate is refused
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/login", timeout=10)


def test_plain_http_on_the_tls_port_is_answered_at_once_in_clear_text(tls_server, caplog):
    caplog.set_level(logging.WARNING, logger="saltext_fleet.webui.guard")
    port = tls_server["port"]
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert time.monotonic() - began < 1.0, "the answer (and the close) took a second or more"
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"This port speaks HTTPS, not plain HTTP: use https://127.0.0.1:%d/" % port in answer
    assert "plain HTTP on the HTTPS port from 127.0.0.1" in caplog.text
    # a browser's error page shows that text
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10)
    assert b"This port speaks HTTPS" in refused.value.read()
    # and HTTPS is still served
    with urllib.request.urlopen(
        f"{tls_server['url']}/login", timeout=10, context=tls_server["trust"]
    ) as resp:
        assert resp.status == 200
