"""Reactor work once for the fleet on two real hot-hot masters (one store, one minion on both):
a drift alert's crossing is fired by one master however many compute it, and a minion lying
about presence (``salt/presence/change`` naming itself lost and a node that does not exist)
changes nothing on either master."""

import os

import pytest
from saltfactories.utils import random_string
from sqlalchemy import delete, func, select

from saltext_fleet.core import baseline as core_baseline
from saltext_fleet.store import claims as store_claims
from saltext_fleet.store import drift as store_drift
from saltext_fleet.store import gate as store_gate
from saltext_fleet.store import presence as store_presence
from saltext_fleet.store.models import DriftCurrent, Event, Return
from saltext_fleet.store.spool import spool_status
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


def _drift_alerts(store, minion_id: str) -> list[str]:
    """The masters whose bus carried a ``fleet/alert/drift`` about the node (their
    ``event_return`` stores what each bus carried)."""
    with store.connect() as conn:
        rows = conn.execute(
            select(Event.master_id, Event.data).where(Event.tag == "fleet/alert/drift")
        ).all()
    return [m for m, data in rows if isinstance(data, dict) and data.get("id") == minion_id]


def _drained(masters) -> bool:
    spools = [os.path.join(m.config["cachedir"], "fleet", "spool") for m in masters]
    return all(spool_status(path)["depth"] == 0 for path in spools)


def _run_stored(store, master_id: str, fun: str) -> int:
    """How many ``salt/run/<jid>/ret`` of runner ``fun`` the master's bus carried."""
    with store.connect() as conn:
        rows = conn.execute(
            select(Event.data).where(Event.master_id == master_id, Event.tag.like("salt/run/%/ret"))
        ).scalars()
        return sum(1 for d in rows if isinstance(d, dict) and d.get("fun") == f"runner.{fun}")


def test_a_drift_crossing_is_alerted_once_for_the_fleet(mm_masters, mm_minion, store):
    m1, m2 = mm_masters
    wait_for(
        "the node's first inventory",
        lambda: _count(
            store, Return, Return.minion_id == mm_minion.id, Return.fun == "fleet.inventory"
        ),
        timeout=120,
    )
    # a baseline the node is far from: six packages it does not have (10 each, alert at 50)
    wanted = {f"fleet-absent-{n}": "1.0" for n in range(6)}
    spec = core_baseline.parse({"name": "mm-far", "packages": {"pypi": wanted}, "extras": False})
    store_drift.save_baseline(store, spec, "test")
    store_drift.assign(store, "mm-far", mm_minion.id, "list")
    ret = m1.salt_run_cli().run("fleet.drift_node", mm_minion.id, _timeout=60)
    assert ret.returncode == 0 and ret.data[mm_minion.id]["score"] >= 50, ret
    wait_for("m1's drift alert", lambda: _drift_alerts(store, mm_minion.id) == [m1.id])
    with store.connect() as conn:
        claim = store_claims.holder(conn, store_claims.ALERT_DRIFT, mm_minion.id)
    assert (claim["master"], claim["token"]) == (m1.id, "above:50")
    # m2 computes the same crossing (it read the node's drift before m1 wrote it: the race
    # two masters recomputing one node run into): the crossing is m1's, m2 fires nothing
    with store.begin() as conn:
        conn.execute(delete(DriftCurrent).where(DriftCurrent.minion_id == mm_minion.id))
    ran = _run_stored(store, m2.id, "fleet.drift_node")
    ret = m2.salt_run_cli().run("fleet.drift_node", mm_minion.id, _timeout=60)
    assert ret.returncode == 0 and ret.data[mm_minion.id]["score"] >= 50, ret
    wait_for(
        "m2's run stored",
        lambda: _run_stored(store, m2.id, "fleet.drift_node") > ran and _drained(mm_masters),
    )
    assert _drift_alerts(store, mm_minion.id) == [m1.id]
    store_drift.unassign(store, "mm-far")


def test_a_minion_lying_about_presence_changes_nothing(mm_masters, mm_minion, store):
    """``salt/presence/change`` fired by the minion, naming itself lost and a made-up node
    new: Salt files it as a minion event (the claims under ``data``, the sender's ``id`` on
    top), which the presence reaction does not take for the master's own; nothing changes."""
    ghost = random_string("mm-ghost-")
    ret = mm_minion.salt_call_cli().run(
        "event.send", "salt/presence/change", {"new": [ghost], "lost": [mm_minion.id]}
    )
    assert ret.returncode == 0, ret
    wait_for(
        "the forged event on a master's bus",
        lambda: _forged(store, ghost) and _drained(mm_masters),
        timeout=60,
    )
    with store.connect() as conn:
        assert store_gate.node_status(conn, ghost) is None
        assert store_gate.node_status(conn, mm_minion.id)["status"] == "online"
        # no master's view says the node went away, none has the made-up node
        assert all(v["connected"] for v in store_presence.views(conn, mm_minion.id))
        assert store_presence.views(conn, ghost) == []


def _forged(store, ghost: str) -> bool:
    with store.connect() as conn:
        rows = conn.execute(select(Event.data).where(Event.tag == "salt/presence/change")).scalars()
        return any(ghost in str(d) for d in rows)


def _count(store, model, *where) -> int:
    with store.connect() as conn:
        return conn.execute(select(func.count()).select_from(model).where(*where)).scalar_one()
