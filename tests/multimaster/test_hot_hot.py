"""Two hot-hot masters (one master key pair) on one PostgreSQL store, one minion connected to
both (``master: [m1, m2]``).

Salt's minion sends every return to each master it is connected to, and fires its start event
to each: both masters hear everything. The store must still hold each return once and the node
must be onboarded once for the fleet.
"""

import os

import pytest
from sqlalchemy import func, select

from saltext_fleet.store import claims as store_claims
from saltext_fleet.store.models import AuditEvent, Claim, Event, NodeInventory, Return
from saltext_fleet.store.spool import spool_status
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


def _heard_by(store, tag: str) -> set[str]:
    """The masters whose event bus carried ``tag`` (stored by their ``event_return``)."""
    with store.connect() as conn:
        return set(conn.execute(select(Event.master_id).where(Event.tag == tag)).scalars())


def _spooled(master) -> int:
    return spool_status(os.path.join(master.config["cachedir"], "fleet", "spool"))["depth"]


def _runner_returns(store, fun: str) -> dict[str, object]:
    """``{master id: return}`` of the runner jobs ``fun`` that the masters' reactors ran."""
    with store.connect() as conn:
        rows = conn.execute(
            select(Event.master_id, Event.data).where(Event.tag.like("salt/run/%/ret"))
        ).all()
    return {
        master: data.get("return")
        for master, data in rows
        if isinstance(data, dict) and data.get("fun") == f"runner.{fun}"
    }


def _echo_jid(store, minion_id: str, text: str) -> str | None:
    with store.connect() as conn:
        rows = conn.execute(
            select(Return.jid, Return.ret).where(
                Return.minion_id == minion_id, Return.fun == "test.echo"
            )
        ).all()
    return next((jid for jid, value in rows if value == text), None)


def test_each_return_is_stored_once_whichever_master_published(mm_masters, mm_minion, store):
    m1, m2 = mm_masters
    masters = {m1.id, m2.id}
    jids = {}
    for master in mm_masters:
        ret = master.salt_cli().run(
            "test.echo", f"from-{master.id}", minion_tgt=mm_minion.id, _timeout=60
        )
        assert ret.returncode == 0 and ret.data == f"from-{master.id}", ret
        jids[master.id] = wait_for(
            f"the return of {master.id}'s job in the store",
            lambda master=master: _echo_jid(store, mm_minion.id, f"from-{master.id}"),
        )
    for jid in jids.values():
        # both masters got the return (Salt's minion returns to every master)...
        tag = f"salt/job/{jid}/ret/{mm_minion.id}"
        wait_for(f"{tag} on both masters", lambda tag=tag: _heard_by(store, tag) == masters)
    # ...and both have written what they spooled
    wait_for("both masters' spools written", lambda: _spooled(m1) == _spooled(m2) == 0)
    with store.connect() as conn:
        for jid in jids.values():
            stored = conn.execute(
                select(func.count()).select_from(Return).where(Return.jid == jid)
            ).scalar_one()
            assert stored == 1, (jid, stored)
        # and no return of the minion is stored twice (the onboarding's jobs included)
        twice = conn.execute(
            select(Return.jid, func.count())
            .where(Return.minion_id == mm_minion.id)
            .group_by(Return.jid)
            .having(func.count() > 1)
        ).all()
        assert twice == []
    # jobs.lookup_jid on either master sees the job of the other
    for master in mm_masters:
        other = (m2 if master is m1 else m1).id
        found = master.salt_run_cli().run("jobs.lookup_jid", jids[other], _timeout=60)
        assert found.returncode == 0 and found.data == {mm_minion.id: f"from-{other}"}, found


def test_the_minion_is_onboarded_once_for_the_fleet(mm_masters, mm_minion, store):
    masters = {master.id for master in mm_masters}
    # Both masters heard the start and ran the reaction; one claimed the work.
    tag = f"salt/minion/{mm_minion.id}/start"
    wait_for(f"{tag} on both masters", lambda: _heard_by(store, tag) == masters)
    answers = wait_for(
        "fleet.node_started on both masters",
        lambda: (got := _runner_returns(store, "fleet.node_started")).keys() == masters and got,
        timeout=120,
    )
    results = sorted(answer["result"] for answer in answers.values())
    assert results == ["claimed", "onboarded"], answers
    onboarder = next(m for m, a in answers.items() if a["result"] == "onboarded")
    skipper = next(m for m, a in answers.items() if a["result"] == "claimed")
    assert answers[skipper]["by"] == onboarder
    with store.connect() as conn:
        onboards = conn.execute(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.target == mm_minion.id, AuditEvent.action == "node.onboard")
        ).scalar_one()
        refusals = conn.execute(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.target == mm_minion.id, AuditEvent.action == "node.onboard.refuse")
        ).scalar_one()
        claim = store_claims.holder(conn, store_claims.ONBOARD, mm_minion.id)
        claims = conn.execute(select(func.count()).select_from(Claim)).scalar_one()
    assert (onboards, refusals) == (1, 0)
    assert claim["master"] == onboarder and claims >= 1


def test_the_first_inventory_is_ingested_and_its_drift_recomputed_once(
    mm_masters, mm_minion, store
):
    m1, m2 = mm_masters
    masters = {m1.id, m2.id}
    # onboarding takes a first inventory: both masters get its return
    jid = wait_for(
        "the first inventory in the store",
        lambda: _jid_of(store, mm_minion.id, "fleet.inventory"),
        timeout=120,
    )
    tag = f"salt/job/{jid}/ret/{mm_minion.id}"
    wait_for(f"{tag} on both masters", lambda: _heard_by(store, tag) == masters)
    wait_for("both masters' spools written", lambda: _spooled(m1) == _spooled(m2) == 0)
    # ...one of them stored and ingested it, and recomputed the node's drift once
    wait_for("the drift recompute", lambda: _drift_runs(store, mm_minion.id))
    with store.connect() as conn:
        history = conn.execute(
            select(func.count())
            .select_from(NodeInventory)
            .where(NodeInventory.minion_id == mm_minion.id)
        ).scalar_one()
        stored = conn.execute(
            select(func.count()).select_from(Return).where(Return.jid == jid)
        ).scalar_one()
    assert (history, stored) == (1, 1)
    assert len(_drift_runs(store, mm_minion.id)) == 1


def _jid_of(store, minion_id: str, fun: str) -> str | None:
    with store.connect() as conn:
        return conn.execute(
            select(Return.jid).where(Return.minion_id == minion_id, Return.fun == fun).limit(1)
        ).scalar()


def _drift_runs(store, minion_id: str) -> list[str]:
    """The masters whose reactor ran ``fleet.drift_node`` for the node (one entry per run;
    an operator's ``salt-run``, as other tests of this package make, is not counted)."""
    with store.connect() as conn:
        rows = conn.execute(
            select(Event.master_id, Event.data).where(Event.tag.like("salt/run/%/new"))
        ).all()
    return [
        master
        for master, data in rows
        if isinstance(data, dict)
        and data.get("fun") == "runner.fleet.drift_node"
        and data.get("user") == "Reactor"
        and minion_id in str(data.get("fun_args"))
    ]
