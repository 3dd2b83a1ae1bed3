"""The web UI's security, in one place: the hooks :func:`init_app` installs on the app.

- **Deny by default** (:func:`gatekeeper`, before every request). Every endpoint needs a
  logged-in user except those in :data:`PUBLIC_ENDPOINTS` (the login form, its second step,
  static files). Each view also names the permission it needs
  (:func:`saltext_fleet.webui.base.requires`), checked against the user's role; a view without
  one is refused (a forgotten decorator is a 403, never an open door).
- **Sessions.** flask-login over Flask's signed cookie, ``HttpOnly``, ``SameSite=Lax``,
  ``Secure`` when served over TLS, holding the user id with the user's ``session_version``
  and a random session id that is replaced at login (no fixation). A new password, role or
  second factor bumps the version, which ends every session of that user.
- **CSRF.** Every POST, PUT, PATCH and DELETE made with a session cookie carries the token
  bound to the session (form field ``csrf_token`` or header ``X-CSRF-Token``); the login and
  code forms carry the token of the pre-login session the form was shown in. API requests
  with a bearer token carry no cookie and need none. The session cookie is signed, not
  encrypted: it holds no secret (a TOTP key being enrolled waits in the store, encrypted).
- **Throttling.** Login posts are limited per client address before anything else, and only
  a few password checks run at once (per engine); failed passwords and codes lock the user
  and the client address for a while. The counters are the store's, one for every master
  (:mod:`saltext_fleet.store.ui_limits`). A logout is remembered (``ended_sessions``), so the
  logged-out cookie opens nothing.
- **The store away** is a ``503`` saying so (:func:`store_away`): the UI fails closed.
- **Headers** on every answer (:func:`headers`): no sniffing, no framing, a strict CSP, and
  ``no-store`` for what a session saw; errors as a page or, for the API, as
  ``{"error": {"code", "message"}}`` (:func:`error`).
"""

from __future__ import annotations

import json
import logging
import os
import secrets as pysecrets

from flask import (
    Flask,
    abort,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import InternalServerError, ServiceUnavailable

from saltext_fleet import __version__
from saltext_fleet.core import webauth
from saltext_fleet.store import secrets as store_secrets
from saltext_fleet.store.batch import is_connection_error
from saltext_fleet.webui import auth
from saltext_fleet.webui.base import client_key, ctx, is_api, too_many

log = logging.getLogger(__name__)

#: Endpoints served without a session.
PUBLIC_ENDPOINTS = frozenset({"auth.login", "auth.login_totp", "static"})
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: The HTTP errors answered as a page or as the API's error envelope.
ERROR_CODES = (400, 401, 403, 404, 405, 409, 413, 422, 429, 500, 502, 503)
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
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


#: Where the session-signing key is kept in the store: ``secrets`` (scope ``fleet``).
SESSION_KEY_OWNER, SESSION_KEY_NAME = "ui", "session_key"


def fleet_secret_key(engine, vault, legacy_path: str | None = None) -> bytes:
    """The session-signing key of the whole fleet, kept in the store (encrypted with the
    vault, ``secrets`` scope ``fleet``): every master's engine signs and checks session
    cookies and CSRF tokens with it, so a user logged in through one master is logged in on
    all of them.

    The first master to ask stores it (insert-if-absent: masters starting together end with
    one key). Its value is this master's old key file (``legacy_path``, from before the key
    moved into the store) when that file exists, so sessions survive the upgrade; otherwise
    32 new random bytes.
    """
    candidate = None
    if legacy_path and os.path.exists(legacy_path):
        candidate = load_secret_key(legacy_path).decode()
    candidate = candidate or pysecrets.token_hex(32)
    with engine.begin() as conn:
        key = store_secrets.shared_key(conn, vault, SESSION_KEY_OWNER, SESSION_KEY_NAME, candidate)
    return key.encode()


def init_app(app: Flask) -> None:
    """Install the security hooks, the error pages and the template helpers on ``app``."""
    app.before_request(gatekeeper)
    app.after_request(headers)
    app.add_template_filter(as_json, "json")
    app.context_processor(template_globals)
    for code in ERROR_CODES:
        app.register_error_handler(code, error)
    app.register_error_handler(DBAPIError, store_away)


def store_away(exc):
    """The store cannot be reached: ``503`` saying so (fail closed: no login, no page
    without it; the login counters and the users are there). Other database errors stay
    errors of the server (500)."""
    if not is_connection_error(exc):
        log.error("fleet ui: database error", exc_info=exc)
        return error(InternalServerError())
    log.warning("fleet ui: the store cannot be reached: %s", type(exc.orig).__name__)
    return error(
        ServiceUnavailable(
            "the fleet's database cannot be reached: logins and pages are refused until it "
            "is back; try again shortly",
            retry_after=5,
        )
    )


def _csrf_ok() -> bool:
    token = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token")
    return bool(token) and webauth.check_csrf(ctx().secret_key, session.get("sid", ""), token)


def gatekeeper():
    """Before every request: deny by default, find the user (API token or session), rate
    the login form and check CSRF tokens."""
    c = ctx()
    g.user = None
    g.via_token = False
    endpoint = request.endpoint
    if endpoint is None:
        return None  # a 404 follows
    view = current_app.view_functions.get(endpoint)
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
        user = auth.user_for_token(c, bearer[7:].strip())
        if user is None:
            abort(401, description="unknown or revoked API token")
        g.user, g.via_token = user, True
        return None
    g.user = auth.session_user(c)
    if endpoint in PUBLIC_ENDPOINTS:
        if request.method in STATE_CHANGING:
            if endpoint == "auth.login":
                # before the form is read further and before bcrypt runs
                wait = c.login_rate.wait(client_key())
                if wait:
                    too_many(wait, "too many logins from your address")
            # the login form's token is bound to the session the form was shown in
            if not _csrf_ok():
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
    if request.method in STATE_CHANGING and not _csrf_ok():
        abort(403, description="missing or wrong CSRF token: reload the page")
    return None


def headers(response):
    """After every request: the security headers, and ``no-store`` for a session's pages."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    if g.get("user") is not None and not g.get("via_token"):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def as_json(value, indent=None):
    """JSON text for people to read: Jinja escapes it for HTML like any other text
    (Flask's ``tojson`` writes ``<`` as ``\\u003c``, which is for scripts)."""
    return json.dumps(value, indent=indent, sort_keys=True, default=str, ensure_ascii=False)


def template_globals():
    """What every template may use: the user, ``can(permission)``, the CSRF token, the
    version."""
    user = g.get("user")
    return {
        "user": user,
        "can": (lambda p: user is not None and webauth.allowed(user["role"], p)),
        "csrf_token": auth.csrf_for_session(ctx()),
        "version": __version__,
    }


def error(exc):
    """An HTTP error as a page, or as the API's envelope; ``Retry-After`` kept."""
    code = getattr(exc, "code", 500) or 500
    message = getattr(exc, "description", None) or str(exc)
    if is_api() or request.accept_mimetypes.best == "application/json":
        response = jsonify({"error": {"code": code, "message": message}})
    else:
        response = current_app.make_response(
            render_template("error.html", code=code, message=message)
        )
    response.status_code = code
    retry = getattr(exc, "retry_after", None)
    if retry is not None:
        response.headers["Retry-After"] = str(retry)
    return response
