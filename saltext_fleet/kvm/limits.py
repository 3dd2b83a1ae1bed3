"""The per-device rate limits of KVM actions on the master, as rules with no store in them.

Two slots per device (rows of ``kvm_action_slots``, taken by
:mod:`saltext_fleet.store.kvm_actions`):

``power``
    Power and ATX clicks. Taking it sets its ``until`` to now + ``fleet:kvm:power_interval``
    (10 s by default); it is free again once ``until`` has passed. A refusal says when.
``media``
    An ISO mount (upload and connect) or eject. Taken for as long as the action runs and
    given back at its end; ``until`` is its hold, renewed by the upload's progress, so a hold
    whose process died lapses ``fleet:kvm:iso_stale_after`` seconds (300 by default) after
    its last progress. One ISO action per device at a time: kvmd's mass storage takes one
    upload at a time anyway, and an eject in the middle of an upload would break it.

This module words a refusal (:func:`refusal`) from the row that holds the slot.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Any

from saltext_fleet.kvm.errors import KvmRateLimitError

POWER = "power"
MEDIA = "media"
KINDS = (POWER, MEDIA)

#: Which slot each action takes.
SLOT_OF = {
    "power": POWER,
    "click": POWER,
    "iso_mount": MEDIA,
    "iso_eject": MEDIA,
}


def slot_of(action: str) -> str:
    """The slot (``power`` or ``media``) an action takes."""
    try:
        return SLOT_OF[action]
    except KeyError:
        raise ValueError(f"{action!r} is not a rate-limited KVM action") from None


def _utc(when: dt.datetime) -> dt.datetime:
    if when.tzinfo is None:  # SQLite gives naive datetimes back; they were stored in UTC
        return when.replace(tzinfo=dt.timezone.utc)
    return when.astimezone(dt.timezone.utc)


def _clock(when: dt.datetime) -> str:
    return _utc(when).strftime("%H:%M:%S UTC")


def is_free(holder: Mapping[str, Any] | None, now: dt.datetime) -> bool:
    """Whether a slot whose row is ``holder`` (None: no row yet) may be taken at ``now``."""
    if holder is None or holder.get("until") is None:
        return True
    return _utc(holder["until"]) <= _utc(now)


def retry_in(until: dt.datetime, now: dt.datetime) -> int:
    """Whole seconds (at least 1) from ``now`` until ``until``."""
    return max(1, math.ceil((_utc(until) - _utc(now)).total_seconds()))


def percent(done: Any, total: Any) -> int | None:
    """How much of an upload is done, in whole percent (None when not known)."""
    if not isinstance(done, int) or not isinstance(total, int) or total <= 0:
        return None
    return max(0, min(100, done * 100 // total))


def refusal(
    device: str,
    action: str,
    holder: Mapping[str, Any],
    now: dt.datetime,
    interval: float | None = None,
    asked: str | None = None,
) -> KvmRateLimitError:
    """The error for ``action`` (worded ``asked``, e.g. ``power reset_hard``) refused on
    ``device`` because ``holder`` (the slot's row: ``actor``, ``action``, ``image``,
    ``started_at``, ``until``, ``done_bytes``, ``total_bytes``) holds its slot at ``now``;
    ``interval`` is the power interval."""
    kind = slot_of(action)
    action = asked or action
    who = holder.get("actor") or "someone"
    until = holder.get("until")
    started = holder.get("started_at")
    if kind == POWER:
        last = f"the last ({holder.get('action') or 'power'} by {who}"
        last += f" at {_clock(started)})" if started is not None else ")"
        per = f"one power action per {interval:g} s" if interval else "one power action at a time"
        wait = retry_in(until, now) if until is not None else 1
        at = _utc(until) if until is not None else _utc(now) + dt.timedelta(seconds=wait)
        return KvmRateLimitError(
            device,
            f"{action} refused by the rate limit ({per}): {last}; "
            f"retry in {wait} s (from {_clock(at)})",
            kind,
            at,
        )
    running = holder.get("action") or "ISO action"
    image = holder.get("image")
    what = f"{who}'s {running}" + (f" of {image!r}" if image else "")
    since = f" running since {_clock(started)}" if started is not None else " running"
    done = percent(holder.get("done_bytes"), holder.get("total_bytes"))
    progress = f", {done}% uploaded" if done is not None else ""
    lapse = (
        f"; if it makes no progress its hold lapses at {_clock(until)}" if until is not None else ""
    )
    return KvmRateLimitError(
        device,
        f"{action} refused: one ISO action at a time on this device, and {what} is"
        f"{since}{progress}; retry when it has ended{lapse}",
        kind,
        None,
    )
