"""What each shipped reactor SLS reacts with, as plain functions of ``(tag, data, salt)``.

The SLS files in this folder are ``#!py`` files of three lines that call these: Salt's jinja
renderer builds a sandboxed environment and compiles the template anew for every event
(about 40 ms here per ``salt/auth`` event, in the reactor's one main thread, while a thousand
pending minions retry every few seconds); the ``py`` renderer runs a function (about 4 ms,
most of it Salt's own template handling). ``salt`` is the reactor's execution modules
(``__salt__``); only ``fleet_gate.*`` is called, in the reactor's own process (no job).

Everything in an event is a claim (a minion can fire most tags, for any id): ids are passed
to runners as data, never as targets, except ``fleet.inventory`` which targets one exact id
by list. Each function returns the reaction's high data, ``{}`` for none.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

#: Most ids of a ``salt/presence/change`` claim handed to the runner (as the jinja had).
PRESENCE_MAX = 10_000


def _as_json(value: Any) -> Any:
    """``value`` as JSON would carry it (what the jinja SLS's ``| json`` passed): a copy
    that shares nothing with the event, and an error for what JSON cannot carry."""
    return json.loads(json.dumps(value))


def _minion(data: Any) -> str | None:
    minion = data.get("id") if isinstance(data, Mapping) else None
    return minion if isinstance(minion, str) and minion else None


def keys(tag: str, data: Any, salt: Mapping) -> dict:
    """``salt/auth`` (a minion presented a key that is not accepted, ``act: pend``; or
    another key than the accepted one, ``act: denied``): ``fleet_gate.wanted`` hands the key
    to the reactor process's recorder thread, which accepts it only with a live enrolment
    and records the others (the docs' onboarding page). Nothing runs as a job."""
    if (
        isinstance(data, Mapping)
        and data.get("act") in ("pend", "denied")
        and salt["fleet_gate.wanted"](data)
    ):
        return {"fleet_key_gate": {"test.nop": []}}
    return {}


def key_change(tag: str, data: Any, salt: Mapping) -> dict:
    """``salt/key`` (``salt-key`` or the wheel changed a key): handed to the key-change
    recorder thread, which confirms it against Salt's key store and records what the gate
    has not recorded yet. Nothing runs as a job."""
    if isinstance(data, Mapping) and salt["fleet_gate.key_changed"](data):
        return {"fleet_key_change": {"test.nop": []}}
    return {}


def onboard(tag: str, data: Any, salt: Mapping) -> dict:
    """``salt/minion/<id>/start``: any minion may fire this tag for any id, so it is a hint
    (``fleet_gate.hint``: one per node every few seconds). ``fleet.node_started`` refuses it
    when the event's ``id`` (Salt's authenticated sender of a single event) is not the id
    in the tag, and otherwise asks the node when its salt-minion started."""
    parts = tag.split("/") if isinstance(tag, str) else []
    claimed = parts[2] if len(parts) == 4 and parts[3] == "start" else None
    sender = data.get("id") if isinstance(data, Mapping) else None
    if claimed and salt["fleet_gate.hint"]("onboard", claimed, sender):
        return {
            "fleet_onboard": {
                "runner.fleet.node_started": [
                    {"args": [{"minion": claimed}, {"sender": _as_json(sender)}]}
                ]
            }
        }
    return {}


def presence(tag: str, data: Any, salt: Mapping) -> dict:
    """``salt/presence/change`` (with ``presence_events: True``): ``fleet.presence`` marks a
    node online only if this master sees it connected, offline only if it does not; at most
    every 2 seconds (``fleet_gate.hint`` merges the claims in between)."""
    if not isinstance(data, Mapping) or not (data.get("new") or data.get("lost")):
        return {}
    if not salt["fleet_gate.hint"]("presence", data=data):
        return {}

    def ids(key: str) -> list:
        found = data.get(key) or []
        return _as_json(list(found)[:PRESENCE_MAX]) if isinstance(found, (list, tuple)) else []

    return {
        "fleet_presence": {
            "runner.fleet.presence": [{"args": [{"new": ids("new")}, {"lost": ids("lost")}]}]
        }
    }


def _signed_node_runner(name: str, fun: str, node_arg: str, tag, data, salt, **more) -> dict:
    minion = _minion(data)
    if minion is None or not salt["fleet_gate.signed"](tag, data):
        return {}
    args = [{node_arg: minion}, *({k: v} for k, v in more.items())]
    args.append({"event": _as_json({"tag": tag, "data": data})})
    return {name: {f"runner.{fun}": [{"args": args}]}}


def drift(tag: str, data: Any, salt: Mapping) -> dict:
    """``fleet/inventory/changed`` or ``fleet/states/ran``: recompute that node's drift
    (``fleet.drift_node``). Minions can fire these tags too: ``fleet_gate.signed`` lets
    through only an event this master signed, and the runner checks it again."""
    trigger = "states" if tag == "fleet/states/ran" else "inventory"
    return _signed_node_runner(
        "fleet_drift_recompute", "fleet.drift_node", "minion", tag, data, salt, trigger=trigger
    )


def vulns(tag: str, data: Any, salt: Mapping) -> dict:
    """``fleet/inventory/changed``: recompute that node's vulnerability findings
    (``fleet.cve_node``), signed events only (as :func:`drift`)."""
    return _signed_node_runner("fleet_cve_node", "fleet.cve_node", "minion", tag, data, salt)


def certs(tag: str, data: Any, salt: Mapping) -> dict:
    """``fleet/certs/changed``: check that node's signing certificates now
    (``fleet.cert_check``), signed events only (as :func:`drift`)."""
    return _signed_node_runner("fleet_cert_check", "fleet.cert_check", "node", tag, data, salt)


def inventory(tag: str, data: Any, salt: Mapping) -> dict:
    """``fleet/pkgset/changed`` (the ``fleet_pkgset`` beacon): a fresh inventory of that node,
    at most one per node and minute (``fleet_gate.hint``), targeted by list (an id never
    widens into a glob); what it returns is filed under the id Salt authenticated."""
    minion = _minion(data)
    if minion is None or not salt["fleet_gate.hint"]("pkgset", minion):
        return {}
    return {
        "fleet_inventory_refresh": {
            "local.fleet.inventory": [{"tgt": [minion]}, {"tgt_type": "list"}]
        }
    }
