"""Vulnerabilities in the store: imported advisories, findings with their history, triage."""
