"""The engine's web server with a PiKVM registered for the console tests: the fake kvmd
(:mod:`tests.support.fakekvmd`) pinned by its fingerprint, an operator and a viewer, and a
login through the form that hands back the session cookie."""

from __future__ import annotations

import contextlib
import html
import http.client
import re
import urllib.parse

from saltext_fleet import config
from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.store import audit as store_audit
from saltext_fleet.store import engine as store_engine
from saltext_fleet.store import kvm as store_kvm
from tests.support.uiserver import serving

PASSWORD = "console test password"
DEVICE = "pikvm-1"
HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"')


def device_options(fake, **overrides) -> dict:
    options = {
        "host": "127.0.0.1",
        "port": fake.port,
        "user": "admin",
        "password": next(iter(fake.users.values())),
        "fingerprint": fake.fingerprint,
        "connect_timeout": 3,
        "timeout": 5,
    }
    options.update(overrides)
    return options


@contextlib.contextmanager
def console_server(tmp_path, fake, **device_overrides):
    """Serve the UI with ``DEVICE`` on ``fake``; yields ``{"port", "url", "engine"}``."""
    users = [("oper", "operator", PASSWORD), ("watcher", "viewer", PASSWORD)]
    with serving(tmp_path, users=users) as served:
        cfg = config.load(served["opts"])
        engine = store_engine.get_engine(cfg.db_url)
        vault = core_secrets.Vault.open(cfg.key_file)
        with engine.begin() as conn:
            store_kvm.add_device(conn, vault, DEVICE, device_options(fake, **device_overrides))
        yield {
            "port": served["port"],
            "url": f"http://127.0.0.1:{served['port']}",
            "engine": engine,
        }


class Session:
    """A logged-in session (cookies) over ``http.client``."""

    def __init__(self, port: int):
        self.port = port
        self.jar: dict[str, str] = {}

    @property
    def cookie(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.jar.items())

    def request(self, method: str, path: str, body: str | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {"Cookie": self.cookie}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read().decode("utf-8", "replace")
        finally:
            conn.close()
        for header in resp.headers.get_all("Set-Cookie") or ():
            name, _, rest = header.partition("=")
            self.jar[name.strip()] = rest.split(";", 1)[0]
        return resp.status, data

    def login(self, username: str, password: str = PASSWORD) -> Session:
        status, page = self.request("GET", "/login")
        assert status == 200, page[:300]
        fields = {n: html.unescape(v) for n, v in HIDDEN.findall(page)}
        fields.update(username=username, password=password)
        status, page = self.request("POST", "/login", urllib.parse.urlencode(fields))
        assert status in (302, 303), (status, page[:300])
        return self

    def logout(self) -> int:
        status, page = self.request("GET", "/account")
        fields = dict(HIDDEN.findall(page))
        status, _ = self.request(
            "POST", "/logout", urllib.parse.urlencode({"csrf_token": fields["csrf_token"]})
        )
        return status


def console_audit(engine, device: str = DEVICE) -> list[dict]:
    """The console's audit rows of ``device``, oldest first."""
    rows = store_audit.events(engine, limit=1000, target=device)
    return [r for r in reversed(rows) if r["action"].startswith("kvm.console")]
