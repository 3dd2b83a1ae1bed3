"""Certificate expiry alerts on the master: one check (``salt-run fleet.cert_check``), or every
``fleet:alerts:cert_check_minutes`` minutes (the ``fleet`` engine's loop).

A check reads the identities expiring within 30 days from the nodes' grains in SQL
(:func:`saltext_fleet.store.certs.expiring`), decides per (node, certificate) what is due
(:func:`saltext_fleet.core.certs.plan`, from ``not_after`` and the master's clock), claims the
newly crossed thresholds in ``cert_alerts`` (insert-if-absent: of two checks running at once,
the one whose insert took a row fires it), commits, and fires ``fleet/alert/cert`` signed by
the master (:mod:`saltext_fleet.master.eventsig`) for the most urgent threshold claimed. An
event that cannot be fired (the bus is down) gives its claim back, so the next check tries
again.

With several masters, the check a node's changed grains call for (``fleet/certs/changed``,
the shipped ``certs.sls``) is done once for the fleet: :func:`check_node_once` claims the
node's check for the identities it now reports (their digest is the claim's token).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from saltext_fleet import config
from saltext_fleet.core import certs as core_certs
from saltext_fleet.master import eventsig
from saltext_fleet.store import certs as store_certs
from saltext_fleet.store import claims as store_claims
from saltext_fleet.store import engine as store_engine

log = logging.getLogger(__name__)

ALERT_TAG = "fleet/alert/cert"

#: ``fire(tag, data) -> bool``: sends one event (True when it went out).
Fire = Callable[[str, dict], bool]


def check(
    engine,
    fire: Fire,
    now: dt.datetime | None = None,
    nodes: Iterable[str] | None = None,
) -> dict[str, Any]:
    """One check over every node (or ``nodes``). Returns ``{"checked": n, "fired": [event
    data...], "passed": [{"node", "sha1", "threshold"}...] (recorded, not fired: a more urgent
    one fired), "rearmed": [...], "failed": [...] (could not be fired; given back)}``."""
    now = core_certs.utc(now or dt.datetime.now(dt.timezone.utc))
    out: dict[str, Any] = {"checked": 0, "fired": [], "passed": [], "rearmed": [], "failed": []}
    with engine.connect() as conn:
        found = store_certs.expiring(conn, now + core_certs.HORIZON, nodes)
        known = store_certs.recorded(conn, [(i["node"], i["sha1"]) for i in found])
    out["checked"] = len(found)
    # Every claim in one transaction (one commit however many are due), then the events
    # (after the commit: a concurrent check sees the claims), then the give-backs.
    due = []
    with engine.begin() as conn:
        for identity in found:
            node, sha1, not_after = identity["node"], identity["sha1"], identity["not_after"]
            todo = core_certs.plan(not_after, now, known.get((node, sha1), {}))
            if todo["rearm"]:
                store_certs.rearm(conn, node, sha1, todo["rearm"], not_after)
                out["rearmed"] += [
                    {"node": node, "sha1": sha1, "threshold": t} for t in todo["rearm"]
                ]
            if todo["move"]:
                store_certs.move(conn, node, sha1, todo["move"], not_after)
            claimed = store_certs.claim(conn, node, sha1, not_after, todo["record"], now)
            if claimed:  # (empty: nothing new, or another check claimed it first)
                due.append((identity, claimed))
    failed = []
    for identity, claimed in due:
        node, sha1 = identity["node"], identity["sha1"]
        threshold = core_certs.most_urgent(claimed)
        data = core_certs.alert_data(node, identity, threshold, now)
        if fire(ALERT_TAG, data):
            out["fired"].append(data)
            out["passed"] += [
                {"node": node, "sha1": sha1, "threshold": t} for t in claimed if t != threshold
            ]
        else:
            failed.append((node, sha1, claimed))
            out["failed"].append(data)
            log.warning(
                "fleet: %s for %s (%s, %s) not fired; the next check tries again",
                ALERT_TAG,
                node,
                sha1,
                threshold,
            )
    if failed:
        with engine.begin() as conn:
            for node, sha1, claimed in failed:
                store_certs.release(conn, node, sha1, claimed, now)
    return out


def identities_token(found: Iterable[dict[str, Any]]) -> str:
    """The claim token of a node's check: a digest of the identities it reports (SHA-1 and
    ``not_after``) that are due within the horizon."""
    text = "\n".join(sorted(f"{i['sha1']} {i['not_after'].isoformat()}" for i in found))
    return hashlib.sha256(text.encode()).hexdigest()


def check_node_once(
    engine,
    fire: Fire,
    node: str,
    master: str | None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """:func:`check` of one node whose grains changed, once for the fleet: the master whose
    claim of (``cert_check``, node) for the identities the node now reports wins checks;
    the others (and this one again, for the same identities) return ``{"skipped", "by"}``."""
    now = core_certs.utc(now or dt.datetime.now(dt.timezone.utc))
    with engine.connect() as conn:
        found = store_certs.expiring(conn, now + core_certs.HORIZON, [node])
    if not found:
        return {"checked": 0, "fired": [], "passed": [], "rearmed": [], "failed": []}
    token = identities_token(found)
    with engine.begin() as conn:
        won = store_claims.claim(conn, store_claims.CERT_CHECK, node, master, token=token)
        holder = None if won else store_claims.holder(conn, store_claims.CERT_CHECK, node)
    if not won:
        who = (holder or {}).get("master") or "another master"
        return {"skipped": f"{node}: these certificates were checked by {who}", "by": who}
    return check(engine, fire, now, [node])


def check_opts(opts: dict, now: dt.datetime | None = None, nodes=None) -> dict[str, Any]:
    """:func:`check` with the master's store and its signed events."""
    cfg = config.load(opts)
    engine = store_engine.get_engine(cfg.db_url)
    store_engine.ensure_schema(engine)
    return check(engine, lambda tag, data: eventsig.fire(opts, tag, data), now, nodes)


class CheckLoop:
    """Runs :func:`check_opts` every ``fleet:alerts:cert_check_minutes`` (0: off) until
    :meth:`stop`; a failed check (the store down) is logged and the next one runs on time.
    Run :meth:`run` in a thread."""

    def __init__(self, opts: dict, check_fn: Callable[[dict], Any] = check_opts) -> None:
        self.opts = opts
        self.checks = 0
        self._check = check_fn
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                minutes = config.load(self.opts).cert_check.minutes
            except config.FleetConfigError as exc:
                log.error("fleet: certificate checks paused: %s", exc)
                minutes = 1.0
            else:
                if minutes > 0:
                    try:
                        self._check(self.opts)
                    except Exception:  # a check's failure must not end the loop (logged)
                        log.exception("fleet: a certificate expiry check failed")
                    self.checks += 1
                else:
                    minutes = 1.0  # off: look at the option again in a minute
            self._stop.wait(max(0.0, minutes * 60 - (time.monotonic() - began)))

    def stop(self) -> None:
        self._stop.set()
