"""Onboarding a node when it starts, and its online/offline status.

``salt/minion/<id>/start`` (the shipped ``onboard.sls``) -> :func:`onboard`: sync the
extension's modules, schedule ``fleet.inventory`` and the highstate test run, take a first
inventory, apply the node group's states, mark the node online. ``salt/presence/change`` (the
master's ``presence_events``) -> :func:`presence`: nodes that stopped answering go offline,
nodes that came back go online.

Everything is sent through Salt's LocalClient by exact id (``tgt_type=list``); only the sync
is waited for, briefly: the rest runs on the node as jobs of their own, so a slow node never
holds the reactor.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from sqlalchemy import select

from saltext_fleet import config
from saltext_fleet.core import gate as core_gate
from saltext_fleet.store import audit as store_audit
from saltext_fleet.store import gate as store_gate
from saltext_fleet.store import secrets as store_secrets
from saltext_fleet.store.models import Node

log = logging.getLogger(__name__)

INVENTORY_JOB = "fleet_inventory"
HIGHSTATE_TEST_JOB = "fleet_highstate_test"


def _client(opts):
    import salt.client

    return salt.client.get_local_client(mopts=opts)


def schedule_jobs(cfg: config.FleetConfig) -> dict[str, dict[str, Any]]:
    """The schedule entries a node gets (``schedule.add`` keyword arguments)."""
    jobs: dict[str, dict[str, Any]] = {}
    if cfg.onboard.inventory_minutes:
        jobs[INVENTORY_JOB] = {
            "function": "fleet.inventory",
            "minutes": cfg.onboard.inventory_minutes,
            "splay": 60,
            # onboarding takes the first inventory itself
            "run_on_start": False,
            "return_job": True,
        }
    if cfg.onboard.highstate_test_hours:
        jobs[HIGHSTATE_TEST_JOB] = {
            "function": "state.apply",
            "job_kwargs": {"test": True},
            "hours": cfg.onboard.highstate_test_hours,
            "splay": 600,
            # not at once: a node that just started has not had its states applied yet
            "run_on_start": False,
            "return_job": True,
        }
    return jobs


def onboard(opts: dict, engine, minion_id: Any, actor: str = "reactor") -> dict[str, Any]:
    """Set up a node that has just started (idempotent: a restart sets it up again)."""
    minion_id = core_gate.check_minion_id(minion_id, "minion")
    cfg = config.load(opts)
    with engine.connect() as conn:
        group_name = conn.execute(
            select(Node.node_group).where(Node.minion_id == minion_id)
        ).scalar()
        group = store_secrets.group(conn, group_name) if group_name else None
    steps: dict[str, Any] = {}
    with _client(opts) as client:
        if cfg.onboard.sync:
            ret = client.cmd([minion_id], "saltutil.sync_all", tgt_type="list", timeout=60)
            steps["sync"] = bool(ret.get(minion_id) is not None)
        jobs = schedule_jobs(cfg)
        for name, job in jobs.items():
            # schedule.add refuses a name that exists: replace it (the options may change)
            client.cmd([minion_id], "schedule.delete", [name], tgt_type="list", timeout=30)
            ret = client.cmd(
                [minion_id], "schedule.add", [name], kwarg=job, tgt_type="list", timeout=30
            )
            answer = ret.get(minion_id)
            steps[f"schedule:{name}"] = bool(isinstance(answer, dict) and answer.get("result"))
        # a first inventory now, not in an hour
        steps["inventory"] = client.cmd_async([minion_id], "fleet.inventory", tgt_type="list")
        states = list((group or {}).get("states") or [])
        if states:
            steps["states"] = client.cmd_async(
                [minion_id], "state.apply", [",".join(states)], tgt_type="list"
            )
    with engine.begin() as conn:
        store_gate.set_status(conn, [minion_id], "online", onboarded=True)
        store_audit.append(
            conn,
            actor,
            "node.onboard",
            minion_id,
            {"group": group_name, "states": (group or {}).get("states") or [], "steps": steps},
        )
    log.info("fleet: onboarded %s (group %s)", minion_id, group_name)
    return {"id": minion_id, "group": group_name, "steps": steps}


def presence(engine, new: Any = None, lost: Any = None) -> dict[str, int]:
    """``salt/presence/change``: mark ``new`` nodes online and ``lost`` ones offline
    (invalid ids are skipped)."""

    def ids(value) -> list[str]:
        if not isinstance(value, (list, tuple)):
            return []
        return [m for m in value if core_gate.is_minion_id(m)]

    online, offline = ids(new), ids(lost)
    with engine.begin() as conn:
        up = store_gate.set_status(conn, online, "online")
        down = store_gate.set_status(conn, offline, "offline")
    return {"online": up, "offline": down}


def presence_check(opts: dict, engine, timeout: float = 10) -> dict[str, Any]:
    """Ping every node whose key is accepted; those that answer are online, the others
    offline. (Salt's ``presence_events`` tell nodes apart by address, which is not enough when
    several share one, behind NAT or on one host; this asks each node by id.)"""
    from saltext_fleet.master import keys as master_keys

    states = master_keys.salt_states(master_keys.salt_key(opts))
    accepted = sorted(m for m, state in states.items() if state == "accepted")
    if not accepted:
        return {"online": [], "offline": []}
    # whole seconds: Salt's LocalClient takes any other timeout (a float) for its 120 s default
    wait = max(1, math.ceil(timeout))
    with _client(opts) as client:
        answers = client.cmd(accepted, "test.ping", tgt_type="list", timeout=wait)
    online = [m for m in accepted if answers.get(m) is True]
    offline = [m for m in accepted if answers.get(m) is not True]
    with engine.begin() as conn:
        store_gate.set_status(conn, online, "online")
        store_gate.set_status(conn, offline, "offline")
    return {"online": online, "offline": offline}
