"""The HID names kvmd accepts, and its binary websocket encoding of HID events.

Key names are the browser's ``KeyboardEvent.code`` values kvmd maps to evdev codes
(``WEB_TO_EVDEV`` in ``kvmd/keyboard/mappings.py``, kvmd 4.197); mouse buttons are the keys of
``MOUSE_TO_EVDEV`` in ``kvmd/mouse.py``; absolute mouse coordinates run from -32768 to 32767
(``MouseRange``) and relative deltas from -127 to 127 (``MouseDelta``).

kvmd takes HID events on ``/api/ws`` both as JSON text (``{"event_type": "key", "event":
{"key": "KeyA", "state": true, "finish": false}}``) and as binary frames whose first byte is
the operation (``@exposed_ws(1..5)`` in ``kvmd/apps/kvmd/api/hid.py``); kvmd's own web UI
sends the binary form (``web/share/js/kvm/session.js``, ``__sendHidEvent``). It drops a
malformed event silently, so the client checks names and ranges before sending.
"""

from __future__ import annotations

import json
import struct

WEB_KEYS = frozenset(
    """
    KeyA KeyB KeyC KeyD KeyE KeyF KeyG KeyH KeyI KeyJ KeyK KeyL KeyM KeyN KeyO KeyP KeyQ KeyR
    KeyS KeyT KeyU KeyV KeyW KeyX KeyY KeyZ Digit1 Digit2 Digit3 Digit4 Digit5 Digit6 Digit7
    Digit8 Digit9 Digit0 Enter Escape Backspace Tab Space Minus Equal BracketLeft
    BracketRight Backslash Semicolon Quote Backquote Comma Period Slash CapsLock F1 F2 F3 F4
    F5 F6 F7 F8 F9 F10 F11 F12 PrintScreen Insert Home PageUp Delete End PageDown ArrowRight
    ArrowLeft ArrowDown ArrowUp ControlLeft ShiftLeft AltLeft MetaLeft ControlRight
    ShiftRight AltRight MetaRight Pause ScrollLock NumLock ContextMenu NumpadDivide
    NumpadMultiply NumpadSubtract NumpadAdd NumpadEnter Numpad1 Numpad2 Numpad3 Numpad4
    Numpad5 Numpad6 Numpad7 Numpad8 Numpad9 Numpad0 NumpadDecimal Power IntlBackslash IntlYen
    IntlRo KanaMode Convert NonConvert AudioVolumeMute AudioVolumeUp AudioVolumeDown F20 F21
    F22 F23 F24 F13 F14 F15 F16 F17 F18 F19
    """.split()
)
MOUSE_BUTTONS = frozenset({"left", "right", "middle", "up", "down"})
MOUSE_MIN, MOUSE_MAX = -32768, 32767
DELTA_MIN, DELTA_MAX = -127, 127

# Binary websocket operations (first byte), kvmd/apps/kvmd/api/hid.py and server.py.
OP_PING = 0
OP_KEY = 1
OP_MOUSE_BUTTON = 2
OP_MOUSE_MOVE = 3
OP_MOUSE_RELATIVE = 4
OP_MOUSE_WHEEL = 5
OP_PONG = 255


def check_key(key: str) -> str:
    """``key`` if kvmd knows it, else ``ValueError`` naming it."""
    if key not in WEB_KEYS:
        raise ValueError(f"{key!r} is not a kvmd key name (KeyboardEvent.code, e.g. 'KeyA')")
    return key


def check_button(button: str) -> str:
    if button not in MOUSE_BUTTONS:
        raise ValueError(
            f"{button!r} is not a kvmd mouse button ({', '.join(sorted(MOUSE_BUTTONS))})"
        )
    return button


def check_position(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not MOUSE_MIN <= value <= MOUSE_MAX:
        raise ValueError(f"mouse {name} must be an integer from {MOUSE_MIN} to {MOUSE_MAX}")
    return value


def check_delta(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not DELTA_MIN <= value <= DELTA_MAX:
        raise ValueError(f"mouse {name} must be an integer from {DELTA_MIN} to {DELTA_MAX}")
    return value


def key_frame(key: str, state: bool, finish: bool = False) -> bytes:
    """Binary key event: op 1, flags (bit 0 pressed, bit 1 finish), the ASCII key name."""
    flags = (1 if state else 0) | (2 if finish else 0)
    return bytes((OP_KEY, flags)) + check_key(key).encode("ascii")


def mouse_button_frame(button: str, state: bool) -> bytes:
    return bytes((OP_MOUSE_BUTTON, 1 if state else 0)) + check_button(button).encode("ascii")


def mouse_move_frame(to_x: int, to_y: int) -> bytes:
    """Binary absolute move: op 3, x and y as big-endian signed 16-bit."""
    return struct.pack(">Bhh", OP_MOUSE_MOVE, check_position(to_x, "x"), check_position(to_y, "y"))


def mouse_delta_frame(op: int, deltas: list[tuple[int, int]], squash: bool = False) -> bytes:
    """Binary relative move (op 4) or wheel (op 5): squash flag, then signed byte pairs."""
    body = b"".join(
        struct.pack(">bb", check_delta(dx, "delta x"), check_delta(dy, "delta y"))
        for dx, dy in deltas
    )
    return bytes((op, 1 if squash else 0)) + body


def json_event(event_type: str, event: dict) -> str:
    """A text event as kvmd parses it (``parse_ws_event`` in ``kvmd/htserver.py``)."""
    return json.dumps({"event_type": event_type, "event": event})
