"""Baseline storage: the baselines, their assignments to Salt targets, and compiled baselines.

Which baseline applies to which node (Salt targeting) is the caller's business. :func:`compiled`
keeps each baseline compiled for comparison (:class:`~saltext_fleet.core.drift.CompiledBaseline`)
per process, by database, name, revision and weights.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Connection, Engine

from saltext_fleet.core import baseline as core_baseline
from saltext_fleet.core import drift as core_drift
from saltext_fleet.store.drift.common import DriftError, dialect_insert
from saltext_fleet.store.models import Baseline, BaselineAssignment, DriftCurrent, utcnow


def save_baseline(engine: Engine, spec: Mapping[str, Any], source: str) -> bool:
    """Create or replace a baseline (already in normal form); True when it is new."""
    now = utcnow()
    row = {
        "name": spec["name"],
        "description": spec.get("description") or "",
        "spec": dict(spec),
        "revision": core_baseline.revision(spec),
        "source": source[:1000],
        "created_at": now,
        "updated_at": now,
    }
    with engine.begin() as conn:
        existed = conn.execute(select(Baseline.name).where(Baseline.name == spec["name"])).first()
        stmt = dialect_insert(conn)(Baseline.__table__)
        stmt = stmt.on_conflict_do_update(
            index_elements=["name"],
            set_={
                k: stmt.excluded[k]
                for k in ("description", "spec", "revision", "source", "updated_at")
            },
        )
        conn.execute(stmt, row)
    return existed is None


def get_baseline(engine: Engine, name: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(select(Baseline).where(Baseline.name == name)).first()
    return None if row is None else _baseline_dict(row)


def _baseline_dict(row) -> dict[str, Any]:
    spec = dict(row.spec)
    spec.update(
        {
            "revision": row.revision,
            "source": row.source,
            "created_at": row.created_at.isoformat() if row.created_at else None,
            "updated_at": row.updated_at.isoformat() if row.updated_at else None,
        }
    )
    return spec


def load_baselines(engine: Engine, names: Iterable[str] | None = None) -> dict[str, dict]:
    """``{name: normal-form spec}`` of the named baselines (all when ``names`` is None)."""
    stmt = select(Baseline.name, Baseline.spec)
    if names is not None:
        stmt = stmt.where(Baseline.name.in_(sorted(set(names))))
    with engine.connect() as conn:
        return {name: spec for name, spec in conn.execute(stmt)}


def list_baselines(engine: Engine) -> list[dict[str, Any]]:
    """Every baseline: name, description, source, package/fact counts, assignments, times."""
    with engine.connect() as conn:
        rows = conn.execute(select(Baseline).order_by(Baseline.name)).all()
        assigned: dict[str, list] = {}
        for a in conn.execute(
            select(BaselineAssignment).order_by(BaselineAssignment.priority, BaselineAssignment.id)
        ):
            assigned.setdefault(a.baseline, []).append(
                {"target": a.target, "tgt_type": a.tgt_type, "priority": a.priority}
            )
        scored = dict(
            conn.execute(
                select(DriftCurrent.baseline, func.count()).group_by(DriftCurrent.baseline)
            ).all()
        )
    out = []
    for row in rows:
        spec = row.spec
        out.append(
            {
                "name": row.name,
                "description": row.description,
                "source": row.source,
                "packages": sum(len(p) for p in spec["packages"].values()),
                "ecosystems": spec.get("ecosystems", []),
                "facts": len(spec.get("facts") or {}),
                "assigned": assigned.get(row.name, []),
                "nodes_scored": scored.get(row.name, 0),
                "updated_at": row.updated_at.isoformat(),
            }
        )
    return out


def delete_baseline(engine: Engine, name: str) -> bool:
    with engine.begin() as conn:
        conn.execute(delete(BaselineAssignment).where(BaselineAssignment.baseline == name))
        gone = conn.execute(delete(Baseline).where(Baseline.name == name)).rowcount
        conn.execute(delete(DriftCurrent).where(DriftCurrent.baseline == name))
    return bool(gone)


def assign(engine: Engine, name: str, target: str, tgt_type: str, priority: int = 0) -> dict:
    """Assign baseline ``name`` to a Salt target; re-assigning updates the priority."""
    with engine.begin() as conn:
        if conn.execute(select(Baseline.name).where(Baseline.name == name)).first() is None:
            raise DriftError(f"no baseline named {name!r}")
        stmt = dialect_insert(conn)(BaselineAssignment.__table__)
        stmt = stmt.on_conflict_do_update(
            index_elements=["baseline", "target", "tgt_type"],
            set_={"priority": stmt.excluded.priority},
        )
        conn.execute(
            stmt,
            {
                "baseline": name,
                "target": target,
                "tgt_type": tgt_type,
                "priority": priority,
                "created_at": utcnow(),
            },
        )
    return {"baseline": name, "target": target, "tgt_type": tgt_type, "priority": priority}


def unassign(engine: Engine, name: str, target: str | None = None) -> int:
    stmt = delete(BaselineAssignment).where(BaselineAssignment.baseline == name)
    if target is not None:
        stmt = stmt.where(BaselineAssignment.target == target)
    with engine.begin() as conn:
        return conn.execute(stmt).rowcount or 0


def assignments(engine: Engine) -> list[dict[str, Any]]:
    """All assignments, lowest priority first (later entries win), oldest first on ties."""
    stmt = select(BaselineAssignment).order_by(BaselineAssignment.priority, BaselineAssignment.id)
    with engine.connect() as conn:
        return [
            {
                "baseline": a.baseline,
                "target": a.target,
                "tgt_type": a.tgt_type,
                "priority": a.priority,
            }
            for a in conn.execute(stmt)
        ]


_COMPILED: dict[tuple, core_drift.CompiledBaseline] = {}
_COMPILED_MAX = 32


def weights_digest(weights: Mapping[str, float] | None) -> str:
    return core_baseline.digest_of(core_drift.weights_from(weights))


def compiled(
    conn: Connection, name: str, weights: Mapping[str, float] | None, revision: str | None = None
) -> tuple[core_drift.CompiledBaseline, str]:
    """The baseline ``name`` compiled (cached per process by name, revision and weights)."""
    if revision is None:
        revision = conn.execute(select(Baseline.revision).where(Baseline.name == name)).scalar()
        if revision is None:
            raise DriftError(f"no baseline named {name!r}")
    key = (
        conn.engine.url.render_as_string(hide_password=False),
        name,
        revision,
        weights_digest(weights),
    )
    found = _COMPILED.get(key)
    if found is None:
        spec = conn.execute(select(Baseline.spec).where(Baseline.name == name)).scalar()
        if spec is None:
            raise DriftError(f"no baseline named {name!r}")
        if len(_COMPILED) >= _COMPILED_MAX:
            _COMPILED.clear()
        found = _COMPILED[key] = core_drift.CompiledBaseline(spec, weights)
    return found, revision
