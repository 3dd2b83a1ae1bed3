"""Onboarding a node when it starts, and its online/offline status.

``salt/minion/<id>/start`` (the shipped ``onboard.sls``) -> :func:`onboard`: sync the
extension's modules, schedule ``fleet.inventory`` and the highstate test run, turn on the
``fleet_pkgset`` beacon, take a first inventory, apply the node group's states, mark the node
online. ``salt/presence/change`` (the master's ``presence_events``) -> :func:`presence`, and
the master's scheduled :func:`presence_check`: nodes that stopped answering go offline (after
more than one missed check, :mod:`saltext_fleet.core.presence`), nodes that came back go
online.

Everything is sent through Salt's LocalClient by exact id (``tgt_type=list``); only the sync
is waited for, briefly: the rest runs on the node as jobs of their own, so a slow node never
holds the reactor.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from typing import Any

import salt.client
import salt.utils.minions
from salt.exceptions import SaltException
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from saltext_fleet import config
from saltext_fleet.core import gate as core_gate
from saltext_fleet.core import presence as core_presence
from saltext_fleet.core.errors import FleetError
from saltext_fleet.master import clients
from saltext_fleet.master import keys as master_keys
from saltext_fleet.store import audit as store_audit
from saltext_fleet.store import claims as store_claims
from saltext_fleet.store import gate as store_gate
from saltext_fleet.store import presence as store_presence
from saltext_fleet.store import secrets as store_secrets
from saltext_fleet.store.models import AuditEvent, Node

log = logging.getLogger(__name__)

INVENTORY_JOB = "fleet_inventory"
HIGHSTATE_TEST_JOB = "fleet_highstate_test"


def _client(opts):
    """This thread's LocalClient (:func:`saltext_fleet.master.clients.local`)."""
    return clients.local(opts)


def schedule_jobs(cfg: config.FleetConfig) -> dict[str, dict[str, Any]]:
    """The schedule entries a node gets (``schedule.add`` keyword arguments)."""
    jobs: dict[str, dict[str, Any]] = {}
    if cfg.onboard.inventory_minutes:
        jobs[INVENTORY_JOB] = {
            "function": "fleet.inventory",
            "minutes": cfg.onboard.inventory_minutes,
            "splay": 60,
            # onboarding takes the first inventory itself
            "run_on_start": False,
            "return_job": True,
        }
    if cfg.onboard.highstate_test_hours:
        jobs[HIGHSTATE_TEST_JOB] = {
            "function": "state.apply",
            "job_kwargs": {"test": True},
            "hours": cfg.onboard.highstate_test_hours,
            "splay": 600,
            # not at once: a node that just started has not had its states applied yet
            "run_on_start": False,
            "return_job": True,
        }
    return jobs


