"""Polling the registered PiKVM devices on the master: one cycle (``salt-run fleet.kvm_poll``)
or every ``fleet:kvm:poll_interval`` seconds (the ``fleet`` engine's poll loop).

A cycle reads the registry (credentials decrypted by the master's vault), polls every device
side by side (:class:`~saltext_fleet.kvm.poller.Poller`), stores each poll with the device's
new status (:func:`saltext_fleet.store.kvm.record_polls`) and fires ``fleet/alert/kvm``,
signed by the master (:mod:`saltext_fleet.master.eventsig`), for each alert the status change
raised. The loop keeps its poller, so devices are polled on kept-open connections.

With several masters on one store, each master's engine runs the loop, and a cycle is done
once per interval for the fleet: the loop claims the cycle in the store (``kvm_poll``, at most
once every four fifths of the interval, :func:`claim_cycle`) and skips it when another master
has. Storing a cycle locks the devices' rows (:func:`saltext_fleet.store.kvm.record_polls`),
so two cycles at once (an operator's ``fleet.kvm_poll``) raise each alert once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from saltext_fleet import config
from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.kvm.poller import Poller
from saltext_fleet.master import eventsig
from saltext_fleet.store import claims as store_claims
from saltext_fleet.store import engine as store_engine
from saltext_fleet.store import kvm as store_kvm

log = logging.getLogger(__name__)

ALERT_TAG = "fleet/alert/kvm"


def poll_once(
    opts: dict,
    poller: Poller,
    names: Iterable[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """One cycle over the devices ``names`` (every registered device if None): ``{device:
    {"poll": {...}, "alerts": [...]}}``. Raises
    :class:`~saltext_fleet.store.kvm.KvmStoreError` for an unknown device name."""
    cfg = config.load(opts)
    engine = store_engine.get_engine(cfg.db_url)
    store_engine.ensure_schema(engine)
    vault = core_secrets.Vault.open(cfg.key_file)
    with engine.connect() as conn:
        targets = store_kvm.device_options(conn, vault, names)
        nodes = {d["name"]: d["node"] for d in store_kvm.devices(conn)}
    polls = poller.poll(targets)
    with engine.begin() as conn:
        alerts = store_kvm.record_polls(
            conn, polls, offline_after=cfg.kvm.offline_after, over_temp_c=cfg.kvm.over_temp_c
        )
    out = {}
    for device, poll in sorted(polls.items()):
        raised = alerts.get(device, [])
        for alert in raised:
            data = {"id": device, "alert": alert, "node": nodes.get(device), "poll": poll.as_dict()}
            eventsig.fire(opts, ALERT_TAG, data)
        out[device] = {"poll": poll.as_dict(), "alerts": raised}
    return out


#: Part of the interval within which another master's cycle counts as this one's.
CYCLE_SHARE = 0.8


def claim_cycle(opts: dict, interval: float) -> bool:
    """Claim the fleet's poll cycle for this master (at most one every ``CYCLE_SHARE *
    interval`` seconds for all masters); False when another master polled within it."""
    cfg = config.load(opts)
    # no schema upgrade here (poll_once does it): Alembic must not run in two threads at once
    engine = store_engine.get_engine(cfg.db_url)
    master = str(opts.get("id")) if opts.get("id") else None
    with engine.begin() as conn:
        return store_claims.claim(
            conn, store_claims.KVM_POLL, "fleet", master, min_age=interval * CYCLE_SHARE
        )


class PollLoop:
    """Polls every registered device each ``fleet:kvm:poll_interval`` seconds until
    :meth:`stop`; a failed cycle (the store down, a broken vault) is logged and the next one
    runs on time. Run :meth:`run` in a thread."""

    def __init__(self, opts: dict) -> None:
        self.opts = opts
        self.cycles = 0
        self.skipped = 0
        self._stop = threading.Event()

    def run(self) -> None:
        with Poller() as poller:
            while not self._stop.is_set():
                began = time.monotonic()
                try:
                    interval = config.load(self.opts).kvm.poll_interval
                except config.FleetConfigError as exc:
                    log.error("fleet: KVM polling paused: %s", exc)
                    interval = 60.0
                else:
                    try:
                        if claim_cycle(self.opts, interval):
                            poll_once(self.opts, poller)
                            self.cycles += 1
                        else:
                            self.skipped += 1  # another master polled the fleet
                    except Exception:  # a cycle's failure must not end the loop (logged)
                        log.exception("fleet: a KVM poll cycle failed")
                        self.cycles += 1
                self._stop.wait(max(0.0, interval - (time.monotonic() - began)))

    def stop(self) -> None:
        self._stop.set()
