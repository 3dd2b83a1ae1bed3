"""``POST /kvm/<name>/console/webrtc`` on the engine's real server (loopback, SQLite store)
with the fake kvmd registered: who may ask, what is refused, the console's limits (shared
with the stream and websocket), and peers closed by the live hub when their user logs out
(seen in the audit: each peer's end is recorded with the websocket's reason)."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import time

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from saltext_fleet import config
from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.store import audit as store_audit
from saltext_fleet.store import engine as store_engine
from saltext_fleet.store import kvm as store_kvm
from saltext_fleet.webui import console, kvm_webrtc, live
from tests.kvm.conftest import options_for
from tests.support.uiserver import serving
from tests.support.webrtc_engine import PASSWORD, login_cookie

PATH = "/kvm/pikvm-1/console/webrtc"


def make_offer() -> str:
    async def offer():
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver("video", direction="recvonly")
        pc.createDataChannel("hid")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await pc.close()
        return sdp

    return json.dumps({"sdp": asyncio.run(offer()), "type": "offer"})


@pytest.fixture(scope="module")
def offer():
    return make_offer()


class LingeringPeer(kvm_webrtc.ConsolePeer):
    """A peer that outlives its failed ICE (nobody here answers its checks), so that only
    the session's end closes it."""

    async def _on_state(self):
        pass

    async def _watch_connect(self):
        pass


def wait_for_audit(ui, action, count, seconds=10.0):
    deadline = time.monotonic() + seconds
    while len(found := audited(ui, action)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


@pytest.fixture
def ui(tmp_path, fake):
    users = (("op", "operator", PASSWORD), ("viewer", "viewer", PASSWORD))
    with serving(tmp_path, users=users) as served:
        cfg = config.load(served["opts"])
        engine = store_engine.get_engine(cfg.db_url)
        with engine.begin() as conn:
            store_kvm.add_device(
                conn, core_secrets.Vault.open(cfg.key_file), "pikvm-1", options_for(fake)
            )
        served["engine"] = engine
        served["cookies"] = {
            name: login_cookie(served["port"], name, PASSWORD) for name, *_ in users
        }
        yield served


def post(ui, body, cookie=None, origin="same", content_type="application/json", path=PATH):
    conn = http.client.HTTPConnection("127.0.0.1", ui["port"], timeout=20)
    headers = {"Content-Type": content_type}
    if cookie:
        headers["Cookie"] = cookie
    if origin == "same":
        headers["Origin"] = f"http://127.0.0.1:{ui['port']}"
    elif origin:
        headers["Origin"] = origin
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def audited(ui, action):
    return store_audit.events(ui["engine"], action=action, target="pikvm-1")


def test_refusals(ui, offer):
    op = ui["cookies"]["op"]
    assert post(ui, offer)[0] == 401
    assert post(ui, offer, cookie="session=forged")[0] == 401
    assert post(ui, offer, cookie=op, origin=None)[0] == 403
    status, body = post(ui, offer, cookie=op, origin="http://evil.example")
    assert (status, body) == (403, {"error": "cross-origin request refused"})
    assert post(ui, offer, cookie=op, content_type="text/plain")[0] == 415
    status, body = post(ui, '{"sdp": "v=0", "type": "answer"}', cookie=op)
    assert status == 400 and "type must be 'offer'" in body["error"]
    status, body = post(ui, offer, cookie=op, path="/kvm/nobody/console/webrtc")
    assert status == 404 and "no KVM device named 'nobody'" in body["error"]
    assert post(ui, offer, cookie=op, path="/kvm/..%2f/console/webrtc")[0] == 400
    assert audited(ui, "kvm.console.start") == []


def test_operator_types_viewer_watches_limits_and_logout_ends_peers(ui, offer, monkeypatch):
    monkeypatch.setattr(kvm_webrtc, "ConsolePeer", LingeringPeer)
    op, viewer = ui["cookies"]["op"], ui["cookies"]["viewer"]
    status, answer = post(ui, offer, cookie=viewer)
    assert status == 200 and answer["type"] == "answer" and answer["input"] is False
    assert answer["sdp"].startswith("v=0") and "m=video" in answer["sdp"]
    for _ in range(console.MAX_PER_USER):
        status, answer = post(ui, offer, cookie=op)
        assert status == 200 and answer["input"] is True
    status, body = post(ui, offer, cookie=op)
    assert (status, body) == (429, {"error": "at most 4 WebRTC consoles per user"})
    starts = wait_for_audit(ui, "kvm.console.start", console.MAX_PER_USER + 1)
    assert sorted((e["actor"], e["details"]["input"]) for e in starts) == [
        *[("ui:op", True)] * console.MAX_PER_USER,
        ("ui:viewer", False),
    ]
    assert all(e["details"]["via"] == "webrtc" for e in starts)
    assert {e["details"]["role"] for e in starts} == {"operator", "viewer"}

    # the operator logs out: the live hub closes their peers at once (the viewer's stays)
    conn = http.client.HTTPConnection("127.0.0.1", ui["port"], timeout=10)
    conn.request("GET", "/", headers={"Cookie": op})
    page = conn.getresponse().read().decode()
    token = re.search(r'name="csrf_token" value="([^"]*)"', page).group(1)
    conn.request(
        "POST",
        "/logout",
        body=f"csrf_token={token}",
        headers={"Cookie": op, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert conn.getresponse().status in (302, 303)
    conn.close()
    ends = wait_for_audit(ui, "kvm.console.end", console.MAX_PER_USER, live.CHECK_SECONDS * 4)
    assert [e["actor"] for e in ends] == ["ui:op"] * console.MAX_PER_USER
    assert {e["details"]["reason"] for e in ends} == {"session ended: log in again"}
    assert all(e["details"]["forwarded"] == 0 for e in ends)
    assert post(ui, offer, cookie=op)[0] == 401  # the logged-out cookie opens nothing
