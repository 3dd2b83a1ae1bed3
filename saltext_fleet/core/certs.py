"""Code-signing certificate expiry and the Xcode matrix: pure logic, no Salt import.

A macOS node reports its signing identities in the ``fleet`` grain
(``fleet:macos:signing_identities``: ``sha1``, ``name``, ``team_id``, ``not_after``...). The
master turns them into expiry alerts: an identity crosses the ``30d``, ``7d`` and ``1d``
thresholds 30, 7 and 1 days before its ``not_after``, and ``expired`` at ``not_after``. Which
thresholds are crossed is computed here from ``not_after`` and the master's clock, never from
the ``days_left`` the minion wrote when its grains were gathered (that number is as old as the
grains).

Each threshold fires once per (node, certificate): the store records it
(:mod:`saltext_fleet.store.certs`). When one check finds several thresholds newly crossed (a
node seen for the first time with 5 days left) only the most urgent fires; the others are
recorded as passed, so they never fire later. A renewed certificate has a new SHA-1 and starts
over. A certificate whose ``not_after`` moved later (impossible for one SHA-1, but the grain is
a claim) re-arms the thresholds it is no longer past.

Everything a minion reports is a claim about itself: an identity is attributed only to the
node that reported it, whatever another node says about the same SHA-1.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from typing import Any

from saltext_fleet.core.errors import FleetError

#: ``(threshold, days before not_after)``, least urgent first.
DAY_THRESHOLDS: tuple[tuple[str, int], ...] = (("30d", 30), ("7d", 7), ("1d", 1))
#: Every threshold, least urgent first (``expired``: at ``not_after``).
THRESHOLDS: tuple[str, ...] = ("30d", "7d", "1d", "expired")
#: The earliest a threshold can be crossed: 30 days before ``not_after``.
HORIZON = dt.timedelta(days=30)

#: The highlight bands of the pages (``expired``, ``7d``: 7 days or less, ``30d``), most
#: urgent first.
BANDS = ("expired", "7d", "30d")

#: ``not_after`` as the grain writes it (:func:`saltext_fleet.core.hostinfo.isoformat_utc`).
_NOT_AFTER = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_SHA1 = re.compile(r"^[0-9A-F]{40}$")
MAX_NAME = 255


class CertError(FleetError, ValueError):
    """A bad argument to a certificate query (a number of days, a baseline name)."""


def utc(moment: dt.datetime) -> dt.datetime:
    """``moment`` as an aware UTC time (a naive one is taken as UTC)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc)


def parse_not_after(value: Any) -> dt.datetime | None:
    """``2030-06-30T23:59:59Z`` -> an aware datetime; anything else (a claim in another
    shape, an impossible date) -> None: an unknown expiry, which never alerts."""
    if not isinstance(value, str) or not _NOT_AFTER.match(value):
        return None
    try:
        return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return None


