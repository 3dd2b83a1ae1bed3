"""The key gate on a master: Salt's key store plus the gate's records and the audit chain.

Salt keeps the keys (``salt.key.Key``: the pki directories, through its key cache); this
module decides, acts on Salt's store only for validated minion ids and only by exact id
(``match_dict``, never a glob), and records every decision in the store and the audit chain.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

import salt.key
import yaml
from sqlalchemy import select, update

from saltext_fleet import config
from saltext_fleet.core import gate as core_gate
from saltext_fleet.core.errors import FleetError
from saltext_fleet.store import audit as store_audit
from saltext_fleet.store import gate as store_gate
from saltext_fleet.store.models import MinionKey, utcnow

log = logging.getLogger(__name__)

Fire = Callable[[str, dict], Any]

PENDING_TAG = "fleet/key/pending"
ACCEPTED_TAG = "fleet/key/accepted"
REFUSED_TAG = "fleet/key/refused"

#: Salt's key store directories by our state names, and back.
SALT_STATE = {
    "accepted": "minions",
    "pending": "minions_pre",
    "rejected": "minions_rejected",
    "denied": "minions_denied",
}
STATE_OF = {v: k for k, v in SALT_STATE.items()}


class KeyActionError(FleetError, ValueError):
    """A key operation that cannot be done; the message says why."""


_KEYS = threading.local()


class _Key(salt.key.Key):
    """Salt's key store API, answering for the keys it is asked about alone.

    ``Key.accept``/``reject`` end with :meth:`dict_match` (the new states of the keys they
    moved, which the gate does not use), and Salt's own lists every key to answer: a
    hundred keys decided together read the key store a hundred times (O(n²)). The gate only
    ever names exact ids (``match_dict``, never a glob), so each is looked up by its id."""

    def dict_match(self, match_dict):
        ret: dict[str, list[str]] = {}
        for ids in match_dict.values():
            for minion_id in ids:
                state = salt_state(self, minion_id)
                if state is not None and minion_id not in ret.get(SALT_STATE[state], []):
                    ret.setdefault(SALT_STATE[state], []).append(minion_id)
        return ret


def salt_key(opts: dict):
    """Salt's key store API (``salt.key.Key``), one per thread and master configuration.
    Making one loads Salt's cache driver and, at its first event, opens a connection to the
    master's bus: 0.1 s on an idle master, over a second under load. The gate asks for it
    for every key it decides (three times for a key let in by an enrolment), so a hundred
    minions starting at once waited minutes for it; each call still reads the key store
    anew."""
    held = getattr(_KEYS, "held", None)
    if held is None:
        held = _KEYS.held = {}
    ident = (opts.get("pki_dir"), opts.get("sock_dir"), opts.get("cachedir"))
    key = held.get(ident)
    if key is None:
        key = held[ident] = _Key(opts)
    return key


def salt_states(key) -> dict[str, str]:
    """``{minion id: state}`` of every key Salt holds (a denied id may also be accepted)."""
    out: dict[str, str] = {}
    for salt_dir, ids in key.list_keys().items():
        state = STATE_OF.get(salt_dir)
        for minion_id in ids:
            if state and (minion_id not in out or state != "denied"):
                out[minion_id] = state
    return out


def salt_entry(key, minion_id: str) -> tuple[str | None, str | None]:
    """``(state, public key)`` Salt holds for ``minion_id`` now, read for that id alone:
    ``accepted``, ``pending`` or ``rejected`` with its key, ``("denied", key)`` when the id
    has only a denied key, ``(None, None)`` when Salt holds nothing for it. This is the entry
    Salt's own authentication reads (``cache.fetch("keys", id)``, which ranks a rejected key
    over a pending one over an accepted one, as :func:`salt_states` does). Deciding one key
    must not list them all: a listing reads every key file, so a hundred keys arriving
    together cost O(n²) when each decision listed the store."""
    found = _fetch(key, "keys", minion_id)
    if isinstance(found, dict) and isinstance(found.get("pub"), str):
        state = found.get("state")
        return (state if state in SALT_STATE else None), found["pub"]
    denied = _denied_pub(key, minion_id)
    return ("denied", denied) if denied is not None else (None, None)


def salt_state(key, minion_id: str) -> str | None:
    """The state of ``minion_id``'s key in Salt's store now (see :func:`salt_entry`)."""
    return salt_entry(key, minion_id)[0]


def salt_pub(key, minion_id: str) -> str | None:
    """The public key Salt holds for ``minion_id`` (accepted, pending or rejected)."""
    found = _fetch(key, "keys", minion_id)
    if isinstance(found, dict) and isinstance(found.get("pub"), str):
        return found["pub"]
    return None


def _fetch(key, bank: str, minion_id: str):
    """Salt's key store entry of ``minion_id`` in ``bank`` (None: missing or unreadable)."""
    try:
        return key.cache.fetch(bank, minion_id)
    except Exception:  # noqa: BLE001 - a missing or unreadable entry is "no key"
        return None


