"""The WebRTC console's own pure parts (offer checks, JPEG decoding, frame pacing) and the
engine's peer against the fake kvmd on loopback, without ICE: DataChannel input through the
console's ConsoleInput (the websocket's checks, answers, rate cap and read-only refusal),
forwarded over KvmAio, and what closing the peer stops. The HID checks, the MJPEG splitter
and the device connection's TLS and auth rules are tests/kvm/test_console.py and
test_console_aio.py; the video and the DataChannel across a real network are
tests/kvm/test_webrtc_netns.py."""

from __future__ import annotations

import asyncio
import json

import pytest

from saltext_fleet.kvm import webrtc
from saltext_fleet.kvm.console import ConsoleInput
from saltext_fleet.kvm.errors import KvmArgumentError
from saltext_fleet.kvm.options import load_options
from tests.kvm.conftest import options_for
from tests.support.fakekvmd import encode_jpeg
from tests.support.waiting import wait_for

SDP = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"


def offer(**doc):
    return json.dumps({"sdp": SDP, "type": "offer", **doc})


# ----- offers -------------------------------------------------------------------------------


def test_offer_accepted():
    parsed = webrtc.parse_offer(offer(), "pikvm-1")
    assert parsed.type == "offer" and parsed.sdp == SDP


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("{", "not JSON"),
        ("[]", "JSON object"),
        (offer(type="answer"), "type must be 'offer'"),
        (offer(sdp=""), "non-empty string"),
        (offer(sdp=5), "non-empty string"),
        (offer(sdp="o=- 1\r\n" + SDP), "start with 'v=0'"),
        (offer(sdp=SDP.replace("m=video", "m=audio")), "no video section"),
        (offer(sdp=SDP + "m=video 9 X 96\r\n" * 4), "5 media sections"),
        (offer(sdp=SDP + "a=x:\x00\r\n"), "printable ASCII"),
        (offer(sdp=SDP + "a=" + "x" * webrtc.MAX_SDP_BYTES), "SDP of"),
        ("x" * (webrtc.MAX_OFFER_BYTES + 1), "bytes refused"),
    ],
)
def test_bad_offers_refused_naming_device_and_fault(body, says):
    with pytest.raises(KvmArgumentError) as err:
        webrtc.parse_offer(body, "pikvm-1")
    assert says in str(err.value) and str(err.value).startswith("kvm pikvm-1:")


def test_jpeg_decoded_to_limited_range_yuv_with_its_colour():
    frame = webrtc.JpegDecoder().decode(encode_jpeg(32, 16, (200, 30, 30)))
    assert frame.format.name == "yuv420p" and (frame.width, frame.height) == (32, 16)
    centre = frame.to_ndarray(format="rgb24")[8, 16]
    assert all(abs(int(a) - b) <= 6 for a, b in zip(centre, (200, 30, 30), strict=True))


# ----- pacing -------------------------------------------------------------------------------


def test_pacer_caps_the_frame_rate_and_stamps_increase():
    pacer = webrtc.FramePacer(max_fps=10)
    assert pacer.delay(now=100.0) == 0.0
    assert pacer.stamp(now=100.0) == 0
    assert pacer.delay(now=100.04) == pytest.approx(0.06)
    assert pacer.delay(now=100.2) == 0.0
    assert pacer.stamp(now=100.5) == 45000
    assert pacer.stamp(now=100.5) == 45001  # never the same twice
    assert pacer.stamp(now=100.4) == 45002  # a clock that steps back does not go back
    with pytest.raises(ValueError):
        webrtc.FramePacer(max_fps=0)


# ----- the peer against the fake, without ICE ------------------------------------------------


def hid(event_type, **event):
    return json.dumps({"event_type": event_type, "event": event})


class Channel:
    readyState = "open"

    def __init__(self):
        self.sent = []

    def send(self, text):
        self.sent.append(json.loads(text))


def peer_for(fake, allowed=True, hid_input=None, **overrides):
    role = "operator" if allowed else "viewer"
    return webrtc.ConsolePeer(
        "pikvm-1",
        load_options(options_for(fake, **overrides)),
        hid_input or ConsoleInput("pikvm-1", allowed, role),
    )


