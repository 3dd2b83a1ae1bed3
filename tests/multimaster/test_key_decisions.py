"""Key decisions are fleet-wide on hot-hot masters: a key accepted or rejected through one
master is accepted or rejected on the other when the same key (same id, same fingerprint)
comes pending there; another key under the same id is a new key and stays pending.

Each master's key store is made to hold the keys pending as Salt does when a minion asks
(``salt/auth`` events are only hints to the gate: it acts on keys Salt holds), and the
``salt/auth`` event is fired on that master's own bus, where its reactor hears it.
"""

import time

import pytest
import salt.key
import salt.utils.event
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from saltfactories.utils import random_string
from sqlalchemy import select

from saltext_fleet.master import keys as master_keys
from saltext_fleet.store import engine as store_engine
from saltext_fleet.store.models import AuditEvent, MinionKey
from tests.support.waiting import run, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _pub() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _hold_pending(master, minion_id: str, pub: str) -> None:
    salt.key.Key(master.config.copy()).cache.store(
        "keys", minion_id, {"pub": pub, "state": "pending"}
    )


def _auth(master, minion_id: str, pub: str, act: str = "pend") -> None:
    opts = master.config
    with salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=False) as bus:
        assert bus.fire_event(
            {"result": True, "act": act, "id": minion_id, "pub": pub}, "salt/auth"
        )


def _salt_state(master, minion_id: str) -> str | None:
    return master_keys.salt_states(salt.key.Key(master.config.copy())).get(minion_id)


def _rows(store, minion_id: str) -> dict[str, tuple]:
    with store.connect() as conn:
        return {
            r.fingerprint: (r.state, r.decided_by)
            for r in conn.execute(select(MinionKey).where(MinionKey.minion_id == minion_id))
        }


def test_a_key_decided_on_one_master_is_followed_on_the_other(mm_masters, mm_db_url):
    store = store_engine.get_engine(mm_db_url)
    m1, m2 = mm_masters
    accepted, rejected, renewed = (random_string(f"mm-{w}-") for w in ("acc", "rej", "new"))
    pubs = {accepted: _pub(), rejected: _pub(), renewed: _pub()}
    other_pub = _pub()  # another key under `renewed`'s id, seen only on m2
    started = time.monotonic()
    try:
        # m1: three keys come pending; an operator accepts two and rejects one
        for minion_id, pub in pubs.items():
            _hold_pending(m1, minion_id, pub)
            _auth(m1, minion_id, pub)
        wait_for("m1's gate recorded the keys", lambda: all(_rows(store, m) for m in pubs))
        run(m1.salt_run_cli(), "fleet.keys_accept", accepted)
        run(m1.salt_run_cli(), "fleet.keys_accept", renewed)
        run(m1.salt_run_cli(), "fleet.keys_reject", rejected)
        assert _salt_state(m1, accepted) == "accepted"
        # m2: the same keys come pending, and another key under `renewed`'s id; no operator
        for minion_id, pub in (
            (renewed, other_pub),
            (accepted, pubs[accepted]),
            (rejected, pubs[rejected]),
        ):
            _hold_pending(m2, minion_id, pub)
            _auth(m2, minion_id, pub)
        wait_for("m2 accepted the key m1 accepted", lambda: _salt_state(m2, accepted) == "accepted")
        wait_for("m2 rejected the key m1 rejected", lambda: _salt_state(m2, rejected) == "rejected")
        # the other key was recorded by m2's gate (the same batch or an earlier one) and follows
        # nothing: pending in m2's key store and in the store
        other = [f for f, row in _rows(store, renewed).items() if row[0] == "pending"]
        assert len(other) == 1, _rows(store, renewed)
        assert _salt_state(m2, renewed) == "pending"

        def followed():
            with store.connect() as conn:
                return {
                    (e.target, e.action, e.details["follows"], e.details["master"])
                    for e in conn.execute(
                        select(AuditEvent).where(
                            AuditEvent.actor == "gate",
                            AuditEvent.target.in_([accepted, rejected, renewed]),
                            AuditEvent.action.in_(["key.accept", "key.reject"]),
                        )
                    )
                }

        # the fleet's decisions stand as m1's operator made them; m2 audited that it followed
        # (Salt's key store changes inside the transaction that writes the audit: the audit
        # is committed a moment after the key moved)
        by = {m: next(iter(_rows(store, m).values()))[1] for m in (accepted, rejected)}
        assert by[accepted] == by[rejected] != "gate", by
        expected = {
            (accepted, "key.accept", by[accepted], m2.id),
            (rejected, "key.reject", by[rejected], m2.id),
        }
        wait_for("m2 audited what it followed", lambda: followed() >= expected)
        assert followed() == expected
        # m1 deletes the accepted key (as a re-bootstrap's re-enrolment does); the minion comes
        # back to m2 with a new key, which Salt denies there (another key is accepted): m2
        # deletes the old key the fleet deleted, and only that one (the rejected key stays)
        run(m1.salt_run_cli(), "fleet.keys_delete", accepted)
        _auth(m2, rejected, _pub(), act="denied")  # the control: nothing deleted
        _auth(m2, accepted, _pub(), act="denied")
        wait_for("m2 deleted the key m1 deleted", lambda: _salt_state(m2, accepted) is None)
        assert _salt_state(m2, rejected) == "rejected"
        with store.connect() as conn:
            deleted = [
                (e.details["follows"], e.details["master"])
                for e in conn.execute(
                    select(AuditEvent).where(
                        AuditEvent.actor == "gate",
                        AuditEvent.action == "key.delete",
                        AuditEvent.target.in_([accepted, rejected]),
                    )
                )
            ]
        assert deleted == [(by[accepted], m2.id)]
        assert time.monotonic() - started < 60
    finally:
        for master in mm_masters:
            for minion_id in pubs:
                master.salt_key_cli().run("-d", minion_id, "-y")
