"""The web UI's Flask app for tests: built over a store, a fake (or real) Salt gateway, and the
helpers that log a test client in.

Used by tests/web (SQLite, a fake gateway), tests/store (both backends) and
tests/integration/test_webui_app.py (the real master).
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.webui.app import WebContext, create_app
from saltext_fleet.webui.salt import SaltError

PASSWORD = "a long enough password"


def make_app(engine, key_file, salt=None, config=None, vault=None, secret_key=None):
    """The app over ``engine``, testing on, bcrypt at its cheapest; ``salt`` a gateway (real
    or :class:`FakeSalt`), ``config`` a ``FleetConfig``; ``secret_key`` the session key
    (random by default; a master's engine takes the fleet's from the store)."""
    ctx = WebContext(
        engine=engine,
        vault=vault or core_secrets.Vault.open(str(key_file)),
        secret_key=secret_key or secrets.token_bytes(32),
        salt=salt,
        config=config,
        bcrypt_rounds=4,
    )
    app = create_app(ctx)
    app.testing = True
    return app


def csrf_of(html: str) -> str:
    """The CSRF token of the first form in a page."""
    found = re.search(r'name="csrf_token" value="([^"]*)"', html)
    assert found, "no CSRF token field in the page"
    return found.group(1)


def form_token(client, path: str = "/login") -> str:
    """The CSRF token of a form page (the login form's is bound to the pre-login session)."""
    token = csrf_of(client.get(path).get_data(as_text=True))
    assert token, f"{path} gave an empty CSRF token"
    return token


def post_login(client, username: str, password: str = PASSWORD):
    """Post the login form with its own CSRF token."""
    return client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": form_token(client)},
    )


def post_code(client, code: str):
    """Post the TOTP form with its own CSRF token."""
    return client.post(
        "/login/totp", data={"code": code, "csrf_token": form_token(client, "/login/totp")}
    )


def login(app, username: str, password: str = PASSWORD, address: str | None = None):
    """A test client logged in as ``username`` (no second factor)."""
    client = app.test_client()
    if address is not None:
        client.environ_base["REMOTE_ADDR"] = address
    resp = post_login(client, username, password)
    assert resp.status_code == 302, resp.data[:300]
    return client


def account_csrf(client) -> str:
    """The session's CSRF token, from the account page (which every user may open)."""
    page = client.get("/account")
    assert page.status_code == 200, page.status_code
    return csrf_of(page.get_data(as_text=True))


class FakeSalt:
    """A stand-in for :class:`saltext_fleet.webui.salt.SaltGateway` with the same methods.

    It fakes only what needs no master: it records every call (``calls``: ``(method, fun,
    targets or kwarg, user)``) and answers from ``answers`` (``fun -> value``, an exception
    to raise, or ``callable(kwarg)``). Nothing runs: whether Salt's runners, the job cache or
    the minions really do what the UI asks is for tests/integration with real daemons.
    """

    DEFAULTS: dict[str, Any] = {
        "fleet.keys": {},
        "fleet.enrolments": [],
        "fleet.baseline_list": [],
        "fleet.baseline_show": SaltError("no such baseline"),
    }

    def __init__(self, answers: dict[str, Any] | None = None):
        self.answers = {**self.DEFAULTS, **(answers or {})}
        self.calls: list[tuple] = []
        self._next_jid = 20261205000000000000

    def _answer(self, fun: str, kwarg: dict) -> Any:
        found = self.answers.get(fun)
        if isinstance(found, BaseException):
            raise found
        if callable(found):
            return found(kwarg)
        return found

    def runner(self, fun: str, kwarg: dict | None = None, user: str = "ui:unknown") -> Any:
        self.calls.append(("runner", fun, dict(kwarg or {}), user))
        return self._answer(fun, dict(kwarg or {}))

    def local_async(
        self,
        targets: list[str],
        fun: str,
        arg: list | None = None,
        user: str = "ui:unknown",
        kwarg: dict | None = None,
    ) -> str:
        self.calls.append(("local_async", fun, list(targets), user, list(arg or []), kwarg))
        failure = self.answers.get(fun)
        if isinstance(failure, BaseException):
            raise failure
        self._next_jid += 1
        return str(self._next_jid)
