"""Drift findings for people: each one with the baseline rule that produced it, grouped by
kind, and counted over the fleet. Pure logic.

A drift result (:mod:`saltext_fleet.core.drift`) lists what differs; :func:`explain` puts
each finding next to the rule of the baseline (:mod:`saltext_fleet.core.baseline`) it broke::

    {
        "baseline": "macos-build",
        "groups": [                      # always the four kinds, in this order
            {"kind": "missing", "label": "Missing packages", "count": 1, "findings": [
                {"kind": "missing", "ecosystem": "pypi", "name": "certifi",
                 "expected": "2024.2.2", "found": None, "change": None, "direction": None,
                 "rule": "exact", "rule_version": "2024.2.2", "rule_text": "exactly 2024.2.2",
                 "field": "packages:pypi:certifi"}]},
            {"kind": "changed", ...}, {"kind": "extra", ...}, {"kind": "facts", ...},
        ],
        "pending_states": 3,
    }

``field`` is where the rule sits in the baseline document, in the notation baseline errors
use (``packages:<ecosystem>:<name>``, ``facts:<fact>``; ``extras`` for a package the baseline
does not name, counted because of ``extras: true``). The baseline's YAML shows the same rule
under that path.

:class:`FleetTally` counts package findings over many nodes: the packages that drift on the
most nodes, and which nodes. Findings are added per group of nodes that share a baseline and
an inventory snapshot (a fleet has far fewer of those than nodes), as the compact tuples of
:func:`package_findings`.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: The kinds of finding, in the order a page shows them, with their headings.
KINDS = ("missing", "changed", "extra", "facts")
LABELS = {
    "missing": "Missing packages",
    "changed": "Changed versions",
    "extra": "Extra packages",
    "facts": "Fact mismatches",
}
PACKAGE_KINDS = ("missing", "changed", "extra")


def rule_text(rule: str, version: str | None = None, ecosystem: str | None = None) -> str:
    """A rule as a person reads it: ``exactly 2.31.0``, ``at least 2.0``, ``any version``."""
    if rule == "exact":
        return f"exactly {version}"
    if rule == "min":
        return f"at least {version}"
    if rule == "any":
        return "any version"
    if rule == "ignore":
        return "ignored"
    if rule == "extras":
        where = f"{ecosystem} packages" if ecosystem else "packages"
        return f"extras: true (no {where} but those named)"
    if rule == "fact":
        return f"equals {version}"
    return rule


def _package_rule(spec: Mapping[str, Any], eco: str, name: str) -> dict | None:
    rules = (spec.get("packages") or {}).get(eco) or {}
    rule = rules.get(name)
    return rule if isinstance(rule, Mapping) else None


def _finding(kind: str, spec: Mapping[str, Any], entry: Mapping[str, Any]) -> dict[str, Any]:
    eco, name = entry["ecosystem"], entry["name"]
    out = {
        "kind": kind,
        "ecosystem": eco,
        "name": name,
        "expected": entry.get("expected"),
        "found": entry.get("actual") if kind == "changed" else entry.get("version"),
        "change": entry.get("change"),
        "direction": entry.get("direction"),
    }
    if kind == "extra":
        out.update(rule="extras", rule_version=None, field="extras")
        out["rule_text"] = rule_text("extras", ecosystem=eco)
        return out
    rule = _package_rule(spec, eco, name)
    if rule is None:  # a result of another revision of the baseline: say so, guess nothing
        out.update(rule=None, rule_version=None, field=f"packages:{eco}:{name}")
        out["rule_text"] = "not in the baseline now"
        return out
    out.update(
        rule=rule.get("rule"), rule_version=rule.get("version"), field=f"packages:{eco}:{name}"
    )
    out["rule_text"] = rule_text(rule.get("rule"), rule.get("version"))
    return out


def _fact_finding(spec: Mapping[str, Any], entry: Mapping[str, Any]) -> dict[str, Any]:
    fact = entry["fact"]
    expected = (spec.get("facts") or {}).get(fact, entry.get("expected"))
    return {
        "kind": "facts",
        "ecosystem": None,
        "name": fact,
        "expected": entry.get("expected"),
        "found": entry.get("actual"),
        "change": None,
        "direction": None,
        "rule": "fact",
        "rule_version": expected,
        "rule_text": rule_text("fact", expected),
        "field": f"facts:{fact}",
    }


def explain(result: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
    """Every finding of a drift ``result`` with the rule of ``spec`` (the baseline's normal
    form) that produced it, grouped by kind (see the module docstring). A kind the result
    only counted (``None`` instead of a list) keeps its count and lists nothing."""
    counts = result.get("counts") or {}
    groups = []
    for kind in KINDS:
        entries = result.get(kind)
        if entries is None:
            findings = None
            count = int(counts.get(kind) or 0)
        elif kind == "facts":
            findings = [_fact_finding(spec, e) for e in entries]
            count = len(findings)
        else:
            findings = [_finding(kind, spec, e) for e in entries]
            count = len(findings)
        groups.append({"kind": kind, "label": LABELS[kind], "count": count, "findings": findings})
    return {
        "baseline": result.get("baseline"),
        "score": result.get("score"),
        "groups": groups,
        "pending_states": result.get("pending_states"),
    }


#: A package finding as :func:`package_findings` gives it: (kind, ecosystem, name, expected,
#: found), ``expected`` None for an extra package, ``found`` None for a missing one.
PackageFinding = tuple[str, str, str, "str | None", "str | None"]


def package_findings(result: Mapping[str, Any]) -> tuple[PackageFinding, ...]:
    """The package findings of a drift result as compact tuples (for tallies and caches)."""
    out: list[PackageFinding] = []
    for entry in result.get("missing") or ():
        out.append(("missing", entry["ecosystem"], entry["name"], entry["expected"], None))
    for entry in result.get("changed") or ():
        out.append(
            ("changed", entry["ecosystem"], entry["name"], entry["expected"], entry["actual"])
        )
    for entry in result.get("extra") or ():
        out.append(("extra", entry["ecosystem"], entry["name"], None, entry["version"]))
    return tuple(out)


#: How a package row of :class:`FleetTally` can be sorted.
TALLY_SORTS = ("nodes", "name", "ecosystem", "missing", "changed", "extra")
_KIND_INDEX = {kind: i for i, kind in enumerate(PACKAGE_KINDS)}


class FleetTally:
    """Package and fact findings counted over nodes.

    :meth:`add` takes the findings of a group of nodes (same baseline, same inventory
    snapshot) once; :meth:`add_facts` the fact mismatches of one node. :meth:`order` sorts
    the drifting packages (by how many nodes, by name...), :meth:`row` describes one of them
    (how many nodes miss it, run another version or have it as an extra; the versions
    expected and found), :meth:`nodes_of` names those nodes.

    Counts are summed as groups are added; a package's versions and nodes are looked at only
    when it is shown. Orderings are remembered (:data:`ORDERS_KEPT`): a tally is meant to be
    kept while the fleet it counted does not change.
    """

    #: orderings :meth:`order` remembers
    ORDERS_KEPT = 16
    #: package rows :meth:`row` remembers
    ROWS_KEPT = 2000

    def __init__(self) -> None:
        #: groups of nodes: (baseline, minions sorted)
        self.groups: list[tuple[str, list[str]]] = []
        #: (ecosystem, name) -> [missing, changed, extra] node counts
        self.counts: dict[tuple[str, str], list[int]] = {}
        #: (ecosystem, name) -> [(group index, kind, expected, found)]
        self.where: dict[tuple[str, str], list[tuple[int, str, Any, Any]]] = {}
        #: fact -> [(minion, baseline, expected, found)]
        self.facts: dict[str, list[tuple[str, str, Any, Any]]] = {}
        self.nodes = 0
        self._drifting = 0
        self._orders: dict[tuple, list[tuple[str, str]]] = {}
        self._rows: dict[tuple, dict[str, Any]] = {}
        self._samples: dict[tuple, list[str]] = {}
        self._ecosystems: list[str] | None = None

    def add(
        self, baseline: str, minions: Sequence[str], findings: Iterable[PackageFinding]
    ) -> None:
        index = len(self.groups)
        minions = sorted(minions)  # nodes_of merges the groups' sorted lists
        self.groups.append((baseline, minions))
        size = len(minions)
        self.nodes += size
        where, counts, kinds = self.where, self.counts, _KIND_INDEX
        any_found = False
        for kind, eco, name, expected, found in findings:
            any_found = True
            key = (eco, name)
            entries = where.get(key)
            if entries is None:
                entries = where[key] = []
                counts[key] = [0, 0, 0]
            entries.append((index, kind, expected, found))
            counts[key][kinds[kind]] += size
        if any_found:
            self._drifting += size
        self._orders.clear()
        self._rows.clear()
        self._samples.clear()
        self._ecosystems = None

    def add_facts(self, baseline: str, minion: str, mismatches: Iterable[Mapping]) -> None:
        for entry in mismatches:
            self.facts.setdefault(entry["fact"], []).append(
                (minion, baseline, entry.get("expected"), entry.get("actual"))
            )

    def drifting_nodes(self) -> int:
        """How many nodes have at least one package finding."""
        return self._drifting

    def ecosystems(self) -> list[str]:
        if self._ecosystems is None:
            self._ecosystems = sorted({eco for eco, _ in self.where})
        return self._ecosystems

    def sample(self, key: tuple[str, str], kind: str | None = None, limit: int = 5) -> list[str]:
        """The first ``limit`` nodes (by minion id) a package drifts on; remembered like
        :meth:`row`."""
        memo = (key, kind, limit)
        found = self._samples.get(memo)
        if found is None:
            if len(self._samples) >= self.ROWS_KEPT:
                self._samples.clear()
            found = [n["minion"] for n in self.nodes_of(*key, kind, limit)]
            self._samples[memo] = found
        return found

    def order(
        self,
        sort: str = "nodes",
        desc: bool = True,
        kind: str | None = None,
        ecosystem: str | None = None,
        q: str | None = None,
    ) -> list[tuple[str, str]]:
        """The drifting packages ``(ecosystem, name)``, sorted (``sort`` one of
        :data:`TALLY_SORTS`; ties by ecosystem and name); only those with findings of
        ``kind``, of ``ecosystem`` and whose name holds ``q`` (case-insensitive) if given."""
        if sort not in TALLY_SORTS:
            raise ValueError(f"sort: {sort!r} is not one of {', '.join(TALLY_SORTS)}")
        memo = (sort, desc, kind, ecosystem, q)
        found = self._orders.get(memo)
        if found is not None:
            return found
        needle = q.lower() if q else None
        only = _KIND_INDEX[kind] if kind is not None else None
        counts = self.counts
        keys = [
            key
            for key, c in counts.items()
            if (only is None or c[only])
            and (ecosystem is None or key[0] == ecosystem)
            and (needle is None or needle in key[1].lower())
        ]
        keys.sort()
        if sort == "name":
            keys.sort(key=lambda k: (k[1], k[0]))
            if desc:
                keys.reverse()
        elif sort == "ecosystem":
            if desc:
                keys.reverse()
        else:
            if sort == "nodes":
                value = (
                    (lambda k: counts[k][only]) if only is not None else (lambda k: sum(counts[k]))
                )
            else:
                i = _KIND_INDEX[sort]
                value = lambda k: counts[k][i]  # noqa: E731 - one short key function
            keys.sort(key=value, reverse=desc)  # stable: ties stay by ecosystem and name
        if len(self._orders) >= self.ORDERS_KEPT:
            self._orders.clear()
        self._orders[memo] = keys
        return keys

    def row(self, key: tuple[str, str], kind: str | None = None) -> dict[str, Any]:
        """One package's row: node counts per kind (only ``kind`` if given), its baselines, the
        versions most nodes are held to (``expected``) and run (``found``). Remembered (at
        most :data:`ROWS_KEPT`): treat it as read-only."""
        found_row = self._rows.get((key, kind))
        if found_row is None:
            if len(self._rows) >= self.ROWS_KEPT:
                self._rows.clear()
            found_row = self._rows[(key, kind)] = self._row(key, kind)
        return found_row

    def _row(self, key: tuple[str, str], kind: str | None) -> dict[str, Any]:
        counts = dict.fromkeys(PACKAGE_KINDS, 0)
        baselines: set[str] = set()
        expected: Counter = Counter()
        found: Counter = Counter()
        for index, k, exp, fnd in self.where.get(key, ()):
            if kind is not None and k != kind:
                continue
            size = len(self.groups[index][1])
            counts[k] += size
            baselines.add(self.groups[index][0])
            if exp is not None:
                expected[exp] += size
            if fnd is not None:
                found[fnd] += size
        return {
            "ecosystem": key[0],
            "name": key[1],
            "nodes": sum(counts.values()),
            **counts,
            "baselines": sorted(baselines),
            "expected": [v for v, _ in expected.most_common(3)],
            "expected_more": max(0, len(expected) - 3),
            "found": [v for v, _ in found.most_common(3)],
            "found_more": max(0, len(found) - 3),
        }

    def package_rows(self, sort: str = "nodes", desc: bool = True, **filters) -> list[dict]:
        """:meth:`row` of every package of :meth:`order` (for small tallies and tests)."""
        return [self.row(key, filters.get("kind")) for key in self.order(sort, desc, **filters)]

    def nodes_of(
        self, ecosystem: str, name: str, kind: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """The nodes a package drifts on, by minion id: ``minion, baseline, kind, expected,
        found`` (the first ``limit`` only, if given)."""
        entries = [
            (self.groups[index], k, exp, fnd)
            for index, k, exp, fnd in self.where.get((ecosystem, name), ())
            if kind is None or k == kind
        ]
        if limit is not None:
            # each group's minions are sorted: the first ``limit`` of each are candidates
            heads = (
                (m, baseline, k, exp, fnd)
                for (baseline, minions), k, exp, fnd in entries
                for m in minions[:limit]
            )
            chosen = heapq.nsmallest(limit, heads)
        else:
            chosen = list(
                heapq.merge(
                    *(
                        _tagged(minions, (baseline, k, exp, fnd))
                        for (baseline, minions), k, exp, fnd in entries
                    )
                )
            )
        return [
            {"minion": m, "baseline": b, "kind": k, "expected": e, "found": f}
            for m, b, k, e, f in chosen
        ]

    def fact_rows(self) -> list[dict[str, Any]]:
        """One row per fact that differs somewhere: how many nodes, expected and found values
        (most frequent first), the first nodes; most nodes first."""
        rows = []
        for fact, entries in self.facts.items():
            expected = Counter(e for _, _, e, _ in entries)
            found = Counter("—" if f is None else f for _, _, _, f in entries)
            rows.append(
                {
                    "fact": fact,
                    "nodes": len(entries),
                    "expected": [v for v, _ in expected.most_common(3)],
                    "found": found.most_common(5),
                    "sample": heapq.nsmallest(5, (m for m, _, _, _ in entries)),
                }
            )
        rows.sort(key=lambda r: r["fact"])
        rows.sort(key=lambda r: r["nodes"], reverse=True)
        return rows


def _tagged(minions: Iterable[str], tail: tuple) -> Iterable[tuple]:
    """``(minion, *tail)`` for each minion (a function, so each stream keeps its own tail)."""
    for minion in minions:
        yield (minion, *tail)
