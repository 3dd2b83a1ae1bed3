"""The live overview's hub: what wakes it (``fleet:ui:live_poll_seconds``)."""

from __future__ import annotations

import json
import threading
import time

import pytest

from saltext_fleet import config
from saltext_fleet.store import engine as store_engine
from saltext_fleet.webui.live import Hub, SocketSession
from tests.support.waiting import wait_for

OPTS = {"cachedir": "/var/cache/salt/master", "pki_dir": "/etc/salt/pki/master"}


def test_the_poll_interval_is_an_option_and_0_switches_it_off():
    assert config.load(OPTS).ui.live_poll_seconds == 10.0
    off = config.load({**OPTS, "fleet": {"ui": {"live_poll_seconds": 0}}})
    assert off.ui.live_poll_seconds == 0.0
    assert config.load({**OPTS, "fleet": {"ui": {"live_poll_seconds": 2.5}}}).ui.live_poll_seconds
    for bad in (-1, "10", True, 3601, None):
        with pytest.raises(config.FleetConfigError) as err:
            config.load({**OPTS, "fleet": {"ui": {"live_poll_seconds": bad}}})
        assert err.value.option == "fleet:ui:live_poll_seconds"
        assert "0 (off)" in str(err.value)


class RecordingEvent(threading.Event):
    """The hub's wake-up event, noting how long the looker is ready to wait each time."""

    def __init__(self):
        super().__init__()
        self.timeouts = []

    def wait(self, timeout=None):
        self.timeouts.append(timeout)
        return super().wait(timeout)


class Socket:
    def __init__(self):
        self.messages = []

    def write_message(self, text):
        self.messages.append(json.loads(text))


@pytest.mark.parametrize("poll, expected", [(0, None), (None, None), (7.5, 7.5)])
def test_with_the_poll_off_only_a_poke_wakes_the_hub(tmp_path, poll, expected):
    engine = store_engine.get_engine(f"sqlite:///{tmp_path / 'fleet.db'}")
    store_engine.ensure_schema(engine)
    hub = Hub(engine, schedule=lambda fn: fn(), idle_seconds=poll)
    hub._wake = RecordingEvent()
    socket = Socket()
    # A socket as the server's handler registers it after the session check (which
    # tests/store/test_webui_sessions.py covers): no guard thread here.
    with hub._lock:
        hub._sockets.add(socket)
        hub._sessions[socket] = SocketSession(1, 1, "sid", time.time() + 3600)
    looker = threading.Thread(target=hub.run_looker, kwargs={"min_interval": 0}, daemon=True)
    looker.start()
    try:
        wait_for("the looker to wait", lambda: hub._wake.timeouts, timeout=10)
        assert hub.looks == 0
        hub.poke()  # what an interesting event on the bus does
        wait_for("a look after the poke", lambda: hub.looks == 1, timeout=10)
        wait_for("the looker to wait again", lambda: len(hub._wake.timeouts) >= 2, timeout=10)
        # every wait of the looker: without a timeout when the poll is off
        assert set(hub._wake.timeouts) == {expected}
        assert socket.messages[-1]["type"] == "counts"
    finally:
        hub.stop()
        looker.join(10)
        store_engine.dispose_all()
    assert not looker.is_alive()


class ClosingSocket(Socket):
    def __init__(self):
        super().__init__()
        self.closed = None

    def close(self, code, reason):
        self.closed = (code, reason)


def test_a_watched_socket_gets_no_updates_but_closes_with_its_session(tmp_path, monkeypatch):
    """The KVM console's websocket and stream: the hub ends them with the session, and
    sends them none of the overview's messages."""
    engine = store_engine.get_engine(f"sqlite:///{tmp_path / 'fleet.db'}")
    store_engine.ensure_schema(engine)
    hub = Hub(engine, schedule=lambda fn: fn(), idle_seconds=None)
    overview, console = ClosingSocket(), ClosingSocket()
    session = SocketSession(1, 1, "sid-1", time.time() + 3600)
    # the cookie check (tests/store/test_webui_sessions.py covers it) finds this session
    monkeypatch.setattr(SocketSession, "of", classmethod(lambda cls, socket: session))
    try:
        hub.add(overview)
        hub.add(console, broadcast=False)
        assert len(hub) == 1  # only the overview's socket counts as a listener
        hub.look()
        assert overview.messages and console.messages == []
        hub.end_session("sid-1")
        assert console.closed == (4401, "session ended: log in again")
        assert overview.closed == (4401, "session ended: log in again")
        assert len(hub) == 0 and not hub._sessions
    finally:
        hub.stop()
        store_engine.dispose_all()
