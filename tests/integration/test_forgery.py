"""A minion speaks only for itself: minion Y forges events about minion X.

A real master, X (``salt_minion``) and Y (``salt_minion_2``). Y fires each forgery twice:
with ``event.fire_master`` (a single event: the master fires the whole load, whose ``id`` Salt
authenticated, Y) and in an ``events`` batch sent over Salt's own request channel with Y's
key (each event fired exactly as Y wrote it, no sender id). Whatever Y claims, X's
inventory, facts, drift, online state, schedule and audit trail stay as they were, and the
attempts are visible to an operator.

Absence is never proved by waiting alone: each test waits for a positive control (the
refusal being recorded, a reaction fired after the forgeries, the forged event stored).
"""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import func, select

from saltext_fleet import config
from saltext_fleet.store import engine as store_engine
from saltext_fleet.store.models import (
    AuditEvent,
    DriftHistory,
    Event,
    InventorySnapshot,
    Node,
    NodeInventory,
    Return,
)
from tests.support.forge import reactor_caught_up, send_batch
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

FORGED_PACKAGE = "forged-by-y"


@pytest.fixture(scope="module")
def store(salt_master):
    engine = store_engine.get_engine(config.load(salt_master.config).db_url)
    store_engine.ensure_schema(engine)
    return engine


NODE_FIELDS = (
    "inventory_digest",
    "facts",
    "grains",
    "pending_states",
    "status",
    "onboarded_at",
    "node_group",
)


def _node(store, minion_id):
    with store.connect() as conn:
        row = conn.execute(
            select(*(getattr(Node, f) for f in NODE_FIELDS)).where(Node.minion_id == minion_id)
        ).first()
    return dict(zip(NODE_FIELDS, row, strict=True)) if row is not None else None


def _audit(store, minion_id, after_id=0):
    with store.connect() as conn:
        rows = conn.execute(
            select(AuditEvent.id, AuditEvent.action, AuditEvent.details)
            .where(AuditEvent.target == minion_id, AuditEvent.id > after_id)
            .order_by(AuditEvent.id)
        ).all()
    return [{"id": r.id, "action": r.action, "details": r.details} for r in rows]


def _last_audit_id(store):
    with store.connect() as conn:
        return conn.execute(select(func.max(AuditEvent.id))).scalar() or 0


def _counts(store, minion_id):
    with store.connect() as conn:
        return {
            "drift": conn.execute(
                select(func.count()).where(DriftHistory.minion_id == minion_id)
            ).scalar(),
            "inventories": conn.execute(
                select(func.count()).where(NodeInventory.minion_id == minion_id)
            ).scalar(),
        }


def _schedule(salt_cli, minion_id):
    ret = salt_cli.run("schedule.list", "return_yaml=False", minion_tgt=minion_id, _timeout=60)
    assert ret.returncode == 0, ret
    return ret.data


@pytest.fixture(scope="module")
def x_before(salt_master, salt_minion, salt_minion_2, salt_cli, store):
    """X as the master knows it once it is set up (onboarded, online, inventory stored)."""
    for minion in (salt_minion, salt_minion_2):
        wait_for(
            f"{minion.id} to be onboarded",
            lambda m=minion: any(e["action"] == "node.onboard" for e in _audit(store, m.id)),
            timeout=120,
        )
    wait_for(
        "X's first inventory in the store",
        lambda: (_node(store, salt_minion.id) or {}).get("inventory_digest"),
        timeout=120,
    )
    return True


def _snapshot(store, salt_cli, minion_id):
    return {
        "node": _node(store, minion_id),
        "counts": _counts(store, minion_id),
        "schedule": _schedule(salt_cli, minion_id),
    }


def _fire_from(salt_cli, minion, tag, data):
    """Minion ``minion`` fires ``tag`` with ``event.fire_master`` (a single event)."""
    arg = data if isinstance(data, str) else json.dumps(data)
    ret = salt_cli.run("event.fire_master", arg, tag, minion_tgt=minion.id, _timeout=60)
    assert ret.returncode == 0 and ret.data is True, ret


def _assert_x_unchanged(store, salt_cli, minion_id, before, after_audit_id):
    after = _snapshot(store, salt_cli, minion_id)
    assert after["node"] == before["node"]
    assert after["counts"] == before["counts"]
    assert after["schedule"] == before["schedule"]
    # X's audit trail: nothing but the refusals that make the attempt visible
    added = [e["action"] for e in _audit(store, minion_id, after_audit_id)]
    assert set(added) <= {"node.onboard.refuse"}, added


def test_forged_start_events_do_not_onboard_another_node(
    salt_master, salt_minion, salt_minion_2, salt_cli, event_listener, store, x_before
):
    x, y = salt_minion, salt_minion_2
    before = _snapshot(store, salt_cli, x.id)
    mark = _last_audit_id(store)
    tag = f"salt/minion/{x.id}/start"
    # a single event: the master fires it with id Y (Salt's authenticated sender)
    _fire_from(salt_cli, y, tag, f"Minion {x.id} started")
    # a batch: copies of what the real start event looks like, with X's id in it, and one
    # without an id at all
    real_like = {
        "id": x.id,
        "cmd": "_minion_event",
        "pretag": None,
        "tag": tag,
        "data": f"Minion {x.id} started at {time.asctime()}",
    }
    send_batch(y, [{"tag": tag, "data": real_like}, {"tag": tag, "data": {"data": "hi"}}])
    reactor_caught_up(salt_master, event_listener)

    def refusals():
        found = [e for e in _audit(store, x.id, mark) if e["action"] == "node.onboard.refuse"]
        senders = {e["details"].get("sender") for e in found}
        return found if {y.id, x.id} <= senders else None

    # visible to an operator: one refusal naming Y (the single event), one for the batch
    # copy that names X (X itself said it did not restart); the event without an id is
    # refused too, but refusals of claims about X are recorded once a minute at most,
    # whatever sender they name, so it adds no row
    found = wait_for("the two refusals in X's audit trail", refusals, timeout=120)
    by_sender = {e["details"]["sender"]: e["details"] for e in found}
    assert by_sender[y.id]["claimed_id"] == x.id and y.id in by_sender[y.id]["reason"]
    assert "not after its last onboarding" in by_sender[x.id]["reason"]
    assert sorted(e["details"]["sender"] for e in found) == sorted([x.id, y.id])
    _assert_x_unchanged(store, salt_cli, x.id, before, mark)
    assert not [e for e in _audit(store, x.id, mark) if e["action"] == "node.onboard"]


