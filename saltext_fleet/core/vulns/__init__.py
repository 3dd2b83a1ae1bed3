"""Vulnerabilities: OSV advisories, matching installed packages against them, triage.

Pure logic, no Salt, no database (``store/vulns/`` keeps what this computes):

``model``
    The parsed form of an OSV record (:class:`~.model.Advisory`) and the map between OSV
    ecosystems and the inventory's.
``osv``
    Reading one OSV record (JSON or YAML, as the OSV schema 1.x defines it) into the model,
    with an error that names the file and the field when it is malformed.
``match``
    Whether a version is affected, with OSV's exact rules, and an index that answers it for
    every (ecosystem, name, version) of a fleet once.
"""
