"""Which syndic carried a node's returns to the master of masters: what may be claimed, and
who is believed.

A master of masters (``order_masters: True``) hears the minions below a syndic only through
the syndic. Salt authenticates the syndic's connection (its key, its session), never the
minions behind it: the syndic vouches for their ids. What reaches the job cache with the
syndic's authenticated id is ``save_minions(jid, minions, syndic_id=...)``: the syndic
forwards its own master's ``salt/job/<jid>/new`` event, and the master of masters hands the
minion list to the job cache with the id of the connection that sent it. That announcement
("these minions of mine were sent this job") is the only carrier claim taken; nothing in a
return (``master_id``, ``__master_id__``, any field a minion or a syndic writes into it) ever
is.

An announcement is the sender's claim, and any accepted key can make one (Salt does not tell
syndic keys from minion keys). So:

* a sender never carries itself, and never a minion that has a key on the master that heard
  the announcement (that master hears that minion itself: nobody carries it there);
* a (job, minion) announced by more than one sender is *disputed*: no carrier is believed,
  and every claimant is shown.
"""

from __future__ import annotations

from collections.abc import Iterable

from saltext_fleet.core.errors import FleetError

#: The longest id kept (a Salt minion id, as ``models.MINION_ID_LEN``).
ID_LEN = 255


class CarrierClaimError(FleetError, ValueError):
    """An announcement that cannot be taken as it is (no sender, an odd minion list)."""


def _valid_id(value) -> bool:
    return isinstance(value, str) and 0 < len(value) <= ID_LEN and "\0" not in value


def claimed_minions(sender, minions, own_minions: Iterable[str] = ()) -> list[str]:
    """The minions ``sender`` may claim to carry for one job, sorted: the valid ids of
    ``minions`` other than the sender itself and other than ``own_minions`` (the ids with a
    key on the master that heard the claim). :class:`CarrierClaimError` names what is wrong
    with the sender or the list."""
    if not _valid_id(sender):
        raise CarrierClaimError(f"a carrier claim needs the sender's id, got {sender!r:.80}")
    if not isinstance(minions, (list, tuple, set, frozenset)):
        raise CarrierClaimError(
            f"the minions {sender!r} claims to carry must be a list, got {type(minions).__name__}"
        )
    own = set(own_minions)
    return sorted({m for m in minions if _valid_id(m) and m != sender and m not in own})


def resolve(claimants: Iterable[str]) -> dict:
    """What the claims about one (job, minion) say: ``{"syndic": the carrier or None,
    "claimants": [...], "disputed": bool}``. One claimant is believed; several are not."""
    names = sorted(set(claimants))
    return {
        "syndic": names[0] if len(names) == 1 else None,
        "claimants": names,
        "disputed": len(names) > 1,
    }


def served(heard_by: str | None, carrier: dict | None) -> dict:
    """How a node is served: ``{"master": the master that stored its last return,
    "syndic": the syndic that carries it (None: heard directly or not known), "via": the
    master the syndic carries it to, "claimants", "disputed"}``."""
    carrier = carrier or {}
    return {
        "master": heard_by,
        "syndic": carrier.get("syndic"),
        "via": carrier.get("via"),
        "claimants": list(carrier.get("claimants") or []),
        "disputed": bool(carrier.get("disputed")),
    }
