"""The engine's web server in this process (no Salt daemon), and a browser-less login.

``serving(tmp_path, ui={...})`` runs :func:`saltext_fleet.webui.server.serve` on its own
asyncio loop in a thread, on a free loopback port, with a SQLite store holding the users
given; ``form_login`` logs in through the login form from a chosen source address with
``http.client`` (copying the form's hidden fields, such as a CSRF token)."""

from __future__ import annotations

import asyncio
import contextlib
import html
import http.client
import re
import threading
import time
import urllib.parse

from saltext_fleet.store import engine as store_engine
from saltext_fleet.store import users as store_users
from saltext_fleet.webui import server
from tests.support.sshd import free_port

HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"')


@contextlib.contextmanager
def serving(tmp_path, ui=None, users=()):
    """Serve until the block ends; yields ``{"port", "opts"}``. ``users``: ``(name, role,
    password)`` made in the store first."""
    port = free_port()
    db_url = f"sqlite:///{tmp_path / 'fleet.db'}"
    opts = {
        "cachedir": str(tmp_path / "cache"),
        "pki_dir": str(tmp_path / "pki"),
        "sock_dir": str(tmp_path / "sock"),
        "fleet": {"db_url": db_url, "ui": {"host": "127.0.0.1", "port": port, **(ui or {})}},
    }
    (tmp_path / "pki").mkdir(mode=0o700, exist_ok=True)
    engine = store_engine.get_engine(db_url)
    store_engine.ensure_schema(engine)
    with engine.begin() as conn:
        for name, role, password in users:
            store_users.create_user(conn, name, role, password, rounds=4)
    loop = asyncio.new_event_loop()
    ready, stop, failed = threading.Event(), None, []

    def run():
        nonlocal stop
        asyncio.set_event_loop(loop)
        stop = asyncio.Event()
        try:
            loop.run_until_complete(server.serve(opts, ready=ready, stop=stop))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            failed.append(exc)
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(30), "the server did not start"
    assert not failed, f"the server failed: {failed!r}"
    try:
        yield {"port": port, "opts": opts}
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(15)
        store_engine.dispose_all()


def _cookies(resp, jar: dict) -> None:
    for header in resp.headers.get_all("Set-Cookie") or ():
        name, _, rest = header.partition("=")
        jar[name.strip()] = rest.split(";", 1)[0]


def form_login(port: int, username: str, password: str, source: str = "127.0.0.2") -> dict:
    """Log in through the form from ``source``: the seconds each of its requests took (the
    form, the POST, the page it leads to), the POST's status and the last page's text."""
    jar: dict[str, str] = {}
    took = {}

    def request(method, path, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in jar.items())}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        began = time.monotonic()
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read().decode()
        finally:
            conn.close()
        _cookies(resp, jar)
        return time.monotonic() - began, resp, data

    took["form"], resp, page = request("GET", "/login")
    assert resp.status == 200, (resp.status, page[:300])
    fields = {name: html.unescape(value) for name, value in HIDDEN.findall(page)}
    fields.update(username=username, password=password)
    took["post"], resp, page = request("POST", "/login", urllib.parse.urlencode(fields))
    status, location = resp.status, resp.headers.get("Location")
    assert status in (302, 303) and location, (status, page[:300])
    took["page"], resp, page = request("GET", urllib.parse.urlsplit(location).path or "/")
    return {"took": took, "status": status, "page": page, "page_status": resp.status}