def test_input_checked_like_the_websockets_forwarded_and_keys_released_at_close(fake):
    async def run():
        peer = peer_for(fake)
        channel = Channel()
        await peer.handle_message(channel, hid("key", key="KeyA", state=True))
        await peer.handle_message(channel, hid("key", key="ShiftLeft", state=True))
        await peer.handle_message(channel, hid("key", key="ShiftLeft", state=False))
        await peer.handle_message(channel, hid("mouse_button", button="left", state=True))
        await peer.handle_message(channel, hid("mouse_move", to={"x": 5, "y": -5}))
        await peer.handle_message(channel, hid("key", key="NoSuchKey", state=True))
        await peer.handle_message(channel, hid("key", key="KeyB", state=True, extra=1))
        await peer.handle_message(channel, hid("ping"))
        for _ in range(250):  # the fake counts the session on its own thread
            if fake.connected_ws():
                break
            await asyncio.sleep(0.02)
        assert fake.connected_ws() == 1
        await peer.close("browser left")
        return peer, channel

    peer, channel = asyncio.run(run())
    wait_for("the kvmd websocket to close", lambda: fake.connected_ws() == 0, 5, 0.02)
    events = [(e["type"], e.get("key") or e.get("button"), e.get("state")) for e in fake.hid_events]
    assert events == [
        ("key", "KeyA", True),
        ("key", "ShiftLeft", True),
        ("key", "ShiftLeft", False),
        ("mouse_button", "left", True),
        ("mouse_move", None, None),
        ("key", "KeyA", False),  # released when the console closed
        ("mouse_button", "left", False),
    ]
    assert all(e["via"] == "ws" for e in fake.hid_events)
    # the websocket's answers, word for word (ConsoleInput's)
    assert channel.sent == [
        {
            "type": "error",
            "error": "'NoSuchKey' is not a kvmd key name (KeyboardEvent.code, e.g. 'KeyA')",
        },
        {"type": "error", "error": "key event: unknown field(s) 'extra'"},
        {"type": "pong"},
    ]
    assert (peer.hid.forwarded, peer.hid.malformed, peer.reason) == (5, 2, "browser left")


def test_readonly_peer_refuses_input_and_never_opens_kvmd_ws(fake):
    async def run():
        peer = peer_for(fake, allowed=False)
        channel = Channel()
        await peer.handle_message(channel, hid("key", key="KeyA", state=True))
        await peer.close()
        return peer, channel

    peer, channel = asyncio.run(run())
    assert fake.hid_events == [] and fake.seen("/api/ws") == []
    assert channel.sent == [
        {
            "type": "refused",
            "error": "view only: your role (viewer) may watch this console but not type on it "
            "(kvm.console permission)",
        }
    ]
    assert peer.hid.refused == 1


def test_input_over_the_rate_cap_dropped_and_said_once_a_second(fake):
    now = [1000.0]
    capped = ConsoleInput(
        "pikvm-1", True, "operator", per_second=10, burst=20, clock=lambda: now[0]
    )

    async def run():
        peer = peer_for(fake, hid_input=capped)
        channel = Channel()
        for _ in range(25):
            await peer.handle_message(channel, hid("mouse_wheel", delta={"x": 0, "y": 1}))
        await peer.close()
        return peer, channel

    peer, channel = asyncio.run(run())
    assert (peer.hid.forwarded, peer.hid.throttled) == (20, 5)
    assert channel.sent == [
        {"type": "error", "error": "too many events: at most 10 a second; some were dropped"}
    ]
    wait_for("the forwarded events at the fake", lambda: len(fake.hid_events) == 20, 5, 0.02)


def test_video_frames_decoded_from_the_stream_and_close_stops_the_reader(fake):
    async def run():
        peer = peer_for(fake)
        reader = asyncio.get_running_loop().create_task(peer._read_video())
        for _ in range(100):
            if peer.track.frames_in >= 3:
                break
            await asyncio.sleep(0.05)
        frame = await asyncio.wait_for(peer.track.recv(), 5)
        peer._tasks.add(reader)
        await peer.close()
        await asyncio.sleep(0)
        return peer, frame, reader

    peer, frame, reader = asyncio.run(run())
    assert peer.track.frames_in >= 3 and frame.format.name == "yuv420p"
    assert (frame.width, frame.height) == fake.frame_size
    assert reader.done() and peer.kvm._session.closed
    assert peer.track.readyState == "ended"
    stream = fake.seen("/streamer/stream")
    assert stream and stream[0].user == "admin"


def test_a_pin_mismatch_reaches_the_channel_and_the_device_gets_nothing(fake):
    async def run():
        peer = peer_for(fake, fingerprint="ab" * 32)
        channel = Channel()
        await peer.handle_message(channel, hid("key", key="KeyA", state=True))
        await peer.close()
        return channel

    channel = asyncio.run(run())
    assert "certificate fingerprint mismatch" in channel.sent[0]["error"]
    assert fake.seen() == []  # not one request, so no credential, reached the device


@pytest.mark.parametrize(
    ("auth", "request_refused"),
    [("session", "POST /api/auth/login: HTTP 403"), ("headers", "GET /api/ws: HTTP 403")],
)
def test_input_the_device_refuses_is_reported_on_the_channel(fake, auth, request_refused):
    async def run():
        peer = peer_for(fake, auth=auth, password="wrong-pw")
        channel = Channel()
        await peer.handle_message(channel, hid("key", key="KeyA", state=True))
        await peer.close()
        return peer, channel

    peer, channel = asyncio.run(run())
    assert fake.hid_events == []
    assert channel.sent[0]["type"] == "error"
    assert channel.sent[0]["error"].startswith("not delivered to the device: kvm 127.0.0.1:")
    assert request_refused in channel.sent[0]["error"]
    assert peer.hid.forwarded == 0 and peer.hid.held_keys == set()
