"""Client options, fingerprints, the error family and the pure helpers (no server)."""

from __future__ import annotations

import inspect
import json
import struct

import pytest

from saltext_fleet.core.errors import FleetError
from saltext_fleet.kvm import envelope, errors, hidcodes
from saltext_fleet.kvm.client import KvmClient, parse_event
from saltext_fleet.kvm.options import load_options, normalize_fingerprint

PIN = "ab" * 32


def test_defaults():
    options = load_options({"host": "pikvm-1", "password": "pw"})
    assert (options.user, options.port, options.auth, options.verify) == (
        "admin",
        443,
        "session",
        True,
    )
    assert (options.connect_timeout, options.timeout) == (5.0, 15.0)
    assert options.fingerprint is None and options.totp_secret is None
    assert "pw" not in repr(options)  # the password never shows in a repr or a log line


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"password": "pw"}, "kvm ?: option 'host'"),
        ({"host": "a b", "password": "pw"}, "option 'host'"),
        ({"host": "k1"}, "kvm k1: option 'password': required"),
        ({"host": "k1", "password": "pässword"}, "printable ASCII"),
        ({"host": "k1", "password": "pw", "port": 0}, "option 'port'"),
        ({"host": "k1", "password": "pw", "port": True}, "option 'port'"),
        ({"host": "k1", "password": "pw", "user": "Admin"}, "option 'user'"),
        ({"host": "k1", "password": "pw", "auth": "basic"}, "option 'auth': one of"),
        ({"host": "k1", "password": "pw", "verify": 3}, "option 'verify'"),
        ({"host": "k1", "password": "pw", "fingerprint": "abc"}, "option 'fingerprint'"),
        ({"host": "k1", "password": "pw", "totp_secret": "not base32!"}, "option 'totp_secret'"),
        ({"host": "k1", "password": "pw", "timeout": 0}, "option 'timeout'"),
        ({"host": "k1", "password": "pw", "connect_timeout": "x"}, "option 'connect_timeout'"),
        ({"host": "k1", "password": "pw", "passwd": "pw"}, "unknown option(s): passwd"),
    ],
)
def test_bad_options_are_named(raw, message):
    with pytest.raises(errors.KvmConfigError) as err:
        load_options(raw)
    assert message in str(err.value)
    assert isinstance(err.value, ValueError)
    assert "pässword" not in str(err.value)


@pytest.mark.parametrize(
    "text",
    [
        PIN,
        PIN.upper(),
        ":".join(PIN[i : i + 2] for i in range(0, 64, 2)).upper(),
        "sha256 Fingerprint=" + ":".join(PIN[i : i + 2] for i in range(0, 64, 2)).upper(),
    ],
)
def test_fingerprint_forms(text):
    assert normalize_fingerprint(text) == PIN


def test_sha1_fingerprint_is_refused():
    with pytest.raises(ValueError):
        normalize_fingerprint("SHA1 Fingerprint=" + ":".join(["AB"] * 20))


def test_every_kvm_error_is_a_fleet_error():
    classes = [
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if obj.__module__ == errors.__name__
    ]
    assert len(classes) >= 10
    assert all(issubclass(cls, FleetError) for cls in classes)
    assert all(issubclass(cls, errors.KvmError) for cls in classes)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, errors.KvmBadRequestError),
        (401, errors.KvmAuthError),
        (403, errors.KvmAuthError),
        (409, errors.KvmBusyError),
        (503, errors.KvmUnavailableError),
        (502, errors.KvmHttpError),
    ],
)
def test_envelope_maps_status_to_class(status, cls):
    body = json.dumps({"ok": False, "result": {"error": "SomeError", "error_msg": "why"}})
    with pytest.raises(cls) as err:
        envelope.decode("k1", "GET /api/x", status, body.encode())
    assert type(err.value) is cls
    assert str(err.value) == f"kvm k1: GET /api/x: HTTP {status} SomeError: why"


def test_envelope_reads_results_and_refuses_what_is_not_kvmd():
    assert envelope.decode("k1", "GET /x", 200, b'{"ok": true, "result": {"a": 1}}') == {"a": 1}
    with pytest.raises(errors.KvmProtocolError, match="not JSON"):
        envelope.decode("k1", "GET /x", 200, b"<html>")
    with pytest.raises(errors.KvmProtocolError, match="envelope"):
        envelope.decode("k1", "GET /x", 200, b'{"a": 1}')
    page = b"<html><head><title>502 Bad Gateway</title></head></html>"
    with pytest.raises(errors.KvmHttpError) as err:
        envelope.decode("k1", "GET /x", 502, page)
    assert str(err.value) == "kvm k1: GET /x: HTTP 502: 502 Bad Gateway"


def test_binary_hid_frames_match_kvmd_web_ui():
    """The byte layout of web/share/js/kvm/session.js __sendHidEvent."""
    assert hidcodes.key_frame("KeyA", True) == b"\x01\x01KeyA"
    assert hidcodes.key_frame("KeyA", False, finish=True) == b"\x01\x02KeyA"
    assert hidcodes.mouse_button_frame("left", True) == b"\x02\x01left"
    assert hidcodes.mouse_move_frame(-2, 300) == b"\x03" + struct.pack(">hh", -2, 300)
    assert hidcodes.mouse_delta_frame(4, [(1, -1), (2, 3)], squash=True) == bytes(
        [4, 1, 1, 255, 2, 3]
    )
    with pytest.raises(ValueError):
        hidcodes.mouse_delta_frame(5, [(0, 128)])


def test_parse_event():
    event = parse_event("k1", '{"event_type": "atx", "event": {"busy": false}}')
    assert (event.event_type, event.event) == ("atx", {"busy": False})
    with pytest.raises(errors.KvmProtocolError, match="kvm k1: websocket: not a kvmd event"):
        parse_event("k1", '["atx"]')


def test_call_only_reaches_api_paths():
    with KvmClient({"host": "k1", "password": "pw", "fingerprint": PIN}) as kvm:
        with pytest.raises(errors.KvmError, match="not a kvmd API path"):
            kvm.call("GET", "/etc/passwd")