def not_after_text(moment: dt.datetime) -> str:
    """The grain's form of a time: ``2030-06-30T23:59:59Z`` (sorts as text)."""
    return utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def days_left(not_after: dt.datetime, now: dt.datetime) -> int:
    """Whole days from ``now`` to ``not_after``, rounded down (negative once expired), as the
    grain counts them."""
    return int((utc(not_after) - utc(now)).total_seconds() // 86400)


def crossed(not_after: dt.datetime, now: dt.datetime) -> list[str]:
    """The thresholds ``now`` is at or past for a certificate expiring at ``not_after``,
    least urgent first: ``[]`` more than 30 days before, ``["30d", "7d", "1d", "expired"]``
    once expired."""
    not_after, now = utc(not_after), utc(now)
    out = [name for name, days in DAY_THRESHOLDS if now >= not_after - dt.timedelta(days=days)]
    if now >= not_after:
        out.append("expired")
    return out


def band(days: int | None) -> str | None:
    """The page's highlight of a certificate with ``days`` left: ``expired``, ``7d`` (7 days
    or less), ``30d`` (30 days or less), or None."""
    if days is None:
        return None
    if days < 0:
        return "expired"
    if days <= 7:
        return "7d"
    if days <= 30:
        return "30d"
    return None


def plan(
    not_after: dt.datetime,
    now: dt.datetime,
    recorded: Mapping[str, dt.datetime | None],
) -> dict[str, Any]:
    """What a check does for one (node, certificate) expiring at ``not_after``, given the
    thresholds the store has ``recorded`` for it (threshold -> the ``not_after`` it fired for).

    Returns ``{"record": [...], "fire": threshold | None, "rearm": [...], "move": [...]}``:

    * ``record``: thresholds crossed now and not recorded yet (to insert if absent);
    * ``fire``: the most urgent of ``record`` (the one event sent; the others are passed);
    * ``rearm``: recorded thresholds no longer crossed because ``not_after`` moved later
      (deleted, so they fire again when crossed under the new date);
    * ``move``: recorded thresholds still crossed but recorded for another ``not_after``
      (updated to the new date, not fired again).
    """
    now_crossed = crossed(not_after, now)
    record = [t for t in now_crossed if t not in recorded]
    rearm, move = [], []
    for threshold, fired_for in recorded.items():
        if fired_for is not None and utc(fired_for) == utc(not_after):
            continue
        if threshold in now_crossed:
            if fired_for is not None:
                move.append(threshold)
        elif threshold in THRESHOLDS:
            rearm.append(threshold)
    order = {name: i for i, name in enumerate(THRESHOLDS)}
    return {
        "record": record,
        "fire": max(record, key=order.__getitem__) if record else None,
        "rearm": sorted(rearm, key=order.__getitem__),
        "move": sorted(move, key=order.__getitem__),
    }


def most_urgent(thresholds: Iterable[str]) -> str | None:
    order = {name: i for i, name in enumerate(THRESHOLDS)}
    known = [t for t in thresholds if t in order]
    return max(known, key=order.__getitem__) if known else None


def clean_identity(raw: Any) -> dict[str, Any] | None:
    """One identity of a node's grain, checked: ``{"sha1", "name", "team_id", "not_after"}``
    (``not_after`` an aware datetime or None), or None when it is not one (no 40-digit
    SHA-1)."""
    if not isinstance(raw, Mapping):
        return None
    sha1 = raw.get("sha1")
    if not isinstance(sha1, str) or not _SHA1.match(sha1.upper()):
        return None
    name = raw.get("name")
    team = raw.get("team_id")
    return {
        "sha1": sha1.upper(),
        "name": name[:MAX_NAME] if isinstance(name, str) else None,
        "team_id": team[:32] if isinstance(team, str) else None,
        "not_after": parse_not_after(raw.get("not_after")),
    }


def alert_data(
    node: str, identity: Mapping[str, Any], threshold: str, now: dt.datetime
) -> dict[str, Any]:
    """The ``fleet/alert/cert`` event's data for one threshold of one node's certificate."""
    not_after = identity["not_after"]
    return {
        "id": node,
        "sha1": identity["sha1"],
        "name": identity.get("name"),
        "team_id": identity.get("team_id"),
        "not_after": not_after_text(not_after),
        "days_left": days_left(not_after, now),
        "threshold": threshold,
    }


def check_days(value: Any, what: str = "days") -> int | None:
    """A number of days (0 to 36500) from an argument or a query string, or None."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise CertError(f"{what}: {value!r} is not a whole number of days")
    try:
        days = int(value)
    except (TypeError, ValueError) as exc:
        raise CertError(f"{what}: {value!r} is not a whole number of days") from exc
    if isinstance(value, float) and not value.is_integer():
        raise CertError(f"{what}: {value!r} is not a whole number of days")
    if not -36500 <= days <= 36500:
        raise CertError(f"{what}: {days} is not between -36500 and 36500")
    return days


# -- Xcode -------------------------------------------------------------------------------------


def version_key(version: str) -> tuple:
    """Sort key of an Xcode version (``9.4`` < ``15.4`` < ``16.0`` < ``16.2``)."""
    parts = []
    for piece in re.split(r"[.\s-]", version):
        parts.append((0, int(piece), "") if piece.isdigit() else (1, 0, piece))
    return tuple(parts)


def lacks(installed: Iterable[str], required: str | None) -> bool:
    """True when a baseline requires Xcode ``required`` and it is not among ``installed``
    (the versions of the bundles the node reports)."""
    if not required:
        return False
    return required.strip() not in {v.strip() for v in installed if isinstance(v, str)}
