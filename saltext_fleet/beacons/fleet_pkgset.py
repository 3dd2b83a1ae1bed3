"""
Fire an event when this node's package set changes.

Inventory is then event-driven instead of only polled: the master's reactor (or anyone
listening) reacts to ``fleet/pkgset/changed`` by collecting ``fleet.inventory``.

How it stays cheap: each run stats the files listed by ``fleet.stamp_paths`` (the package
database, Homebrew's Cellar, the watched Python site-packages, Nix profile links). Only when
one of them changed since the last run, or ``full_every`` seconds have passed, does it run
``fleet.inventory`` and compare its digest with the last one. The last digest is kept in
memory and in ``<cachedir>/fleet/pkgset_beacon.json``, so a minion restart does not fire a
change that did not happen. The first run ever only records the digest.

When the digest changed, the beacon sends ``fleet/pkgset/changed`` to the master with
``event.send`` and also returns it as a beacon event (tag ``salt/beacon/<id>/fleet_pkgset/changed``),
with this data::

    {"digest": "<new sha256>", "previous": "<old sha256>", "counts": {"deb": 759, "pypi": 12}}

Configuration (minion config or pillar):

.. code-block:: yaml

    beacons:
      fleet_pkgset:
        - interval: 60         # seconds between stat checks (Salt's beacon interval)
        - full_every: 3600     # run the full inventory at least this often; default 3600

The Python interpreters watched are those of the ``fleet:inventory:pip`` option read by
the ``fleet`` execution module.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time

import salt.utils.beacons

log = logging.getLogger(__name__)

__virtualname__ = "fleet_pkgset"

#: Default for ``full_every``: seconds after which the inventory runs even if no stamp moved.
DEFAULT_FULL_EVERY = 3600

#: Tag of the event sent to the master.
EVENT_TAG = "fleet/pkgset/changed"

_CONTEXT_KEY = "fleet_pkgset.state"
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def __virtual__():
    if "fleet.inventory" in __salt__ and "fleet.stamp_paths" in __salt__:
        return __virtualname__
    return False, "the fleet execution module (fleet.inventory) is not loaded"


def validate(config):
    """
    Validate the beacon configuration: a list of dicts; ``full_every`` a number >= 0.
    """
    if not isinstance(config, list) or not all(isinstance(item, dict) for item in config):
        return False, "Configuration for fleet_pkgset beacon must be a list of dicts."
    options = salt.utils.beacons.list_to_dict(config)
    full_every = options.get("full_every", DEFAULT_FULL_EVERY)
    if isinstance(full_every, bool) or not isinstance(full_every, (int, float)) or full_every < 0:
        return (
            False,
            "Configuration for fleet_pkgset beacon: full_every must be a number of seconds >= 0.",
        )
    return True, "Valid beacon configuration"


def beacon(config):
    """
    Return ``[{"tag": "changed", "digest", "previous", "counts"}]`` when the package set
    changed since the last run, else ``[]``.

    .. code-block:: yaml

        beacons:
          fleet_pkgset:
            - interval: 60
            - full_every: 3600
    """
    options = salt.utils.beacons.list_to_dict(config) if isinstance(config, list) else {}
    full_every = options.get("full_every", DEFAULT_FULL_EVERY)
    if isinstance(full_every, bool) or not isinstance(full_every, (int, float)):
        full_every = DEFAULT_FULL_EVERY

    state = __context__.get(_CONTEXT_KEY)
    if state is None:
        state = _load_state()
        __context__[_CONTEXT_KEY] = state

    # Stat before the inventory runs: a change made while it runs then shows next time.
    stamps = _stat_all(_stamp_paths())
    now = time.time()
    previous = state.get("digest")
    elapsed = now - state.get("checked", 0)
    if previous and stamps == state.get("stamps") and 0 <= elapsed < full_every:
        return []

    try:
        inventory = __salt__["fleet.inventory"]()
    except Exception as exc:  # noqa: BLE001 - a beacon must not crash the minion
        log.warning("fleet_pkgset: fleet.inventory failed: %s", exc)
        return []
    digest = inventory.get("digest") if isinstance(inventory, dict) else None
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        log.warning("fleet_pkgset: fleet.inventory returned no digest; will retry")
        return []

    state = {"digest": digest, "stamps": stamps, "checked": now}
    __context__[_CONTEXT_KEY] = state
    _save_state(state)
    if not previous or previous == digest:
        return []

    packages = inventory.get("packages")
    counts = {
        eco: len(table)
        for eco, table in (packages.items() if isinstance(packages, dict) else ())
        if isinstance(table, dict)
    }
    data = {"digest": digest, "previous": previous, "counts": counts}
    log.info("fleet_pkgset: package set changed (%s -> %s)", previous[:12], digest[:12])
    try:
        __salt__["event.send"](EVENT_TAG, data)
    except Exception as exc:  # noqa: BLE001 - a beacon must not crash the minion
        log.warning("fleet_pkgset: could not send %s: %s", EVENT_TAG, exc)
    return [{"tag": "changed", **data}]


def _stamp_paths() -> list:
    try:
        paths = __salt__["fleet.stamp_paths"]()
    except Exception as exc:  # noqa: BLE001 - a beacon must not crash the minion
        log.warning("fleet_pkgset: fleet.stamp_paths failed: %s", exc)
        return []
    if not isinstance(paths, list):
        log.warning("fleet_pkgset: fleet.stamp_paths returned %s", type(paths).__name__)
        return []
    return [p for p in paths if isinstance(p, str)]


def _stat_all(paths: list) -> dict:
    """``{path: [target, mtime_ns, size, inode] or None}``; lists, so it survives JSON."""
    stamps = {}
    for path in paths:
        try:
            st = os.stat(path)
        except (OSError, ValueError):
            stamps[path] = None
            continue
        # realpath: a re-pointed profile link (Nix) is a change even if mtimes coincide.
        stamps[path] = [os.path.realpath(path), st.st_mtime_ns, st.st_size, st.st_ino]
    return stamps


def _state_file() -> str:
    return os.path.join(__opts__["cachedir"], "fleet", "pkgset_beacon.json")


def _load_state() -> dict:
    path = _state_file()
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("fleet_pkgset: ignoring unreadable state file %s: %s", path, exc)
        return {}
    if not isinstance(data, dict):
        return {}
    state = {}
    if isinstance(data.get("digest"), str) and _DIGEST.match(data["digest"]):
        state["digest"] = data["digest"]
    if isinstance(data.get("stamps"), dict):
        state["stamps"] = data["stamps"]
    checked = data.get("checked")
    if isinstance(checked, (int, float)) and not isinstance(checked, bool):
        state["checked"] = checked
    return state


def _save_state(state: dict) -> None:
    path = _state_file()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".pkgset_beacon.", dir=os.path.dirname(path))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(state, handle)
            os.replace(tmp, path)  # atomic: a crash never leaves half a file
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as exc:
        log.warning("fleet_pkgset: could not save state to %s: %s", path, exc)
