"""What an SBOM is built from: a node's stored inventory (packages, source packages, facts,
digest) and the ``fleet`` grain it last reported. The runner (``fleet.sbom``) and the web UI
read it here; :mod:`saltext_fleet.core.sbom` builds the document.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from saltext_fleet.core import sbom as core_sbom
from saltext_fleet.store.models import InventorySnapshot, Node, utcnow
from saltext_fleet.store.vulns import triage as store_triage

#: Nodes read per query by :func:`node_inputs`.
CHUNK = 200


def _fleet_grain(grains: Any) -> dict[str, Any]:
    """``{"fleet": ...}`` of a node's stored grains (``grains.items`` or ``grains.item fleet``
    returns); ``{}`` when it has none."""
    fleet = grains.get("fleet") if isinstance(grains, dict) else None
    return {"fleet": fleet} if isinstance(fleet, dict) else {}


def _inventory(row) -> dict[str, Any]:
    return {
        "packages": row.packages if isinstance(row.packages, dict) else {},
        "sources": row.sources if isinstance(row.sources, dict) else {},
        "facts": row.facts if isinstance(row.facts, dict) else {},
        "digest": row.digest,
    }


def _stmt():
    return select(
        Node.minion_id,
        Node.grains,
        InventorySnapshot.digest,
        InventorySnapshot.packages,
        InventorySnapshot.sources,
        InventorySnapshot.facts,
    ).outerjoin(InventorySnapshot, InventorySnapshot.digest == Node.inventory_digest)


def node_input(conn: Connection, minion_id: str) -> tuple[bool, dict | None, dict]:
    """``(known, inventory, grains)`` of one node: ``known`` False when the store has no such
    node, ``inventory`` None when it has reported none; ``grains`` is ``{"fleet": ...}`` or
    ``{}``."""
    row = conn.execute(_stmt().where(Node.minion_id == minion_id)).first()
    if row is None:
        return False, None, {}
    inventory = _inventory(row) if row.digest is not None else None
    return True, inventory, _fleet_grain(row.grains)


def node_inputs(engine: Engine, minions: Iterable[str]) -> Iterator[tuple[str, dict, dict]]:
    """``(minion_id, inventory, grains)`` of each of ``minions`` that has an inventory, in
    the order given, read :data:`CHUNK` nodes at a time."""
    minions = list(minions)
    for start in range(0, len(minions), CHUNK):
        chunk = minions[start : start + CHUNK]
        with engine.connect() as conn:
            rows = conn.execute(
                _stmt().where(Node.minion_id.in_(chunk), Node.inventory_digest.is_not(None))
            ).all()
        found = {row.minion_id: row for row in rows if row.digest is not None}
        for minion in chunk:
            row = found.get(minion)
            if row is not None:
                yield minion, _inventory(row), _fleet_grain(row.grains)


def known_nodes(engine: Engine) -> dict[str, bool]:
    """Every node in the store: ``{minion_id: has an inventory}``."""
    with engine.connect() as conn:
        rows = conn.execute(select(Node.minion_id, Node.inventory_digest)).all()
    return {minion: digest is not None for minion, digest in rows}


def node_vex(conn: Connection, minion_id: str, inventory: dict[str, Any]) -> list[dict[str, Any]]:
    """The VEX entries of the node's triaged open findings (operators' decisions, see
    :func:`saltext_fleet.store.vulns.triage.vex_for_node`), pointing at the components by the
    purls its SBOM gives them."""
    facts = inventory.get("facts") or {}
    sources = inventory.get("sources") or {}

    def purl_of(ecosystem: str, name: str, version: str) -> str:
        source = (sources.get(ecosystem) or {}).get(name)
        return core_sbom.package_purl(ecosystem, name, version, facts, source)

    return store_triage.vex_for_node(conn, minion_id, utcnow(), purl_of=purl_of)
