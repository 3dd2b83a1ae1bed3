"""The console's pure part: which browser messages become kvmd events (and what the browser
is told about the others), the per-session rules (read-only, rate, held keys), the MJPEG
splitter, and the device state the page shows."""

from __future__ import annotations

import json

import pytest

from saltext_fleet.kvm import console
from saltext_fleet.kvm.console import ConsoleInput, ConsoleInputError, MjpegSplitter
from saltext_fleet.kvm.errors import KvmProtocolError

DEV = "pikvm-1"


def parse(doc) -> console.HidEvent:
    return console.parse_browser_event(DEV, doc if isinstance(doc, str) else json.dumps(doc))


@pytest.mark.parametrize(
    ("doc", "kvmd"),
    [
        (
            {"event_type": "key", "event": {"key": "KeyA", "state": True}},
            {"event_type": "key", "event": {"key": "KeyA", "state": True}},
        ),
        (
            {"event_type": "mouse_button", "event": {"button": "right", "state": False}},
            {"event_type": "mouse_button", "event": {"button": "right", "state": False}},
        ),
        (
            {"event_type": "mouse_move", "event": {"to": {"x": -32768, "y": 32767}}},
            {"event_type": "mouse_move", "event": {"to": {"x": -32768, "y": 32767}}},
        ),
        (
            {"event_type": "mouse_wheel", "event": {"delta": {"x": 0, "y": -4}}},
            {"event_type": "mouse_wheel", "event": {"delta": {"x": 0, "y": -4}}},
        ),
        (
            {
                "event_type": "mouse_relative",
                "event": {"delta": [{"x": 5, "y": -3}, {"x": 127, "y": -127}], "squash": True},
            },
            {
                "event_type": "mouse_relative",
                "event": {"delta": [{"x": 5, "y": -3}, {"x": 127, "y": -127}], "squash": True},
            },
        ),
    ],
)
def test_valid_events_become_kvmd_events(doc, kvmd):
    event = parse(doc)
    assert event.is_input
    assert json.loads(event.kvmd_text()) == kvmd


def test_ping_is_not_input():
    event = parse({"event_type": "ping", "event": {}})
    assert event.event_type == "ping" and not event.is_input


@pytest.mark.parametrize(
    ("message", "says"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "message: an object expected, got list"),
        ('{"event_type": "key"}', "message: missing 'event'"),
        ('{"event_type": "key", "event": {}, "x": 1}', "unknown field(s) 'x'"),
        ('{"event_type": "shell", "event": {}}', "event_type 'shell' unknown"),
        ('{"event_type": 7, "event": {}}', "event_type '7' unknown"),
        (
            '{"event_type": "key", "event": {"key": "KeyZZ", "state": true}}',
            "'KeyZZ' is not a kvmd key name",
        ),
        (
            '{"event_type": "key", "event": {"key": 65, "state": true}}',
            "key: a key name expected, got int",
        ),
        (
            '{"event_type": "key", "event": {"key": ["KeyA"], "state": true}}',
            "key: a key name expected, got list",
        ),
        (
            '{"event_type": "key", "event": {"key": "../etc", "state": true}}',
            "'../etc' is not a kvmd key name",
        ),
        ('{"event_type": "atx_power", "event": {"action": "off"}}', "'atx_power' unknown"),
        (
            '{"event_type": "key", "event": {"key": "KeyA", "state": 1}}',
            "key state: true or false expected, got int",
        ),
        (
            '{"event_type": "key", "event": {"key": "KeyA", "state": true, "finish": true}}',
            "unknown field(s) 'finish'",
        ),
        ('{"event_type": "key", "event": {"key": "KeyA"}}', "key event: missing 'state'"),
        (
            '{"event_type": "mouse_button", "event": {"button": "thumb", "state": true}}',
            "'thumb' is not a kvmd mouse button",
        ),
        (
            '{"event_type": "mouse_move", "event": {"to": {"x": 40000, "y": 0}}}',
            "mouse x must be an integer from -32768 to 32767",
        ),
        (
            '{"event_type": "mouse_move", "event": {"to": {"x": 1.5, "y": 0}}}',
            "mouse x must be an integer",
        ),
        (
            '{"event_type": "mouse_move", "event": {"to": {"x": true, "y": 0}}}',
            "mouse x must be an integer",
        ),
        (
            '{"event_type": "mouse_move", "event": {"to": [1, 2]}}',
            "to: an object expected, got list",
        ),
        (
            '{"event_type": "mouse_wheel", "event": {"delta": {"x": 0, "y": -200}}}',
            "mouse delta y must be an integer from -127 to 127",
        ),
        ('{"event_type": "mouse_wheel", "event": {"delta": []}}', "delta: a list of 1 to 16 moves"),
        (
            '{"event_type": "mouse_wheel", "event": {"delta": {"x": 0, "y": 1}, "squash": "yes"}}',
            "squash: true or false expected, got str",
        ),
    ],
)
def test_malformed_messages_say_what_is_wrong(message, says):
    with pytest.raises(ConsoleInputError) as exc:
        parse(message)
    assert says in str(exc.value)
    assert str(exc.value).startswith(f"kvm {DEV}: ")


