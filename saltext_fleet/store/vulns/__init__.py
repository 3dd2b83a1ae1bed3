"""Vulnerabilities in the store: findings and their history, triage decisions and the
views of findings the pages read (the pure rules are :mod:`saltext_fleet.core.vulns`)."""
