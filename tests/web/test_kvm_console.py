"""The console through the engine's real web server (Tornado, no Salt daemon) and the fake
kvmd over HTTPS: the websocket bridge forwards an operator's checked events and refuses a
viewer's, the MJPEG stream re-sends the device's frames, a logout ends both within seconds,
and every session is audited with its start and end. (The browser's side is
test_kvm_console_browser.py.)"""

from __future__ import annotations

import asyncio
import json
import socket
import time

import aiohttp
import pytest

from saltext_fleet.kvm.console import BOUNDARY, MjpegSplitter
from saltext_fleet.store import users as store_users
from saltext_fleet.webui.console import Consoles, Refused
from tests.support.fakekvmd import FakeKvmd
from tests.support.kvmconsole import DEVICE, Session, console_audit, console_server
from tests.support.waiting import wait_for as _wait_for

pytestmark = pytest.mark.timeout(120)
WS = f"/kvm/{DEVICE}/console/ws"
STREAM = f"/kvm/{DEVICE}/console/stream"


@pytest.fixture(scope="module")
def fake_server():
    with FakeKvmd(password="console-pw", fps=25, ws_heartbeat=5) as fake:
        yield fake


@pytest.fixture
def fake(fake_server):
    with fake_server.fresh() as fake:
        yield fake


@pytest.fixture
def ui(tmp_path, fake):
    with console_server(tmp_path, fake) as served:
        yield served


async def ws_connect(http, ui, session: Session, origin: str | None = None):
    return await http.ws_connect(
        ui["url"] + WS,
        headers={"Cookie": session.cookie, "Origin": origin or ui["url"]},
    )


async def next_json(ws, timeout: float = 5.0, skip=("state",), states=None) -> dict:
    """The next message that is not a device state update (those go to ``states``)."""
    deadline = time.monotonic() + timeout
    while True:
        msg = await ws.receive(timeout=max(0.01, deadline - time.monotonic()))
        if msg.type != aiohttp.WSMsgType.TEXT:
            return {"closed": msg.type.name, "code": ws.close_code}
        doc = json.loads(msg.data)
        if doc.get("type") not in skip:
            return doc
        if states is not None:
            states.append(doc)


def wait_for(check, timeout: float, what: str):
    return _wait_for(what, check, timeout=timeout, interval=0.05)


def ends_of(ui) -> list[dict]:
    return [r for r in console_audit(ui["engine"]) if r["action"] == "kvm.console.end"]


def key_events(fake) -> list[tuple[str, bool]]:
    return [(e["key"], e["state"]) for e in fake.hid_events if e["type"] == "key"]


def test_an_operators_keys_reach_the_device_checked(ui, fake):
    session = Session(ui["port"]).login("oper")

    async def run():
        async with aiohttp.ClientSession() as http:
            ws = await ws_connect(http, ui, session)
            states = []
            ready = await next_json(ws, states=states)
            assert ready == {"type": "ready", "input": True, "device": DEVICE}
            for state in (True, False):
                await ws.send_str(
                    json.dumps({"event_type": "key", "event": {"key": "KeyA", "state": state}})
                )
            await ws.send_str(
                json.dumps({"event_type": "mouse_move", "event": {"to": {"x": 100, "y": -100}}})
            )
            await ws.send_str('{"event_type": "key", "event": {"key": "rm -rf /", "state": true}}')
            error = await next_json(ws, states=states)
            assert (
                error["type"] == "error" and "'rm -rf /' is not a kvmd key name" in error["error"]
            )
            await ws.send_str("{not json")
            assert "not JSON" in (await next_json(ws, states=states))["error"]
            # the device's state reaches the page, checked
            while not any("power" in s for s in states):
                states.append(await next_json(ws, skip=()))
            assert {"type": "state", "power": False} in states
            await ws.close()

    asyncio.run(run())
    wait_for(lambda: len(fake.hid_events) >= 3, timeout=5, what="the events at the fake")
    assert key_events(fake) == [("KeyA", True), ("KeyA", False)]
    moves = [e for e in fake.hid_events if e["type"] == "mouse_move"]
    assert moves == [{"via": "ws", "type": "mouse_move", "to_x": 100, "to_y": -100}]
    ws_seen = fake.seen("/api/ws")
    assert ws_seen and ws_seen[-1].user == "admin"  # the device's credentials, from the vault
    rows = wait_for(lambda: ends_of(ui), timeout=5, what="the audit's end row")
    end = rows[-1]
    assert end["actor"] == "ui:oper"
    assert end["details"]["via"] == "ws" and end["details"]["input"] is True
    assert end["details"]["role"] == "operator"
    assert end["details"]["forwarded"] == 3 and end["details"]["malformed"] == 2
    assert end["details"]["started"] <= end["details"]["ended"]
    start = [r for r in console_audit(ui["engine"]) if r["action"] == "kvm.console.start"]
    assert [r["details"]["session"] for r in start] == [end["details"]["session"]]