def _fingerprint(opts: dict, pub: str) -> str:
    return core_gate.fingerprint(pub, opts.get("hash_type") or "sha256")


def _check_id(minion_id: Any) -> str:
    try:
        return core_gate.check_minion_id(minion_id)
    except core_gate.GateError as exc:
        raise KeyActionError(str(exc)) from exc


# -- salt/auth: the reactor's path -------------------------------------------------------------


def _really_pending(opts: dict, key, minion_id: str, finger: str) -> bool:
    """Whether Salt's key store holds ``minion_id``'s key as pending, with the fingerprint
    ``finger``: a ``salt/auth`` event is only a hint (a minion can fire that tag in an
    ``events`` batch, with any id and key), the key store is what Salt wrote itself. Read
    for that id alone, at the moment of asking (:func:`salt_entry`)."""
    state, held = salt_entry(key, minion_id)
    if state != "pending" or held is None:
        return False
    return core_gate.same_fingerprint(_safe_fingerprint(opts, held), finger)


#: Who follows the fleet's decision on a master that did not make it (the audit's actor).
FOLLOW_ACTOR = "gate"


def follow_decisions(
    opts: dict, engine, keys: list[tuple[str, str]], fire: Fire | None = None
) -> dict[str, dict[str, Any]]:
    """Apply here what the fleet decided about keys this master holds pending: ``keys`` is
    ``[(minion id, fingerprint)]``. A key the store records as accepted (or rejected) by an
    operator, an enrolment or ``salt-key`` through any master is accepted (rejected) in this
    master's key store too, exactly that id with exactly that fingerprint, and audited as
    following that decision. Another key under the same id follows nothing (a new key: the
    normal gate). Returns ``{id: {result, fingerprint, follows}}`` for the keys it changed."""
    if not keys:
        return {}
    with engine.connect() as conn:
        decided = store_gate.key_decisions(conn, keys)
    if not decided:
        return {}
    key = salt_key(opts)
    out: dict[str, dict[str, Any]] = {}
    for (minion_id, finger), decision in decided.items():
        # the key Salt holds pending now, with that fingerprint (not only the event's claim)
        if minion_id in out or not _really_pending(opts, key, minion_id, finger):
            continue
        state, by = decision["state"], decision["decided_by"]
        details = {"fingerprint": finger, "was": "pending", "follows": by, "master": opts["id"]}
        with engine.begin() as conn:
            # the key's row locked first: a decision made meanwhile (a delete through another
            # master, say) is waited for and seen
            conn.execute(
                update(MinionKey)
                .where(MinionKey.minion_id == minion_id, MinionKey.fingerprint == finger)
                .values(last_seen=utcnow())
            )
            now = store_gate.key_decisions(conn, [(minion_id, finger)]).get((minion_id, finger))
            if now is None or now["state"] != state:
                continue
            if state == "accepted":
                key.accept(match_dict={"minions_pre": [minion_id]})
            else:
                key.reject(match_dict={"minions_pre": [minion_id]})
            store_audit.append(conn, FOLLOW_ACTOR, AUDIT_ACTION[state], minion_id, details)
        log.info("fleet gate: %s's key %s here, as the fleet decided (%s)", minion_id, state, by)
        out[minion_id] = {"result": state, "fingerprint": finger, "follows": by}
        if state == "accepted" and fire:
            fire(ACCEPTED_TAG, {"id": minion_id, "fingerprint": finger, "by": by})
    return out