def test_big_and_binary_messages_are_refused():
    big = json.dumps({"event_type": "key", "event": {"key": "KeyA" + " " * 600, "state": True}})
    with pytest.raises(ConsoleInputError, match="at most 512"):
        parse(big)
    with pytest.raises(ConsoleInputError, match="binary messages are not taken"):
        console.parse_browser_event(DEV, b"\x01\x01KeyA")


def key(name="KeyA", state=True) -> str:
    return json.dumps({"event_type": "key", "event": {"key": name, "state": state}})


def test_a_session_that_may_type_forwards_checked_events():
    session = ConsoleInput(DEV, input_allowed=True, role="operator")
    verdict = session.handle(key())
    assert json.loads(verdict.kvmd) == {
        "event_type": "key",
        "event": {"key": "KeyA", "state": True},
    }
    assert verdict.reply is None
    bad = session.handle(key("Nope"))
    assert bad.kvmd is None and bad.reply["type"] == "error" and "'Nope'" in bad.reply["error"]
    assert session.handle('{"event_type": "ping", "event": {}}').reply == {"type": "pong"}
    assert (session.forwarded, session.malformed, session.refused) == (1, 1, 0)


def test_a_read_only_session_refuses_input_and_says_why():
    session = ConsoleInput(DEV, input_allowed=False, role="viewer")
    for message in (
        key(),
        json.dumps({"event_type": "mouse_move", "event": {"to": {"x": 1, "y": 2}}}),
    ):
        verdict = session.handle(message)
        assert verdict.kvmd is None
        assert verdict.reply["type"] == "refused"
        assert "your role (viewer) may watch" in verdict.reply["error"]
    assert session.refused == 2 and session.forwarded == 0
    # a ping still works: the page may keep its socket alive
    assert session.handle('{"event_type": "ping", "event": {}}').reply == {"type": "pong"}


def test_the_rate_limit_drops_events_and_says_so_once_a_second():
    now = [100.0]
    session = ConsoleInput(DEV, True, "operator", per_second=10, burst=3, clock=lambda: now[0])
    verdicts = [session.handle(key(state=i % 2 == 0)) for i in range(6)]
    assert [v.kvmd is not None for v in verdicts] == [True, True, True, False, False, False]
    replies = [v.reply for v in verdicts[3:]]
    assert replies[0]["type"] == "error" and "at most 10 a second" in replies[0]["error"]
    assert replies[1:] == [None, None]  # told once, not per dropped event
    assert session.throttled == 3
    now[0] += 0.15  # a token back (one every 0.1 s)
    assert session.handle(key()).kvmd is not None


def test_held_keys_and_buttons_are_released_at_the_end():
    session = ConsoleInput(DEV, True, "operator")
    session.handle(key("ShiftLeft", True))
    session.handle(key("KeyA", True))
    session.handle(key("KeyA", False))
    session.handle(
        json.dumps({"event_type": "mouse_button", "event": {"button": "left", "state": True}})
    )
    released = [json.loads(t) for t in session.release_all()]
    assert released == [
        {"event_type": "key", "event": {"key": "ShiftLeft", "state": False}},
        {"event_type": "mouse_button", "event": {"button": "left", "state": False}},
    ]
    assert session.release_all() == []


