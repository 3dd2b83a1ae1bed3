"""Two nodes' inventories side by side (what Uyuni calls a profile compare). Pure logic.

:func:`compare_inventories` takes two inventories' packages as the store keeps them
(``{ecosystem: {name: version}}``) and sorts every package into one of four kinds::

    {
        "only_a":    [{"ecosystem", "name", "a": version, "b": None}],
        "only_b":    [{"ecosystem", "name", "a": None, "b": version}],
        "different": [{"ecosystem", "name", "a", "b", "direction": "newer" | "older"}],
        "same":      12,                      # a count: the long, boring part
        "ecosystems": {eco: {"only_a", "only_b", "different", "same"}},   # counts
    }

``direction`` says where B's version stands against A's, in the ecosystem's own version
order (:mod:`saltext_fleet.core.versions`). Two strings that are the same version in that
order (``1.0`` and ``1.0.0`` on PyPI) count as the same. Lists are sorted by ecosystem and
name. :func:`rows` flattens a comparison into one list (filtered by kind and ecosystem) for
a page.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from saltext_fleet.core import versions

#: The kinds of difference, in the order a page shows them.
KINDS = ("different", "only_a", "only_b")


def _packages(inventory: Any) -> dict[str, dict[str, str]]:
    """Packages of any shape as ``{ecosystem: {name: version text}}`` (stored data can be
    anything: what is not a mapping of names is left out)."""
    out: dict[str, dict[str, str]] = {}
    if not isinstance(inventory, Mapping):
        return out
    for eco, pkgs in inventory.items():
        if isinstance(eco, str) and isinstance(pkgs, Mapping):
            out[eco] = {str(n): "" if v is None else str(v) for n, v in pkgs.items()}
    return out


def compare_inventories(a: Any, b: Any) -> dict[str, Any]:
    """Compare the packages of inventory A with those of inventory B (see the module doc)."""
    a, b = _packages(a), _packages(b)
    only_a: list[dict[str, Any]] = []
    only_b: list[dict[str, Any]] = []
    different: list[dict[str, Any]] = []
    same = 0
    per_eco: dict[str, dict[str, int]] = {}
    for eco in sorted(set(a) | set(b)):
        pa, pb = a.get(eco, {}), b.get(eco, {})
        counts = {"only_a": 0, "only_b": 0, "different": 0, "same": 0}
        for name in sorted(pa.keys() - pb.keys()):
            only_a.append({"ecosystem": eco, "name": name, "a": pa[name], "b": None})
            counts["only_a"] += 1
        for name in sorted(pb.keys() - pa.keys()):
            only_b.append({"ecosystem": eco, "name": name, "a": None, "b": pb[name]})
            counts["only_b"] += 1
        # equal strings are the same without asking the version order (the usual case)
        both = pa.keys() & pb.keys()
        unequal = sorted(n for n in both if pa[n] != pb[n])
        counts["same"] = len(both) - len(unequal)
        for name in unequal:
            where = versions.direction(eco, pa[name], pb[name])
            if where == "same":
                counts["same"] += 1
                continue
            different.append(
                {"ecosystem": eco, "name": name, "a": pa[name], "b": pb[name], "direction": where}
            )
            counts["different"] += 1
        same += counts["same"]
        per_eco[eco] = counts
    return {
        "only_a": only_a,
        "only_b": only_b,
        "different": different,
        "same": same,
        "ecosystems": per_eco,
    }


def rows(
    comparison: Mapping[str, Any], kind: str | None = None, ecosystem: str | None = None
) -> list[dict[str, Any]]:
    """The differences of a comparison as one list, each row with its ``kind``, sorted by
    ecosystem and name; only ``kind`` (one of :data:`KINDS`) and ``ecosystem`` if given."""
    out = []
    for name in KINDS:
        if kind is not None and name != kind:
            continue
        for entry in comparison[name]:
            if ecosystem is None or entry["ecosystem"] == ecosystem:
                out.append({"kind": name, "direction": None, **entry})
    out.sort(key=lambda row: (row["ecosystem"], row["name"]))
    return out