def onboard(
    opts: dict,
    engine,
    minion_id: Any,
    actor: str = "reactor",
    started: float | None = None,
) -> dict[str, Any]:
    """Set up a node that has just started (idempotent: a restart sets it up again).
    ``started``: the start time the node itself reported (kept in the audit event)."""
    minion_id = core_gate.check_minion_id(minion_id, "minion")
    cfg = config.load(opts)
    with engine.connect() as conn:
        group_name = conn.execute(
            select(Node.node_group).where(Node.minion_id == minion_id)
        ).scalar()
        group = store_secrets.group(conn, group_name) if group_name else None
    steps: dict[str, Any] = {}
    with _client(opts) as client:
        ask = _asker(opts, client, minion_id)
        if cfg.onboard.sync:
            steps["sync"] = ask("saltutil.sync_all", timeout=60) is not NO_ANSWER
        jobs = schedule_jobs(cfg)
        existing = _schedule_names(ask) if jobs else set()
        for name, job in jobs.items():
            # schedule.add refuses a name that exists: replace it (the options may change);
            # only an entry that is there is deleted (deleting another is a failed job)
            if name in existing:
                ask("schedule.delete", [name])
            answer = ask("schedule.add", [name], kwarg=job)
            steps[f"schedule:{name}"] = bool(isinstance(answer, dict) and answer.get("result"))
        beacon = None
        if cfg.onboard.beacon_interval:
            beacon = enable_beacon(minion_id, cfg.onboard.beacon_interval, ask)
            steps["beacon"] = beacon
        # a first inventory now, not in an hour
        steps["inventory"] = client.cmd_async([minion_id], "fleet.inventory", tgt_type="list")
        states = list((group or {}).get("states") or [])
        if states:
            steps["states"] = client.cmd_async(
                [minion_id], "state.apply", [",".join(states)], tgt_type="list"
            )
    with engine.begin() as conn:
        store_gate.set_status(conn, [minion_id], "online", onboarded=True, reason="onboarded")
        if beacon is not None:
            store_gate.set_beacon(conn, minion_id, beacon)
        store_audit.append(
            conn,
            actor,
            "node.onboard",
            minion_id,
            {
                "group": group_name,
                "states": (group or {}).get("states") or [],
                "steps": steps,
                **({"minion_started": started} if started is not None else {}),
            },
        )
    log.info("fleet: onboarded %s (group %s)", minion_id, group_name)
    return {"id": minion_id, "group": group_name, "steps": steps}


def _asker(opts: dict, client, minion_id: str):
    """``ask(fun, args=(), kwarg=None, timeout=30, none_is_answer=False)``: run ``fun`` on
    the node and return its answer from the master's job cache (:func:`_wait_answer`:
    filed under the id Salt authenticated), :data:`NO_ANSWER` when none came, waiting
    longer while the node is connected (:func:`_wait_connected`).

    Not ``LocalClient.cmd``: that reads the answer off the event bus, where another minion
    can forge it, and while it waits it reads every event on the bus, in the reactor's own
    process, for each node being onboarded at once; a hundred minions starting together
    left the key gate's thread, in the same process, too little of its CPU to decide
    their keys."""

    def ask(fun, args=(), kwarg=None, timeout=30, none_is_answer=False):
        try:
            jid = _publish(client, minion_id, fun, kwarg, args)
        except OnboardRefused as exc:
            log.warning("fleet: %s", exc)
            return NO_ANSWER
        return _wait_connected(opts, client, jid, minion_id, timeout, none_is_answer)

    return ask


def _schedule_names(ask) -> set[str]:
    """The names of the node's schedule entries (``schedule.list``)."""
    listed = ask("schedule.list", kwarg={"return_yaml": False})
    return set(listed) if isinstance(listed, dict) else set()


#: The beacon onboarding turns on: inventory on package changes, not only on the schedule.
PKGSET_BEACON = "fleet_pkgset"


def beacon_interval(listed: Any, name: str = PKGSET_BEACON) -> int | None:
    """The interval of beacon ``name`` in a ``beacons.list return_yaml=False`` answer: its
    seconds (Salt's default 1 when not set), 0 when it is absent or disabled (itself or all
    beacons), None when the answer is not a listing."""
    if listed is None:
        return 0  # Salt lists no beacons at all as None
    if not isinstance(listed, dict):
        return None
    if listed.get("enabled") is False:
        return 0
    config = listed.get(name)
    if not isinstance(config, list):
        return 0
    options: dict[str, Any] = {}
    for item in config:
        if isinstance(item, dict):
            options.update(item)
    if options.get("enabled") is False:
        return 0
    interval = options.get("interval", 1)
    if isinstance(interval, bool) or not isinstance(interval, (int, float)):
        return 0
    return int(interval)


def beacon_config(current: Any, interval: int) -> list[dict[str, Any]]:
    """The beacon's configuration with ``interval``, keeping the other options an admin set."""
    kept = [
        item
        for item in (current if isinstance(current, list) else [])
        if isinstance(item, dict) and "interval" not in item
    ]
    return [{"interval": interval}, *kept]


