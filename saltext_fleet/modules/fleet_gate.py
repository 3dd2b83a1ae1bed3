"""
Fleet gate helper for the key gate's reactor SLS, in the master's reactor process.

A pending minion retries authentication every few seconds and each attempt is a
``salt/auth`` event. If each one became a runner call, every retry would be a job (a job id,
two events, a job cache entry, a worker thread) and a thousand pending minions would keep the
reactor's workers busy with nothing new: the starvation Foreman's ``salt/auth`` reactor was
known for. So the SLS asks ``fleet_gate.wanted`` while it renders (the reactor's own process,
no job, microseconds):

- a key without an enrolment token is handed to a recorder thread of this process, which
  writes the keys it was given once a second in one transaction (first and last seen, the
  ``key.pending`` audit event) and fires ``fleet/key/pending`` for keys it had never seen. The
  same key is handed over at most once per ``fleet:gate:seen_window`` seconds. No runner.
- a key that presents an enrolment token is handed to the same thread (at most once every
  few seconds per key), which decides and accepts it there (:func:`saltext_fleet.master.keys.
  handle_auth`, what ``salt-run fleet.key_seen`` does) before it records the keys without a
  token. Not a runner job: the reactor's worker threads may all be busy onboarding the nodes
  that started first (each onboarding waits for its node's answers), and a key waiting
  behind them would stay pending for minutes when a hundred minions start at once.

Hints (:func:`hint`) are rate-limited here too; the package beacon's inventory hint is also
claimed in the store, so with several masters one inventory is taken for the fleet.

Key changes made with ``salt-key`` or the wheel (``salt/key``, which Salt fires itself) are
handed the same way to a second recorder thread (``fleet_gate.key_changed``, rendered by
``key_change.sls``), which confirms each against Salt's key store and records the ones the gate
has not recorded (``fleet.keys_*`` record their own), as done by ``salt-key``.

Loads only on a master (the reactor's MasterMinion); a minion never has it.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import queue
import threading
import time

import salt.client
import salt.runner
import salt.utils.event
from sqlalchemy.exc import SQLAlchemyError

from saltext_fleet import config
from saltext_fleet.core import gate as core_gate
from saltext_fleet.master import clients, eventsig
from saltext_fleet.master import keys as master_keys
from saltext_fleet.store import audit as store_audit
from saltext_fleet.store import claims as store_claims
from saltext_fleet.store import engine as store_engine

log = logging.getLogger(__name__)

__virtualname__ = "fleet_gate"

#: What the key-change recorder is handed for a ``salt/auth`` with ``act: denied``.
AUTH_DENIED = "auth-denied"
#: How often the recorder writes what it was handed, in seconds.
FLUSH_SECONDS = 1.0
#: Most keys waiting for the recorder; beyond that, keys are dropped (and seen again at
#: their next retry) rather than growing without bound.
QUEUE_MAX = 50_000

_STATE: dict = {}
_LOCK = threading.Lock()


def __virtual__():
    if __opts__.get("__role") != "master":
        return False, "fleet_gate is the master's reactor helper"
    return __virtualname__


def _state() -> dict:
    with _LOCK:
        if not _STATE:
            try:
                window = config.load(__opts__).gate.seen_window
            except config.FleetConfigError:
                window = config.GateConfig.seen_window
            _STATE["filter"] = core_gate.SeenFilter(window=window)
            _STATE["queue"] = queue.Queue(maxsize=QUEUE_MAX)
            thread = threading.Thread(
                target=_recorder, args=(dict(__opts__), _STATE["queue"]), name="fleet-gate-recorder"
            )
            thread.daemon = True
            thread.start()
            _STATE["thread"] = thread
            _STATE["key_changes"] = queue.Queue(maxsize=QUEUE_MAX)
            changes = threading.Thread(
                target=_key_change_recorder,
                args=(dict(__opts__), _STATE["key_changes"]),
                name="fleet-gate-key-changes",
            )
            changes.daemon = True
            changes.start()
        return _STATE


def _drain(handed: queue.Queue) -> list:
    """What was handed over: block for the first item, then take more for FLUSH_SECONDS."""
    batch = [handed.get()]
    deadline = time.monotonic() + FLUSH_SECONDS
    while (left := deadline - time.monotonic()) > 0:
        try:
            batch.append(handed.get(timeout=left))
        except queue.Empty:
            break
    return batch


def _store(opts: dict, held: dict):
    """The store's engine for a recorder thread (made once, schema checked, anchor set)."""
    if "engine" not in held:
        cfg = config.load(opts)
        engine = store_engine.get_engine(cfg.db_url)
        store_engine.ensure_schema(engine)
        store_audit.use_anchor(engine, cfg.key_file)
        held["engine"] = engine
    return held["engine"]


