"""The WebRTC console's pure parts (offer and HID event checks, the MJPEG splitter, frame
pacing) and the engine's peer against the fake kvmd on loopback, without ICE: the device
link's TLS rule, input forwarding and refusal, and what closing the peer stops. The video
and the DataChannel across a real network are tests/kvm/test_webrtc_netns.py."""

from __future__ import annotations

import asyncio
import functools
import json

import pytest

from saltext_fleet.kvm import webrtc
from saltext_fleet.kvm.errors import KvmArgumentError, KvmFingerprintError, KvmProtocolError
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


# ----- HID events ---------------------------------------------------------------------------


def hid(event_type, **event):
    return json.dumps({"event_type": event_type, "event": event})


def test_hid_events_rebuilt_from_checked_values():
    check = webrtc.check_hid_message
    assert check(hid("key", key="KeyA", state=True, extra="dropped"), "d") == (
        "key",
        {"key": "KeyA", "state": True},
    )
    assert check(hid("mouse_button", button="left", state=False), "d") == (
        "mouse_button",
        {"button": "left", "state": False},
    )
    assert check(hid("mouse_move", to={"x": -32768, "y": 32767}), "d") == (
        "mouse_move",
        {"to": {"x": -32768, "y": 32767}},
    )
    assert check(hid("mouse_wheel", delta={"x": 0, "y": -127}), "d") == (
        "mouse_wheel",
        {"delta": {"x": 0, "y": -127}},
    )
    assert check(hid("mouse_relative", delta={"x": 127, "y": 1}), "d")[0] == "mouse_relative"


@pytest.mark.parametrize(
    ("message", "says"),
    [
        ("nope", "not JSON"),
        (json.dumps({"event_type": "key"}), "expected"),
        (hid("key", key="KeyÄ", state=True), "not a kvmd key name"),
        (hid("key", key="../etc", state=True), "not a kvmd key name"),
        (hid("key", key=["KeyA"], state=True), "not a kvmd key name"),
        (hid("key", key="KeyA", state="yes"), "'state' must be true or false"),
        (hid("key", key="KeyA"), "'state' must be true or false"),
        (hid("mouse_button", button="side", state=True), "not a mouse button"),
        (hid("mouse_move", to={"x": 40000, "y": 0}), "from -32768 to 32767"),
        (hid("mouse_move", to={"x": True, "y": 0}), "from -32768 to 32767"),
        (hid("mouse_move", to=[1, 2]), "must be"),
        (hid("mouse_wheel", delta={"x": 0, "y": 128}), "from -127 to 127"),
        (hid("atx_power", action="off"), "unknown event_type"),
        (hid("key", key="KeyA", state=True, pad="x" * 600), "bytes refused"),
    ],
)
def test_bad_hid_events_refused(message, says):
    with pytest.raises(KvmArgumentError) as err:
        webrtc.check_hid_message(message, "pikvm-1")
    assert says in str(err.value), str(err.value)


# ----- MJPEG --------------------------------------------------------------------------------


def part(data: bytes, extra: bytes = b"") -> bytes:
    head = b"Content-Type: image/jpeg\r\nContent-Length: %d\r\n" % len(data) + extra
    return head + b"\r\n" + data + b"\r\n--boundarydonotcross\r\n"


def test_mjpeg_parts_split_at_any_chunking():
    jpegs = [b"\xff\xd8one\xff\xd9", b"\xff\xd8" + b"\r\n\r\n" * 50 + b"\xff\xd9", b"3"]
    stream = b"--boundarydonotcross\r\n" + b"".join(part(j, b"X-Timestamp: 1.0\r\n") for j in jpegs)
    for size in (1, 7, 64, len(stream)):
        parser = webrtc.MjpegParser("d")
        got = []
        for i in range(0, len(stream), size):
            got.extend(parser.feed(stream[i : i + size]))
        assert got == jpegs, size


@pytest.mark.parametrize(
    ("stream", "says"),
    [
        (b"Content-Type: image/jpeg\r\n\r\nabc", "without a valid Content-Length"),
        (b"Content-Length: -1\r\n\r\n", "without a valid Content-Length"),
        (b"Content-Length: 99999\r\n\r\n", "99999 bytes refused"),
        (b"X: " + b"y" * 5000, "headers too long"),
    ],
)
def test_mjpeg_bad_parts_refused(stream, says):
    parser = webrtc.MjpegParser("pikvm-1", max_bytes=1000)
    with pytest.raises(KvmProtocolError) as err:
        list(parser.feed(stream))
    assert says in str(err.value)


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


class Channel:
    readyState = "open"

    def __init__(self):
        self.sent = []

    def send(self, text):
        self.sent.append(json.loads(text))


def peer_for(fake, readonly=False, **overrides):
    return webrtc.ConsolePeer(
        "pikvm-1", load_options(options_for(fake, **overrides)), readonly=readonly
    )


