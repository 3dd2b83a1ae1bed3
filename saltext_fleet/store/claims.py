"""Work done once for the fleet: claims in the store.

Hot-hot masters that share the store all hear a minion's start event and all run their own
scheduled presence check. Before doing such work a master *claims* it: one conditional
insert-or-update of the ``claims`` row of (kind, subject), which the database serialises (a
primary key; on PostgreSQL the second writer waits for the first's row lock and then sees its
row), so exactly one master wins:

- :func:`claim` with a ``token``: the work for that token (a node's start time) is taken once;
  a new token (the node's next start) can be claimed again.
- :func:`claim` with ``min_age``: the work is taken at most once every ``min_age`` seconds (the
  presence check of a period, an inventory hint, a certificate check, a KVM poll cycle), by
  whichever master comes first.
- :func:`claim_each` with a condition per subject as the token: an alert's crossing (a node's
  drift going ``above:50``) is fired once for the fleet, however many masters computed it;
  the same condition again (without another in between) is no new crossing.

No clustering of our own: the store's transactions decide. A master that loses the claim skips
the work and says who has it (:func:`holder`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from saltext_fleet.store.models import MINION_ID_LEN, Claim, utcnow

ONBOARD = "onboard"
PRESENCE_CHECK = "presence_check"
#: ``fleet/alert/drift`` crossings (token: ``above:<threshold>`` / ``below:<threshold>``)
ALERT_DRIFT = "alert_drift"
#: ``fleet/alert/cve`` (token: ``firing`` / ``resolved``: a resolve is sent once)
ALERT_CVE = "alert_cve"
#: an inventory taken on a ``fleet_pkgset`` beacon hint, per node (``min_age``)
PKGSET = "pkgset"
#: a node's certificate check on ``fleet/certs/changed`` (``min_age``)
CERT_CHECK = "cert_check"
#: a KVM poll cycle of the fleet's devices (``min_age``)
KVM_POLL = "kvm_poll"


def claim(
    conn: Connection,
    kind: str,
    subject: str,
    master: str | None,
    token: str = "",
    min_age: float | None = None,
) -> bool:
    """Take the work (kind, subject) for this master; True when this call took it.

    With ``min_age``, a claim younger than that many seconds holds (whatever the token);
    otherwise a claim with the same ``token`` holds. The caller commits (claim in its own
    short transaction: the row is locked until then)."""
    now = utcnow()
    values = {
        "kind": kind[:32],
        "subject": subject[:MINION_ID_LEN],
        "token": str(token)[:64],
        "master": str(master)[:MINION_ID_LEN] if master else None,
        "claimed_at": now,
    }
    ins = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = ins(Claim.__table__).values(values)
    if min_age is not None:
        cutoff = now - dt.timedelta(seconds=float(min_age))
        free = Claim.__table__.c.claimed_at <= cutoff
    else:
        free = Claim.__table__.c.token != stmt.excluded.token
    stmt = stmt.on_conflict_do_update(
        index_elements=["kind", "subject"],
        set_={
            "token": stmt.excluded.token,
            "master": stmt.excluded.master,
            "claimed_at": stmt.excluded.claimed_at,
        },
        where=free,
    ).returning(Claim.__table__.c.kind)
    return conn.execute(stmt).first() is not None


def claim_each(
    conn: Connection, kind: str, tokens: Mapping[str, str], master: str | None
) -> list[str]:
    """Claim (kind, subject) with its token for each ``{subject: token}``, in subject order
    (two masters claiming overlapping sets lock rows in the same order); returns the subjects
    this call took."""
    return [s for s, t in sorted(tokens.items()) if claim(conn, kind, s, master, token=t)]


def release(conn: Connection, kind: str, subject: str, master: str | None, token: str = "") -> None:
    """Give up a claim this master took (the work failed: the next event may try again)."""
    table = Claim.__table__
    conn.execute(
        delete(table).where(
            table.c.kind == kind[:32],
            table.c.subject == subject[:MINION_ID_LEN],
            table.c.token == str(token)[:64],
            table.c.master == str(master)[:MINION_ID_LEN] if master else table.c.master.is_(None),
        )
    )


def holder(conn: Connection, kind: str, subject: str) -> dict | None:
    """Who holds the claim (kind, subject): ``{"master", "token", "claimed_at"}``, or None."""
    row = conn.execute(
        select(Claim.master, Claim.token, Claim.claimed_at).where(
            Claim.kind == kind[:32], Claim.subject == subject[:MINION_ID_LEN]
        )
    ).first()
    if row is None:
        return None
    at = row.claimed_at
    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=dt.timezone.utc)
    return {"master": row.master, "token": row.token, "claimed_at": at}