def enable_beacon(minion_id: str, interval: int, ask) -> int | None:
    """Turn on the ``fleet_pkgset`` beacon on the node with ``interval`` (``beacons.add``, or
    ``beacons.modify`` when its interval differs) and save the node's beacons to its config
    (``beacons.save``: they survive a restart). Returns the interval ``beacons.list`` then
    confirms (0: not running, None: the node did not say). Every answer is the node's own,
    from the job cache (``ask``: :func:`_asker`'s)."""

    def listing():
        # from the job cache: what the store records must be the node's own answer
        answer = ask("beacons.list", kwarg={"return_yaml": False}, none_is_answer=True)
        return "no answer" if answer is NO_ANSWER else answer

    listed = listing()
    now = beacon_interval(listed)
    if now is None or now == interval:
        return now
    current = listed.get(PKGSET_BEACON) if isinstance(listed, dict) else None
    fun = "beacons.modify" if isinstance(current, list) else "beacons.add"
    answer = ask(fun, [PKGSET_BEACON, beacon_config(current, interval)])
    if isinstance(answer, dict) and answer.get("result"):
        ask("beacons.save")
    else:
        log.warning("fleet: %s on %s: %s", fun, minion_id, str(answer)[:300])
    return beacon_interval(listing())


# -- salt/minion/<id>/start: a hint, confirmed by the node itself --------------------------------

#: Seconds the node has to answer ``fleet.started``...
CONFIRM_TIMEOUT = 30
#: ...and, while this master sees it connected, at most this many in all: a node that is up
#: but busy (a hundred minions starting and syncing at once on little CPU answered in up to
#: 80 s) is waited for, not refused until its next start.
CONFIRM_CONNECTED_MAX = 240


class OnboardRefused(FleetError):
    """A start event that is not confirmed; the message says why."""


class OnboardClaimed(FleetError):
    """Another master of the fleet onboards the node for this start (not a refusal)."""

    def __init__(self, message: str, holder: dict | None):
        super().__init__(message)
        self.holder = holder or {}


def start_token(started: float) -> str:
    """The claim token of a node's start: the start time it reported, to the microsecond."""
    return f"{started:.6f}"


def master_id(opts: dict) -> str | None:
    """This master's id (names who holds a claim)."""
    value = opts.get("id")
    return str(value) if value else None


def node_started(
    opts: dict,
    engine,
    minion_id: Any,
    sender: Any = None,
    actor: str = "reactor",
    timeout: float = CONFIRM_TIMEOUT,
) -> dict[str, Any]:
    """``salt/minion/<id>/start``: onboard ``minion_id`` if it really (re)started.

    The event is a hint: a minion may fire it for any id, alone or in an ``events`` batch
    (where nothing in it is authenticated). ``sender`` is the event's ``id``, which Salt
    authenticated for a single event: when it is not ``minion_id`` the event is refused at
    once. Otherwise the node is asked (a ``fleet.started`` job, its answer read from the job
    cache, where Salt files it under the id it authenticated) when its salt-minion process
    started: it is onboarded only when that is later than its last onboarding. A refusal
    is logged and audited (``node.onboard.refuse``, naming the event's id).

    With several masters sharing the store (hot-hot), every one of them hears the start:
    the one whose claim of (node, start time) wins onboards it (:mod:`saltext_fleet.store.
    claims`); the others answer ``result: claimed`` and do nothing more."""
    try:
        minion_id = core_gate.check_minion_id(minion_id, "minion")
        if sender != minion_id:
            raise OnboardRefused(f"the event came from {str(sender)[:100]!r}, not from {minion_id}")
        started = _confirm_start(opts, engine, minion_id, timeout)
    except OnboardClaimed as exc:
        log.info("fleet: %s", exc)
        return {
            "id": minion_id,
            "result": "claimed",
            "reason": str(exc),
            "by": exc.holder.get("master"),
        }
    except OnboardRefused as exc:
        return _refuse(engine, minion_id, sender, str(exc))
    except core_gate.GateError as exc:
        log.warning("fleet: ignoring a start event: %s (event id %.100r)", exc, sender)
        return {"id": None, "result": "refused", "reason": str(exc)}
    except (SaltException, SQLAlchemyError, OSError) as exc:
        # Salt's client, the job cache or the store failed: nothing confirmed, nothing done
        # (the node's next start, or fleet.onboard, sets it up)
        reason = f"{type(exc).__name__}: {str(exc)[:300]}"
        log.warning(
            "fleet: the start of %r could not be confirmed (%s); not onboarded", minion_id, reason
        )
        return {"id": minion_id, "result": "not confirmed", "reason": reason}
    try:
        done = onboard(opts, engine, minion_id, actor, started=started)
    except BaseException:
        # not onboarded: the claim goes, so that the node's next start event (or the same
        # one heard again) can try again
        try:
            with engine.begin() as conn:
                store_claims.release(
                    conn, store_claims.ONBOARD, minion_id, master_id(opts), start_token(started)
                )
        except SQLAlchemyError:
            log.exception("fleet: could not release the onboarding claim of %s", minion_id)
        raise
    return {**done, "result": "onboarded", "minion_started": started}


