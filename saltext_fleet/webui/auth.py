"""Logging in and out, the second factor, and the user's own account page.

A login is two steps when the user has enrolled TOTP: the password first (the session then
holds only a *pending* login, which opens nothing), then a 6-digit code or one of the
recovery codes. Failures count per user and per client address; too many lock both for a
while (``429``). An unknown user costs the same bcrypt time as a known one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import secrets as pysecrets
import time
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import UserMixin, current_user, login_user, logout_user

from saltext_fleet.core import webauth
from saltext_fleet.store import audit as store_audit
from saltext_fleet.store import users as store_users
from saltext_fleet.webui.base import TOTP_ENROL_SECONDS, client_key, ctx, too_many

bp = Blueprint("auth", __name__)

#: Endpoints any logged-in user may use without a further permission.
SELF_SERVICE = frozenset()
PENDING_SECONDS = 300


def audit(action: str, target: str, details: dict | None = None, actor: str | None = None):
    user = g.get("user")
    who = actor or (f"ui:{user['username']}" if user else "ui:anonymous")
    store_audit.record(ctx().engine, who, action, target, details or {})


# -- who is asking -----------------------------------------------------------------------------


class WebUser(UserMixin):
    """The logged-in user, as flask-login keeps it: its id in the session is
    ``<user id>:<session_version>``, so bumping the version (a new password, role or second
    factor) ends every session of that user."""

    def __init__(self, data: dict[str, Any]):
        self.data = data

    def get_id(self) -> str:
        return f"{self.data['id']}:{self.data['session_version']}"


def parse_session_id(value: Any) -> tuple[int, int] | None:
    try:
        uid, version = str(value).split(":")
        return int(uid), int(version)
    except (TypeError, ValueError):
        return None


def session_owner(engine, uid: Any, version: Any) -> dict[str, Any] | None:
    """The user a session names (id and session version), unless gone, disabled or its
    sessions were ended since."""
    if not isinstance(uid, int) or not isinstance(version, int):
        return None
    with engine.connect() as conn:
        user = store_users.get_user_by_id(conn, uid)
    if user is None or user["disabled"] or user["session_version"] != version:
        return None
    return user


def cookie_user(flask_app, engine, cookie: str | None) -> dict[str, Any] | None:
    """The user a Flask session cookie belongs to (None when it is absent, forged, expired or
    its user's sessions were ended): for the engine's websockets and streams, which Tornado
    serves outside Flask's request handling."""
    if not cookie:
        return None
    serializer = flask_app.session_interface.get_signing_serializer(flask_app)
    try:
        data = serializer.loads(
            cookie, max_age=int(flask_app.permanent_session_lifetime.total_seconds())
        )
    except Exception:  # noqa: BLE001 - bad signature, expired, garbage
        return None
    # flask-login's key
    return session_owner(engine, *(parse_session_id(data.get("_user_id")) or (None, None)))


def load_user(user_id: str) -> WebUser | None:
    """flask-login's user loader."""
    user = session_owner(ctx().engine, *(parse_session_id(user_id) or (None, None)))
    return None if user is None else WebUser(user)


def session_user(c) -> dict[str, Any] | None:
    """The user of this request's session; None when there is none or it was logged out
    (a logged-out cookie sent again opens nothing)."""
    if not current_user.is_authenticated:
        return None
    if session.get("sid") in c.ended_sessions:
        logout_user()
        session.clear()
        return None
    return current_user.data


def renew_session(user: dict[str, Any]) -> None:
    """Keep this session after the user's session version moved (their own change)."""
    login_user(WebUser(user), fresh=True)


def user_for_token(c, token: str) -> dict[str, Any] | None:
    if not webauth.is_api_token(token):
        return None
    with c.engine.connect() as conn:
        return store_users.user_by_api_token(conn, token)


def csrf_for_session(c) -> str:
    sid = session.get("sid")
    if not sid:
        return ""
    return webauth.csrf_token(c.secret_key, sid)


def _new_sid() -> str:
    return pysecrets.token_urlsafe(24)


@contextlib.contextmanager
def _password_check(c):
    """One of the few password checks (bcrypt, eauth) that may run at once, or a 429 now:
    waiting for one would hold a worker thread all the same."""
    if not c.password_checks.acquire(blocking=False):
        too_many(1, "too many passwords are being checked at once")
    try:
        yield
    finally:
        c.password_checks.release()


def _refuse_locked(left: float) -> None:
    too_many(left, "too many failed attempts")


def _locked(username: str) -> float:
    c = ctx()
    left = max(
        c.throttle.locked(webauth.user_key(username)), c.address_throttle.locked(client_key())
    )
    if not left and _valid_name(username):
        # a lock recorded in the store outlives a restart of the engine
        with c.engine.connect() as conn:
            user = store_users.get_user(conn, username)
        until = user and user["locked_until"]
        if until:
            left = max(0.0, (dt.datetime.fromisoformat(until) - now()).total_seconds())
    return left


def _failed(username: str, what: str) -> None:
    c = ctx()
    locked = c.throttle.failure(webauth.user_key(username))
    c.address_throttle.failure(client_key())
    if locked and _valid_name(username):
        with c.engine.begin() as conn:
            store_users.lock(conn, username, now() + dt.timedelta(seconds=locked))
    audit("ui.login_failed", username, {"step": what, "address": request.remote_addr}, "ui")


def _safe_next(target: str | None) -> str:
    if not target:
        return url_for("pages.overview")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("pages.overview")
    if "\\" in target:
        return url_for("pages.overview")
    return target


def _complete_login(user: dict[str, Any], via: str):
    next_url = session.get("next")
    session.clear()
    session.permanent = True
    login_user(WebUser(user), fresh=True)
    session["sid"] = _new_sid()  # a new session id at every login
    session["at"] = int(time.time())
    c = ctx()
    c.throttle.success(webauth.user_key(user["username"]))
    with c.engine.begin() as conn:
        store_users.record_login(conn, user["username"])
    g.user = user
    audit("ui.login", user["username"], {"via": via, "address": request.remote_addr})
    return redirect(_safe_next(next_url))


# -- login -------------------------------------------------------------------------------------


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        if g.get("user") is not None:
            return redirect(url_for("pages.overview"))
        session["next"] = _safe_next(request.args.get("next"))
        if not session.get("sid"):
            # a pre-login session: the form's CSRF token is bound to it
            session["sid"] = _new_sid()
        return render_template("login.html")
    # (the app checked the client address's rate and the CSRF token already)
    username = (request.form.get("username") or "").strip()
    password = request.form.get("password") or ""
    left = _locked(username)
    if left:
        _refuse_locked(left)
    c = ctx()
    with _password_check(c):
        user, ok = _check_password(c, username, password)
    if not ok:
        _failed(username, "password")
        return render_template("login.html", error="wrong username or password"), 401
    if user["totp"]:
        next_url = session.get("next")
        session.clear()
        session["pending"] = {
            "uid": user["id"],
            "ver": user["session_version"],
            "at": int(time.time()),
        }
        session["next"] = next_url
        session["sid"] = _new_sid()  # the TOTP form's CSRF token is bound to this one
        return redirect(url_for("auth.login_totp"))
    return _complete_login(user, "password")


def _check_password(c, username: str, password: str):
    """``(user, ok)``: bcrypt (or Salt's eauth) on the password; the same time for a user
    who does not exist."""
    with c.engine.connect() as conn:
        user = store_users.get_user(conn, username) if _valid_name(username) else None
        stored = store_users.password_hash(conn, username) if user else None
    ok = False
    rounds = c.bcrypt_rounds or webauth.BCRYPT_ROUNDS
    if (user is None or user["source"] == "eauth") and c.eauth and _valid_name(username):
        # Salt's eauth checks the password; the role comes from fleet:ui:eauth:roles
        if user is None or not user["disabled"]:
            user, ok = _eauth_login(c, username, password, user)
    elif user is None or user["disabled"]:
        webauth.verify_dummy(password, rounds=rounds)
    else:
        ok = webauth.verify_password(password, stored or "")
        if ok and stored and webauth.needs_rehash(stored, rounds=rounds):
            with c.engine.begin() as conn:
                store_users.rehash_password(
                    conn, username, webauth.hash_password(password, rounds=rounds)
                )
    return user, ok


def _eauth_login(c, username: str, password: str, user):
    """``(user, ok)`` for a login Salt's eauth checks; the user row is made or its role
    brought in line with the mapping."""
    role = c.eauth(username, password)
    if role is None:
        return user, False
    with c.engine.begin() as conn:
        if user is None:
            store_users.create_user(conn, username, role, None, source="eauth")
            store_audit.append(
                conn, "ui", "user.create", username, {"role": role, "source": "eauth"}
            )
        elif user["role"] != role:
            store_users.set_role(conn, username, role)
            store_audit.append(conn, "ui", "user.role", username, {"role": role, "source": "eauth"})
        fresh = store_users.get_user(conn, username)
    return fresh, True


def _valid_name(username: str) -> bool:
    try:
        webauth.check_username(username)
    except webauth.WebAuthError:
        return False
    return True


@bp.route("/login/totp", methods=["GET", "POST"])
def login_totp():
    pending = session.get("pending")
    if not isinstance(pending, dict) or time.time() - pending.get("at", 0) > PENDING_SECONDS:
        session.pop("pending", None)
        return redirect(url_for("auth.login"))
    c = ctx()
    user = session_owner(c.engine, pending.get("uid"), pending.get("ver"))
    if user is None:
        session.clear()
        return redirect(url_for("auth.login"))
    if request.method == "GET":
        return render_template("login_totp.html", username=user["username"])
    left = _locked(user["username"])
    if left:
        _refuse_locked(left)
    code = (request.form.get("code") or "").strip()
    with c.engine.begin() as conn:
        secret = store_users.totp_secret(conn, c.vault, user["username"])
        last = store_users.totp_last_counter(conn, user["username"])
        counter = webauth.verify_totp(secret, code, last) if secret else None
        if counter is not None and store_users.use_totp_counter(conn, user["username"], counter):
            via = "totp"
        elif len(code) > 6 and store_users.use_recovery_code(conn, user["username"], code):
            via = "recovery code"
        else:
            via = None
    if via is None:
        _failed(user["username"], "code")
        return render_template(
            "login_totp.html", username=user["username"], error="wrong or used code"
        ), 401
    if via == "recovery code":
        flash("You logged in with a recovery code: it cannot be used again.")
    return _complete_login(user, via)


@bp.route("/logout", methods=["POST"])
def logout():
    user = g.get("user")
    sid = session.get("sid")
    c = ctx()
    if sid:
        # this cookie opens nothing any more, here or on a websocket
        c.ended_sessions.put(sid)
        if c.live is not None:
            c.live.end_session(sid)
    logout_user()
    session.clear()
    if user is not None:
        store_audit.record(
            ctx().engine, f"ui:{user['username']}", "ui.logout", user["username"], {}
        )
    return redirect(url_for("auth.login"))


logout.fleet_permission = "view"


# -- the user's own account --------------------------------------------------------------------


def _own_account():
    user = g.get("user")
    if user is None or g.get("via_token"):
        abort(403, description="the account page is for a browser session")
    return user


def _enrolment(user: dict[str, Any]) -> str | None:
    """The TOTP secret this session is enrolling: kept in the store, encrypted, under the
    user and a random enrolment id (any master's UI finds it); the session cookie holds
    only the enrolment id."""
    enrol_id = session.get("totp_enrol")
    if not isinstance(enrol_id, str):
        return None
    c = ctx()
    with c.engine.connect() as conn:
        return store_users.totp_enrolment(
            conn, c.vault, user["username"], enrol_id, TOTP_ENROL_SECONDS
        )


@bp.route("/account", methods=["GET"])
def account():
    user = _own_account()
    new_secret = None
    if not user["totp"]:
        new_secret = _enrolment(user)
        if not new_secret:
            new_secret = webauth.new_totp_secret()
            enrol_id = pysecrets.token_urlsafe(16)
            c = ctx()
            with c.engine.begin() as conn:
                store_users.put_totp_enrolment(
                    conn, c.vault, user["username"], enrol_id, new_secret, TOTP_ENROL_SECONDS
                )
            session["totp_enrol"] = enrol_id
    return render_template(
        "account.html",
        new_secret=new_secret,
        totp_uri=webauth.totp_uri(new_secret, user["username"]) if new_secret else None,
    )


account.fleet_permission = "view"


@bp.route("/account/totp", methods=["POST"])
def account_totp():
    user = _own_account()
    if user["totp"]:
        abort(409, description="a second factor is enrolled already")
    secret = _enrolment(user)
    if not secret:
        flash("The key shown for enrolment expired: add the new one to your app.")
        return redirect(url_for("auth.account")), 303
    if webauth.verify_totp(secret, request.form.get("code") or "", None) is None:
        flash("That code does not match: check the time on your device and try again.")
        return redirect(url_for("auth.account"))
    c = ctx()
    with c.engine.begin() as conn:
        codes = store_users.set_totp(conn, c.vault, user["username"], secret)
        store_users.drop_totp_enrolment(conn, user["username"], session.pop("totp_enrol"))
        fresh = store_users.get_user(conn, user["username"])
    renew_session(fresh)  # this session goes on; the others end
    audit("ui.totp_enrol", user["username"])
    return render_template("recovery_codes.html", codes=codes)


account_totp.fleet_permission = "view"


@bp.route("/account/password", methods=["POST"])
def account_password():
    user = _own_account()
    if user["source"] != "local":
        abort(409, description="this account's password is checked by Salt's eauth")
    c = ctx()
    left = _locked(user["username"])
    if left:
        _refuse_locked(left)
    with c.engine.connect() as conn:
        stored = store_users.password_hash(conn, user["username"])
    with _password_check(c):
        ok = webauth.verify_password(request.form.get("current") or "", stored or "")
    if not ok:
        _failed(user["username"], "password change")
        flash("The current password is wrong.")
        return redirect(url_for("auth.account")), 303
    try:
        with c.engine.begin() as conn:
            store_users.set_password(
                conn, user["username"], request.form.get("new") or "", rounds=c.bcrypt_rounds
            )
            fresh = store_users.get_user(conn, user["username"])
    except (webauth.WebAuthError, store_users.UserError) as exc:
        flash(str(exc))
        return redirect(url_for("auth.account")), 303
    renew_session(fresh)
    audit("ui.password_change", user["username"])
    flash("Password changed; your other sessions have ended.")
    return redirect(url_for("auth.account")), 303


account_password.fleet_permission = "view"


@bp.route("/account/token", methods=["POST"])
def account_token():
    user = _own_account()
    c = ctx()
    with c.engine.begin() as conn:
        if request.form.get("revoke"):
            store_users.revoke_api_token(conn, user["username"])
            token = None
        else:
            token = store_users.new_api_token(conn, user["username"])
    audit("ui.api_token_revoke" if token is None else "ui.api_token_new", user["username"])
    if token is None:
        flash("API token revoked.")
        return redirect(url_for("auth.account")), 303
    return render_template("api_token.html", token=token)


account_token.fleet_permission = "tokens.own"


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)
