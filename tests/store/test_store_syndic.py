"""A master of masters with a syndic below it, in each backend: a return carried by a syndic
is stored once (also when the syndic's own master shares the store and stored it first),
attributed to the syndic that announced its minion for the job, and a minion cannot lie its
way into another carrier or another node's serving master."""

import uuid

from sqlalchemy import select

from saltext_fleet.core import carriers as core_carriers
from saltext_fleet.store import batch
from saltext_fleet.store import carriers as store_carriers
from saltext_fleet.store.drift import node_rows
from saltext_fleet.store.models import JobCarrier, Node, Return
from tests.support.store import count, write

JID = "20261205220000000001"
MOM, SYNDIC, SYNDIC_MASTER = "mom", "syndic-a", "syndic-a_master"


def ret(minion="leaf-1", jid=JID, value="hi", **extra):
    """A return load as a job cache gets it."""
    return {
        "id": minion,
        "jid": jid,
        "fun": "test.echo",
        "fun_args": [value],
        "return": value,
        "retcode": 0,
        "success": True,
        **extra,
    }


def stored(master, load):
    """The record a master's returner spools for a return it was handed."""
    return {"kind": "return", "ret": load, "master_id": master, "rid": batch.return_rid(load)}


def announced(sender, minions, jid=JID, master=MOM, own=()):
    """The record a master's ``save_minions(jid, minions, syndic_id=sender)`` spools."""
    return {
        "kind": "minions",
        "rid": uuid.uuid4().hex,
        "jid": jid,
        "minions": list(minions),
        "syndic_id": sender,
        "master_id": master,
        "claims": core_carriers.claimed_minions(sender, minions, own),
    }


def served(engine, minion):
    with engine.connect() as conn:
        return store_carriers.served(conn, [minion])[minion]


def carrier(engine, minion, jid=JID):
    with engine.connect() as conn:
        return store_carriers.carriers_of(conn, [(jid, minion)]).get((jid, minion))


def test_a_syndic_return_is_stored_once_and_attributed(engine):
    # The MoM hears the syndic's announcement (salt/job/<jid>/new) and then the return it
    # carried (Salt adds the publishing master's master_id to it).
    write(engine, [announced(SYNDIC, ["leaf-1"])])
    write(engine, [stored(MOM, ret(master_id=MOM, out="nested"))])
    write(engine, [stored(MOM, ret(master_id=MOM, out="nested"))])  # a retry: same return
    assert count(engine, Return) == 1
    with engine.connect() as conn:
        assert conn.execute(select(Return.master_id)).scalar_one() == MOM
    assert carrier(engine, "leaf-1") == {
        "syndic": SYNDIC,
        "via": MOM,
        "claimants": [SYNDIC],
        "disputed": False,
    }
    assert served(engine, "leaf-1") == {
        "master": MOM,
        "syndic": SYNDIC,
        "via": MOM,
        "claimants": [SYNDIC],
        "disputed": False,
    }
    (row,) = [r for r in node_rows(engine) if r["minion_id"] == "leaf-1"]
    assert row["served"]["syndic"] == SYNDIC


def test_shared_store_the_syndic_masters_row_is_the_moms_row(engine):
    # The syndic's own master stores the return it heard directly (with its own bus stamp)
    # before the MoM gets it from the syndic: one row, heard by the syndic's master, and
    # still carried by the syndic to the MoM. The return came before the announcement.
    write(engine, [stored(SYNDIC_MASTER, ret(_stamp="2026-12-05T22:00:00.1", master_id=MOM))])
    write(engine, [stored(MOM, ret(master_id=MOM))])
    write(engine, [announced(SYNDIC, ["leaf-1"])])
    assert count(engine, Return) == 1
    assert served(engine, "leaf-1") == {
        "master": SYNDIC_MASTER,
        "syndic": SYNDIC,
        "via": MOM,
        "claimants": [SYNDIC],
        "disputed": False,
    }


def test_a_direct_node_is_served_by_its_master(engine):
    write(engine, [stored(MOM, ret(minion="direct-1"))])
    assert served(engine, "direct-1") == {
        "master": MOM,
        "syndic": None,
        "via": None,
        "claimants": [],
        "disputed": False,
    }
    assert carrier(engine, "direct-1") is None


def test_fields_of_a_return_never_name_the_carrier_or_the_master(engine):
    # A minion below the syndic writes carrier-looking fields into its return.
    lies = {"master_id": "evil", "syndic_id": "evil", "__master_id__": "evil", "via": "evil"}
    write(engine, [announced(SYNDIC, ["leaf-1"])])
    write(engine, [stored(MOM, ret(**lies))])
    assert served(engine, "leaf-1")["syndic"] == SYNDIC
    assert served(engine, "leaf-1")["master"] == MOM
    with engine.connect() as conn:
        assert conn.execute(select(Return.master_id)).scalar_one() == MOM
        assert conn.execute(select(Node.heard_by)).scalar_one() == MOM


def test_another_sender_cannot_take_over_a_node(engine):
    # "liar" holds an accepted key on the MoM (any key may announce minions: Salt does not
    # tell syndics from minions) and claims the syndic's node for the same job.
    write(engine, [announced(SYNDIC, ["leaf-1"])])
    write(engine, [stored(MOM, ret())])
    write(engine, [announced("liar", ["leaf-1"])])
    assert carrier(engine, "leaf-1") == {
        "syndic": None,
        "via": None,
        "claimants": ["liar", SYNDIC],
        "disputed": True,
    }
    assert served(engine, "leaf-1")["syndic"] is None
    assert served(engine, "leaf-1")["disputed"] is True


def test_a_sender_cannot_claim_the_masters_own_minions_or_itself(engine):
    # The MoM holds the keys of "direct-1" and "liar": claims about them are dropped before
    # they are spooled (the returner passes the accepted keys as ``own``).
    write(engine, [stored(MOM, ret(minion="direct-1")), stored(MOM, ret(minion="liar"))])
    write(engine, [announced("liar", ["direct-1", "liar"], own={"direct-1", "liar", SYNDIC})])
    assert count(engine, JobCarrier) == 0
    assert served(engine, "direct-1")["syndic"] is None
    assert served(engine, "liar")["syndic"] is None
    # ...and even a record that names them (a spool written by an older release) is refused
    # for the sender itself
    write(engine, [{**announced("liar", []), "claims": ["liar"]}])
    assert count(engine, JobCarrier) == 0


def test_the_latest_announced_job_decides_the_serving_syndic(engine):
    later = "20261205230000000001"
    write(engine, [announced(SYNDIC, ["leaf-1"]), announced("syndic-b", ["leaf-1"], jid=later)])
    assert served(engine, "leaf-1")["syndic"] == "syndic-b"


def test_a_bad_announcement_is_quarantined_not_lost(engine):
    result = write(engine, [{**announced(SYNDIC, ["leaf-1"]), "syndic_id": 42}])
    assert result.quarantined == 1
    assert count(engine, JobCarrier) == 0