def test_input_forwarded_to_kvmd_ws_and_keys_released_at_close(fake):
    async def run():
        peer = peer_for(fake)
        channel = Channel()
        await peer.handle_message(channel, hid("key", key="KeyA", state=True))
        await peer.handle_message(channel, hid("key", key="ShiftLeft", state=True))
        await peer.handle_message(channel, hid("key", key="ShiftLeft", state=False))
        await peer.handle_message(channel, hid("mouse_move", to={"x": 5, "y": -5}))
        await peer.handle_message(channel, hid("key", key="NoSuchKey", state=True))
        for _ in range(250):  # the fake counts the session on its own thread
            if fake.connected_ws():
                break
            await asyncio.sleep(0.02)
        assert fake.connected_ws() == 1
        await peer.close()
        return peer, channel

    peer, channel = asyncio.run(run())
    wait_for("the kvmd websocket to close", lambda: fake.connected_ws() == 0, 5, 0.02)
    events = [(e["type"], e.get("key"), e.get("state")) for e in fake.hid_events]
    assert events == [
        ("key", "KeyA", True),
        ("key", "ShiftLeft", True),
        ("key", "ShiftLeft", False),
        ("mouse_move", None, None),
        ("key", "KeyA", False),  # released when the console closed
    ]
    assert all(e["via"] == "ws" for e in fake.hid_events)
    assert channel.sent == [{"error": "HID event: 'NoSuchKey' is not a kvmd key name"}]
    assert (peer.stats.hid_forwarded, peer.stats.hid_refused) == (4, 1)


def test_readonly_peer_refuses_input_and_never_opens_kvmd_ws(fake):
    async def run():
        peer = peer_for(fake, readonly=True)
        channel = Channel()
        await peer.handle_message(channel, hid("key", key="KeyA", state=True))
        await peer.close()
        return peer, channel

    peer, channel = asyncio.run(run())
    assert fake.hid_events == [] and fake.seen("/api/ws") == []
    assert "read-only" in channel.sent[0]["error"] and peer.stats.hid_refused == 1


def test_input_over_the_rate_cap_dropped_and_said_once(fake):
    async def run():
        peer = peer_for(fake)
        peer.rate.allow = functools.partial(peer.rate.allow, now=1000.0)  # no refill meanwhile
        channel = Channel()
        for _ in range(webrtc.HID_BURST + 20):
            await peer.handle_message(channel, hid("mouse_wheel", delta={"x": 0, "y": 1}))
        await peer.close()
        return peer, channel

    peer, channel = asyncio.run(run())
    assert (peer.stats.hid_forwarded, peer.stats.hid_dropped) == (webrtc.HID_BURST, 20)
    assert channel.sent == [{"error": "too many HID events: some were dropped"}]


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
    assert reader.done() and peer.link._session.closed
    assert peer.track.readyState == "ended"
    stream = fake.seen("/streamer/stream")
    assert stream and stream[0].user == "admin"


def test_pinned_fingerprint_checked_before_any_credential(fake):
    wrong = "ab" * 32

    async def run():
        link = webrtc.DeviceLink(load_options(options_for(fake, fingerprint=wrong)))
        try:
            with pytest.raises(KvmFingerprintError) as err:
                async for _jpeg in link.jpegs():
                    pass
            with pytest.raises(KvmFingerprintError):
                await link.send_event("key", {"key": "KeyA", "state": True})
        finally:
            await link.close()
        return err.value

    err = asyncio.run(run())
    assert "AB:AB:AB" in str(err) and str(err).startswith("kvm 127.0.0.1:")
    assert fake.seen() == []  # not one request, so no credential, reached the device


def test_verified_tls_refuses_the_self_signed_device(fake):
    async def run():
        link = webrtc.DeviceLink(load_options(options_for(fake, fingerprint=None)))
        try:
            async for _jpeg in link.jpegs():
                pass
        finally:
            await link.close()

    with pytest.raises(webrtc.KvmTlsError, match="certificate verification failed"):
        asyncio.run(run())
    assert fake.seen() == []


def test_wrong_password_is_the_devices_answer(fake):
    async def run():
        link = webrtc.DeviceLink(load_options(options_for(fake, password="wrong-pw")))
        try:
            async for _jpeg in link.jpegs():
                pass
        finally:
            await link.close()

    with pytest.raises(webrtc.KvmError, match="GET /streamer/stream: HTTP 403"):
        asyncio.run(run())


def test_input_the_device_refuses_is_reported_on_the_channel(fake):
    async def run():
        peer = peer_for(fake, password="wrong-pw")
        channel = Channel()
        await peer.handle_message(channel, hid("key", key="KeyA", state=True))
        await peer.close()
        return peer, channel

    peer, channel = asyncio.run(run())
    assert fake.hid_events == []
    assert channel.sent[0]["error"].startswith("not delivered to the device: kvm 127.0.0.1:")
    assert "GET /api/ws: HTTP 403" in channel.sent[0]["error"]
    assert peer.stats.hid_forwarded == 0 and peer.pressed == set()
