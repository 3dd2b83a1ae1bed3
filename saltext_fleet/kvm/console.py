"""The console's pure part: what a browser may send to a PiKVM, and the MJPEG stream split
into frames. No I/O here; the engine's websocket bridge (:mod:`saltext_fleet.webui.console`) and
the WebRTC peer's DataChannel (:mod:`saltext_fleet.kvm.webrtc`) feed it the same way, so both
paths check, rate-cap, refuse and release alike.

**HID events from the browser.** The browser sends kvmd's own JSON event shape (``send_ws_event``
/ ``parse_ws_event`` in ``kvmd/htserver.py``), one event per websocket message::

    {"event_type": "key", "event": {"key": "KeyA", "state": true}}
    {"event_type": "mouse_button", "event": {"button": "left", "state": false}}
    {"event_type": "mouse_move", "event": {"to": {"x": -1200, "y": 3400}}}
    {"event_type": "mouse_relative", "event": {"delta": {"x": 5, "y": -3}}}
    {"event_type": "mouse_wheel", "event": {"delta": {"x": 0, "y": -4}}}
    {"event_type": "ping", "event": {}}

:func:`parse_browser_event` checks every field (known key and button names from
:mod:`saltext_fleet.kvm.hidcodes`, integers in kvmd's ranges, real booleans, no unknown fields)
and rebuilds the event from what it checked, so nothing the browser made up reaches kvmd.
kvmd drops a malformed event without a word; the browser gets :class:`ConsoleInputError`'s
message instead. :class:`ConsoleInput` adds what one console session enforces: the size of a
message, a rate, and whether this user may type at all (a viewer watches only).

**MJPEG.** uStreamer's ``/streamer/stream`` is ``multipart/x-mixed-replace`` with a
``Content-Length`` per part. :class:`MjpegSplitter` takes the bytes as they come and gives back
whole JPEG frames (bounded in size), which the engine sends on under its own boundary
(:func:`mjpeg_part`): the browser never sees a header or a part the device made up.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from typing import Any

from saltext_fleet.kvm import hidcodes
from saltext_fleet.kvm.errors import KvmError, KvmProtocolError

#: The largest message a browser may send (a key event is about 70 bytes).
MAX_MESSAGE_BYTES = 512
#: HID events per second a console session forwards on average, and at once.
EVENTS_PER_SECOND = 200.0
EVENTS_BURST = 400
#: Relative moves in one ``mouse_relative`` / ``mouse_wheel`` event (kvmd takes a list).
MAX_DELTAS = 16
#: The events that act on the host; ``ping`` is answered by the engine itself.
HID_EVENTS = ("key", "mouse_button", "mouse_move", "mouse_relative", "mouse_wheel")

#: The boundary of the stream the engine sends to the browser.
BOUNDARY = "fleetframe"
CONTENT_TYPE = f"multipart/x-mixed-replace; boundary={BOUNDARY}"
#: A frame larger than this ends the stream (a 1920x1200 JPEG at quality 100 is ~1.5 MB).
MAX_FRAME_BYTES = 8 * 1024 * 1024
MAX_PART_HEADERS = 8 * 1024


class ConsoleInputError(KvmError, ValueError):
    """A browser's console message that is not a valid HID event, or not allowed; the
    message says what was wrong and goes back to the browser."""


@dataclasses.dataclass(frozen=True)
class HidEvent:
    """A checked event: ``event_type`` and ``event`` rebuilt from checked values."""

    event_type: str
    event: dict

    @property
    def is_input(self) -> bool:
        """Whether it acts on the host (anything but ``ping``)."""
        return self.event_type in HID_EVENTS

    def kvmd_text(self) -> str:
        """The event as kvmd's ``/api/ws`` takes it (JSON text)."""
        return hidcodes.json_event(self.event_type, self.event)


