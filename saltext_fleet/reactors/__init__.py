"""Reactor SLS files shipped in the package.

``REACTORS`` maps an event tag to the SLS files (in this folder) that react to it;
``saltext-fleet config`` turns it into the master's ``reactor:`` list with absolute paths.

- ``fleet/pkgset/changed`` (the ``fleet_pkgset`` beacon, or the ``fleet.baseline`` state after
  it changed packages) -> ``inventory.sls``: run ``fleet.inventory`` on that node.
- ``fleet/inventory/changed`` (the returner stored a changed inventory) and
  ``fleet/states/ran`` (a ``state.apply`` return, e.g. a scheduled ``test=True`` run) ->
  ``drift.sls``: recompute
  that node's drift (``fleet.drift_node``).
- ``fleet/inventory/changed`` also -> ``vulns.sls``: recompute that node's vulnerability
  findings (``fleet.cve_node``).
- ``fleet/certs/changed`` (the returner stored grains whose signing identities changed) ->
  ``certs.sls``: check that node's certificate expiry now (``fleet.cert_check``).
- ``salt/auth`` (a minion presented a key that is not accepted) -> ``keys.sls``: the key gate
  (a thread of the reactor's process records the key and accepts it only with a live
  enrolment, as ``fleet.key_seen`` does).
- ``salt/key`` (Salt accepted, rejected, denied or deleted a key: ``salt-key``, the wheel)
  -> ``key_change.sls``: recorded as done by ``salt-key`` unless the gate recorded it already.
- ``salt/minion/*/start`` -> ``onboard.sls``: set the node up (``fleet.onboard``).
- ``salt/presence/change`` -> ``presence.sls``: online/offline (``fleet.presence``).
"""

REACTORS: dict[str, list[str]] = {
    "fleet/pkgset/changed": ["inventory.sls"],
    "fleet/inventory/changed": ["drift.sls", "vulns.sls"],
    "fleet/states/ran": ["drift.sls"],
    "fleet/certs/changed": ["certs.sls"],
    "salt/auth": ["keys.sls"],
    "salt/key": ["key_change.sls"],
    "salt/minion/*/start": ["onboard.sls"],
    "salt/presence/change": ["presence.sls"],
}