def _key_change_recorder(opts: dict, changes: queue.Queue) -> None:
    """Record the key changes handed over (``salt/key``), once a second, until the process
    ends. A batch that cannot be written is logged and dropped: the key store still holds
    the truth, and the keys page shows it."""
    held: dict = {}
    while True:
        batch = _drain(changes)
        try:
            engine = _store(opts, held)
            denied = [m for m, act in batch if act == AUTH_DENIED]
            salt_key = [(m, act) for m, act in batch if act != AUTH_DENIED]
            if salt_key:
                master_keys.record_key_changes(opts, engine, salt_key, master_keys.salt_key(opts))
            if denied:
                master_keys.follow_deletions(opts, engine, denied)
        except Exception:  # the recorder must outlive a database outage
            log.exception("fleet gate: could not record %d key changes from salt/key", len(batch))


def _recorder(opts: dict, pending: queue.Queue) -> None:
    """Decide the keys handed over with an enrolment token, then write the others, once a
    second, until the process ends. Items are ``(minion_id, pub, unix time, autosign_grains
    or None)``, taken in the order they came."""
    held: dict = {}
    fire = _firer(opts)
    fire_signed = _firer(opts, signed=True)
    deciders = concurrent.futures.ThreadPoolExecutor(
        max_workers=DECIDERS, thread_name_prefix="fleet-gate-decide"
    )
    while True:
        batch = _drain(pending)
        plain = [(m, pub, at) for m, pub, at, grains in batch if grains is None]
        # a key with a token comes back every few seconds until it is decided: the ones
        # handed over again while an earlier batch was decided are decided once
        tokened = {(m, pub): grains for m, pub, _at, grains in batch if grains is not None}
        began = time.monotonic()
        if tokened:
            _decide_all(opts, held, tokened, fire_signed, deciders)
            log.info(
                "fleet gate: %d keys with a token decided in %.2f s (%d waiting)",
                len(tokened),
                time.monotonic() - began,
                pending.qsize(),
            )
        if not plain:
            continue
        try:
            master_keys.record_pending(opts, _store(opts, held), plain, fire)
        except Exception:  # the recorder must outlive a database outage
            log.exception(
                "fleet gate: could not record %d pending keys (retried at their next attempt)",
                len(plain),
            )
            for minion_id, _pub, _at in plain:
                _STATE["filter"].forget(minion_id)


#: Keys with a token decided at once. A decision is a few short transactions, most of its
#: time spent waiting (for the store, for the audit chain's head, for its turn at the CPU on
#: a busy master); one at a time, a hundred keys arriving together waited minutes.
DECIDERS = 4


def _decide_all(opts: dict, held: dict, tokened: dict, fire, deciders) -> None:
    """Decide ``{(minion_id, pub): grains}`` on the ``deciders`` pool: the keys of one id in
    order on one thread (two keys under one id are never decided at once), ids in parallel."""
    try:
        _store(opts, held)  # made once, before the threads share it
    except Exception:  # the recorder must outlive a database outage
        log.exception(
            "fleet gate: could not decide %d keys with a token (retried at their next attempt)",
            len(tokened),
        )
        for minion_id, _pub in tokened:
            _STATE["filter"].forget(minion_id)
        return
    by_id: dict[str, list] = {}
    for (minion_id, pub), grains in tokened.items():
        by_id.setdefault(minion_id, []).append((pub, grains))

    def decide(minion_id: str) -> None:
        for pub, grains in by_id[minion_id]:
            _decide(opts, held, minion_id, pub, grains, fire)

    for done in concurrent.futures.as_completed([deciders.submit(decide, m) for m in by_id]):
        done.result()  # _decide logs and keeps its own failures