def _fields(device: str, what: str, value: Any, required: set[str], optional=()) -> dict:
    if not isinstance(value, dict):
        raise ConsoleInputError(device, f"{what}: an object expected, got {_kind(value)}")
    missing = sorted(required - set(value))
    if missing:
        raise ConsoleInputError(device, f"{what}: missing {', '.join(map(repr, missing))}")
    unknown = sorted(str(k)[:40] for k in set(value) - required - set(optional))
    if unknown:
        raise ConsoleInputError(device, f"{what}: unknown field(s) {', '.join(map(repr, unknown))}")
    return value


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _bool(device: str, what: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConsoleInputError(device, f"{what}: true or false expected, got {_kind(value)}")
    return value


def _checked(device: str, check, value: Any, *args) -> Any:
    try:
        return check(value, *args)
    except (ValueError, TypeError) as exc:
        raise ConsoleInputError(device, str(exc)) from None


def _delta(device: str, value: Any) -> dict:
    d = _fields(device, "delta", value, {"x", "y"})
    return {
        "x": _checked(device, hidcodes.check_delta, d["x"], "delta x"),
        "y": _checked(device, hidcodes.check_delta, d["y"], "delta y"),
    }


def parse_browser_event(device: str, message: str | bytes) -> HidEvent:
    """One browser message as a checked :class:`HidEvent`; :class:`ConsoleInputError` naming
    what was wrong (``device`` names the console's device in it)."""
    if isinstance(message, bytes):
        raise ConsoleInputError(device, "binary messages are not taken: send JSON text")
    if len(message.encode("utf-8", "replace")) > MAX_MESSAGE_BYTES:
        raise ConsoleInputError(
            device, f"message of {len(message)} characters refused (at most {MAX_MESSAGE_BYTES})"
        )
    try:
        doc = json.loads(message)
    except ValueError:
        raise ConsoleInputError(
            device, 'not JSON: send {"event_type": ..., "event": {...}}'
        ) from None
    doc = _fields(device, "message", doc, {"event_type", "event"})
    event_type = doc["event_type"]
    if event_type == "ping":
        return HidEvent("ping", {})
    if not isinstance(event_type, str) or event_type not in HID_EVENTS:
        raise ConsoleInputError(
            device,
            f"event_type {str(event_type)[:40]!r} unknown; one of {', '.join(HID_EVENTS)}, ping",
        )
    raw = doc["event"]
    if event_type == "key":
        ev = _fields(device, "key event", raw, {"key", "state"})
        key = ev["key"]
        if not isinstance(key, str):
            raise ConsoleInputError(device, f"key: a key name expected, got {_kind(key)}")
        event = {
            "key": _checked(device, hidcodes.check_key, key[:64]),
            "state": _bool(device, "key state", ev["state"]),
        }
    elif event_type == "mouse_button":
        ev = _fields(device, "mouse_button event", raw, {"button", "state"})
        button = ev["button"]
        if not isinstance(button, str):
            raise ConsoleInputError(device, f"button: a button name expected, got {_kind(button)}")
        event = {
            "button": _checked(device, hidcodes.check_button, button[:64]),
            "state": _bool(device, "button state", ev["state"]),
        }
    elif event_type == "mouse_move":
        ev = _fields(device, "mouse_move event", raw, {"to"})
        to = _fields(device, "to", ev["to"], {"x", "y"})
        event = {
            "to": {
                "x": _checked(device, hidcodes.check_position, to["x"], "x"),
                "y": _checked(device, hidcodes.check_position, to["y"], "y"),
            }
        }
    else:  # mouse_relative, mouse_wheel
        ev = _fields(device, f"{event_type} event", raw, {"delta"}, optional=("squash",))
        delta = ev["delta"]
        if isinstance(delta, list):
            if not 1 <= len(delta) <= MAX_DELTAS:
                raise ConsoleInputError(device, f"delta: a list of 1 to {MAX_DELTAS} moves")
            checked: Any = [_delta(device, d) for d in delta]
        else:
            checked = _delta(device, delta)
        event = {"delta": checked}
        if "squash" in ev:
            event["squash"] = _bool(device, "squash", ev["squash"])
    return HidEvent(event_type, event)


@dataclasses.dataclass
class Verdict:
    """What to do with one browser message: send ``kvmd`` (text) to the device, and/or answer
    ``reply`` (a dict for the browser)."""

    kvmd: str | None = None
    reply: dict | None = None


class ConsoleInput:
    """One console session's input rules: checked events, a rate limit, read-only for those
    who may watch but not type. Counts what it forwarded and refused; keeps the keys and
    buttons held down, so closing the session can let them go (:meth:`release_all`)."""

    def __init__(
        self,
        device: str,
        input_allowed: bool,
        role: str = "",
        per_second: float = EVENTS_PER_SECOND,
        burst: int = EVENTS_BURST,
        clock=time.monotonic,
    ) -> None:
        self.device = device
        self.input_allowed = input_allowed
        self.role = role
        self.per_second = per_second
        self.burst = burst
        self.clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self._last_warned = -1e9
        self.forwarded = 0
        self.refused = 0
        self.malformed = 0
        self.throttled = 0
        self.held_keys: set[str] = set()
        self.held_buttons: set[str] = set()

    def _take(self) -> bool:
        now = self.clock()
        self._tokens = min(
            float(self.burst), self._tokens + max(0.0, now - self._last) * self.per_second
        )
        self._last = max(now, self._last)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def handle(self, message: str | bytes) -> Verdict:
        """The verdict on one message from the browser. Never raises."""
        try:
            event = parse_browser_event(self.device, message)
        except ConsoleInputError as exc:
            self.malformed += 1
            return Verdict(reply={"type": "error", "error": exc.what})
        if not event.is_input:
            return Verdict(reply={"type": "pong"})
        if not self.input_allowed:
            self.refused += 1
            return Verdict(
                reply={
                    "type": "refused",
                    "error": f"view only: your role ({self.role or 'unknown'}) may watch this "
                    "console but not type on it (kvm.console permission)",
                }
            )
        if not self._take():
            self.throttled += 1
            now = self.clock()
            if now - self._last_warned >= 1.0:  # say it once a second, not per event
                self._last_warned = now
                return Verdict(
                    reply={
                        "type": "error",
                        "error": f"too many events: at most {self.per_second:g} a second; "
                        "some were dropped",
                    }
                )
            return Verdict()
        self._track(event)
        self.forwarded += 1
        return Verdict(kvmd=event.kvmd_text())

    def not_delivered(self) -> None:
        """The event :meth:`handle` passed on did not reach the device (not connected, the
        connection failed): it does not count as forwarded."""
        self.forwarded -= 1

    def _track(self, event: HidEvent) -> None:
        if event.event_type == "key":
            (self.held_keys.add if event.event["state"] else self.held_keys.discard)(
                event.event["key"]
            )
        elif event.event_type == "mouse_button":
            (self.held_buttons.add if event.event["state"] else self.held_buttons.discard)(
                event.event["button"]
            )

    def release_all(self) -> list[str]:
        """kvmd texts that let go of every key and button still held (the session ends)."""
        out = [
            hidcodes.json_event("key", {"key": k, "state": False}) for k in sorted(self.held_keys)
        ]
        out += [
            hidcodes.json_event("mouse_button", {"button": b, "state": False})
            for b in sorted(self.held_buttons)
        ]
        self.held_keys.clear()
        self.held_buttons.clear()
        return out


def summarize_state(event_type: str, event: Any) -> dict | None:
    """What the console page shows of a kvmd ``/api/ws`` state event (power LED, HID online,
    keyboard LEDs, video signal and resolution); None for events it does not show. Only
    checked scalars pass: the device's event is a claim."""
    if not isinstance(event, dict):
        return None
    out: dict[str, Any] = {}
    if event_type == "atx":
        leds = event.get("leds")
        if isinstance(leds, dict) and isinstance(leds.get("power"), bool):
            out["power"] = leds["power"]
    elif event_type == "hid":
        if isinstance(event.get("online"), bool):
            out["hid_online"] = event["online"]
        keyboard = event.get("keyboard")
        leds = keyboard.get("leds") if isinstance(keyboard, dict) else None
        if isinstance(leds, dict):
            out["leds"] = {
                k: v
                for k, v in leds.items()
                if k in ("caps", "scroll", "num") and isinstance(v, bool)
            }
    elif event_type == "streamer":
        source = (
            (event.get("streamer") or {}).get("source")
            if isinstance(event.get("streamer"), dict)
            else None
        )
        if isinstance(source, dict):
            if isinstance(source.get("online"), bool):
                out["signal"] = source["online"]
            res = source.get("resolution")
            if isinstance(res, dict):
                w, h = res.get("width"), res.get("height")
                if all(
                    isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 16384
                    for v in (w, h)
                ):
                    out["resolution"] = [w, h]
    if not out:
        return None
    return {"type": "state", **out}


# ----- MJPEG -------------------------------------------------------------------------------

_BOUNDARY_RE = re.compile(r"boundary=\"?([0-9A-Za-z'()+_,./:=?-]{1,70})\"?")


def stream_boundary(device: str, content_type: str | None) -> bytes:
    """The boundary of a ``multipart/x-mixed-replace`` answer (``--`` prepended);
    :class:`KvmProtocolError` for another content type."""
    if not content_type or not content_type.lower().startswith("multipart/x-mixed-replace"):
        raise KvmProtocolError(
            device, f"GET /streamer/stream: not an MJPEG stream (Content-Type {content_type!r})"
        )
    found = _BOUNDARY_RE.search(content_type)
    if not found:
        raise KvmProtocolError(device, "GET /streamer/stream: multipart answer without a boundary")
    return b"--" + found.group(1).encode("ascii")


class MjpegSplitter:
    """Whole JPEG frames out of a multipart stream fed in pieces of any size.

    Each part must have a ``Content-Length`` (uStreamer always sends one) of at most
    ``max_frame`` bytes and headers of at most :data:`MAX_PART_HEADERS`; anything else raises
    :class:`KvmProtocolError` and the stream ends. Parts that are not ``image/jpeg`` are
    skipped.
    """

    def __init__(self, device: str, boundary: bytes, max_frame: int = MAX_FRAME_BYTES) -> None:
        self.device = device
        self.boundary = boundary
        self.max_frame = max_frame
        self._buf = bytearray()
        self._need: int | None = None  # body bytes of the current part, once its headers are read
        self._jpeg = True
        self.frames = 0

    def _fail(self, what: str) -> None:
        raise KvmProtocolError(self.device, f"GET /streamer/stream: {what}")

    def feed(self, data: bytes) -> list[bytes]:
        """The frames completed by ``data``."""
        self._buf += data
        out = []
        while True:
            if self._need is None:
                end = self._buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buf) > MAX_PART_HEADERS + len(self.boundary) + 4:
                        self._fail("part headers too long or missing")
                    return out
                head = bytes(self._buf[:end]).decode("latin-1")
                del self._buf[: end + 4]
                self._need, self._jpeg = self._headers(head)
            if len(self._buf) < self._need:
                return out
            body = bytes(self._buf[: self._need])
            del self._buf[: self._need]
            self._need = None
            if self._jpeg:
                if not body.startswith(b"\xff\xd8"):
                    self._fail("a part labelled image/jpeg is not a JPEG")
                self.frames += 1
                out.append(body)

    def _headers(self, head: str) -> tuple[int, bool]:
        lines = [line for line in head.split("\r\n") if line.strip()]
        # the boundary line comes before each part's headers
        while lines and lines[0].strip().startswith("--"):
            if lines[0].strip().encode("latin-1") not in (self.boundary, self.boundary + b"--"):
                self._fail(f"unexpected boundary {lines[0][:80]!r}")
            lines.pop(0)
        headers = {}
        for line in lines:
            name, sep, value = line.partition(":")
            if not sep:
                self._fail(f"malformed part header {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
        length = headers.get("content-length", "")
        if not length.isdigit():
            self._fail("part without Content-Length")
        size = int(length)
        if size > self.max_frame:
            self._fail(f"frame of {size} bytes refused (at most {self.max_frame})")
        return size, headers.get("content-type", "").lower().startswith("image/jpeg")


def mjpeg_part(frame: bytes) -> bytes:
    """One frame as the engine sends it to the browser (after the stream's first boundary)."""
    head = f"Content-Type: image/jpeg\r\nContent-Length: {len(frame)}\r\n\r\n".encode("ascii")
    return head + frame + f"\r\n--{BOUNDARY}\r\n".encode("ascii")


def stream_start() -> bytes:
    return f"--{BOUNDARY}\r\n".encode("ascii")
