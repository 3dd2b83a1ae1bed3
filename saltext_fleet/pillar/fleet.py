"""
External pillar: each node's assigned baseline, as ``fleet:baseline``.

The ``fleet.baseline`` state reads it to know what to bring the node to. Master config (the
``saltext-fleet config`` snippet adds it):

.. code-block:: yaml

    ext_pillar:
      - fleet: {}

A node matched by no assignment gets no ``fleet:baseline`` key.
"""

from __future__ import annotations

import fnmatch
import logging

import salt.utils.minions

from saltext_fleet import config
from saltext_fleet.store import drift as store_drift
from saltext_fleet.store import engine as store_engine

log = logging.getLogger(__name__)

__virtualname__ = "fleet"


def __virtual__():
    try:
        _cfg()
    except config.FleetConfigError as exc:
        return False, f"the fleet external pillar cannot load: {exc}"
    return __virtualname__


def _cfg() -> config.FleetConfig:
    """The ``fleet:`` options, parsed once per loader (:func:`saltext_fleet.config.cached`)."""
    return config.cached(__opts__, __context__)


def ext_pillar(minion_id, pillar, *args, **kwargs):
    engine = store_engine.get_engine(_cfg().db_url)
    store_engine.ensure_schema(engine)
    name = None
    for entry in store_drift.assignments(engine):  # lowest priority first: later ones win
        if _matches(minion_id, entry["target"], entry["tgt_type"]):
            name = entry["baseline"]
    if name is None:
        return {}
    spec = store_drift.get_baseline(engine, name)
    if spec is None:
        return {}
    keep = ("name", "description", "packages", "facts", "ecosystems", "extras", "revision")
    return {"fleet": {"baseline": {k: spec[k] for k in keep if k in spec}}}


def _matches(minion_id: str, target: str, tgt_type: str) -> bool:
    if tgt_type == "glob":
        return fnmatch.fnmatchcase(minion_id, target)
    if tgt_type == "list":
        return minion_id in [t.strip() for t in target.split(",")]
    try:
        found = salt.utils.minions.CkMinions(__opts__).check_minions(target, tgt_type)
    except Exception:  # noqa: BLE001 - a bad stored target must not break every pillar
        log.warning("fleet ext_pillar: cannot match target %r (%s)", target, tgt_type)
        return False
    minions = found.get("minions", []) if isinstance(found, dict) else found
    return minion_id in minions