def _decide(opts: dict, held: dict, minion_id: str, pub: str, grains, fire=None) -> None:
    """A pending key with an enrolment token: record it and accept it if its enrolment is
    live (as the ``fleet.key_seen`` runner does); its events are signed like the runner's
    (``fire``: the recorder's signing :func:`_firer`)."""
    try:
        answer = master_keys.handle_auth(
            opts,
            _store(opts, held),
            minion_id,
            pub,
            grains,
            fire=fire or (lambda tag, data: eventsig.fire(opts, tag, data)),
        )
        log.info("fleet gate: %s presented an enrolment token: %s", minion_id, answer)
    except Exception:  # the recorder must outlive a database outage
        log.exception("fleet gate: could not decide the key of %s (retried)", minion_id)
        _STATE["filter"].forget(minion_id)


def _firer(opts: dict, signed: bool = False):
    """``fire(tag, data)`` on the master's event bus, over one connection kept open for the
    recorder's life (a connection per event cost ~20 ms: a flood of new keys would take that
    many times longer to announce); opened again after a failure. ``signed``: each event
    signed as :func:`saltext_fleet.master.eventsig.fire` signs it."""
    bus: list = []
    lock = threading.Lock()  # one connection, and the recorder's deciders share it

    def fire(tag: str, data: dict) -> None:
        if signed:
            data = eventsig.signed(opts, tag, data)
        with lock:
            _fire(tag, data)

    def _fire(tag: str, data: dict) -> None:
        for attempt in range(2):
            try:
                if not bus:
                    bus.append(
                        salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=False)
                    )
                bus[0].fire_event(data, tag)
                return
            except Exception:  # noqa: BLE001
                if bus:
                    try:
                        bus.pop().destroy()
                    except Exception:  # noqa: BLE001
                        pass
                if attempt:
                    log.warning("fleet gate: could not fire %s for %s", tag, data.get("id"))

    return fire


def wanted(data=None):
    """
    Hand a ``salt/auth`` event's pending key to this process's recorder thread, which
    decides a key that presents an enrolment token and records the others. Always False:
    the reactor SLS renders nothing, no runner job runs (``salt-run fleet.key_seen`` does
    the same for one key by hand). Invalid ids and events without a key are dropped.

    CLI Example (it only makes sense inside the reactor):

    .. code-block:: bash

        salt-run salt.cmd fleet_gate.wanted '{"act": "pend", "id": "web1", "pub": "..."}'
    """
    if not isinstance(data, dict) or data.get("act") not in ("pend", "denied"):
        return False
    minion_id, pub = data.get("id"), data.get("pub")
    if not core_gate.is_minion_id(minion_id) or not isinstance(pub, str) or not pub:
        return False
    state = _state()
    if data["act"] == "denied":
        # another key than the accepted one: a deletion made through another master that
        # this master has not followed yet? (the key-change recorder looks, once a minute)
        if state["filter"].wanted(minion_id, "denied:" + pub, False):
            try:
                state["key_changes"].put_nowait((minion_id, AUTH_DENIED))
            except queue.Full:
                state["filter"].forget(minion_id)
        return False
    grains = data.get("autosign_grains")
    has_token = core_gate.presented_token(grains) is not None
    if not state["filter"].wanted(minion_id, pub, has_token):
        return False
    try:
        state["queue"].put_nowait((minion_id, pub, time.time(), grains if has_token else None))
    except queue.Full:
        state["filter"].forget(minion_id)
    return False


#: Members that Salt's own ``salt/key`` event never has, and that a minion's
#: ``event.fire_master`` load always has: such an event was fired by a minion.
_MINION_LOAD_KEYS = ("cmd", "tok", "tag", "data", "nonce")