def _refuse(engine, minion_id: str, sender: Any, reason: str) -> dict[str, Any]:
    shown = sender if isinstance(sender, str) else repr(sender)
    log.warning(
        "fleet: refused to onboard %s on a salt/minion/%s/start event (event id %.100s): %s",
        minion_id,
        minion_id,
        shown,
        reason,
    )
    with engine.begin() as conn:
        store_audit.append(
            conn,
            "reactor",
            "node.onboard.refuse",
            minion_id,
            {"claimed_id": minion_id, "sender": shown[:255], "reason": reason},
        )
    return {"id": minion_id, "result": "refused", "reason": reason, "sender": shown}


def _confirm_start(opts: dict, engine, minion_id: str, timeout: float) -> float:
    state = master_keys.salt_state(master_keys.salt_key(opts), minion_id)
    if state != "accepted":
        raise OnboardRefused(f"{minion_id} has no accepted key ({state or 'none'})")
    started = _ask_started(opts, minion_id, timeout)
    _claim_start(opts, engine, minion_id, started)
    last, last_at = _last_onboarding(engine, minion_id)
    if last is not None and started <= last:
        raise OnboardRefused(
            f"{minion_id} says its salt-minion started at {_iso(started)}, not after its last "
            f"onboarding (started {_iso(last)})"
        )
    if last is None and last_at is not None and started <= last_at.timestamp():
        raise OnboardRefused(
            f"{minion_id} says its salt-minion started at {_iso(started)}, before its last "
            f"onboarding at {last_at.isoformat()}"
        )
    return started


def _claim_start(opts: dict, engine, minion_id: str, started: float) -> None:
    """Claim the onboarding of ``minion_id`` for the start it reported, for the whole fleet;
    :class:`OnboardClaimed` when another master (or an earlier event) has it already."""
    token = start_token(started)
    with engine.begin() as conn:
        if store_claims.claim(conn, store_claims.ONBOARD, minion_id, master_id(opts), token):
            return
        holder = store_claims.holder(conn, store_claims.ONBOARD, minion_id)
    who = (holder or {}).get("master")
    if who and who == master_id(opts):
        return  # this master's own claim: its last onboarding decides (a replayed event)
    who = who or "another master"
    raise OnboardClaimed(
        f"{minion_id} started at {_iso(started)}: onboarded by {who} for this start", holder
    )


def _iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.timezone.utc).isoformat(timespec="seconds")


#: :func:`_wait_answer` found no answer within its timeout.
NO_ANSWER = object()