def test_a_forged_presence_change_does_not_take_another_node_offline(
    salt_master, salt_minion, salt_minion_2, salt_cli, event_listener, store, x_before
):
    x, y = salt_minion, salt_minion_2
    before = _snapshot(store, salt_cli, x.id)
    assert before["node"]["status"] == "online"
    mark = _last_audit_id(store)
    claim = {"new": [], "lost": [x.id]}
    _fire_from(salt_cli, y, "salt/presence/change", claim)
    send_batch(y, [{"tag": "salt/presence/change", "data": claim}])
    reactor_caught_up(salt_master, event_listener)

    def refused():
        with store.connect() as conn:
            rows = conn.execute(
                select(AuditEvent.details).where(
                    AuditEvent.id > mark, AuditEvent.action == "presence.refuse"
                )
            ).scalars()
            return [d for d in rows if x.id in (d.get("lost") or [])]

    wait_for("the refused presence claim in the audit trail", refused, timeout=120)
    _assert_x_unchanged(store, salt_cli, x.id, before, mark)


def test_forged_pkgset_hints_run_one_inventory_per_minute(
    salt_master, salt_minion, salt_minion_2, salt_cli, event_listener, store, x_before
):
    x, y = salt_minion, salt_minion_2
    before = _snapshot(store, salt_cli, x.id)
    mark = _last_audit_id(store)
    start = time.time()
    claim = {"id": x.id, "digest": "0" * 64, "previous": "1" * 64, "counts": {"pypi": 1}}
    # a single event names Y itself (Salt's sender id): Y may ask for its own inventory
    _fire_from(salt_cli, y, "fleet/pkgset/changed", claim)
    # a batch naming X, five times over
    send_batch(y, [{"tag": "fleet/pkgset/changed", "data": claim} for _ in range(5)])
    reactor_caught_up(salt_master, event_listener)

    def inventory_jobs(minion_id):
        return [
            e
            for e in event_listener.get_events(
                [(salt_master.id, "salt/job/*/new")], after_time=start
            )
            if e.data.get("fun") == "fleet.inventory" and e.data.get("minions") == [minion_id]
        ]

    # the positive control: Y's own hint was acted on (an inventory job on Y)
    wait_for("the inventory job on Y", lambda: inventory_jobs(y.id), timeout=120)
    # X: one inventory at most for five hints within the minute
    jobs_x = inventory_jobs(x.id)
    assert len(jobs_x) <= 1, [e.tag for e in jobs_x]
    # X answers for itself: its inventory is its own, whatever the hint claimed
    if jobs_x:
        jid = jobs_x[0].data["jid"]

        def returned():
            with store.connect() as conn:
                return conn.execute(
                    select(func.count()).where(Return.jid == jid, Return.minion_id == x.id)
                ).scalar()

        wait_for("X's inventory return in the job cache", returned, timeout=120)
    assert len(inventory_jobs(x.id)) <= 1
    _assert_x_unchanged(store, salt_cli, x.id, before, mark)


def test_a_forged_job_return_does_not_change_another_nodes_data(
    salt_master, salt_minion, salt_minion_2, salt_cli, store, x_before
):
    x, y = salt_minion, salt_minion_2
    before = _snapshot(store, salt_cli, x.id)
    mark = _last_audit_id(store)
    now = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    jids = [f"{now}{n:06d}" for n in (111111, 222222)]
    fake = {
        "packages": {"pypi": {FORGED_PACKAGE: "6.6.6"}, "deb": {"openssl": "0.0.1-forged"}},
        "sources": {},
        "facts": {"os": "Forged", "osrelease": "1"},
        "digest": "f" * 64,
        "errors": [],
    }

    def ret(jid, minion_id):
        return {
            "id": minion_id,
            "jid": jid,
            "fun": "fleet.inventory",
            "fun_args": [],
            "return": fake,
            "retcode": 0,
            "success": True,
            "cmd": "_return",
            "_stamp": "2026-12-05T00:00:00.000000",
        }

    _fire_from(salt_cli, y, f"salt/job/{jids[0]}/ret/{x.id}", ret(jids[0], x.id))
    send_batch(y, [{"tag": f"salt/job/{jids[1]}/ret/{x.id}", "data": ret(jids[1], x.id)}])

    def stored():
        with store.connect() as conn:
            tags = set(
                conn.execute(
                    select(Event.tag).where(
                        Event.tag.in_([f"salt/job/{j}/ret/{x.id}" for j in jids])
                    )
                ).scalars()
            )
        return len(tags) == 2

    # the positive control: both forged events reached the event store (as events)
    wait_for("the forged return events in the event store", stored, timeout=120)
    _assert_x_unchanged(store, salt_cli, x.id, before, mark)
    with store.connect() as conn:
        snapshots = conn.execute(select(InventorySnapshot.packages)).scalars().all()
    assert not [p for p in snapshots if FORGED_PACKAGE in str(p)]