def key_changed(data=None):
    """
    Hand a ``salt/key`` event (a key accepted, rejected, denied or deleted with
    ``salt-key`` or the wheel) to this process's key-change recorder. Always False: the
    reactor SLS renders nothing, no job runs. The recorder confirms the change against
    Salt's key store before it records it. An event carrying a minion's load (fired with
    ``event.fire_master``) is ignored with a warning naming the sender.

    CLI Example (it only makes sense inside the reactor):

    .. code-block:: bash

        salt-run salt.cmd fleet_gate.key_changed '{"act": "accepted", "id": "web1"}'
    """
    if not isinstance(data, dict):
        return False
    minion_id, act = data.get("id"), data.get("act")
    if any(k in data for k in _MINION_LOAD_KEYS):
        log.warning(
            "fleet gate: ignoring a salt/key event fired by minion %.80r (act %.20r)",
            minion_id,
            act,
        )
        return False
    if not core_gate.is_minion_id(minion_id) or not isinstance(act, str):
        return False
    try:
        _state()["key_changes"].put_nowait((minion_id, act))
    except queue.Full:
        log.warning("fleet gate: too many key changes waiting; %s %s not recorded", minion_id, act)
    return False


# -- hints: events any minion could have fired ---------------------------------------------------

#: Seconds between two pieces of work a hint may trigger, per node (per kind of hint).
HINT_WINDOWS = {"pkgset": 60.0, "onboard": 10.0, "refuse": 60.0, "presence": 2.0}
#: Most ids one presence hint may name (the rest are ignored).
PRESENCE_MAX = 10_000

_HINTS: dict = {}


def _hints() -> dict:
    with _LOCK:
        if not _HINTS:
            _HINTS["limits"] = {
                kind: core_gate.HintLimiter(window, trailing=kind != "refuse")
                for kind, window in HINT_WINDOWS.items()
            }
            _HINTS["presence"] = {"new": set(), "lost": set()}
            thread = threading.Thread(
                target=_trailing, args=(dict(__opts__),), name="fleet-gate-hints"
            )
            thread.daemon = True
            thread.start()
            _HINTS["thread"] = thread
        return _HINTS


def _trailing(opts: dict) -> None:
    """Once a second: the work of hints that came within their window, once per node."""
    while True:
        time.sleep(1.0)
        try:
            _run_due(opts, _HINTS["limits"])
        except Exception:  # the thread must outlive one failure
            log.exception("fleet gate: a deferred hint failed")


#: Seconds within which one inventory is taken on beacon hints for the whole fleet (every
#: master hears the beacon; each lets one through per ``HINT_WINDOWS["pkgset"]``).
PKGSET_FLEET_SECONDS = 50.0
_CLAIMS: dict = {}


def _claim_pkgset(opts: dict, minion: str) -> bool:
    """Claim the inventory of ``minion`` on a beacon hint for the fleet (in the store, at most
    once per :data:`PKGSET_FLEET_SECONDS` whichever master takes it). True too when the
    store cannot be reached: an inventory twice is better than none."""
    try:
        engine = _store(opts, _CLAIMS)
        with engine.begin() as conn:
            return store_claims.claim(
                conn,
                store_claims.PKGSET,
                minion,
                str(opts.get("id") or "") or None,
                min_age=PKGSET_FLEET_SECONDS,
            )
    except (SQLAlchemyError, OSError, config.FleetConfigError) as exc:
        _quietly(f"inventory hints not claimed for the fleet (the store failed: {exc})")
        return True


def _run_due(opts: dict, limits: dict) -> None:
    pkgset = [m for m in limits["pkgset"].due() if _claim_pkgset(opts, m)]
    if pkgset:
        with clients.local(opts) as client:
            for minion_id in pkgset:
                client.cmd_async([minion_id], "fleet.inventory", tgt_type="list")
    onboard = limits["onboard"].due()
    presence = limits["presence"].due()
    if not onboard and not presence:
        return
    runner = clients.runner(opts)
    # the reactor's own work: audited as "reactor", like the SLS's runner calls
    reactor = {"user": "Reactor"}
    for minion_id in onboard:
        runner.cmd(
            "fleet.node_started",
            kwarg={"minion": minion_id, "sender": minion_id},
            pub_data=reactor,
            print_event=False,
        )
    if presence:
        held = _HINTS["presence"]
        with _LOCK:
            new, lost = sorted(held["new"]), sorted(held["lost"])
            held["new"], held["lost"] = set(), set()
        if new or lost:
            runner.cmd(
                "fleet.presence",
                kwarg={"new": new, "lost": lost},
                pub_data=reactor,
                print_event=False,
            )


