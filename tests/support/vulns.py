"""Helpers for vulnerability tests: OSV records in, inventories in (no importer needed)."""

import datetime as dt

from sqlalchemy import delete

from saltext_fleet.core.inventory import inventory_digest
from saltext_fleet.core.vulns import osv
from saltext_fleet.store.models import Advisory, AdvisoryPackage
from tests.support.store import write

T0 = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.timezone.utc)


def record(ident, eco, name, events=None, versions=(), withdrawn=None, cvss=None, aliases=()):
    """An OSV record for one package with one ECOSYSTEM range of ``events``."""
    affected = {"package": {"ecosystem": eco, "name": name}}
    if events:
        affected["ranges"] = [{"type": "ECOSYSTEM", "events": [dict([e]) for e in events]}]
    if versions:
        affected["versions"] = list(versions)
    doc = {
        "schema_version": "1.6.0",
        "id": ident,
        "modified": "2026-11-01T00:00:00Z",
        "aliases": list(aliases),
        "summary": f"{name} is vulnerable ({ident})",
        "affected": [affected],
    }
    if withdrawn:
        doc["withdrawn"] = withdrawn
    if cvss:
        doc["severity"] = [{"type": "CVSS_V3", "score": cvss}]
    return doc


def put_advisories(engine, records, severity=None, score=None, at=None):
    """Store OSV records as the importer would: ``advisories`` and ``advisory_packages``
    (severity and score given per id: ``{id: "high"}``, ``{id: 7.5}``)."""
    at = at or T0
    severity = severity or {}
    score = score or {}
    with engine.begin() as conn:
        for doc in records:
            adv = osv.parse(doc, doc["id"])
            conn.execute(delete(Advisory).where(Advisory.id == adv.id))
            conn.execute(
                Advisory.__table__.insert(),
                [
                    {
                        "id": adv.id,
                        "modified": adv.modified,
                        "published": adv.published,
                        "withdrawn": adv.withdrawn,
                        "summary": adv.summary,
                        "aliases": list(adv.aliases),
                        "cvss_score": score.get(adv.id),
                        "severity": severity.get(adv.id, "unknown"),
                        "record": osv.to_record(adv),
                        "source": "test",
                        "imported_at": at,
                    }
                ],
            )
            names = {(a.ecosystem, osv.package_name(a.ecosystem, a.name)) for a in adv.affected}
            conn.execute(
                AdvisoryPackage.__table__.insert(),
                [{"advisory_id": adv.id, "ecosystem": e, "name": n} for e, n in sorted(names)],
            )


def inventory(packages, sources=None, facts=None):
    facts = {"os": "Debian", "os_family": "Debian", "osrelease": "12.8"} if facts is None else facts
    sources = sources or {}
    return {
        "packages": packages,
        "sources": sources,
        "facts": facts,
        "digest": inventory_digest(packages, sources, facts),
    }


def store_inventory(engine, minion, inv, jid="20261201100000000000"):
    """Store an inventory as the returner does, filed under the authenticated ``minion``."""
    ret = {"id": minion, "jid": jid, "fun": "fleet.inventory", "return": inv, "success": True}
    rid = f"{minion}-{inv['digest'][:12]}-{jid}"
    write(engine, [{"kind": "return", "rid": rid, "ret": ret}])