def _publish(client, minion_id: str, fun: str, kwarg: dict | None = None, args=()) -> str:
    """Publish ``fun`` to the node alone (by list); its jid. :class:`OnboardRefused` when the
    job could not be published."""
    jid = client.cmd_async([minion_id], fun, list(args), kwarg=kwarg or {}, tgt_type="list")
    if not jid:
        raise OnboardRefused(f"could not ask {minion_id} for {fun} (no job published)")
    return jid


def _wait_connected(
    opts: dict, client, jid: str, minion_id: str, timeout: float, none_is_answer: bool = False
) -> Any:
    """:func:`_wait_answer` for ``timeout`` seconds, then again, ``timeout`` at a time and up
    to :data:`CONFIRM_CONNECTED_MAX` in all, while this master sees the node connected: a
    node that is up but busy is waited for (the same job: no job more), one that is gone is
    not."""
    began = time.monotonic()
    answer = _wait_answer(client, jid, minion_id, timeout, none_is_answer)
    while answer is NO_ANSWER and time.monotonic() - began + timeout <= max(
        CONFIRM_CONNECTED_MAX, timeout
    ):
        try:
            connected = minion_id in connected_ids(opts)
        except (SaltException, OSError, KeyError):
            connected = False
        if not connected:
            break
        log.info("fleet: %s is connected but busy; still waiting for job %s", minion_id, jid)
        answer = _wait_answer(client, jid, minion_id, timeout, none_is_answer)
    return answer


def _wait_answer(
    client, jid: str, minion_id: str, timeout: float, none_is_answer: bool = False
) -> Any:
    """The node's own answer to job ``jid``, read from the master's job cache, where Salt
    files a return under the minion id it authenticated (an answer on the event bus could be
    a forged ``salt/job/<jid>/ret/<id>`` event of another minion). :data:`NO_ANSWER` when
    none came within ``timeout`` seconds; a ``None`` return counts only with
    ``none_is_answer`` (``beacons.list`` answers None for "no beacons")."""
    deadline = time.monotonic() + timeout
    while True:
        record = client.get_cache_returns(jid).get(minion_id)
        if isinstance(record, dict) and (
            record.get("ret") is not None or (none_is_answer and "ret" in record)
        ):
            return record.get("ret")
        if time.monotonic() >= deadline:
            return NO_ANSWER
        time.sleep(0.5)


def _ask_started(opts: dict, minion_id: str, timeout: float) -> float:
    """The node's own answer to ``fleet.started`` (:func:`_wait_answer`): within
    ``timeout`` seconds, or longer (up to :data:`CONFIRM_CONNECTED_MAX` in all, ``timeout``
    at a time) while this master sees the node connected."""
    began = time.monotonic()
    with _client(opts) as client:
        jid = _publish(client, minion_id, "fleet.started")
        answer = _wait_connected(opts, client, jid, minion_id, timeout)
    if answer is NO_ANSWER:
        waited = time.monotonic() - began
        raise OnboardRefused(f"{minion_id} did not say when it started within {waited:.0f} s")
    started = answer.get("started") if isinstance(answer, dict) else None
    if isinstance(started, bool) or not isinstance(started, (int, float)):
        raise OnboardRefused(f"{minion_id} answered fleet.started with {str(answer)[:200]!r}")
    return float(started)


def _last_onboarding(engine, minion_id: str) -> tuple[float | None, dt.datetime | None]:
    """(the node's start time recorded at its last onboarding, when that was)."""
    with engine.connect() as conn:
        at = conn.execute(select(Node.onboarded_at).where(Node.minion_id == minion_id)).scalar()
        details = conn.execute(
            select(AuditEvent.details)
            .where(AuditEvent.target == minion_id, AuditEvent.action == "node.onboard")
            .order_by(AuditEvent.id.desc())
            .limit(1)
        ).scalar()
    last = (details or {}).get("minion_started") if isinstance(details, dict) else None
    if isinstance(last, bool) or not isinstance(last, (int, float)):
        last = None
    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=dt.timezone.utc)
    return last, at