def follow_deletions(opts: dict, engine, minion_ids: list[str]) -> list[str]:
    """Delete here the keys the fleet deleted through another master (a re-bootstrap's
    re-enrolment, ``fleet.keys_delete``, ``salt-key -d``): for each of ``minion_ids``, the
    key Salt holds here (accepted, pending or rejected) is deleted, with the id's denied keys,
    if the store records exactly that id with that fingerprint as deleted. Asked when a
    minion authenticates here with a key that is not the accepted one (``salt/auth`` with
    ``act: denied``, as a re-bootstrapped minion does with its new key): its next attempt
    is then a pending key, for the gate (and the fleet's decision about it). Returns the
    ids whose keys were deleted."""
    key = salt_key(opts)
    done = []
    for minion_id in dict.fromkeys(minion_ids):
        if not core_gate.is_minion_id(minion_id):
            continue
        state, pub = salt_entry(key, minion_id)
        if state not in ("accepted", "pending", "rejected"):
            continue
        finger = _safe_fingerprint(opts, pub)
        if finger is None:
            continue
        with engine.begin() as conn:
            gone = store_gate.key_decisions(conn, [(minion_id, finger)], states=("deleted",))
            if not gone:
                continue
            held = {d: [minion_id] for d, ids in key.list_keys().items() if minion_id in ids}
            key.delete_key(match_dict=held)
            store_audit.append(
                conn,
                FOLLOW_ACTOR,
                "key.delete",
                minion_id,
                {
                    "fingerprint": finger,
                    "states": sorted(STATE_OF[d] for d in held if d in STATE_OF),
                    "follows": gone[(minion_id, finger)]["decided_by"],
                    "master": opts["id"],
                },
            )
        log.info("fleet gate: deleted %s's key here, as the fleet did (%s)", minion_id, finger)
        done.append(minion_id)
    return done


