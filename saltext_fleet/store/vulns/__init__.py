"""Vulnerabilities in the store: OSV advisories and their imports.

What a caller needs is re-exported here (``from saltext_fleet.store import vulns as
store_vulns; store_vulns.import_advisories(...)``):

- :mod:`~saltext_fleet.store.vulns.advisories`: the import of OSV data (batched, idempotent,
  counts per ecosystem, rejected files named) and the reads of advisories for matching and
  for the pages (``advisory``, ``advisories_for``, ``all_advisory_names``,
  ``import_history``).
"""

from __future__ import annotations

from saltext_fleet.store.vulns.advisories import (
    BATCH,
    AdvisoryImportError,
    advisories_for,
    advisory,
    all_advisory_names,
    check_batch,
    import_advisories,
    import_history,
    parse_stored,
)

__all__ = [
    "BATCH",
    "AdvisoryImportError",
    "advisories_for",
    "advisory",
    "all_advisory_names",
    "check_batch",
    "import_advisories",
    "import_history",
    "parse_stored",
]