# -- salt/presence/change: a hint, confirmed by the master's connected ids -------------------------


def connected_ids(opts: dict) -> set[str]:
    """The ids Salt's master sees connected (``CkMinions.connected_ids``)."""
    return set(salt.utils.minions.CkMinions(opts).connected_ids())


def presence(
    engine,
    new: Any = None,
    lost: Any = None,
    connected: set[str] | None = None,
    opts: dict | None = None,
    master: str | None = None,
) -> dict[str, Any]:
    """``salt/presence/change``: mark ``new`` nodes online and ``lost`` ones offline (invalid
    ids are skipped). With ``connected`` (the master's connected ids), the event is only a
    hint: a node is marked online only if it is connected, offline only if it is not, and
    the other claims are logged and refused. With ``opts``, a lost node is also asked
    (``test.ping``, :data:`LOST_PING_SECONDS`): one that answers stays online (the master's
    connected ids miss a node whose grains it has not cached yet, right after it started).

    ``master`` (this master's id; default the id in ``opts``) reports its view to the store
    (:mod:`saltext_fleet.store.presence`): a node this master lost stays online while another
    master whose view is live sees it connected (``seen_elsewhere``). ``changed`` names the
    nodes whose status this call changed: of several masters hearing the same change, one."""

    def ids(value) -> list[str]:
        if not isinstance(value, (list, tuple)):
            return []
        return sorted({m for m in value if core_gate.is_minion_id(m)})

    me = master if master is not None else master_id(opts or {})
    online, offline = ids(new), ids(lost)
    refused: dict[str, list[str]] = {}
    if connected is not None:
        refused = {
            "new": [m for m in online if m not in connected],
            "lost": [m for m in offline if m in connected],
        }
        online = [m for m in online if m in connected]
        offline = [m for m in offline if m not in connected]
        with engine.connect() as conn:
            known = (
                set(
                    conn.execute(
                        select(Node.minion_id).where(Node.minion_id.in_(offline))
                    ).scalars()
                )
                if offline
                else set()
            )
        # an id that is not connected and not a node: nothing to mark
        offline = [m for m in offline if m in known]
    answered: list[str] = []
    if opts is not None and offline:
        answered = sorted(ping(opts, offline, LOST_PING_SECONDS))
        offline = [m for m in offline if m not in answered]
    with engine.begin() as conn:
        store_presence.report(conn, me, connected=online + answered, disconnected=offline)
        elsewhere = store_presence.seen_elsewhere(conn, offline, me)
        offline = [m for m in offline if m not in elsewhere]
        changed = {
            "online": store_presence.change_status(
                conn, online, "online", core_presence.REASON_CONNECTED
            )
            + store_presence.change_status(conn, answered, "online", core_presence.REASON_ANSWERED),
            "offline": store_presence.change_status(
                conn, offline, "offline", core_presence.REASON_DISCONNECTED
            ),
        }
        up = store_gate.set_status(conn, online, "online", reason=core_presence.REASON_CONNECTED)
        down = store_gate.set_status(
            conn, offline, "offline", reason=core_presence.REASON_DISCONNECTED
        )
        up += store_gate.set_status(conn, answered, "online", reason=core_presence.REASON_ANSWERED)
        if refused.get("new") or refused.get("lost"):
            store_audit.append(
                conn,
                "reactor",
                "presence.refuse",
                "presence",
                {k: v[:50] for k, v in refused.items() if v},
            )
    if refused.get("new") or refused.get("lost"):
        log.warning(
            "fleet: refused presence claims the master's connected ids contradict: "
            "new but not connected %s, lost but connected %s",
            refused["new"][:20],
            refused["lost"][:20],
        )
    if elsewhere:
        log.info(
            "fleet: %d nodes this master lost stay online: other masters see them (%s)",
            len(elsewhere),
            ", ".join(f"{m} by {'/'.join(by)}" for m, by in list(elsewhere.items())[:10]),
        )
    return {
        "online": up,
        "offline": down,
        "refused": refused,
        "seen_elsewhere": elsewhere,
        "changed": changed,
    }