def handle_auth(
    opts: dict,
    engine,
    minion_id: Any,
    pub: Any,
    autosign_grains: Any = None,
    fire: Fire | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """A ``salt/auth`` event with ``act: pend``: record the key, and accept it when it
    presents a live enrolment (gate mode ``enrolment``). Never raises for what a minion sent:
    the answer says what happened (``ignored`` with a reason for hostile input)."""
    fire = fire or (lambda *_: None)
    if not core_gate.is_minion_id(minion_id):
        log.warning(
            "fleet gate: ignoring an authentication from an invalid minion id %.80r", minion_id
        )
        return {"result": "ignored", "reason": "invalid minion id"}
    if not isinstance(pub, str):
        return {"id": minion_id, "result": "ignored", "reason": "no public key in the event"}
    try:
        finger = _fingerprint(opts, pub)
    except core_gate.GateError as exc:
        return {"id": minion_id, "result": "ignored", "reason": str(exc)}
    key = salt_key(opts)
    if not _really_pending(opts, key, minion_id, finger):
        log.info(
            "fleet gate: ignoring a salt/auth event for %s: no such pending key in Salt's store",
            minion_id,
        )
        return {"id": minion_id, "result": "ignored", "reason": "not a pending key in Salt's store"}
    cfg = config.load(opts)
    now = now or utcnow()
    with engine.begin() as conn:
        new, recorded = store_gate.key_seen(conn, minion_id, finger, pub, now)
        if new:
            store_audit.append(conn, "gate", "key.pending", minion_id, {"fingerprint": finger})
    if new:
        fire(PENDING_TAG, {"id": minion_id, "fingerprint": finger, "first_seen": now.isoformat()})
    out: dict[str, Any] = {"id": minion_id, "fingerprint": finger, "new": new}
    if recorded in store_gate.FOLLOWED_STATES:
        followed = follow_decisions(opts, engine, [(minion_id, finger)], fire)
        if minion_id in followed:
            return {**out, **followed[minion_id]}
    token = core_gate.presented_token(autosign_grains)
    if cfg.gate.mode != "enrolment":
        out["result"] = "pending"
        return out
    with engine.connect() as conn:
        found = store_gate.find_enrolment(conn, minion_id, token)
    decision = core_gate.decide(minion_id, finger, token, found, now)
    if decision.accept:
        answer = _accept_enrolled(opts, engine, minion_id, finger, decision, fire, now)
        if answer.get("reason") == ELSEWHERE:
            return {**out, **_follow_now(opts, engine, minion_id, finger, fire, answer)}
        return {**out, **answer}
    if decision.refused and decision.enrolment is not None:
        with engine.connect() as conn:
            used_by = store_gate.enrolment_used_by(conn, decision.enrolment.id)
        if used_by == finger:
            # used by this very key through another master, whose acceptance is being
            # recorded: followed now if it is recorded, else at the key's next attempt
            answer = {"result": "pending", "reason": ELSEWHERE}
            return {**out, **_follow_now(opts, engine, minion_id, finger, fire, answer)}
    if decision.refused:
        details = {"fingerprint": finger, "reason": decision.reason}
        if decision.enrolment is not None:
            details["enrolment"] = decision.enrolment.id
        note = f"enrolment refused: {decision.reason}"
        with engine.begin() as conn:
            # a minion retries with the same bad token every few seconds: recorded once
            again = store_gate.key_note(conn, minion_id, finger) == note
            if not again:
                store_gate.note_key(conn, minion_id, finger, note)
                store_audit.append(conn, "gate", "enrol.refuse", minion_id, details)
        if not again:
            log.warning(
                "fleet gate: %s presented an enrolment that is refused: %s",
                minion_id,
                decision.reason,
            )
            fire(REFUSED_TAG, {"id": minion_id, **details})
        out.update(result="refused", reason=decision.reason)
        return out
    out["result"] = "pending"
    return out


#: Why a key whose enrolment this very key used through another master is still pending.
ELSEWHERE = "accepted through another master"


def _follow_now(opts, engine, minion_id, finger, fire, pending: dict) -> dict[str, Any]:
    """The key used its enrolment through another master: follow that master's acceptance
    here at once if it is recorded (the minion asks both masters at the same time, so the
    other one often decided a moment ago), instead of at the key's next attempt (up to
    ``acceptance_wait_time_max`` later). ``pending``: the answer when it is not recorded
    yet."""
    with engine.begin() as conn:
        # the other master holds this key's row from recording its acceptance until it has
        # committed it: wait for that here, then follow what it recorded
        conn.execute(
            select(MinionKey.minion_id)
            .where(MinionKey.minion_id == minion_id, MinionKey.fingerprint == finger)
            .with_for_update()
        )
    followed = follow_decisions(opts, engine, [(minion_id, finger)], fire)
    return followed.get(minion_id) or pending


def record_pending(opts: dict, engine, batch, fire: Fire | None = None) -> list[str]:
    """Record pending keys handed over by the reactor's filter: ``batch`` is
    ``[(minion_id, pub, unix time)]``. One transaction; ``fleet/key/pending`` (and a
    ``key.pending`` audit event) for each key never seen before. Returns the new ids."""
    rows = []
    for minion_id, pub, at in batch:
        if not core_gate.is_minion_id(minion_id) or not isinstance(pub, str):
            continue
        try:
            finger = _fingerprint(opts, pub)
        except core_gate.GateError:
            continue
        rows.append((minion_id, finger, pub, dt.datetime.fromtimestamp(at, dt.timezone.utc)))
    if rows:
        # Only keys Salt really holds as pending, with that public key: the rest are
        # lookalike events (anyone's junk, or another key under a real pending id).
        key = salt_key(opts)
        kept = [r for r in rows if _really_pending(opts, key, r[0], r[1])]
        if len(kept) < len(rows):
            log.warning(
                "fleet gate: ignored %d salt/auth events for keys Salt does not hold as pending "
                "(e.g. %s)",
                len(rows) - len(kept),
                sorted({r[0] for r in rows} - {r[0] for r in kept})[:5],
            )
        rows = kept
    new = []
    with engine.begin() as conn:
        for minion_id, finger, pub, seen in rows:
            is_new, _state = store_gate.key_seen(conn, minion_id, finger, pub, seen)
            if is_new:
                store_audit.append(conn, "gate", "key.pending", minion_id, {"fingerprint": finger})
                new.append((minion_id, finger, seen))
    for minion_id, finger, seen in new:
        if fire:
            fire(
                PENDING_TAG,
                {"id": minion_id, "fingerprint": finger, "first_seen": seen.isoformat()},
            )
        log.info("fleet gate: new pending key for %s (%s)", minion_id, finger)
    # A key the fleet decided about through another master: follow that decision here.
    followed = follow_decisions(opts, engine, [(r[0], r[1]) for r in rows], fire)
    # An enrolment may expect a key by its fingerprint alone (no token): decide those here.
    if config.load(opts).gate.mode == "enrolment" and rows:
        with engine.connect() as conn:
            expecting = store_gate.ids_expecting_a_key(conn, sorted({r[0] for r in rows}))
        for minion_id, _finger, pub, _seen in rows:
            if minion_id in expecting and minion_id not in followed:
                handle_auth(opts, engine, minion_id, pub, None, fire)
    return [m for m, _f, _s in new]


def _accept_enrolled(opts, engine, minion_id, finger, decision, fire, now) -> dict[str, Any]:
    enrolment = decision.enrolment
    key = salt_key(opts)
    # The key Salt holds pending for the id must be the one that presented the token.
    state, held = salt_entry(key, minion_id)
    if state != "pending":
        return {"result": "pending", "reason": "no pending key for this id in Salt's key store"}
    if held is None or not core_gate.same_fingerprint(_fingerprint(opts, held), finger):
        reason = "the pending key is not the key that presented the token"
        with engine.begin() as conn:
            store_audit.append(
                conn,
                "gate",
                "enrol.refuse",
                minion_id,
                {"fingerprint": finger, "reason": "key-mismatch", "enrolment": enrolment.id},
            )
        return {"result": "refused", "reason": reason}
    with engine.begin() as conn:
        if not store_gate.use_enrolment(conn, enrolment.id, finger, now):
            if store_gate.enrolment_used_by(conn, enrolment.id) == finger:
                # this very key used it, through another master (one store, one use): its
                # acceptance is the fleet's decision, followed here (handle_auth)
                return {"result": "pending", "reason": ELSEWHERE}
            store_audit.append(
                conn,
                "gate",
                "enrol.refuse",
                minion_id,
                {"fingerprint": finger, "reason": "used", "enrolment": enrolment.id},
            )
            return {"result": "refused", "reason": "used"}
    with engine.begin() as conn:
        store_gate.set_key_state(
            conn, minion_id, "accepted", f"enrolment:{enrolment.id}", fingerprint=finger, now=now
        )
        # Salt announces the change on salt/key now; the row above stays locked until this
        # commits, so the salt/key recorder finds the decision recorded (record_key_changes).
        key.accept(match_dict={"minions_pre": [minion_id]})
        if enrolment.node_group:
            store_gate.set_group(conn, minion_id, enrolment.node_group, now)
        store_audit.append(
            conn,
            "gate",
            "enrol.accept",
            minion_id,
            {"fingerprint": finger, "enrolment": enrolment.id, "group": enrolment.node_group},
        )
    log.info("fleet gate: accepted %s by enrolment %s", minion_id, enrolment.id)
    fire(
        ACCEPTED_TAG,
        {"id": minion_id, "fingerprint": finger, "by": f"enrolment:{enrolment.id}"},
    )
    return {"result": "accepted", "enrolment": enrolment.id}


# -- operators ---------------------------------------------------------------------------------


def list_keys(opts: dict, engine, status: str | None = None) -> dict[str, dict[str, Any]]:
    """Every key Salt holds, with what the gate recorded: ``{id: {state, fingerprint,
    first_seen, last_seen, attempts, decided_by, decided_at, note}}``; ``status`` filters."""
    if status is not None and status not in SALT_STATE:
        raise KeyActionError(f"status={status!r}: expected one of {', '.join(SALT_STATE)}")
    key = salt_key(opts)
    states = salt_states(key)
    with engine.connect() as conn:
        records = store_gate.key_rows(conn, list(states) if len(states) < 2000 else None)
    by_id: dict[str, list[dict]] = {}
    for rec in records:
        by_id.setdefault(rec["id"], []).append(rec)
    out: dict[str, dict[str, Any]] = {}
    for minion_id, state in sorted(states.items()):
        if status is not None and state != status:
            continue
        pub = salt_pub(key, minion_id) if state != "denied" else None
        finger = _safe_fingerprint(opts, pub)
        entry: dict[str, Any] = {"state": state, "fingerprint": finger}
        recs = by_id.get(minion_id, [])
        mine = next((r for r in recs if r["fingerprint"] == finger), None)
        if mine is not None:
            entry.update(
                {
                    k: mine[k]
                    for k in (
                        "first_seen",
                        "last_seen",
                        "attempts",
                        "decided_by",
                        "decided_at",
                        "note",
                    )
                }
            )
        others = [r["fingerprint"] for r in recs if r["fingerprint"] != finger]
        if others:
            entry["other_fingerprints"] = others
        out[minion_id] = entry
    return out


def _safe_fingerprint(opts, pub) -> str | None:
    if not pub:
        return None
    try:
        return _fingerprint(opts, pub)
    except core_gate.GateError:
        return None


def _held(opts: dict, minion_id: Any, allowed: tuple, verb: str):
    """The key Salt holds for ``minion_id`` if its state is one of ``allowed``:
    ``(minion_id, salt key store, state, pub, fingerprint)``; else :class:`KeyActionError`."""
    minion_id = _check_id(minion_id)
    key = salt_key(opts)
    state, pub = salt_entry(key, minion_id)
    if state not in allowed:
        what = f"its key is {state}" if state else "Salt holds no key for it"
        raise KeyActionError(f"cannot {verb} {minion_id}: {what}")
    return minion_id, key, state, pub, _safe_fingerprint(opts, pub)


def accept(
    opts: dict,
    engine,
    minion_id: Any,
    actor: str,
    fingerprint: str | None = None,
    include_rejected: bool = False,
    fire: Fire | None = None,
) -> dict[str, Any]:
    """An operator accepts ``minion_id``'s pending key (``fingerprint``: only if it is that
    key; ``include_rejected``: a rejected key too)."""
    allowed = ("pending", "rejected") if include_rejected else ("pending",)
    minion_id, key, state, pub, finger = _held(opts, minion_id, allowed, "accept")
    if fingerprint is not None and not core_gate.same_fingerprint(fingerprint, finger):
        raise KeyActionError(
            f"cannot accept {minion_id}: its key's fingerprint is {finger}, not {fingerprint}"
        )
    with engine.begin() as conn:
        store_gate.set_key_state(conn, minion_id, "accepted", actor, fingerprint=finger, pub=pub)
        # inside the transaction: see _accept_enrolled
        key.accept(match_dict={SALT_STATE[state]: [minion_id]}, include_rejected=include_rejected)
        store_audit.append(
            conn, actor, "key.accept", minion_id, {"fingerprint": finger, "was": state}
        )
    if fire:
        fire(ACCEPTED_TAG, {"id": minion_id, "fingerprint": finger, "by": actor})
    return {"id": minion_id, "state": "accepted", "fingerprint": finger, "was": state}


def reject(opts: dict, engine, minion_id: Any, actor: str, include_accepted: bool = False) -> dict:
    allowed = ("pending", "accepted") if include_accepted else ("pending",)
    minion_id, key, state, pub, finger = _held(opts, minion_id, allowed, "reject")
    with engine.begin() as conn:
        store_gate.set_key_state(conn, minion_id, "rejected", actor, fingerprint=finger, pub=pub)
        # inside the transaction: see _accept_enrolled
        key.reject(match_dict={SALT_STATE[state]: [minion_id]}, include_accepted=include_accepted)
        store_audit.append(
            conn, actor, "key.reject", minion_id, {"fingerprint": finger, "was": state}
        )
    return {"id": minion_id, "state": "rejected", "fingerprint": finger, "was": state}


def delete(opts: dict, engine, minion_id: Any, actor: str, reason: str | None = None) -> dict:
    """Delete every key Salt holds for ``minion_id`` (accepted, pending, rejected, denied)."""
    minion_id = _check_id(minion_id)
    key = salt_key(opts)
    held = {salt_dir: [minion_id] for salt_dir, ids in key.list_keys().items() if minion_id in ids}
    if not held:
        return {"id": minion_id, "deleted": []}
    pub = salt_pub(key, minion_id)
    fingers = [_safe_fingerprint(opts, pub)]
    with engine.begin() as conn:
        store_gate.set_key_state(conn, minion_id, "deleted", actor)
        if fingers[0]:  # a row for the key even if the gate never saw it (see below)
            store_gate.set_key_state(
                conn, minion_id, "deleted", actor, fingerprint=fingers[0], pub=pub
            )
        # inside the transaction: see _accept_enrolled
        key.delete_key(match_dict=held)
        details: dict[str, Any] = {
            "states": sorted(STATE_OF[d] for d in held),
            "fingerprint": fingers[0],
        }
        if reason:
            details["reason"] = reason
        store_audit.append(conn, actor, "key.delete", minion_id, details)
    return {"id": minion_id, "deleted": sorted(STATE_OF[d] for d in held)}


# -- enrolment ---------------------------------------------------------------------------------


def master_address(opts: dict) -> str:
    """Where enrolled minions find this master: ``fleet:gate:master``, else the master's
    ``interface`` when it is one address, else this host's FQDN."""
    cfg = config.load(opts)
    if cfg.gate.master:
        return cfg.gate.master
    interface = str(opts.get("interface") or "")
    if interface and interface not in ("0.0.0.0", "::", ""):
        return interface
    return socket.getfqdn()


def enrol(
    opts: dict,
    engine,
    minion_id: Any,
    actor: str,
    ttl: Any = None,
    group: str | None = None,
    fingerprint: str | None = None,
) -> dict[str, Any]:
    """Create a one-time enrolment for ``minion_id``; returns the token (shown once, stored
    hashed) and the minion configuration that carries it. Keys Salt already holds for the
    id are deleted first: a re-imaged machine comes back with a new key."""
    minion_id = _check_id(minion_id)
    cfg = config.load(opts)
    if cfg.gate.mode != "enrolment":
        raise KeyActionError(
            "fleet:gate:mode is 'manual': enrolments are not accepted (set it to 'enrolment')"
        )
    try:
        lifetime = core_gate.parse_ttl(ttl if ttl is not None else cfg.gate.ttl)
        if group is not None:
            core_gate.check_group(group)
    except core_gate.GateError as exc:
        raise KeyActionError(str(exc)) from exc
    if fingerprint is not None and (not isinstance(fingerprint, str) or len(fingerprint) > 128):
        raise KeyActionError("fingerprint: expected the key's fingerprint as salt-key -f prints it")
    deleted = delete(opts, engine, minion_id, actor, reason="re-enrolment")["deleted"]
    token = core_gate.new_token()
    with engine.begin() as conn:
        made = store_gate.create_enrolment(
            conn, minion_id, token, lifetime, actor, node_group=group, fingerprint=fingerprint
        )
        store_audit.append(
            conn,
            actor,
            "enrol.create",
            minion_id,
            {
                "enrolment": made["enrolment"],
                "group": group,
                "expires_at": made["expires_at"],
                "fingerprint": fingerprint,
                "deleted_keys": deleted,
                "revoked": made["revoked"],
            },
        )
    conf = core_gate.minion_config(
        minion_id, master_address(opts), token, master_port=opts.get("ret_port")
    )
    return {
        "id": minion_id,
        "enrolment": made["enrolment"],
        "token": token,
        "expires_at": made["expires_at"],
        "group": group,
        "deleted_keys": deleted,
        "minion_config": conf,
        "minion_config_yaml": yaml.safe_dump(conf, default_flow_style=False, sort_keys=False),
        "install_as": "/etc/salt/minion.d/fleet-enrolment.conf",
    }


# -- salt/key: changes made with salt-key or the wheel ------------------------------------------

#: Who Salt's ``salt/key`` event says did it: nobody, so the tool (``salt-key``, the wheel).
SALT_KEY_ACTOR = "salt-key"
#: The ``act`` of a ``salt/key`` event, as the gate's key state. ``pend`` and ``pending``
#: are not here: a pending key is the gate's own business (``salt/auth``).
KEY_ACTS = {
    "accept": "accepted",
    "accepted": "accepted",
    "reject": "rejected",
    "rejected": "rejected",
    "denied": "denied",
    "delete": "deleted",
}
AUDIT_ACTION = {
    "accepted": "key.accept",
    "rejected": "key.reject",
    "denied": "key.deny",
    "deleted": "key.delete",
}


def record_key_changes(opts: dict, engine, batch, key=None) -> list[tuple[str, str]]:
    """Record key state changes that Salt announced on ``salt/key`` (``salt-key -a/-r/-d``,
    the wheel): ``batch`` is ``[(minion_id, act)]`` in the order they came. Returns the
    ``[(minion_id, state)]`` recorded, each as done by ``salt-key`` (the event names no user).

    An event is a hint: each change is confirmed against Salt's key store (the key really is
    in that state now, or really gone), and recorded only if the gate has not recorded it
    already. ``fleet.keys_*`` and the enrolment gate change Salt's store while they hold the
    key's row in an open transaction, so a change they make is found recorded here, never
    recorded twice. ``key``: Salt's key store to read (one is made when not given).
    """
    key = key or salt_key(opts)
    recorded: list[tuple[str, str]] = []
    for minion_id, act in batch:
        state = KEY_ACTS.get(act)
        if state is None or not core_gate.is_minion_id(minion_id):
            continue
        now_in = salt_state(key, minion_id)
        if state == "deleted" and now_in is not None:
            continue  # Salt holds a key for it again (or still): nothing to record
        if state != "deleted" and now_in != state:
            log.debug(
                "fleet gate: salt/key says %s is %s, Salt's key store says %s: not recorded",
                minion_id,
                state,
                now_in,
            )
            continue
        # One transaction per change: the key's rows are locked before the audit head, as
        # every other writer does (several rows held at once could deadlock with them).
        if _record_key_change(opts, engine, key, minion_id, state):
            recorded.append((minion_id, state))
    for minion_id, state in recorded:
        log.info("fleet gate: %s's key %s with salt-key (recorded)", minion_id, state)
    return recorded


def _record_key_change(opts: dict, engine, key, minion_id: str, state: str) -> bool:
    with engine.begin() as conn:
        if state == "deleted":
            gone = store_gate.mark_keys_deleted(conn, minion_id, SALT_KEY_ACTOR)
            if not gone:
                return False  # recorded already, or a key the gate never saw
            details: dict[str, Any] = {"fingerprints": gone, "source": "salt/key"}
        else:
            pub = _denied_pub(key, minion_id) if state == "denied" else salt_pub(key, minion_id)
            finger = _safe_fingerprint(opts, pub)
            if finger is None:
                return False
            was = store_gate.change_key_state(conn, minion_id, state, SALT_KEY_ACTOR, finger, pub)
            if was is None:  # recorded already (fleet.keys_*, the gate, an earlier event)
                return False
            details = {"fingerprint": finger, "was": was, "source": "salt/key"}
        store_audit.append(conn, SALT_KEY_ACTOR, AUDIT_ACTION[state], minion_id, details)
    return True


def _denied_pub(key, minion_id: str) -> str | None:
    found = _fetch(key, "denied_keys", minion_id)
    if isinstance(found, list) and found and isinstance(found[-1], str):
        return found[-1]
    return None
