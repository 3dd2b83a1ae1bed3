"""The Flask app of the web UI and its JSON API.

:func:`create_app` takes a :class:`WebContext` (the store's engine, the vault, the session
key, the way into Salt) and returns the app; the ``fleet`` engine serves it from Tornado, the
tests drive it with Flask's test client and a real browser.

Security, in one place (``before_request``):

- **Deny by default.** Every endpoint needs a logged-in user except those in
  :data:`PUBLIC_ENDPOINTS` (the login form, its second step, static files). Each view also
  names the permission it needs (:func:`requires`), checked against the user's role; a view
  without one is refused (a forgotten decorator is a 403, never an open door).
- **Sessions.** flask-login over Flask's signed cookie, ``HttpOnly``, ``SameSite=Lax``,
  ``Secure`` when served over TLS, holding the user id with the user's ``session_version``
  and a random session id that is replaced at login (no fixation). A new password, role or second factor bumps the
  version, which ends every session of that user.
- **CSRF.** Every POST, PUT, PATCH and DELETE made with a session cookie carries the token
  bound to the session (form field ``csrf_token`` or header ``X-CSRF-Token``); the login and
  code forms carry the token of the pre-login session the form was shown in. API requests
  with a bearer token carry no cookie and need none. The session cookie is signed, not
  encrypted: it holds no secret (a TOTP key being enrolled stays in ``totp_enrolments``).
- **Throttling.** Login posts are limited per client address before anything else
  (:class:`saltext_fleet.core.webauth.RateLimit`), and only a few password checks run at
  once; failed passwords and codes lock the user and the client address for a while
  (:class:`saltext_fleet.core.webauth.Throttle`). A logout is remembered
  (``ended_sessions``), so the logged-out cookie opens nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import logging
import math
import os
import secrets as pysecrets
import threading
from collections.abc import Callable
from typing import Any

from flask import Flask, abort, g, jsonify, redirect, request, session, url_for
from flask_login import LoginManager
from werkzeug.exceptions import TooManyRequests

from saltext_fleet import __version__
from saltext_fleet.core import webauth

log = logging.getLogger(__name__)

#: Endpoints served without a session.
PUBLIC_ENDPOINTS = frozenset({"auth.login", "auth.login_totp", "static"})
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SESSION_HOURS = 12
#: How long a TOTP secret shown for enrolment waits (server-side) for its first code.
TOTP_ENROL_SECONDS = 900


@dataclasses.dataclass
class WebContext:
    """What the app needs from outside."""

    engine: Any  # SQLAlchemy engine of the store
    vault: Any  # saltext_fleet.core.secrets.Vault
    secret_key: bytes
    salt: Any = None  # saltext_fleet.webui.salt.SaltGateway (None: actions unavailable)
    tls: bool = False
    config: Any = None  # saltext_fleet.config.FleetConfig
    #: failed logins per user (5 in 15 minutes lock the user for 15 minutes) ...
    throttle: webauth.Throttle = dataclasses.field(default_factory=webauth.Throttle)
    #: ... and per client address (more allowed: many people may share one address)
    address_throttle: webauth.Throttle = dataclasses.field(
        default_factory=lambda: webauth.Throttle(max_failures=50)
    )
    bcrypt_rounds: int | None = None  # tests lower it
    live: Any = None  # saltext_fleet.webui.live.Hub, when served by the engine
    eauth: Callable | None = None  # (username, password) -> role or None (Salt's eauth)
    #: bootstraps the UI started that failed before the store had a row for them
    bootstrap_failures: dict = dataclasses.field(default_factory=dict)
    #: login form posts per client address, counted before anything else (bcrypt included):
    #: 20 at once, then one a second
    login_rate: webauth.RateLimit = dataclasses.field(
        default_factory=lambda: webauth.RateLimit(per_second=1.0, burst=20)
    )
    #: password checks (bcrypt, or Salt's eauth) running at once, whoever asks: the other
    #: worker threads stay free for pages
    password_checks: threading.BoundedSemaphore = dataclasses.field(
        default_factory=lambda: threading.BoundedSemaphore(4)
    )
    #: ids of the sessions ended by a logout (their cookies open nothing any more)
    ended_sessions: webauth.Expiring = dataclasses.field(
        default_factory=lambda: webauth.Expiring(SESSION_HOURS * 3600)
    )
    #: TOTP secrets being enrolled: (user id, enrolment id) -> secret, kept here and never
    #: in the session cookie (which is signed, not encrypted)
    totp_enrolments: webauth.Expiring = dataclasses.field(
        default_factory=lambda: webauth.Expiring(TOTP_ENROL_SECONDS, max_keys=10_000)
    )


def load_secret_key(path: str) -> bytes:
    """The session-signing key: 32 random bytes in a 0600 file, made on first use."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        st = os.stat(path)
        if st.st_mode & 0o077:
            raise PermissionError(
                f"{path}: the UI's session key is readable by others (mode "
                f"{oct(st.st_mode & 0o777)}); chmod 600 it"
            ) from exc
        with open(path, "rb") as fh:
            data = fh.read().strip()
        if len(data) < 32:
            raise ValueError(f"{path}: the UI's session key is too short; delete the file") from exc
        return data
    with os.fdopen(fd, "wb") as fh:
        key = pysecrets.token_hex(32).encode()
        fh.write(key)
    return key


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
    return request.path.startswith("/api/")


