"""The Flask app of the web UI and its JSON API: the application factory.

:func:`create_app` takes a :class:`~saltext_fleet.webui.base.WebContext` (the store's engine,
the vault, the session key, the way into Salt) and returns the app; the ``fleet`` engine
serves it from Tornado, the tests drive it with Flask's test client and a real browser.

The app is in layers: :mod:`.base` (the context, the acting user, Salt, ``requires``),
:mod:`.security` (deny by default, sessions, CSRF, throttling, headers, errors),
:mod:`.auth` (login and the user's account), :mod:`.ops` (what pages and API both do), and
the two view modules over it, :mod:`.pages` and :mod:`.api`.
"""

from __future__ import annotations

import datetime as dt
import os

from flask import Flask
from flask_login import LoginManager

from saltext_fleet.webui import (
    alerts_pages,
    api,
    auth,
    certs_pages,
    drift_pages,
    kvm_pages,
    pages,
    security,
    vulns_pages,
)
from saltext_fleet.webui.base import SESSION_HOURS, WebContext

__all__ = ["WebContext", "create_app"]

HERE = os.path.dirname(os.path.abspath(__file__))


def create_app(ctx: WebContext) -> Flask:
    """The web UI's Flask app over ``ctx``."""
    app = Flask(
        "saltext_fleet.webui",
        template_folder=os.path.join(HERE, "templates"),
        static_folder=os.path.join(HERE, "static"),
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
    security.init_app(app)
    app.register_blueprint(auth.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp, url_prefix="/api/v1")
    app.register_blueprint(drift_pages.bp)
    app.register_blueprint(drift_pages.api_bp, url_prefix="/api/v1")
    app.register_blueprint(vulns_pages.bp)
    app.register_blueprint(vulns_pages.api_bp, url_prefix="/api/v1")
    app.register_blueprint(kvm_pages.bp)
    app.register_blueprint(kvm_pages.api_bp, url_prefix="/api/v1")
    app.register_blueprint(alerts_pages.bp)
    app.register_blueprint(alerts_pages.api_bp, url_prefix="/api/v1")
    app.register_blueprint(certs_pages.bp)
    app.register_blueprint(certs_pages.api_bp, url_prefix="/api/v1")
    return app
