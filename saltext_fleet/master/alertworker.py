"""The alert worker: from ``fleet/alert/*`` events on the master's bus to the receivers.

The ``fleet`` engine runs one :class:`AlertWorker` (two threads and a small pool):

- the **listener** reads the master's event bus. Each ``fleet/alert/*`` event must carry
  this master's signature (:func:`saltext_fleet.master.eventsig.check`): minions can fire
  those tags themselves, so an unsigned or forged one is logged (tag and the id it claims)
  and nothing else happens. A signed one is turned into an alert
  (:func:`saltext_fleet.core.alerts.normalise`) and recorded with its deliveries, in one
  transaction, before anything is sent (:func:`saltext_fleet.store.alerts.record_alert`);
- the **dispatcher** claims due deliveries (:func:`saltext_fleet.store.alerts.claim_due`:
  with several masters, exactly one claims each) when the listener recorded one, when a send
  finished, and every ``scan_interval`` seconds (retries, deliveries a restart or another
  master's crash left behind), and hands them to the pool, which sends them
  (:func:`saltext_fleet.master.alertsend.send`) and records each attempt
  (:func:`saltext_fleet.store.alerts.finish`). Every ``settle_interval`` seconds it also
  closes flapping conditions that calmed down (:func:`saltext_fleet.store.alerts.settle`).

A route's deliveries go out one at a time, in alert order.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from saltext_fleet import config
from saltext_fleet.core import alerts as core_alerts
from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.master import alertsend, eventsig
from saltext_fleet.store import alerts as store_alerts
from saltext_fleet.store import engine as store_engine

log = logging.getLogger(__name__)

PREFIX = core_alerts.TAG_PREFIX
#: Signed events kept in memory while the store cannot take them.
BACKLOG = 10000


def master_id(opts: dict) -> str:
    return str(opts.get("id") or opts.get("master_id") or "master")[:255]


class SecretsUnreadable(dict):
    """A route's secrets that the vault cannot decrypt (a key file that is not the one they
    were stored with): each delivery records it as its attempt's error."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


def all_routes(cfg: config.FleetConfig, conn) -> list[core_alerts.Route]:
    """The master config's routes and the web UI's (enabled or not: :meth:`Route.matches`
    skips the disabled ones)."""
    return [*cfg.alerts.routes, *store_alerts.ui_routes(conn)]


def find_route(cfg: config.FleetConfig, conn, key: str) -> core_alerts.Route | None:
    """The route named by ``key`` (``config:<name>``, ``ui:<name>``, or a bare name: the
    config's first, then the UI's)."""
    source, _, name = key.partition(":") if ":" in key else ("", "", key)
    for route in all_routes(cfg, conn):
        if route.name == name and source in ("", route.source):
            return route
    return None


def _default_send(*args, **kwargs):
    return alertsend.send(*args, **kwargs)


def secret_names(destination: str) -> tuple[str, ...]:
    """The names of a destination's secrets in the vault."""
    return tuple(alertsend.SECRET_NAMES.get(destination, ()))


