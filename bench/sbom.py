#!/usr/bin/env python
"""SBOM benchmark: CycloneDX 1.6 JSON documents of a generated fleet, per node, written the
way ``salt-run fleet.sbom '*' out=...`` writes them (``core.sbom.node_document`` with one
``ComponentCache`` for the whole export), against cyclonedx-python-lib's whole-document path
(``serialize(build_bom(...))``), the reference.

What goes in: ``--nodes`` nodes (default 200) of ``--packages`` packages (default 1,000)
from bench/cve.py's fleet generator (Debian, Ubuntu, Rocky, Node.js and macOS nodes from
image cohorts: nodes share most package versions, as real fleets do), their ``fleet`` grain
and, on every third node, VEX entries about a few of its packages.

Timed:

* ``fast_node_ms``: ``node_document`` over every node, one cache from an empty start (the
  first nodes write most of their components; the cache fills as the export goes on);
* ``lib_node_ms``: the library's whole document on a sample of ``--sample`` nodes (default
  10; it is slow);
* ``ratio``: the two, measured in the same run.

Checked: every sampled node's document from ``node_document`` is the library's, the same
text (serial number and timestamp pinned), and one of them validates against the CycloneDX
1.6 schema; a mismatch is a failure (``"ok": false``, exit status 1). ``--format
cyclonedx-xml`` measures and checks the XML documents instead of JSON.

Usage (from the repository root)::

    .venv/bin/python bench/sbom.py [--nodes 200] [--packages 1000] [--sample 10]

The last line of the output is one JSON object: ``nodes``, ``lib_node_ms``,
``fast_node_ms``, ``ratio``, ``ok`` and the rest of the figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import random
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cve

from saltext_fleet.core import sbom
from saltext_fleet.core.inventory import build_inventory

TS = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
SERIAL = uuid.UUID("00000000-0000-4000-8000-000000000001")


def node_input(fleet: cve.Fleet, i: int) -> tuple[str, dict, dict, list | None]:
    """``(minion id, inventory, grains, vex)`` of node ``i``."""
    packages, sources, facts = fleet.node(i)
    inventory = build_inventory(packages, sources, facts)
    grains = {"fleet": {"hardware_model": f"model-{i % 5}", "cpu_cores": 2 + i % 8}}
    vex = None
    if i % 3 == 0:
        # the purls the store gives triage decisions (store.sbom.node_vex)
        purls = sorted(
            sbom.package_purl(
                eco, name, version, inventory["facts"], inventory["sources"].get(eco, {}).get(name)
            )
            for eco, name, version, *_ in sbom.package_specs(inventory)
        )
        rng = random.Random(i)
        vex = [
            {
                "id": f"GHSA-bench-{i}-{j}",
                "aliases": [f"CVE-2026-{i:05d}{j}"],
                "state": "not_affected",
                "justification": "code_not_reachable",
                "detail": "bench",
                "purls": [rng.choice(purls)],
            }
            for j in range(3)
        ]
    return fleet.minion(i), inventory, grains, vex


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--packages", type=int, default=1000)
    parser.add_argument("--sample", type=int, default=10, help="nodes the library writes")
    parser.add_argument("--universe", type=int, default=8000, help="names per ecosystem")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--format", choices=sbom.FORMATS, default="cyclonedx-json")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    fleet = cve.Fleet(
        args.nodes,
        args.packages,
        args.seed,
        cve.Universe(random.Random(args.seed), [], args.universe, {}),
    )
    nodes = [node_input(fleet, i) for i in range(args.nodes)]
    print(
        f"generated {args.nodes} nodes x {args.packages} packages in {time.perf_counter() - t0:.1f} s"
    )

    fmt = args.format
    gc.collect()
    cache = sbom.ComponentCache()
    times = []
    components = 0
    for minion, inventory, grains, vex in nodes:
        start = time.perf_counter()
        _text, count = sbom.node_document(minion, inventory, grains, vex, fmt, cache=cache)
        times.append(time.perf_counter() - start)
        components += count
    fast_ms = 1000 * sum(times) / len(times)
    tail = times[len(times) // 2 :]
    fast_tail_ms = 1000 * sum(tail) / len(tail)
    print(
        f"fast path: {fast_ms:.1f} ms per node over {args.nodes} nodes "
        f"({fast_tail_ms:.1f} ms over the second half); {components} components, "
        f"{len(cache)} unique written by the library ({cache.misses} misses, {cache.hits} hits)"
    )

    sample = sorted(
        random.Random(args.seed).sample(range(args.nodes), min(args.sample, args.nodes))
    )
    lib_times = []
    ok = True
    for n, i in enumerate(sample):
        minion, inventory, grains, vex = nodes[i]
        start = time.perf_counter()
        bom = sbom.build_bom(minion, inventory, grains, vex, timestamp=TS, serial_number=SERIAL)
        want = sbom.serialize(bom, fmt)
        lib_times.append(time.perf_counter() - start)
        got, _count = sbom.node_document(
            minion, inventory, grains, vex, fmt, cache=cache, timestamp=TS, serial_number=SERIAL
        )
        same = got == want
        if not same:
            print(f"MISMATCH: node {minion}")
            ok = False
        if n == 0:
            try:
                sbom.validate(got, fmt)
            except sbom.SbomValidationError as exc:
                print(f"INVALID: node {minion}: {exc}")
                ok = False
    lib_ms = 1000 * sum(lib_times) / len(lib_times)
    print(f"library whole document: {lib_ms:.1f} ms per node over {len(sample)} sampled nodes")
    ratio = lib_ms / fast_ms
    print(f"ratio {ratio:.1f}x; sampled documents equal to the library's: {ok}")
    result = {
        "nodes": args.nodes,
        "format": fmt,
        "packages": args.packages,
        "sample": len(sample),
        "lib_node_ms": round(lib_ms, 1),
        "fast_node_ms": round(fast_ms, 2),
        "fast_node_ms_second_half": round(fast_tail_ms, 2),
        "unique_components": len(cache),
        "components": components,
        "ratio": round(ratio, 1),
        "ok": ok,
    }
    print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
