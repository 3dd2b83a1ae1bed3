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
import itertools
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
        where = f" in {ecosystem}" if ecosystem else ""
        return f"extras: true (only named packages{where})"
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


class FleetTally:
    """Package and fact findings counted over nodes.

    :meth:`add` takes the findings of a group of nodes (same baseline, same inventory
    snapshot) once; :meth:`add_facts` the fact mismatches of one node. :meth:`package_rows`
    gives one row per package (``ecosystem``, ``name``) with how many nodes miss it, run
    another version or have it as an extra; :meth:`nodes_of` which nodes those are.
    """

    def __init__(self) -> None:
        #: groups of nodes: (baseline, minions sorted)
        self.groups: list[tuple[str, list[str]]] = []
        #: (ecosystem, name) -> [(group index, kind, expected, found)]
        self.where: dict[tuple[str, str], list[tuple[int, str, Any, Any]]] = {}
        #: fact -> [(minion, baseline, expected, found)]
        self.facts: dict[str, list[tuple[str, str, Any, Any]]] = {}
        self.nodes = 0

    def add(
        self, baseline: str, minions: Sequence[str], findings: Iterable[PackageFinding]
    ) -> None:
        index = len(self.groups)
        minions = sorted(minions)  # nodes_of merges the groups' sorted lists
        self.groups.append((baseline, minions))
        self.nodes += len(minions)
        where = self.where
        for kind, eco, name, expected, found in findings:
            key = (eco, name)
            found_list = where.get(key)
            if found_list is None:
                found_list = where[key] = []
            found_list.append((index, kind, expected, found))

    def add_facts(self, baseline: str, minion: str, mismatches: Iterable[Mapping]) -> None:
        for entry in mismatches:
            self.facts.setdefault(entry["fact"], []).append(
                (minion, baseline, entry.get("expected"), entry.get("actual"))
            )

    def _row(self, key: tuple[str, str], kind: str | None) -> dict[str, Any]:
        counts = dict.fromkeys(PACKAGE_KINDS, 0)
        baselines: set[str] = set()
        expected: Counter = Counter()
        found: Counter = Counter()
        for index, k, exp, fnd in self.where[key]:
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
            # the versions most nodes are held to, and run, most frequent first
            "expected": [v for v, _ in expected.most_common(3)],
            "expected_more": max(0, len(expected) - 3),
            "found": [v for v, _ in found.most_common(3)],
            "found_more": max(0, len(found) - 3),
        }

    def package_rows(
        self,
        sort: str = "nodes",
        desc: bool = True,
        kind: str | None = None,
        ecosystem: str | None = None,
        q: str | None = None,
    ) -> list[dict[str, Any]]:
        """One row per drifting package, sorted (``sort`` one of :data:`TALLY_SORTS`; ties by
        ecosystem and name); only findings of ``kind``, packages of ``ecosystem`` and names
        holding ``q`` (case-insensitive) if given."""
        if sort not in TALLY_SORTS:
            raise ValueError(f"sort: {sort!r} is not one of {', '.join(TALLY_SORTS)}")
        needle = q.lower() if q else None
        rows = []
        for key in self.where:
            if ecosystem is not None and key[0] != ecosystem:
                continue
            if needle is not None and needle not in key[1].lower():
                continue
            row = self._row(key, kind)
            if row["nodes"]:
                rows.append(row)
        if sort in ("name", "ecosystem"):
            first, second = ("name", "ecosystem") if sort == "name" else ("ecosystem", "name")
            rows.sort(key=lambda r: (r[first], r[second]), reverse=desc)
        else:
            rows.sort(key=lambda r: (r["ecosystem"], r["name"]))
            rows.sort(key=lambda r: r[sort], reverse=desc)  # stable: ties stay by name
        return rows

    def drifting_nodes(self) -> int:
        """How many nodes have at least one package finding."""
        groups = {index for entries in self.where.values() for index, *_ in entries}
        return sum(len(self.groups[index][1]) for index in groups)

    def ecosystems(self) -> list[str]:
        return sorted({eco for eco, _ in self.where})

    def nodes_of(
        self, ecosystem: str, name: str, kind: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """The nodes a package drifts on, by minion id: ``minion, baseline, kind, expected,
        found`` (the first ``limit`` only, if given)."""
        streams = []
        for index, k, exp, fnd in self.where.get((ecosystem, name), ()):
            if kind is not None and k != kind:
                continue
            baseline, minions = self.groups[index]
            streams.append(_tagged(minions, (baseline, k, exp, fnd)))
        merged = heapq.merge(*streams)
        if limit is not None:
            merged = itertools.islice(merged, limit)
        return [
            {"minion": m, "baseline": b, "kind": k, "expected": e, "found": f}
            for m, b, k, e, f in merged
        ]

    def fact_rows(self) -> list[dict[str, Any]]:
        """One row per fact that differs somewhere: how many nodes, expected and found values
        (most frequent first); most nodes first."""
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
                    "sample": sorted(m for m, _, _, _ in entries)[:5],
                }
            )
        rows.sort(key=lambda r: r["fact"])
        rows.sort(key=lambda r: r["nodes"], reverse=True)
        return rows


def _tagged(minions: Iterable[str], tail: tuple) -> Iterable[tuple]:
    """``(minion, *tail)`` for each minion (a function, so each stream keeps its own tail)."""
    for minion in minions:
        yield (minion, *tail)
