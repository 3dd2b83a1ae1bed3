"""Alert records as the alert worker hands them to the senders (see ALERTS contract)."""

from __future__ import annotations

from typing import Any


def alert(**changes: Any) -> dict[str, Any]:
    """A firing critical drift alert on mac-07, with ``changes`` applied."""
    record = {
        "id": 123,
        "kind": "drift",
        "node": "mac-07",
        "subject": "",
        "state": "firing",
        "condition": "above",
        "severity": "critical",
        "summary": "drift score 72 on mac-07 (was 12, alert at 50) against baseline xcode-ci",
        "raised_at": "2026-12-05T19:00:00+00:00",
        "tag": "fleet/alert/drift",
        "master": "master-1",
        "dedup_key": "fleet:drift:mac-07:",
        "flapping": False,
        "url": "https://fleet.example.com/nodes/mac-07",
        "data": {
            "id": "mac-07",
            "state": "above",
            "score": 72,
            "previous_score": 12,
            "alert_score": 50,
            "baseline": "xcode-ci",
        },
    }
    record.update(changes)
    return record


def resolved(**changes: Any) -> dict[str, Any]:
    """The same condition, resolved."""
    base = {
        "id": 124,
        "state": "resolved",
        "condition": "below",
        "summary": "drift score 8 on mac-07 is below 50 again (baseline xcode-ci)",
        "raised_at": "2026-12-05T19:20:00+00:00",
        "data": {"id": "mac-07", "state": "below", "score": 8, "previous_score": 72},
    }
    base.update(changes)
    return alert(**base)
