"""The /api/ws event stream: kvmd's first message, state events, and HID events sent over it."""

from __future__ import annotations

import time

import pytest

from saltext_fleet.kvm.client import KvmClient
from saltext_fleet.kvm.errors import KvmAuthError, KvmError, KvmTimeoutError
from tests.kvm.conftest import options_for
from tests.support.fakekvmd import FakeKvmd


def _wait_events(fake, count, timeout=3.0):
    deadline = time.monotonic() + timeout
    while len(fake.hid_events) < count:
        assert time.monotonic() < deadline, f"only {fake.hid_events} reached the fake"
        time.sleep(0.02)
    return fake.hid_events


def test_first_message_is_loop_with_the_version_then_the_states(client, fake):
    with client.events() as events:
        assert events.loop.event_type == "loop"
        assert events.loop.event == {"version": {"major": 4, "minor": 197}}
        assert events.version == (4, 197)
        seen = []
        for event in events:
            seen.append(event.event_type)
            if event.event_type == "clients":
                break
    # kvmd's pollers push each subsystem's state in no fixed order.
    assert {"hid", "atx", "msd", "streamer", "info", "hid_keymaps"} <= set(seen)
    assert fake.seen("/api/ws")[0].params == {"stream": "0"}
    assert fake.seen("/api/ws")[0].user == "admin"


def test_keys_and_mouse_over_the_websocket_reach_the_device(client, fake):
    with client.events() as events:
        events.press_key("KeyH")
        events.send_key("ControlLeft", True)
        events.send_key("ControlLeft", False, finish=True)
        events.send_mouse_move(1200, -800)
        events.send_mouse_button("left", True)
        events.send_mouse_button("left", False)
        events.send_mouse_relative(5, -5)
        events.send_mouse_wheel(0, -1)
        # kvmd also takes the JSON form of the same events.
        events.send_json_event("key", {"key": "Enter", "state": True})
        got = _wait_events(fake, 10)
    assert got == [
        {"via": "ws-bin", "type": "key", "key": "KeyH", "state": True, "finish": False},
        {"via": "ws-bin", "type": "key", "key": "KeyH", "state": False, "finish": False},
        {"via": "ws-bin", "type": "key", "key": "ControlLeft", "state": True, "finish": False},
        {"via": "ws-bin", "type": "key", "key": "ControlLeft", "state": False, "finish": True},
        {"via": "ws-bin", "type": "mouse_move", "to_x": 1200, "to_y": -800},
        {"via": "ws-bin", "type": "mouse_button", "button": "left", "state": True},
        {"via": "ws-bin", "type": "mouse_button", "button": "left", "state": False},
        {"via": "ws-bin", "type": "mouse_relative", "deltas": [(5, -5)]},
        {"via": "ws-bin", "type": "mouse_wheel", "deltas": [(0, -1)]},
        {"via": "ws", "type": "key", "key": "Enter", "state": True, "finish": False},
    ]


def test_bad_hid_events_are_refused_before_sending(client, fake):
    """kvmd drops a malformed websocket event silently: the client says why instead."""
    with client.events() as events:
        with pytest.raises(KvmError, match=r"^kvm 127.0.0.1: /api/ws: 'KeyÄ' is not a kvmd key"):
            events.send_key("KeyÄ", True)
        with pytest.raises(KvmError, match="mouse x must be an integer from -32768 to 32767"):
            events.send_mouse_move(40000, 0)
        # What the device gets malformed it drops, like kvmd, without closing the session.
        events.send_json_event("key", {"key": "NoSuchKey", "state": True})
        events.press_key("KeyZ")
        got = _wait_events(fake, 2)
    assert [e["key"] for e in got] == ["KeyZ", "KeyZ"]


def test_ping_pong_and_pushed_atx_state(client, fake):
    with client.events() as events:
        events.ping()  # binary 0 -> binary 255, skipped by the iterator
        events.send_json_event("ping", {})
        assert events.wait_for("pong", timeout=3).event == {}
        client.atx_power("on")
        busy = events.wait_for("atx", timeout=3)
        while not busy.event["busy"]:
            busy = events.wait_for("atx", timeout=3)
        assert busy.event["acts"]["power"] is True
        done = events.wait_for("atx", timeout=3)
        assert done.event["busy"] is False and done.event["leds"]["power"] is True


def test_an_idle_stream_times_out_naming_the_device(client):
    with client.events(idle_timeout=0.3) as events:
        events.wait_for("clients")
        with pytest.raises(KvmTimeoutError) as err:
            events.next_event()
    assert str(err.value) == "kvm 127.0.0.1: /api/ws: no event within 0.3 s"


def test_the_websocket_needs_credentials(fake):
    with KvmClient(options_for(fake, auth="headers", password="nope")) as kvm:
        with pytest.raises(KvmAuthError) as err:
            kvm.events()
    assert str(err.value) == "kvm 127.0.0.1: GET /api/ws: HTTP 403 ForbiddenError: Forbidden"
    assert [(r.path, r.status) for r in fake.requests] == [("/api/ws", 403)]


def test_a_forgotten_session_is_renewed_for_the_websocket(fake):
    with KvmClient(options_for(fake)) as kvm:
        kvm.login()
        fake.sessions.clear()
        with kvm.events() as events:
            assert events.version == (4, 197)
    assert [(r.path, r.status) for r in fake.requests] == [
        ("/api/auth/login", 200),
        ("/api/ws", 403),
        ("/api/auth/login", 200),
        ("/api/ws", 101),
    ]


def test_older_kvmd_sends_an_empty_loop(certificate):
    with FakeKvmd(password="pw", loop_version=False, certificate=certificate) as old:
        with KvmClient(options_for(old, password="pw")) as kvm, kvm.events() as events:
            assert events.loop.event == {}
            assert events.version is None


def test_protocol_pings_are_answered_while_waiting(certificate):
    """kvmd's aiohttp server pings every ``heartbeat`` seconds and drops a client that does
    not answer; the client answers while it waits for events."""
    with FakeKvmd(password="pw", ws_heartbeat=0.2, certificate=certificate) as pinging:
        with KvmClient(options_for(pinging, password="pw")) as kvm, kvm.events() as events:
            events.wait_for("clients")
            with pytest.raises(KvmTimeoutError):
                events.next_event(timeout=1.0)  # five heartbeats go by, answered
            events.press_key("KeyP")
            assert _wait_events(pinging, 2)[0]["key"] == "KeyP"
            assert pinging.connected_ws() == 1