def deliver(
    engine,
    vault: core_secrets.Vault | None,
    cfg: config.FleetConfig,
    delivery: dict[str, Any],
    master: str,
    send: Callable = _default_send,
    route: core_alerts.Route | None = None,
    retry: bool = True,
    secrets: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Send one claimed delivery and record the attempt: :func:`store_alerts.finish`'s
    answer plus ``outcome`` (the sender's, as a dict). ``retry`` False: one attempt only."""
    began = time.monotonic()
    outcome: Any
    try:
        if route is None:
            with engine.connect() as conn:
                route = find_route(cfg, conn, delivery["route"])
        if route is None:
            raise LookupError(f"route {delivery['route']} no longer exists")
        if isinstance(secrets, SecretsUnreadable):
            raise core_secrets.SecretsError(secrets.reason)
        if secrets is None and vault is not None:
            with engine.connect() as conn:
                secrets = store_alerts.route_secrets(
                    conn, vault, route.key, secret_names(route.destination)
                )
        outcome = send(route.destination, dict(route.target), secrets or {}, delivery["alert"])
    except LookupError as exc:
        outcome = {"ok": False, "status_code": None, "error": str(exc), "retry": False}
    except core_secrets.SecretsError as exc:
        outcome = {
            "ok": False,
            "status_code": None,
            "error": f"the route's secrets cannot be read: {str(exc)[:200]}",
            "retry": True,
        }
    except Exception as exc:  # a sender's bug must not kill the pool: recorded, retried
        log.exception("fleet alerts: sending delivery %s failed", delivery["id"])
        outcome = {"ok": False, "status_code": None, "error": f"{type(exc).__name__}: {exc}"}
        outcome["retry"] = True
    if isinstance(outcome, dict):
        outcome.setdefault("latency_ms", (time.monotonic() - began) * 1000)
    done = store_alerts.finish(
        engine, delivery["id"], master, outcome, cfg.alerts.policy(), retry=retry
    )
    get = outcome.get if isinstance(outcome, dict) else lambda k: getattr(outcome, k, None)
    done["outcome"] = {k: get(k) for k in ("ok", "status_code", "latency_ms", "error", "retry")}
    return done


class AlertWorker:
    """Run :meth:`run` in a thread of the engine; :meth:`stop` ends it. ``send`` is the
    sender (tests may give their own)."""

    def __init__(
        self,
        opts: dict,
        send: Callable | None = None,
        master: str | None = None,
        pool_size: int = 4,
        scan_interval: float = 1.0,
        settle_interval: float = 30.0,
        per_route: int = 20,
    ) -> None:
        self.opts = opts
        self.send = send or _default_send
        self.master = master or master_id(opts)
        self.pool_size = pool_size
        #: deliveries of one route claimed at once (sent one after the other)
        self.per_route = per_route
        self.scan_interval = scan_interval
        self.settle_interval = settle_interval
        self.stats = {"accepted": 0, "refused": 0, "invalid": 0, "replayed": 0, "sent": 0}
        #: signed events that could not be recorded (the store away): tried again each scan
        self.backlog: collections.deque = collections.deque(maxlen=BACKLOG)
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._inflight = 0
        self._lock = threading.Lock()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._threads: list[threading.Thread] = []
        self._vault = None
        self._vault_file = None

    # set-up
    def _cfg(self) -> config.FleetConfig:
        return config.load(self.opts)

    def _engine(self, cfg):
        engine = store_engine.get_engine(cfg.db_url)
        store_engine.ensure_schema(engine)
        return engine

    def _vault_of(self, cfg):
        """The vault, loaded anew when its key file changed (``fleet.rotate_key``)."""
        try:
            if self._vault is None or self._vault_file != cfg.key_file:
                self._vault = core_secrets.Vault.open(cfg.key_file)
                self._vault_file = cfg.key_file
            else:
                self._vault = self._vault.refreshed()
        except (core_secrets.SecretsError, OSError) as exc:
            log.error("fleet alerts: the vault cannot be opened (%s): sent without secrets", exc)
            return None
        return self._vault

    # events
    def handle(self, tag: Any, data: Any) -> dict[str, Any] | None:
        """One event from the bus: None when it is not an alert or is refused; else
        :func:`store_alerts.record_alert`'s answer."""
        if not isinstance(tag, str) or not tag.startswith(PREFIX):
            return None
        claimed = data.get("id") if isinstance(data, dict) else None
        try:
            eventsig.check(self.opts, tag, data)
        except (OSError, ValueError) as exc:
            self.stats["refused"] += 1
            log.warning(
                "fleet alerts: refused %s claiming id %r: %s (not delivered)",
                tag,
                str(claimed)[:120],
                exc,
            )
            return None
        try:
            alert = core_alerts.normalise(tag, data)
            key = core_alerts.event_key(tag, data)
        except core_alerts.AlertError as exc:
            self.stats["invalid"] += 1
            log.error("fleet alerts: a signed %s (id %r) cannot be used: %s", tag, claimed, exc)
            return None
        cfg = self._cfg()
        engine = self._engine(cfg)
        with engine.connect() as conn:
            routes = all_routes(cfg, conn)
        done = store_alerts.record_alert(
            engine,
            alert,
            routes,
            cfg.alerts.policy(),
            key,
            master=self.master,
            same_crossing_s=store_alerts.SAME_CROSSING_S,
        )
        self.stats["replayed" if done["replayed"] else "accepted"] += 1
        if any(d["status"] == "pending" for d in done["deliveries"]):
            self._kick.set()
        return done

    def take(self, tag: Any, data: Any) -> dict[str, Any] | None:
        """:meth:`handle`, keeping a signed event the store could not take in the backlog
        (tried again by the dispatcher; a replay of it is one alert)."""
        try:
            return self.handle(tag, data)
        except Exception as exc:  # noqa: BLE001 - the store may be away for a while
            if len(self.backlog) == self.backlog.maxlen:
                log.error("fleet alerts: backlog full; the oldest held alert is dropped")
            self.backlog.append((tag, data))
            log.warning(
                "fleet alerts: could not record %s (id %r): %s; held (%d waiting)",
                tag,
                (data or {}).get("id") if isinstance(data, dict) else None,
                exc,
                len(self.backlog),
            )
            self._kick.set()
            return None

    def drain_backlog(self) -> int:
        """Record the held events (oldest first) until the store refuses again."""
        done = 0
        while self.backlog:
            tag, data = self.backlog[0]
            self.handle(tag, data)  # raises while the store is away: kept for the next scan
            self.backlog.popleft()
            done += 1
        return done

    def run_listener(self) -> None:
        import salt.utils.event

        backoff = 1.0
        while not self._stop.is_set():
            try:
                with salt.utils.event.get_master_event(
                    self.opts, self.opts["sock_dir"], listen=True
                ) as bus:
                    backoff = 1.0
                    while not self._stop.is_set():
                        event = bus.get_event(wait=1, full=True)
                        if not event or not str(event.get("tag", "")).startswith(PREFIX):
                            continue
                        self.take(event.get("tag"), event.get("data"))
            except Exception:  # noqa: BLE001 - the bus comes back with the master
                log.warning("fleet alerts: event bus lost; listening again in %.0f s", backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    # deliveries
    def dispatch_once(self) -> int:
        """Claim what is due (as many as the pool has room for) and hand each route's run of
        deliveries to the pool, to be sent one after the other."""
        cfg = self._cfg()
        engine = self._engine(cfg)
        with self._lock:
            room = self.pool_size * 2 - self._inflight
        if room <= 0:
            return 0
        claimed = store_alerts.claim_due(
            engine, self.master, limit=room, ui_url=cfg.alerts.ui_url, per_route=self.per_route
        )
        if not claimed:
            return 0
        vault = self._vault_of(cfg)
        runs: dict[str, list[dict[str, Any]]] = {}
        for delivery in claimed:
            runs.setdefault(delivery["route"], []).append(delivery)
        assert self._pool is not None
        for run in runs.values():
            with self._lock:
                self._inflight += len(run)
            self._pool.submit(self._deliver_run, engine, vault, cfg, run)
        return len(claimed)

    def _deliver_run(self, engine, vault, cfg, run) -> None:
        """One route's claimed deliveries, in order; when one is not delivered, the rest are
        given back (they wait behind it)."""
        done_n = 0
        try:
            with engine.connect() as conn:
                route = find_route(cfg, conn, run[0]["route"])
                secrets = None
                if route is not None and vault is not None:
                    try:
                        secrets = store_alerts.route_secrets(
                            conn, vault, route.key, secret_names(route.destination)
                        )
                    except core_secrets.SecretsError as exc:
                        # recorded as the attempt's error; retried (the key may come back)
                        secrets = SecretsUnreadable(str(exc))
            for delivery in run:
                done = deliver(
                    engine, vault, cfg, delivery, self.master, self.send, route, secrets=secrets
                )
                done_n += 1
                with self._lock:
                    self._inflight -= 1
                if done["status"] == "delivered":
                    self.stats["sent"] += 1
                elif route is not None:
                    break
        except Exception:  # recorded nowhere else: the lease runs out and it is sent again
            log.exception("fleet alerts: deliveries of %s could not be recorded", run[0]["route"])
        finally:
            rest = run[done_n:]
            if rest:
                with self._lock:
                    self._inflight -= len(rest)
                try:
                    store_alerts.release(engine, [d["id"] for d in rest], self.master)
                except Exception:  # noqa: BLE001 - their lease runs out instead
                    log.warning("fleet alerts: could not give back %d claims", len(rest))
            self._kick.set()

    def run_dispatcher(self) -> None:
        last_settle = time.monotonic()
        while not self._stop.is_set():
            self._kick.wait(self.scan_interval)
            self._kick.clear()
            if self._stop.is_set():
                return
            try:
                if self.backlog:
                    self.drain_backlog()
                self.dispatch_once()
                if time.monotonic() - last_settle >= self.settle_interval:
                    last_settle = time.monotonic()
                    cfg = self._cfg()
                    engine = self._engine(cfg)
                    with engine.connect() as conn:
                        routes = all_routes(cfg, conn)
                    if store_alerts.settle(engine, routes, cfg.alerts.policy(), self.master):
                        self._kick.set()
            except config.FleetConfigError as exc:
                log.error("fleet alerts: delivery paused: %s", exc)
                self._stop.wait(30)
            except Exception:  # the store may be away for a while
                log.warning("fleet alerts: a delivery scan failed", exc_info=True)
                self._stop.wait(2)

    # life
    def start(self, listen: bool = True) -> AlertWorker:
        self._pool = concurrent.futures.ThreadPoolExecutor(
            self.pool_size, thread_name_prefix="fleet-alert-send"
        )
        targets = [("fleet-alert-dispatch", self.run_dispatcher)]
        if listen:
            targets.append(("fleet-alert-listen", self.run_listener))
        for name, target in targets:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def kick(self) -> None:
        self._kick.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._kick.set()
        for thread in self._threads:
            thread.join(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=False)
