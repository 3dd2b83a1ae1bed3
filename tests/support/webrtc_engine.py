"""The engine's side of the WebRTC console test, run as a process inside a network namespace.

``python -m tests.support.webrtc_engine <tmpdir>`` starts the fake kvmd (on its loopback),
the engine's web server (all addresses of the namespace, SQLite store) with an operator and
a viewer, registers the fake as device ``pikvm-1`` (pinned by fingerprint), logs both users in
and prints one JSON line: ``{"port", "cookies": {"operator", "viewer"}}``. Then it answers
commands read from stdin, one a line, each with one JSON line: ``events`` (the HID events the
fake saw and its open ``/api/ws`` sessions) and ``quit``.
"""

from __future__ import annotations

import html
import http.client
import json
import sys
import urllib.parse
from pathlib import Path

from saltext_fleet import config
from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.store import engine as store_engine
from saltext_fleet.store import kvm as store_kvm
from tests.support.fakekvmd import FakeKvmd
from tests.support.uiserver import HIDDEN, serving

PASSWORD = "correct horse battery"
USERS = (("operator", "operator", PASSWORD), ("viewer", "viewer", PASSWORD))
DEVICE = "pikvm-1"


def login_cookie(port: int, username: str, password: str) -> str:
    """The ``Cookie`` header value of a session logged in through the form."""
    jar: dict[str, str] = {}

    def request(method, path, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in jar.items())}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            page = resp.read().decode()
        finally:
            conn.close()
        for header in resp.headers.get_all("Set-Cookie") or ():
            name, _, rest = header.partition("=")
            jar[name.strip()] = rest.split(";", 1)[0]
        return resp, page

    resp, page = request("GET", "/login")
    fields = {name: html.unescape(value) for name, value in HIDDEN.findall(page)}
    fields.update(username=username, password=password)
    resp, page = request("POST", "/login", urllib.parse.urlencode(fields))
    if resp.status not in (302, 303):
        raise RuntimeError(f"login of {username} failed: HTTP {resp.status}: {page[:200]}")
    return "; ".join(f"{k}={v}" for k, v in jar.items())


def main(tmp: Path) -> None:
    fake = FakeKvmd(fps=20.0).start()
    try:
        with serving(tmp, ui={"host": "0.0.0.0"}, users=USERS) as served:
            cfg = config.load(served["opts"])
            vault = core_secrets.Vault.open(cfg.key_file)
            engine = store_engine.get_engine(cfg.db_url)
            with engine.begin() as conn:
                store_kvm.add_device(
                    conn,
                    vault,
                    DEVICE,
                    {
                        "host": "127.0.0.1",
                        "port": fake.port,
                        "password": "admin",
                        "fingerprint": fake.fingerprint,
                    },
                )
            cookies = {name: login_cookie(served["port"], name, pw) for name, _, pw in USERS}
            print(json.dumps({"port": served["port"], "cookies": cookies}), flush=True)
            for line in sys.stdin:
                command = line.strip()
                if command == "events":
                    print(
                        json.dumps({"events": fake.hid_events, "ws_open": fake.connected_ws()}),
                        flush=True,
                    )
                elif command == "quit":
                    break
    finally:
        fake.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
