"""A small fleet with real drift, written through the store's own write path: for the drift
reports' store tests and the drift pages' web tests.

``n1`` is the good node (baseline ``b`` is pinned from it); ``n2`` and ``n3`` share one bad
inventory (``requests`` at another version, ``certifi`` missing, ``rich`` extra, another
``osrelease``); ``n4`` has the bad packages and no baseline; ``n5`` differs otherwise
(``certifi`` older, ``six`` extra) and was scored by the reactor's path (its snapshot has no
package keys).
"""

from __future__ import annotations

from saltext_fleet.core import baseline as core_baseline
from saltext_fleet.core.inventory import inventory_digest
from saltext_fleet.store import drift as store_drift
from saltext_fleet.store.batch import write_batch

GOOD = {"requests": "2.31.0", "urllib3": "2.0.7", "certifi": "2024.2.2"}
BAD = {"requests": "3.0.1", "urllib3": "2.0.7", "rich": "13.0"}


def inventory(pypi, deb=None, osrelease="12"):
    """An inventory as a minion reports it: these pypi packages, a few deb ones."""
    packages = {"pypi": dict(pypi), "deb": dict(deb or {"libc6": "2.36-9", "bash": "5.2-2"})}
    facts = {"os": "Debian", "osrelease": osrelease}
    return {
        "packages": packages,
        "sources": {},
        "facts": facts,
        "digest": inventory_digest(packages, {}, facts),
    }


def store_inventories(engine, inventories, jid="20261128120000000000"):
    """Store ``{minion: inventory}`` as ``fleet.inventory`` returns (the returner's path)."""
    records = [
        {
            "kind": "return",
            "rid": f"{minion}-{inv['digest'][:12]}-{jid}",
            "ret": {
                "id": minion,
                "jid": jid,
                "fun": "fleet.inventory",
                "return": inv,
                "success": True,
            },
        }
        for minion, inv in inventories.items()
    ]
    with engine.begin() as conn:
        write_batch(conn, records)


def make_fleet(engine) -> dict:
    """The fleet of the module docstring; returns baseline ``b``'s normal form."""
    store_inventories(
        engine,
        {
            "n1": inventory(GOOD),
            "n2": inventory(BAD, osrelease="11"),
            "n3": inventory(BAD, osrelease="11"),
            "n4": inventory(BAD),
            "n5": inventory({**GOOD, "certifi": "2023.1.1", "six": "1.16.0"}),
        },
    )
    spec = core_baseline.from_inventory("b", store_drift.node_inventory(engine, "n1"))
    store_drift.save_baseline(engine, spec, "pin:n1")
    store_drift.recompute(engine, {"n1": "b", "n2": "b", "n3": "b"})
    store_drift.recompute_node(engine, "n5", "b")
    return spec
