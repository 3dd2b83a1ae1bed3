"""Alerts fired once for the fleet: a crossing is claimed in the store before it is fired.

With hot-hot masters on one store, two masters may compute the same crossing: a node's drift
recomputed through each (its inventory changed on one, a state run reported on the other, an
operator's ``salt-run fleet.drift``), the resolve of a node's vulnerability alert. Each
crossing is a token (``above:50``, ``resolved``) that :func:`saltext_fleet.store.claims.
claim_each` takes for (kind, subject) only when the last one taken was another: one master
fires it, the others find it taken. An event that could not be fired (the bus is down) gives
its claim back, so the next computation fires it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from saltext_fleet.store import claims as store_claims

log = logging.getLogger(__name__)

#: ``fire(tag, data) -> bool``: sends one event (True when it went out).
Fire = Callable[[str, dict], bool]


def fire_once(
    engine,
    master: str | None,
    kind: str,
    tag: str,
    crossings: Mapping[str, tuple[str, dict]],
    fire: Fire,
) -> list[str]:
    """Fire ``tag`` with each ``{subject: (token, data)}`` whose token this master claims
    for (``kind``, subject); returns the subjects it fired. The others were fired by another
    master (or earlier): nothing is sent for them."""
    if not crossings:
        return []
    tokens = {subject: token for subject, (token, _data) in crossings.items()}
    with engine.begin() as conn:
        won = store_claims.claim_each(conn, kind, tokens, master)
    fired, failed = [], []
    for subject in won:
        if fire(tag, crossings[subject][1]):
            fired.append(subject)
        else:
            failed.append(subject)
    if failed:
        with engine.begin() as conn:
            for subject in failed:
                store_claims.release(conn, kind, subject, master, tokens[subject])
        log.warning("fleet: %s not fired for %s; the next computation tries again", tag, failed)
    taken = sorted(set(crossings) - set(won))
    if taken:
        log.info("fleet: %s for %s already fired for the fleet", tag, taken[:20])
    return fired
