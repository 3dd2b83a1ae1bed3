"""What every view of the web UI stands on: the app's :class:`WebContext`, the request's
acting user and its way into Salt, and the permission a view needs (:func:`requires`).

The bottom layer of ``webui/``: it imports nothing else from ``webui/``, so the security
hooks, the login blueprint, the operations and the views all import it and none of them
imports another in a circle (the way flaskr keeps ``login_required`` out of the factory).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import math
import threading
from collections.abc import Callable
from typing import Any

from flask import abort, current_app, g, request
from werkzeug.exceptions import TooManyRequests

from saltext_fleet.core import webauth
from saltext_fleet.store import ui_limits
from saltext_fleet.store import users as store_users

SESSION_HOURS = 12
#: How long a TOTP secret shown for enrolment waits (in the store, encrypted) for its first
#: code.
TOTP_ENROL_SECONDS = 900


class EndedSessions:
    """The ids of the sessions ended by a logout, for every master's UI: kept in the store
    (``ui_ended_sessions``) until their cookies would have expired, so a cookie logged out
    through one master opens nothing on another; and in memory, so this engine answers
    without a query for what it already knows. ``put``/``in`` as
    :class:`~saltext_fleet.core.webauth.Expiring` (which the live hub also takes)."""

    def __init__(self, engine, ttl: float = SESSION_HOURS * 3600):
        self.engine = engine
        self.ttl = ttl
        self._known = webauth.Expiring(ttl)

    def put(self, sid: str, value: object = True) -> None:
        if not sid or sid in self._known:
            return
        self._known.put(sid)
        if self.engine is not None:
            until = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=self.ttl)
            with self.engine.begin() as conn:
                store_users.end_session(conn, sid, until)

    def __contains__(self, sid: object) -> bool:
        if not sid or not isinstance(sid, str):
            return False
        if sid in self._known:
            return True
        if self.engine is None:
            return False
        with self.engine.connect() as conn:
            ended = store_users.session_ended(conn, sid)
        if ended:
            self._known.put(sid)
        return ended

    def __len__(self) -> int:
        return len(self._known)


@dataclasses.dataclass
class WebContext:
    """What the app needs from outside."""

    engine: Any  # SQLAlchemy engine of the store
    vault: Any  # saltext_fleet.core.secrets.Vault
    secret_key: bytes
    salt: Any = None  # saltext_fleet.webui.salt.SaltGateway (None: actions unavailable)
    tls: bool = False
    config: Any = None  # saltext_fleet.config.FleetConfig
    #: failed logins per user (5 in 15 minutes lock the user for 15 minutes) ... (None: in
    #: the store, for every master: :class:`~saltext_fleet.store.ui_limits.SharedThrottle`)
    throttle: Any = None
    #: ... and per client address (more allowed: many people may share one address)
    address_throttle: Any = None
    bcrypt_rounds: int | None = None  # tests lower it
    live: Any = None  # saltext_fleet.webui.live.Hub, when served by the engine
    #: the engine of the read-only pages (``fleet:db_read_url``, a standby); None: ``engine``
    read_engine: Any = None
    eauth: Callable | None = None  # (username, password) -> role or None (Salt's eauth)
    #: bootstraps the UI started that failed before the store had a row for them
    bootstrap_failures: dict = dataclasses.field(default_factory=dict)
    #: login form posts per client address, counted before anything else (bcrypt included):
    #: 20 at once, then one a second, for every master (None: in the store)
    login_rate: Any = None
    #: password checks (bcrypt, or Salt's eauth) running at once, whoever asks: the other
    #: worker threads stay free for pages. Per engine on purpose: it guards this process's CPU
    password_checks: threading.BoundedSemaphore = dataclasses.field(
        default_factory=lambda: threading.BoundedSemaphore(4)
    )
    #: ids of the sessions ended by a logout through any master (their cookies open nothing
    #: any more): :class:`EndedSessions` over ``engine`` unless given
    ended_sessions: Any = None

    def __post_init__(self):
        if self.ended_sessions is None:
            self.ended_sessions = EndedSessions(self.engine)
        if self.throttle is None:
            self.throttle = ui_limits.SharedThrottle(self.engine, max_failures=5)
        if self.address_throttle is None:
            self.address_throttle = ui_limits.SharedThrottle(self.engine, max_failures=50)
        if self.login_rate is None:
            self.login_rate = ui_limits.SharedRateLimit(self.engine, per_second=1.0, burst=20)


def ctx() -> WebContext:
    """The :class:`WebContext` of the app serving this request."""
    return current_app.extensions["fleet"]


def reader():
    """The engine the read-only pages query (the fleet overview, the jobs list, certificates,
    Xcode): ``fleet:db_read_url``'s when set, else the store's. Nothing written, nothing that
    decides who may do what (sessions, users, keys) is read through it: a standby lags."""
    c = ctx()
    return c.read_engine if c.read_engine is not None else c.engine


def actor() -> str:
    """The acting user as the audit chain and Salt's ``__user__`` name it: ``ui:<username>``."""
    return f"ui:{g.user['username']}"


def salt():
    """The app's Salt gateway (:class:`saltext_fleet.webui.salt.SaltGateway`); 502 when this
    UI has none."""
    gateway = ctx().salt
    if gateway is None:
        abort(502, description="this UI has no connection to a Salt master")
    return gateway


def requires(permission: str):
    """The permission a view needs (see :data:`saltext_fleet.core.webauth.PERMISSIONS`)."""
    webauth.allowed("admin", permission)  # an unknown permission fails at import time

    def decorate(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            user = g.get("user")
            if user is None:
                abort(401)
            if not webauth.allowed(user["role"], permission):
                abort(403, description=f"your role ({user['role']}) may not {permission}")
            return view(*args, **kwargs)

        wrapped.fleet_permission = permission
        return wrapped

    return decorate


def is_api() -> bool:
    """Whether this request is for the JSON API."""
    return request.path.startswith("/api/")


def too_many(seconds: float, message: str):
    """A 429 whose ``Retry-After`` says when to come back (whole seconds, at least 1)."""
    wait = max(1, math.ceil(seconds))
    raise TooManyRequests(f"{message}: try again in {wait} s", retry_after=wait)


def client_address() -> str:
    """The client's address as the server saw it."""
    return request.remote_addr or "unknown"


def client_key() -> str:
    """The client's address as the login counters key it (an IPv6 client by its /64)."""
    return webauth.address_key(client_address())