def too_many(seconds: float, message: str):
    """A 429 whose ``Retry-After`` says when to come back (whole seconds, at least 1)."""
    wait = max(1, math.ceil(seconds))
    raise TooManyRequests(f"{message}: try again in {wait} s", retry_after=wait)


def client_address() -> str:
    return request.remote_addr or "unknown"


def create_app(ctx: WebContext) -> Flask:
    from saltext_fleet.webui import api, auth, drift_pages, pages

    here = os.path.dirname(os.path.abspath(__file__))
    app = Flask(
        "saltext_fleet.webui",
        template_folder=os.path.join(here, "templates"),
        static_folder=os.path.join(here, "static"),
    )
    app.config.update(
        SECRET_KEY=ctx.secret_key,
        SESSION_COOKIE_NAME="fleet_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=bool(ctx.tls),
        PERMANENT_SESSION_LIFETIME=dt.timedelta(hours=SESSION_HOURS),
        MAX_CONTENT_LENGTH=2 * 1024 * 1024,
        JSON_SORT_KEYS=False,
    )
    app.extensions["fleet"] = ctx
    login_manager = LoginManager()
    login_manager.session_protection = "basic"
    login_manager.user_loader(auth.load_user)
    login_manager.init_app(app)
    app.register_blueprint(auth.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp, url_prefix="/api/v1")
    app.register_blueprint(drift_pages.bp)
    app.register_blueprint(drift_pages.api_bp, url_prefix="/api/v1")

    @app.before_request
    def gatekeeper():
        g.user = None
        g.via_token = False
        endpoint = request.endpoint
        if endpoint is None:
            return None  # a 404 follows
        view = app.view_functions.get(endpoint)
        if (
            endpoint not in PUBLIC_ENDPOINTS
            and getattr(view, "fleet_permission", None) is None
            and endpoint not in auth.SELF_SERVICE
        ):
            log.error("fleet ui: endpoint %s names no permission; refused", endpoint)
            abort(403, description="this page names no permission")
        bearer = request.headers.get("Authorization", "")
        if bearer.startswith("Bearer "):
            # API tokens: only for the API, and never together with a session cookie's rights
            if not is_api():
                abort(401, description="API tokens are for /api/v1 only")
            user = auth.user_for_token(ctx, bearer[7:].strip())
            if user is None:
                abort(401, description="unknown or revoked API token")
            g.user, g.via_token = user, True
            return None
        g.user = auth.session_user(ctx)
        if endpoint in PUBLIC_ENDPOINTS:
            if request.method in STATE_CHANGING:
                if endpoint == "auth.login":
                    # before the form is read further and before bcrypt runs
                    wait = ctx.login_rate.wait(f"ip:{client_address()}")
                    if wait:
                        too_many(wait, "too many logins from your address")
                # the login form's token is bound to the session the form was shown in
                token = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token")
                if not token or not webauth.check_csrf(
                    ctx.secret_key, session.get("sid", ""), token
                ):
                    abort(
                        403,
                        description="missing or wrong CSRF token (the login form expired "
                        "or was not sent from this site): reload the login page",
                    )
            return None
        if g.user is None:
            if is_api() or request.method in STATE_CHANGING:
                abort(401, description="log in first")
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        if request.method in STATE_CHANGING:
            token = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token")
            if not token or not webauth.check_csrf(ctx.secret_key, session.get("sid", ""), token):
                abort(403, description="missing or wrong CSRF token: reload the page")
        return None

    @app.after_request
    def headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'",
        )
        if g.get("user") is not None and not g.get("via_token"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.template_filter("json")
    def as_json(value, indent=None):
        """JSON text for people to read: Jinja escapes it for HTML like any other text
        (Flask's ``tojson`` writes ``<`` as ``\\u003c``, which is for scripts)."""
        return json.dumps(value, indent=indent, sort_keys=True, default=str, ensure_ascii=False)

    @app.context_processor
    def inject():
        user = g.get("user")
        return {
            "user": user,
            "can": (lambda p: user is not None and webauth.allowed(user["role"], p)),
            "csrf_token": auth.csrf_for_session(ctx),
            "version": __version__,
        }

    @app.errorhandler(400)
    @app.errorhandler(401)
    @app.errorhandler(403)
    @app.errorhandler(404)
    @app.errorhandler(405)
    @app.errorhandler(409)
    @app.errorhandler(413)
    @app.errorhandler(422)
    @app.errorhandler(429)
    @app.errorhandler(500)
    @app.errorhandler(502)
    def error(exc):
        code = getattr(exc, "code", 500) or 500
        message = getattr(exc, "description", None) or str(exc)
        if is_api() or request.accept_mimetypes.best == "application/json":
            response = jsonify({"error": {"code": code, "message": message}})
        else:
            from flask import render_template

            response = app.make_response(render_template("error.html", code=code, message=message))
        response.status_code = code
        retry = getattr(exc, "retry_after", None)
        if retry is not None:
            response.headers["Retry-After"] = str(retry)
        return response

    return app
