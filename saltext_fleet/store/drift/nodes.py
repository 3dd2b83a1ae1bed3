"""Node reads for drift, and the pending states that highstate test runs report.

Which nodes have an inventory (:func:`node_ids`), a node's stored inventory (for pinning a
baseline, :func:`node_inventory`), every node with its latest drift score (:func:`node_rows`);
:func:`set_pending_states` is the batch writer's.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection, Engine

from saltext_fleet.store import carriers as store_carriers
from saltext_fleet.store.drift.common import aware
from saltext_fleet.store.drift.pkgkeys import clean_packages
from saltext_fleet.store.models import DriftCurrent, InventorySnapshot, Node


def node_ids(engine: Engine) -> list[str]:
    """Every node with an inventory."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(Node.minion_id)
                .where(Node.inventory_digest.is_not(None))
                .order_by(Node.minion_id)
            ).scalars()
        )


def node_inventory(engine: Engine, minion: str) -> dict[str, Any] | None:
    """A node's stored inventory ``{"packages", "facts", "digest"}`` (for pinning)."""
    with engine.connect() as conn:
        row = conn.execute(
            select(Node.inventory_digest, Node.facts, InventorySnapshot.packages)
            .join(InventorySnapshot, InventorySnapshot.digest == Node.inventory_digest)
            .where(Node.minion_id == minion)
        ).first()
    if row is None:
        return None
    return {"packages": clean_packages(row.packages), "facts": row.facts or {}, "digest": row[0]}


def set_pending_states(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Record ``[{"m": minion, "n": pending, "at": when}]`` from highstate test runs."""
    if rows:
        conn.execute(
            update(Node)
            .where(Node.minion_id == bindparam("m"))
            .values(pending_states=bindparam("n"), pending_states_at=bindparam("at")),
            rows,
        )


def node_rows(engine: Engine) -> list[dict[str, Any]]:
    """Every node with its inventory digest, pending states, latest drift score and how it
    is served (:func:`saltext_fleet.store.carriers.served`)."""
    stmt = (
        select(
            Node.minion_id,
            Node.first_seen,
            Node.last_seen,
            Node.inventory_digest,
            Node.inventory_at,
            Node.pending_states,
            DriftCurrent.score,
            DriftCurrent.baseline,
        )
        .outerjoin(DriftCurrent, DriftCurrent.minion_id == Node.minion_id)
        .order_by(Node.minion_id)
    )
    out = []
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
        serving = store_carriers.served(conn, [row.minion_id for row in rows])
        for row in rows:
            out.append(
                {
                    "minion_id": row.minion_id,
                    "first_seen": _iso(row.first_seen),
                    "last_seen": _iso(row.last_seen),
                    "digest": row.inventory_digest,
                    "inventory_at": _iso(row.inventory_at),
                    "pending_states": row.pending_states,
                    "drift_score": row.score,
                    "baseline": row.baseline,
                    "served": serving[row.minion_id],
                }
            )
    return out


def _iso(at: dt.datetime | None) -> str | None:
    return None if at is None else aware(at).isoformat()
