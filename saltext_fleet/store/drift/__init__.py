"""Baselines, drift results and drift history in the store.

The runners and the reactor call these; the arithmetic is :mod:`saltext_fleet.core.drift`.
Which baseline applies to which node (Salt targeting) is the caller's business: the functions
here take ``{minion: baseline name}``.

The package is split by what it holds; everything a caller needs is re-exported here
(``from saltext_fleet.store import drift as store_drift; store_drift.recompute(...)``):

- :mod:`~saltext_fleet.store.drift.baselines`: baselines, their assignments, compiled baselines;
- :mod:`~saltext_fleet.store.drift.pkgkeys`: the package-key index (``snapshot_keys``,
  ``package_keys``);
- :mod:`~saltext_fleet.store.drift.compute`: recompute (the whole fleet, one node, a read-only
  view of one node);
- :mod:`~saltext_fleet.store.drift.results`: ``drift_current`` and ``drift_history`` (recording,
  monthly partitions, pruning, reads);
- :mod:`~saltext_fleet.store.drift.nodes`: node reads, and the pending states of highstate runs;
- :mod:`~saltext_fleet.store.drift.common`: :class:`DriftError` and the helpers they share.

Imports go one way (no module imports this ``__init__``): ``baselines``, ``pkgkeys`` and
``results`` import ``common``; ``nodes`` imports ``pkgkeys``; ``compute`` imports all four.
"""

from __future__ import annotations

from saltext_fleet.store.drift.baselines import (
    assign,
    assignments,
    compiled,
    delete_baseline,
    get_baseline,
    list_baselines,
    load_baselines,
    save_baseline,
    unassign,
    weights_digest,
)
from saltext_fleet.store.drift.common import CHUNK, DriftError
from saltext_fleet.store.drift.compute import Progress, detail, recompute, recompute_node
from saltext_fleet.store.drift.nodes import node_ids, node_inventory, node_rows, set_pending_states
from saltext_fleet.store.drift.pkgkeys import (
    STREAM_CHUNK,
    add_package_keys,
    index_snapshots,
    named_keys,
    resolve_keys,
)
from saltext_fleet.store.drift.results import (
    current,
    ensure_partition,
    forget,
    history,
    partition_name,
    partitions,
    prune_history,
    record,
)

__all__ = [
    "CHUNK",
    "STREAM_CHUNK",
    "DriftError",
    "Progress",
    "add_package_keys",
    "assign",
    "assignments",
    "compiled",
    "current",
    "delete_baseline",
    "detail",
    "ensure_partition",
    "forget",
    "get_baseline",
    "history",
    "index_snapshots",
    "list_baselines",
    "load_baselines",
    "named_keys",
    "node_ids",
    "node_inventory",
    "node_rows",
    "partition_name",
    "partitions",
    "prune_history",
    "recompute",
    "recompute_node",
    "record",
    "resolve_keys",
    "save_baseline",
    "set_pending_states",
    "unassign",
    "weights_digest",
]