def hint(kind=None, minion=None, sender=None, data=None):
    """
    True when the reactor should act on a hint now: an event that any minion could have
    fired (``fleet/pkgset/changed``, ``salt/minion/<id>/start``, ``salt/presence/change``).
    Work is done at most once per ``HINT_WINDOWS[kind]`` seconds per node; a hint that came
    within the window is acted on once when it ends, by this process (no job per hint).

    kind
        ``pkgset`` (``minion``: the node), ``onboard`` (``minion``: the id in the tag,
        ``sender``: the event's ``id``), ``presence`` (``data``: the event).

    CLI Example (it only makes sense inside the reactor):

    .. code-block:: bash

        salt-run salt.cmd fleet_gate.hint pkgset web1
    """
    state = _hints()
    limits = state["limits"]
    if kind == "presence":
        if not isinstance(data, dict):
            return False
        named = {}
        for field in ("new", "lost"):
            value = data.get(field)
            ids = value[:PRESENCE_MAX] if isinstance(value, list) else []
            named[field] = {m for m in ids if core_gate.is_minion_id(m)}
        if not named["new"] and not named["lost"]:
            return False
        if limits["presence"].offer("presence"):
            return True
        with _LOCK:
            for field, ids in named.items():
                held = state["presence"][field]
                if len(held) < PRESENCE_MAX:
                    held.update(ids)
        return False
    if not core_gate.is_minion_id(minion):
        _quietly(f"ignoring {kind} hints for invalid minion ids, such as {str(minion)[:80]!r}")
        return False
    if kind not in ("pkgset", "onboard"):
        return False
    if not _accepted(minion):
        # made-up ids cost nothing: no job, no runner, no audit row, however many
        _quietly(f"ignoring {kind} hints for ids with no accepted key, such as {minion!r}")
        return False
    if kind == "pkgset":
        # at most once a minute per node on this master, once per PKGSET_FLEET_SECONDS for
        # the fleet (another master may have taken this node's inventory just now)
        return limits["pkgset"].offer(minion) and _claim_pkgset(__opts__, minion)
    if sender != minion:
        # refused at once by the runner (no job to the node): recorded once a minute per
        # node, whatever sender the (possibly forged) event names
        return limits["refuse"].offer(minion)
    return limits["onboard"].offer(minion)


def _accepted(minion: str) -> bool:
    """Salt holds an accepted key for ``minion`` (a valid id: no path in it). With Salt's
    default key store (``localfs_key``) a file check, as that driver files keys; with
    another driver the runner's own check decides (True here)."""
    if (__opts__.get("keys.cache_driver") or "localfs_key") != "localfs_key":
        return True
    pki_dir = __opts__["cluster_pki_dir"] if __opts__.get("cluster_id") else __opts__["pki_dir"]
    return os.path.isfile(os.path.join(pki_dir, "minions", minion))


#: When :func:`_quietly` last logged each message kind.
_QUIET: dict[str, float] = {}


def _quietly(message: str) -> None:
    """A warning at most once a minute per kind of message (the first 30 characters)."""
    now = time.monotonic()
    kind = message[:30]
    with _LOCK:
        if now - _QUIET.get(kind, -3600.0) < 60:
            return
        _QUIET[kind] = now
    log.warning("fleet gate: %s (said at most once a minute)", message)


def signed(tag=None, data=None):
    """
    True when ``data`` is an event this master signed for ``tag`` (the ``fleet/...`` events it
    fires itself; minions can fire those tags too). Checked in the reactor's own process, so
    a flood of forged events never queues a runner. False, with a warning at most once a
    minute, otherwise.

    CLI Example (it only makes sense inside the reactor):

    .. code-block:: bash

        salt-run salt.cmd fleet_gate.signed fleet/inventory/changed '{"id": "web1"}'
    """
    try:
        eventsig.check(__opts__, tag, data)
    except (OSError, ValueError) as exc:
        who = data.get("id") if isinstance(data, dict) else None
        _quietly(f"ignoring {str(tag)[:60]!r} events not signed by this master ({exc}; id {who!r})")
        return False
    return True
