"""Reactor hints confirmed before acting (master/onboard.py), in each store: a start event
for another id is refused, a start is acted on only when the node says it restarted, and a
presence claim only when the master's connected ids agree."""

import datetime as dt

import pytest
from sqlalchemy import select

from saltext_fleet.master import keys as master_keys
from saltext_fleet.master import onboard as master_onboard
from saltext_fleet.store import audit as store_audit
from saltext_fleet.store import gate as store_gate
from saltext_fleet.store.models import AuditEvent


@pytest.fixture
def node(engine, monkeypatch):
    """Node x, accepted in Salt, onboarded once when its minion had started at t=1000."""
    answers = {"x": {"started": 1000.0, "pid": 7}}
    onboarded = []

    def fake_onboard(opts, engine_, minion_id, actor="reactor", started=None):
        onboarded.append((minion_id, started))
        with engine_.begin() as conn:
            store_gate.set_status(conn, [minion_id], "online", onboarded=True)
            store_audit.append(conn, actor, "node.onboard", minion_id, {"minion_started": started})
        return {"id": minion_id}

    def fake_ask(opts, minion_id, timeout):
        if minion_id not in answers:
            raise master_onboard.OnboardRefused(f"{minion_id} did not say when it started")
        return answers[minion_id]["started"]

    monkeypatch.setattr(master_onboard, "onboard", fake_onboard)
    monkeypatch.setattr(master_onboard, "_ask_started", fake_ask)
    monkeypatch.setattr(master_keys, "salt_key", lambda opts: None)
    monkeypatch.setattr(
        master_keys, "salt_state", lambda key, m: {"x": "accepted", "y": "accepted"}.get(m)
    )
    fake_onboard({}, engine, "x", started=1000.0)
    onboarded.clear()
    return answers, onboarded


def refusals(engine):
    with engine.connect() as conn:
        return conn.execute(
            select(AuditEvent.target, AuditEvent.details)
            .where(AuditEvent.action == "node.onboard.refuse")
            .order_by(AuditEvent.id)
        ).all()


def test_a_start_event_sent_by_another_minion_is_refused_at_once(engine, node, caplog):
    answers, onboarded = node
    answers["x"]["started"] = 5000.0  # even if x did restart: y cannot say so
    out = master_onboard.node_started({}, engine, "x", sender="y")
    assert out["result"] == "refused" and "'y'" in out["reason"]
    assert onboarded == []
    [(target, details)] = refusals(engine)
    assert target == "x" and details["sender"] == "y" and details["claimed_id"] == "x"
    assert "refused to onboard x" in caplog.text and "y" in caplog.text


def test_a_start_is_confirmed_by_the_node_itself(engine, node):
    answers, onboarded = node
    # the same process as at the last onboarding: no restart, refused
    out = master_onboard.node_started({}, engine, "x", sender="x")
    assert out["result"] == "refused" and "not after its last onboarding" in out["reason"]
    # no sender id at all (an events batch)
    assert master_onboard.node_started({}, engine, "x", sender=None)["result"] == "refused"
    assert onboarded == []
    # restarted: onboarded, with the new start time recorded for next time
    answers["x"]["started"] = 2000.0
    out = master_onboard.node_started({}, engine, "x", sender="x")
    assert out["result"] == "onboarded" and onboarded == [("x", 2000.0)]
    assert master_onboard._last_onboarding(engine, "x")[0] == 2000.0
    assert [d["sender"] for _t, d in refusals(engine)] == ["x", "None"]


def test_a_silent_or_unaccepted_node_is_not_onboarded(engine, node):
    _answers, onboarded = node
    assert "did not say" in master_onboard.node_started({}, engine, "y", sender="y")["reason"]
    assert "no accepted key" in master_onboard.node_started({}, engine, "z", sender="z")["reason"]
    bad = master_onboard.node_started({}, engine, "../x", sender="../x")
    assert bad["result"] == "refused" and onboarded == []


def test_a_node_onboarded_before_start_times_were_kept(engine, node, monkeypatch):
    answers, _onboarded = node
    with engine.begin() as conn:
        store_gate.set_status(conn, ["old"], "online", onboarded=True)
    monkeypatch.setattr(master_keys, "salt_state", lambda key, m: {"old": "accepted"}.get(m))
    answers["old"] = {"started": 1.0}
    assert master_onboard.node_started({}, engine, "old", sender="old")["result"] == "refused"
    answers["old"] = {"started": dt.datetime.now(dt.timezone.utc).timestamp() + 60}
    assert master_onboard.node_started({}, engine, "old", sender="old")["result"] == "onboarded"


def test_presence_claims_are_checked_against_the_connected_ids(engine):
    with engine.begin() as conn:
        store_gate.set_status(conn, ["x", "y", "gone"], "online")
    out = master_onboard.presence(
        engine,
        new=["y", "stranger"],
        lost=["x", "gone", "never-a-node"],
        connected={"x", "y"},
    )
    assert out["online"] == 1 and out["offline"] == 1
    assert out["refused"] == {"new": ["stranger"], "lost": ["x"]}
    with engine.connect() as conn:
        assert store_gate.node_status(conn, "x")["status"] == "online"
        assert store_gate.node_status(conn, "gone")["status"] == "offline"
        assert store_gate.node_status(conn, "stranger") is None
        assert store_gate.node_status(conn, "never-a-node") is None
        [details] = conn.execute(
            select(AuditEvent.details).where(AuditEvent.action == "presence.refuse")
        ).scalars()
    assert details == {"new": ["stranger"], "lost": ["x"]}
    # an operator's word (connected=None) is taken as it is
    master_onboard.presence(engine, lost=["x"])
    with engine.connect() as conn:
        assert store_gate.node_status(conn, "x")["status"] == "offline"