def test_a_viewer_watches_but_its_keys_never_reach_the_device(ui, fake):
    session = Session(ui["port"]).login("watcher")

    async def run():
        async with aiohttp.ClientSession() as http:
            ws = await ws_connect(http, ui, session)
            assert await next_json(ws) == {"type": "ready", "input": False, "device": DEVICE}
            await ws.send_str(
                json.dumps({"event_type": "key", "event": {"key": "KeyB", "state": True}})
            )
            refused = await next_json(ws)
            assert refused["type"] == "refused"
            assert "your role (viewer) may watch this console but not type" in refused["error"]
            await ws.send_str(
                json.dumps(
                    {"event_type": "mouse_button", "event": {"button": "left", "state": True}}
                )
            )
            assert (await next_json(ws))["type"] == "refused"
            await ws.send_str('{"event_type": "ping", "event": {}}')
            assert (await next_json(ws)) == {"type": "pong"}
            # the video is the viewer's
            async with http.get(ui["url"] + STREAM, headers={"Cookie": session.cookie}) as resp:
                assert resp.status == 200
                assert (
                    resp.headers["Content-Type"]
                    == f"multipart/x-mixed-replace; boundary={BOUNDARY}"
                )
                splitter = MjpegSplitter("test", b"--" + BOUNDARY.encode())
                frames = []
                while len(frames) < 5:
                    frames += splitter.feed(await resp.content.readany())
            await ws.close()
            return frames

    frames = asyncio.run(run())
    assert len({bytes(f) for f in frames}) >= 2  # the fake's frames change colour
    assert all(f.startswith(b"\xff\xd8") for f in frames)
    assert fake.seen("/streamer/stream")[-1].user == "admin"
    assert fake.hid_events == []
    ends = wait_for(lambda: len(ends_of(ui)) == 2 and ends_of(ui), timeout=5, what="two end rows")
    by_via = {r["details"]["via"]: r["details"] for r in ends}
    assert by_via["ws"]["input"] is False and by_via["ws"]["refused"] == 2
    assert by_via["ws"]["forwarded"] == 0 and by_via["ws"]["role"] == "viewer"
    assert by_via["mjpeg"]["frames"] >= 5


def test_logging_out_closes_the_console_and_its_stream(ui, fake):
    session = Session(ui["port"]).login("oper")
    before_logout = dict(session.jar)

    async def run():
        async with aiohttp.ClientSession() as http:
            ws = await ws_connect(http, ui, session)
            assert (await next_json(ws))["type"] == "ready"
            resp = await http.get(ui["url"] + STREAM, headers={"Cookie": session.cookie})
            assert resp.status == 200
            await resp.content.readany()
            loop = asyncio.get_running_loop()
            began = time.monotonic()
            assert await loop.run_in_executor(None, session.logout) in (302, 303)
            closed = await next_json(ws, timeout=5)
            ws_took = time.monotonic() - began
            ended = False
            try:
                while await asyncio.wait_for(resp.content.readany(), 5):
                    pass
                ended = True
            except aiohttp.ClientPayloadError:
                ended = True
            stream_took = time.monotonic() - began
            resp.close()
            return closed, ws_took, ended, stream_took

    closed, ws_took, ended, stream_took = asyncio.run(run())
    assert closed == {"closed": "CLOSE", "code": 4401}
    assert ws_took < 3 and ended and stream_took < 3
    ends = wait_for(lambda: len(ends_of(ui)) == 2 and ends_of(ui), timeout=5, what="both end rows")
    assert {r["details"]["reason"] for r in ends} == {"session ended: log in again"}
    # the logged-out cookie, kept by someone, opens nothing any more
    kept = Session(ui["port"])
    kept.jar = before_logout
    assert kept.request("GET", STREAM) == (401, "session ended: log in again")

    async def ws_again():
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await ws_connect(http, ui, kept)
            return refused.value.status

    assert asyncio.run(ws_again()) == 401


def test_a_role_change_closes_the_console_within_seconds(ui, fake):
    """Demoted by ``saltext-fleet users`` (the store, not the users page): the live hub's
    check (every 2 s) finds the session version moved."""
    session = Session(ui["port"]).login("oper")

    async def run():
        async with aiohttp.ClientSession() as http:
            ws = await ws_connect(http, ui, session)
            assert (await next_json(ws))["input"] is True
            began = time.monotonic()
            with ui["engine"].begin() as conn:
                store_users.set_role(conn, "oper", "viewer")
            closed = await next_json(ws, timeout=6)
            return closed, time.monotonic() - began

    closed, took = asyncio.run(run())
    assert closed == {"closed": "CLOSE", "code": 4401} and took < 4
    # the cookie of the old session opens no console any more
    assert session.request("GET", STREAM)[0] == 401


