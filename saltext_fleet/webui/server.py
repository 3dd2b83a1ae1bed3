"""The web server the ``fleet`` engine runs: Tornado on one asyncio loop.

- the Flask app (pages and ``/api/v1``) behind ``tornado.wsgi.WSGIContainer`` with a thread
  pool, so a slow page never blocks the loop;
- ``/ws/live``: a native Tornado websocket for the overview's live updates, authenticated by
  the same session cookie as the pages (and refused from another origin);
- the KVM console's video stream and websocket bridge (:mod:`.console`) and its WebRTC
  peers (:mod:`.kvm_webrtc`);
- TLS when ``fleet:ui:tls_cert`` and ``tls_key`` are set;
- deadlines for slow clients, a cap on connections per client address and a clear answer to
  the wrong protocol (:mod:`.guard`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import tornado.web
import tornado.websocket
import tornado.wsgi

from saltext_fleet import config
from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.store import audit as store_audit
from saltext_fleet.store import engine as store_engine
from saltext_fleet.webui import console, kvm_webrtc
from saltext_fleet.webui.app import create_app
from saltext_fleet.webui.auth import cookie_user as session_user
from saltext_fleet.webui.base import WebContext
from saltext_fleet.webui.eauth import make_checker
from saltext_fleet.webui.guard import GuardedHTTPServer
from saltext_fleet.webui.live import Hub
from saltext_fleet.webui.salt import SaltGateway
from saltext_fleet.webui.security import fleet_secret_key

log = logging.getLogger(__name__)

THREADS = 8
#: Tornado buffers a request's body before the Flask app sees it: refuse one above this at
#: once (the app answers 413 above its own MAX_CONTENT_LENGTH, 2 MiB)
MAX_BODY = 4 * 1024 * 1024
LISTEN_BACKLOG = 1024


def secret_key_path(opts: dict) -> str:
    """The session key file of releases before the key moved into the store (read once, to
    seed the store's key, when it exists)."""
    return os.path.join(opts.get("pki_dir") or opts["cachedir"], "fleet-ui.secret")


class LiveSocket(tornado.websocket.WebSocketHandler):
    def initialize(self, ctx: WebContext, flask_app):
        self.ctx = ctx
        self.flask_app = flask_app
        self.user = None

    def check_origin(self, origin: str) -> bool:
        # same host only: a page elsewhere must not ride on the session cookie
        return urlsplit(origin).netloc == self.request.host

    async def get(self, *args, **kwargs):
        cookie = self.get_cookie(self.flask_app.config["SESSION_COOKIE_NAME"])
        loop = asyncio.get_running_loop()
        self.user = await loop.run_in_executor(
            None, session_user, self.flask_app, self.ctx.engine, cookie
        )
        if self.user is None:
            self.set_status(401)
            self.finish("log in first")
            return
        await super().get(*args, **kwargs)

    def open(self):
        self.ctx.live.add(self)
        self.ctx.live.poke()

    def on_message(self, message):
        # the browser says nothing we act on; a frame is only a keep-alive
        if len(message) > 1024:
            self.close(1009, "frames from the browser are keep-alives only")

    def on_close(self):
        self.ctx.live.remove(self)


def build(opts: dict, loop: asyncio.AbstractEventLoop | None = None):
    """``(tornado_app, ctx, executor)`` for the master whose options are ``opts``."""
    cfg = config.load(opts)
    engine = store_engine.get_engine(cfg.db_url)
    store_engine.ensure_schema(engine)
    vault = core_secrets.Vault.open(cfg.key_file)
    store_audit.use_anchor(engine, cfg.key_file)
    loop = loop or asyncio.get_event_loop()
    ctx = WebContext(
        engine=engine,
        read_engine=(
            store_engine.get_engine(cfg.db_read_url, writable=False) if cfg.db_read_url else None
        ),
        vault=vault,
        secret_key=fleet_secret_key(engine, vault, secret_key_path(opts)),
        salt=SaltGateway(opts),
        tls=bool(cfg.ui.tls_cert),
        config=cfg,
    )
    if cfg.ui.eauth:
        ctx.eauth = make_checker(opts, cfg.ui.eauth, dict(cfg.ui.eauth_roles))
    ctx.live = Hub(
        engine,
        schedule=lambda fn: loop.call_soon_threadsafe(fn),
        idle_seconds=cfg.ui.live_poll_seconds,
        ended=ctx.ended_sessions,
    )
    flask_app = create_app(ctx)
    executor = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="fleet-ui")
    container = tornado.wsgi.WSGIContainer(flask_app, executor=executor)
    # KVM console: one set of limits for its streams, websockets and WebRTC peers (aiortc on
    # this loop, kvm_webrtc.py)
    consoles = console.Consoles(ctx, flask_app)
    app = tornado.web.Application(
        [
            (r"/ws/live", LiveSocket, {"ctx": ctx, "flask_app": flask_app}),
            *kvm_webrtc.routes(consoles),
            *console.routes(consoles),
            (r".*", tornado.web.FallbackHandler, {"fallback": container}),
        ],
        websocket_max_message_size=64 * 1024,
        # a browser that went away without closing (half-open) is noticed within a minute
        websocket_ping_interval=20,
        websocket_ping_timeout=20,  # Tornado caps it at the interval (and warns when higher)
    )
    app.settings["kvm_consoles"] = consoles
    return app, ctx, executor


def ssl_context(cfg) -> ssl.SSLContext | None:
    if not cfg.ui.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cfg.ui.tls_cert, cfg.ui.tls_key)
    return context


async def serve(
    opts: dict, ready: threading.Event | None = None, stop: asyncio.Event | None = None
):
    """Serve until ``stop`` is set (forever by default)."""
    cfg = config.load(opts)
    loop = asyncio.get_running_loop()
    app, ctx, executor = build(opts, loop)
    server = GuardedHTTPServer(
        app,
        ssl_options=ssl_context(cfg),
        xheaders=False,
        header_timeout=cfg.ui.header_timeout,
        body_timeout=cfg.ui.body_timeout,
        max_connections_per_address=cfg.ui.max_connections_per_address,
        max_body_size=MAX_BODY,
    )
    # a burst of connections waits in the kernel's queue, not in SYN retries of a second
    server.listen(cfg.ui.port, address=cfg.ui.host, backlog=LISTEN_BACKLOG)
    threads = [
        threading.Thread(target=ctx.live.run_looker, name="fleet-ui-live", daemon=True),
        threading.Thread(
            target=ctx.live.run_listener, args=(opts,), name="fleet-ui-events", daemon=True
        ),
    ]
    for thread in threads:
        thread.start()
    scheme = "https" if cfg.ui.tls_cert else "http"
    log.info("fleet ui: serving on %s://%s:%s/", scheme, cfg.ui.host, cfg.ui.port)
    if ready is not None:
        ready.set()
    try:
        await (stop.wait() if stop is not None else asyncio.Event().wait())
    finally:
        await app.settings["kvm_consoles"].close_peers()
        ctx.live.stop()
        server.stop()
        await server.close_all_connections()
        await app.settings["kvm_consoles"].wait_ended()
        executor.shutdown(wait=False, cancel_futures=True)
