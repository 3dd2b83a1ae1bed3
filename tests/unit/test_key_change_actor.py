"""Who the audit chain names: a runner's user (never UNKNOWN), and ``salt/key`` events handed
to the gate's recorder (a minion's lookalike is refused)."""

from __future__ import annotations

import logging
import queue

import pytest
import salt.utils.user

from saltext_fleet.modules import fleet_gate
from saltext_fleet.runners import fleet as fleet_runner


def test_runner_actor_names_the_real_user(monkeypatch):
    assert fleet_runner.actor_for("alice") == "user:alice"
    assert fleet_runner.actor_for("ui:bob") == "ui:bob"
    assert fleet_runner.actor_for("Reactor") == "reactor"
    assert fleet_runner.actor_for("sudo_carol") == "user:carol (sudo)"
    assert fleet_runner.actor_for("eve\x1b[2J") == "user:eve"
    monkeypatch.setattr(salt.utils.user, "get_specific_user", lambda: "sudo_dave")
    for unknown in (None, "", "UNKNOWN"):
        assert fleet_runner.actor_for(unknown) == "user:dave (sudo)"
    monkeypatch.setattr(salt.utils.user, "get_specific_user", lambda: "frank")
    monkeypatch.setitem(fleet_runner.__dict__, "__user__", "UNKNOWN")
    assert fleet_runner._actor() == "user:frank"


@pytest.fixture
def recorder_queue(monkeypatch):
    handed = queue.Queue()
    monkeypatch.setattr(fleet_gate, "_STATE", {"key_changes": handed})
    return handed


def test_salt_key_events_are_handed_to_the_recorder(recorder_queue):
    assert (
        fleet_gate.key_changed({"result": True, "act": "accepted", "id": "web1", "_stamp": "x"})
        is False
    )
    assert recorder_queue.get_nowait() == ("web1", "accepted")
    assert fleet_gate.key_changed({"result": True, "act": "delete", "id": "web1"}) is False
    assert recorder_queue.get_nowait() == ("web1", "delete")
    for junk in (
        None,
        [],
        {"act": "accepted"},
        {"act": 3, "id": "web1"},
        {"id": "../x", "act": "delete"},
    ):
        assert fleet_gate.key_changed(junk) is False
    assert recorder_queue.empty()


def test_a_minion_fired_salt_key_lookalike_is_refused(recorder_queue, caplog):
    # What event.fire_master puts on the bus for tag salt/key (the whole load, preload merged)
    load = {"id": "evil-minion", "tag": "salt/key", "data": {}, "cmd": "_minion_event",
            "act": "accepted", "result": True}  # fmt: skip
    with caplog.at_level(logging.WARNING):
        assert fleet_gate.key_changed(load) is False
    assert recorder_queue.empty()
    assert "'evil-minion'" in caplog.text and "fired by minion" in caplog.text