def test_refusals_before_anything_reaches_the_device(ui, fake):
    viewer = Session(ui["port"]).login("watcher")

    async def run():
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.WSServerHandshakeError) as other_origin:
                await ws_connect(http, ui, viewer, origin="http://evil.example")
            with pytest.raises(aiohttp.WSServerHandshakeError) as anonymous:
                await http.ws_connect(ui["url"] + WS, headers={"Origin": ui["url"]})
            async with http.get(
                ui["url"] + "/kvm/pikvm-nope/console/stream", headers={"Cookie": viewer.cookie}
            ) as resp:
                unknown = resp.status
            # at most 4 streams per user
            streams = [
                await http.get(ui["url"] + STREAM, headers={"Cookie": viewer.cookie})
                for _ in range(5)
            ]
            statuses = sorted(r.status for r in streams)
            for r in streams:
                r.close()
            return other_origin.value.status, anonymous.value.status, unknown, statuses

    other_origin, anonymous, unknown, statuses = asyncio.run(run())
    assert (other_origin, anonymous, unknown) == (403, 401, 404)
    assert statuses == [200, 200, 200, 200, 429]


def test_a_device_that_fails_its_pin_gets_no_credential(tmp_path, fake):
    with console_server(tmp_path, fake, fingerprint="ab" * 32) as ui:
        session = Session(ui["port"]).login("oper")

        async def run():
            async with aiohttp.ClientSession() as http:
                ws = await ws_connect(http, ui, session)
                error = await next_json(ws)
                closed = await next_json(ws)
                async with http.get(ui["url"] + STREAM, headers={"Cookie": session.cookie}) as resp:
                    return error, closed, resp.status, await resp.text()

        error, closed, status, text = asyncio.run(run())
    assert error["type"] == "error" and "certificate fingerprint mismatch" in error["error"]
    assert closed == {"closed": "CLOSE", "code": 1011}
    assert status == 502 and "fingerprint mismatch" in text and "nothing was sent" in text
    assert fake.requests == []  # TLS only: not one HTTP request, so no credential


def test_one_set_of_limits_per_user_and_in_all_for_each_kind():
    consoles = Consoles(ctx=None, flask_app=None, max_per_user=2, max_total=3)
    for uid in (1, 1, 2):
        consoles.acquire(uid, "webrtc")
    with pytest.raises(Refused) as per_user:
        consoles.acquire(1, "webrtc")
    assert (per_user.value.status, per_user.value.message) == (
        429,
        "at most 2 WebRTC consoles per user",
    )
    with pytest.raises(Refused, match="the engine has 3 WebRTC consoles open"):
        consoles.acquire(3, "webrtc")
    consoles.acquire(1, "ws")  # another kind has places of its own
    consoles.release(2, "webrtc")
    consoles.acquire(3, "webrtc")
    assert consoles.open_count(1) == 3 and consoles.open_count() == 4


def test_a_slow_browser_gets_whole_frames_and_the_frames_it_cannot_take_are_dropped(tmp_path):
    """A browser that stops reading (a small receive buffer, nothing read for 3 s) holds up
    nothing: the engine keeps reading the device, drops the frames the browser has not room
    for, and what the browser reads afterwards is whole JPEG frames; the end row counts both."""
    with (
        FakeKvmd(password="slow-pw", fps=30, frame_size=(3840, 2160)) as device,
        console_server(tmp_path, device) as ui,
    ):
        session = Session(ui["port"]).login("watcher")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", ui["port"]))
        request = f"GET {STREAM} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {session.cookie}\r\n\r\n"
        sock.sendall(request.encode())
        time.sleep(3)  # the slow browser takes nothing while the device sends ~90 frames of 130 kB:
        # more than the kernel buffers hold (4 MB), so the engine must drop some
        received = bytearray()
        sock.settimeout(0.5)
        until = time.monotonic() + 2
        while time.monotonic() < until:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            received += chunk
        sock.close()
        (end,) = wait_for(lambda: ends_of(ui), timeout=10, what="the stream's end row")
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    # chunked transfer: undo it before splitting the parts
    splitter = MjpegSplitter("test", b"--" + BOUNDARY.encode())
    frames = splitter.feed(_unchunk(body))
    assert len(frames) >= 3, len(frames)
    assert all(f.startswith(b"\xff\xd8") and f.endswith(b"\xff\xd9") for f in frames)
    details = end["details"]
    assert details["via"] == "mjpeg" and details["dropped"] > 0, details
    assert details["frames"] >= len(frames), details
    # one stream from the device for the whole time, about 150 frames in those 5 s
    sent = len(device.seen("/streamer/stream"))
    assert sent == 1 and details["frames"] + details["dropped"] >= 60, details


def _unchunk(data: bytes) -> bytes:
    """The body of an HTTP/1.1 chunked response (a last, partial chunk is kept as far as it
    came)."""
    out = bytearray()
    while data:
        size_line, sep, rest = data.partition(b"\r\n")
        if not sep:
            break
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return bytes(out)