def test_the_state_shown_keeps_only_checked_fields():
    assert console.summarize_state("atx", {"leds": {"power": True, "hdd": False}}) == {
        "type": "state",
        "power": True,
    }
    hid = console.summarize_state(
        "hid", {"online": False, "keyboard": {"leds": {"caps": True, "evil": "<b>"}}}
    )
    assert hid == {"type": "state", "hid_online": False, "leds": {"caps": True}}
    streamer = {
        "streamer": {"source": {"online": True, "resolution": {"width": 1920, "height": 1080}}}
    }
    assert console.summarize_state("streamer", streamer) == {
        "type": "state",
        "signal": True,
        "resolution": [1920, 1080],
    }
    assert console.summarize_state("atx", {"leds": {"power": "yes"}}) is None
    assert console.summarize_state("info", {"hw": {}}) is None
    assert console.summarize_state("streamer", "junk") is None


JPEG_A = b"\xff\xd8" + b"A" * 100 + b"\xff\xd9"
JPEG_B = b"\xff\xd8" + b"B" * 3000 + b"\xff\xd9"
#: a frame whose bytes look like the end of part headers: only Content-Length says where it ends
JPEG_C = b"\xff\xd8" + b"\r\n\r\n" * 50 + b"--boundarydonotcross\r\n" + b"\xff\xd9"


def ustreamer(*frames: bytes) -> bytes:
    out = b"--boundarydonotcross\r\n"
    for frame in frames:
        out += b"Content-Type: image/jpeg\r\nContent-Length: %d\r\nX-Timestamp: 1.0\r\n\r\n" % len(
            frame
        )
        out += frame + b"\r\n--boundarydonotcross\r\n"
    return out


@pytest.mark.parametrize("piece", [1, 7, 64, 4096])
def test_the_splitter_gives_whole_frames_whatever_the_pieces(piece):
    data = ustreamer(JPEG_A, JPEG_B, JPEG_C, JPEG_A)
    splitter = MjpegSplitter(DEV, b"--boundarydonotcross")
    frames = []
    for i in range(0, len(data), piece):
        frames += splitter.feed(data[i : i + piece])
    assert frames == [JPEG_A, JPEG_B, JPEG_C, JPEG_A] and splitter.frames == 4


def test_the_splitter_refuses_what_is_not_uStreamer():
    boundary = b"--boundarydonotcross"
    with pytest.raises(KvmProtocolError, match="frame of 3004 bytes refused"):
        MjpegSplitter(DEV, boundary, max_frame=1000).feed(ustreamer(JPEG_B))
    with pytest.raises(KvmProtocolError, match="part without Content-Length"):
        MjpegSplitter(DEV, boundary).feed(
            b"--boundarydonotcross\r\nContent-Type: image/jpeg\r\n\r\nxx"
        )
    with pytest.raises(KvmProtocolError, match="part without Content-Length"):
        MjpegSplitter(DEV, boundary).feed(
            b"--boundarydonotcross\r\nContent-Type: image/jpeg\r\nContent-Length: -1\r\n\r\n"
        )
    with pytest.raises(KvmProtocolError, match="not a JPEG"):
        MjpegSplitter(DEV, boundary).feed(ustreamer(b"<html>not a picture"))
    with pytest.raises(KvmProtocolError, match="unexpected boundary"):
        MjpegSplitter(DEV, boundary).feed(b"--other\r\nContent-Length: 1\r\n\r\nx")
    with pytest.raises(KvmProtocolError, match="part headers too long"):
        MjpegSplitter(DEV, boundary).feed(b"X" * 20000)
    # a part that is not a JPEG by its type is skipped, not sent on
    text = b"--boundarydonotcross\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi\r\n"
    assert MjpegSplitter(DEV, boundary).feed(text + ustreamer(JPEG_A)) == [JPEG_A]


def test_the_stream_boundary_comes_from_the_content_type():
    ct = "multipart/x-mixed-replace;boundary=boundarydonotcross"
    assert console.stream_boundary(DEV, ct) == b"--boundarydonotcross"
    with pytest.raises(KvmProtocolError, match="not an MJPEG stream"):
        console.stream_boundary(DEV, "text/html")
    with pytest.raises(KvmProtocolError, match="without a boundary"):
        console.stream_boundary(DEV, "multipart/x-mixed-replace")


def test_the_engine_sends_frames_under_its_own_boundary():
    data = console.stream_start() + console.mjpeg_part(JPEG_A) + console.mjpeg_part(JPEG_B)
    splitter = MjpegSplitter(DEV, b"--" + console.BOUNDARY.encode())
    assert splitter.feed(data) == [JPEG_A, JPEG_B]
    assert console.CONTENT_TYPE.endswith(f"boundary={console.BOUNDARY}")
