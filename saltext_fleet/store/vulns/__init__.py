"""Vulnerabilities in the store: OSV advisories and their imports, triage decisions and the
views of findings the pages read (the pure rules are :mod:`saltext_fleet.core.vulns`).

What a caller needs is re-exported here (``from saltext_fleet.store import vulns as
store_vulns; store_vulns.import_advisories(...)``):

- :mod:`~saltext_fleet.store.vulns.advisories`: the import of OSV data (batched, idempotent,
  counts per ecosystem, rejected files named) and the reads of advisories for matching and
  for the pages (``advisory``, ``advisories_for``, ``all_advisory_names``,
  ``import_history``).
- :mod:`~saltext_fleet.store.vulns.triage`: operators' decisions (audited) and the views of
  findings with the decision that applies to each (imported as a module of its own).
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
