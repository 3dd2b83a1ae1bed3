"""
The ``fleet`` engine: the web UI, its JSON API and live updates, served by the master.

Enable it in the master configuration (``saltext-fleet config`` prints it)::

    engines:
      - fleet: {}
    fleet:
      ui: {host: 127.0.0.1, port: 8443, tls_cert: /etc/ssl/fleet.pem, tls_key: /etc/ssl/fleet.key}

Slow clients are bounded by ``fleet:ui:header_timeout`` (10 s for a request's line and
headers), ``body_timeout`` (30 s without progress in a body) and
``max_connections_per_address`` (64); TLS on the plain port, or plain HTTP on the TLS port,
gets a clear 400 at once (:mod:`saltext_fleet.webui.guard`).

The engine runs the alert worker (:mod:`saltext_fleet.master.alertworker`): it records
every signed ``fleet/alert/*`` event and delivers it to the routes of ``fleet:alerts`` and
the web UI, with retries.

The engine also polls the registered PiKVM devices every ``fleet:kvm:poll_interval`` seconds
in a thread of its own (:mod:`saltext_fleet.master.kvmpoll`): their history and the
``fleet/alert/kvm`` events. Every ``fleet:alerts:cert_check_minutes`` minutes (60; 0: off)
another thread checks the signing certificates the nodes report
(:mod:`saltext_fleet.master.certcheck`) and fires ``fleet/alert/cert``.

Create the first user with ``saltext-fleet user add alice --role admin``. The engine runs one
asyncio loop (Tornado serving the Flask app through a thread pool, and native websockets). If
it fails, the reason is logged and it starts again after a pause (1 s, doubling up to 60 s);
a configuration error is logged once a minute until it is fixed.
"""

import asyncio
import logging
import threading
import time

from saltext_fleet import config
from saltext_fleet.master import alertworker, certcheck, kvmpoll
from saltext_fleet.webui import server

log = logging.getLogger(__name__)

__virtualname__ = "fleet"

RESTART_MIN, RESTART_MAX = 1.0, 60.0


def __virtual__():
    return __virtualname__


def start(**kwargs):
    opts = __opts__  # injected by Salt's loader
    polling = kvmpoll.PollLoop(opts)
    threading.Thread(target=polling.run, name="fleet-kvm-poll", daemon=True).start()
    alerts = alertworker.AlertWorker(opts).start()
    cert_checks = certcheck.CheckLoop(opts)
    threading.Thread(target=cert_checks.run, name="fleet-cert-check", daemon=True).start()
    try:
        _serve(opts)
    finally:
        polling.stop()
        alerts.stop()
        cert_checks.stop()


def _serve(opts):
    pause = RESTART_MIN
    while True:
        began = time.monotonic()
        try:
            config.cached(opts, __context__)  # a bad option stops here, named
            asyncio.run(server.serve(opts))
            return
        except config.FleetConfigError as exc:
            log.error("fleet engine: %s; the web UI is not served until it is fixed", exc)
            pause = RESTART_MAX
        except Exception as exc:  # logged with its reason, then restarted
            log.exception("fleet engine crashed (%s: %s); restarting", type(exc).__name__, exc)
            if time.monotonic() - began > 300:
                pause = RESTART_MIN  # it ran for a while: a fresh failure
        time.sleep(pause)
        pause = min(pause * 2, RESTART_MAX)