#: Seconds a node the presence event says is lost has to answer a ping.
LOST_PING_SECONDS = 5


def ping(opts: dict, minion_ids: list[str], timeout: float) -> set[str]:
    """The ids among ``minion_ids`` that answer ``test.ping`` within ``timeout`` seconds."""
    # whole seconds: Salt's LocalClient takes any other timeout (a float) for its 120 s default
    wait = max(1, math.ceil(timeout))
    with _client(opts) as client:
        answers = client.cmd(list(minion_ids), "test.ping", tgt_type="list", timeout=wait)
    return {m for m in minion_ids if answers.get(m) is True}


def report_view(opts: dict, engine, accepted: list[str]) -> int | None:
    """Report this master's whole view to the store: which of the ``accepted`` nodes are
    connected to it (its connected ids). This keeps the master's view live for the fleet
    (:mod:`saltext_fleet.store.presence`) and corrects what its presence events missed.
    Returns how many views changed; None (logged) when the connected ids cannot be read."""
    try:
        connected = connected_ids(opts)
    except (SaltException, OSError, KeyError) as exc:
        log.warning("fleet: this master's presence view not reported: %s", exc)
        return None
    with engine.begin() as conn:
        return store_presence.report(
            conn,
            master_id(opts),
            connected=[m for m in accepted if m in connected],
            disconnected=[m for m in accepted if m not in connected],
            complete=True,
        )


def presence_check(opts: dict, engine, timeout: float = 10, window: float = 0) -> dict[str, Any]:
    """Ping every node whose key is accepted; those that answer are online, the others
    offline once they missed more than one check in a row (``missed_once``: one miss, the
    status holds; see :mod:`saltext_fleet.core.presence`). (Salt's ``presence_events`` tell nodes apart by address, which is not enough when
    several share one, behind NAT or on one host; this asks each node by id.) A node that
    does not answer this master is not counted as missing while another master whose view is
    live sees it connected (``seen_elsewhere``).

    With ``window`` (seconds; the snippet's schedule entry passes four fifths of its
    period), several masters sharing the store do one check per window for the fleet: a
    master that finds a check younger than that claimed (by any master) returns
    ``{"skipped": ...}``. 0, the default (an operator's run): check anyway. Every master
    reports its whole presence view first (:func:`report_view`), whether it checks or not."""
    window = float(window or 0)
    me = master_id(opts)
    states = master_keys.salt_states(master_keys.salt_key(opts))
    accepted = sorted(m for m, state in states.items() if state == "accepted")
    report_view(opts, engine, accepted)
    if window > 0:
        with engine.begin() as conn:
            won = store_claims.claim(conn, store_claims.PRESENCE_CHECK, "fleet", me, min_age=window)
            holder = (
                None if won else store_claims.holder(conn, store_claims.PRESENCE_CHECK, "fleet")
            )
        if not won:
            at = holder["claimed_at"].isoformat() if holder else None
            who = holder["master"] if holder else None
            return {
                "skipped": f"checked by {who or 'another master'} at {at} (window {window:g} s)",
                "by": who,
            }
    if not accepted:
        return {"online": [], "offline": [], "missed_once": []}
    answering = ping(opts, accepted, timeout)
    online = [m for m in accepted if m in answering]
    missed = [m for m in accepted if m not in answering]
    with engine.begin() as conn:
        # a node that did not answer this master but that another master sees connected
        # (a network split, this master's connection lost): not a miss for the fleet
        elsewhere = store_presence.seen_elsewhere(conn, missed, me) if missed else {}
        missed = [m for m in missed if m not in elsewhere]
        out = store_gate.record_presence_check(conn, online, missed)
    if elsewhere:
        out["seen_elsewhere"] = elsewhere
    return out
