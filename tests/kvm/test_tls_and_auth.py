"""TLS (verification, pinning, timeouts) and kvmd's two ways to authenticate, TOTP included."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time

import pyotp
import pytest

from saltext_fleet.kvm import envelope
from saltext_fleet.kvm.client import KvmClient
from saltext_fleet.kvm.errors import (
    KvmAuthError,
    KvmConnectionError,
    KvmFingerprintError,
    KvmTimeoutError,
    KvmTlsError,
)
from saltext_fleet.kvm.options import format_fingerprint
from tests.kvm.conftest import PASSWORD, TOTP_SECRET, options_for
from tests.support.fakekvmd import FakeKvmd

WRONG_PIN = "00" * 32


def _raw_get(fake, path, headers=None):
    """A request with no client logic in between, to see what the fake itself answers."""
    context = ssl.create_default_context()  # the test looks at the fake, not at TLS
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", fake.port, context=context, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        conn.close()


# ----- TLS ---------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["hex", "colons"])
def test_the_right_pin_connects(fake, style):
    pin = fake.fingerprint if style == "hex" else format_fingerprint(fake.fingerprint)
    with KvmClient(options_for(fake, fingerprint=pin)) as kvm:
        assert kvm.info()["system"]["kvmd"]["version"] == "4.197"
    assert [r.path for r in fake.requests] == ["/api/auth/login", "/api/info"]


@pytest.mark.parametrize("auth", ["session", "headers"])
def test_a_wrong_pin_is_refused_before_any_credential_is_sent(fake, auth):
    with KvmClient(options_for(fake, fingerprint=WRONG_PIN, auth=auth)) as kvm:
        with pytest.raises(KvmFingerprintError) as err:
            kvm.atx_power("on")
        # The websocket and the MJPEG stream open their own connections: same check.
        with pytest.raises(KvmFingerprintError):
            kvm.events()
        with pytest.raises(KvmFingerprintError):
            next(kvm.mjpeg_frames())
    message = str(err.value)
    assert message.startswith("kvm 127.0.0.1: certificate fingerprint mismatch")
    assert format_fingerprint(fake.fingerprint) in message
    assert format_fingerprint(WRONG_PIN) in message
    # Not a single HTTP request reached the device: no login, no header, nothing.
    assert fake.requests == []
    assert fake.atx_clicks == []


def test_default_verification_refuses_the_self_signed_certificate(fake):
    with KvmClient(options_for(fake, fingerprint=None)) as kvm:
        with pytest.raises(KvmTlsError) as err:
            kvm.info()
    assert not isinstance(err.value, KvmFingerprintError)
    assert str(err.value).startswith("kvm 127.0.0.1: certificate verification failed")
    assert "fingerprint" in str(err.value)  # it says how to fix it
    assert fake.requests == []


def test_verify_with_the_device_ca_bundle_connects(fake):
    with KvmClient(options_for(fake, fingerprint=None, verify=fake.cert_path)) as kvm:
        assert kvm.atx_state()["enabled"] is True


def test_verify_false_connects_without_a_pin(fake, caplog):
    with KvmClient(options_for(fake, fingerprint=None, verify=False)) as kvm:
        kvm.atx_state()
    assert "not verified" in caplog.text


def test_connect_timeout_when_the_device_never_answers_tls():
    # A socket that listens but never accepts: TCP connects (backlog), TLS never answers.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        port = silent.getsockname()[1]
        options = {"host": "127.0.0.1", "port": port, "password": "x", "fingerprint": WRONG_PIN}
        with KvmClient({**options, "connect_timeout": 0.3}) as kvm:
            started = time.monotonic()
            with pytest.raises(KvmTimeoutError) as err:
                kvm.info()
        assert time.monotonic() - started < 2
        assert str(err.value) == "kvm 127.0.0.1: TLS handshake timed out after 0.3 s"
    finally:
        silent.close()


def test_a_closed_port_names_the_device_and_port():
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with KvmClient({"host": "127.0.0.1", "port": port, "password": "x"}) as kvm:
        with pytest.raises(KvmConnectionError) as err:
            kvm.info()
    assert str(err.value).startswith(f"kvm 127.0.0.1: cannot connect to port {port}:")


def test_a_stalled_endpoint_times_out_and_the_client_recovers(fake):
    fake.stall("/api/info", 3)
    with KvmClient(options_for(fake, timeout=0.3)) as kvm:
        started = time.monotonic()
        with pytest.raises(KvmTimeoutError) as err:
            kvm.info()
        assert time.monotonic() - started < 2
        assert str(err.value) == "kvm 127.0.0.1: GET /api/info: no answer within 0.3 s"
        # Another endpoint on the same client works: the stalled connection was dropped.
        assert kvm.atx_state()["busy"] is False


# ----- authentication ----------------------------------------------------------------------


def test_the_fake_answers_like_kvmd_without_and_with_wrong_credentials(fake):
    """kvmd (api/auth.py): no credentials 401, wrong ones 403, both in the JSON envelope."""
    status, ctype, body = _raw_get(fake, "/api/atx")
    assert status == 401 and ctype.startswith("application/json")
    assert json.loads(body) == {
        "ok": False,
        "result": {"error": "UnauthorizedError", "error_msg": "Unauthorized"},
    }
    status, _, body = _raw_get(fake, "/api/atx", {"X-KVMD-User": "admin", "X-KVMD-Passwd": "no"})
    assert status == 403
    assert json.loads(body)["result"] == {"error": "ForbiddenError", "error_msg": "Forbidden"}
    # A user name kvmd's validator refuses is a 400, before any password check.
    status, _, body = _raw_get(fake, "/api/atx", {"X-KVMD-User": "Bad User", "X-KVMD-Passwd": "x"})
    assert status == 400
    assert json.loads(body)["result"]["error"] == "ValidatorError"
    # The client reads both the same way.
    with pytest.raises(KvmAuthError) as err:
        envelope.decode("pikvm-1", "GET /api/atx", 401, body=_raw_get(fake, "/api/atx")[2])
    assert str(err.value) == "kvm pikvm-1: GET /api/atx: HTTP 401 UnauthorizedError: Unauthorized"


def test_header_auth_sends_the_credentials_with_every_request(fake):
    with KvmClient(options_for(fake, auth="headers")) as kvm:
        kvm.info()
        kvm.atx_state()
    assert [(r.path, r.auth, r.user, r.status) for r in fake.requests] == [
        ("/api/info", "xhdr", "admin", 200),
        ("/api/atx", "xhdr", "admin", 200),
    ]


def test_session_auth_logs_in_once_and_uses_the_cookie(fake):
    with KvmClient(options_for(fake)) as kvm:
        kvm.info()
        kvm.atx_state()
        kvm.hid_state()
    assert [(r.path, r.auth) for r in fake.requests] == [
        ("/api/auth/login", "login"),
        ("/api/info", "token"),
        ("/api/atx", "token"),
        ("/api/hid", "token"),
    ]
    assert len(fake.sessions) == 1


def test_session_auth_logs_in_again_when_kvmd_forgot_the_token(fake):
    with KvmClient(options_for(fake)) as kvm:
        kvm.info()
        fake.sessions.clear()  # kvmd restarted: its sessions live in memory only
        kvm.atx_power("on")
    assert [(r.path, r.status) for r in fake.requests] == [
        ("/api/auth/login", 200),
        ("/api/info", 200),
        ("/api/atx/power", 403),
        ("/api/auth/login", 200),
        ("/api/atx/power", 200),
    ]
    assert fake.atx_clicks == ["power"]  # once: the refused request did nothing


@pytest.mark.parametrize("auth", ["session", "headers"])
def test_a_wrong_password_is_a_403_naming_the_device(fake, auth):
    with KvmClient(options_for(fake, auth=auth, password="wrong")) as kvm:
        with pytest.raises(KvmAuthError) as err:
            kvm.atx_power("on")
    path = "/api/auth/login" if auth == "session" else "/api/atx/power"
    assert err.value.status == 403 and err.value.error == "ForbiddenError"
    assert str(err.value) == f"kvm 127.0.0.1: POST {path}: HTTP 403 ForbiddenError: Forbidden"
    assert fake.atx_clicks == []


def test_logout_ends_the_session(fake):
    with KvmClient(options_for(fake)) as kvm:
        kvm.info()
        kvm.logout()
        assert fake.sessions == {}
        kvm.info()  # logs in again
    assert [r.path for r in fake.requests].count("/api/auth/login") == 2


def test_the_mjpeg_stream_refused_by_nginx_reads_as_an_auth_error(fake):
    """/streamer is behind nginx's auth_request: its HTML page, not kvmd's JSON."""
    with KvmClient(options_for(fake, auth="headers", password="wrong")) as kvm:
        with pytest.raises(KvmAuthError) as err:
            next(kvm.mjpeg_frames())
    assert str(err.value) == "kvm 127.0.0.1: GET /streamer/stream: HTTP 403: 403 Forbidden"


@pytest.fixture(scope="module")
def totp_fake(certificate):
    with FakeKvmd(password=PASSWORD, totp_secret=TOTP_SECRET, certificate=certificate) as fake:
        yield fake


@pytest.mark.parametrize("auth", ["session", "headers"])
def test_totp_code_is_appended_to_the_password(totp_fake, auth):
    totp_fake.reset()
    with KvmClient(options_for(totp_fake, auth=auth, totp_secret=TOTP_SECRET)) as kvm:
        assert kvm.atx_state()["enabled"] is True
    assert totp_fake.requests[-1].user == "admin"
    # Without the secret the same password is refused: the device wants the code.
    with KvmClient(options_for(totp_fake, auth=auth)) as kvm:
        with pytest.raises(KvmAuthError):
            kvm.atx_state()
    # The fake checks the code itself: the password followed by the current code is accepted.
    code = pyotp.TOTP(TOTP_SECRET).now()
    status, _, _ = _raw_get(
        totp_fake, "/api/atx", {"X-KVMD-User": "admin", "X-KVMD-Passwd": PASSWORD + code}
    )
    assert status == 200
    status, _, _ = _raw_get(
        totp_fake, "/api/atx", {"X-KVMD-User": "admin", "X-KVMD-Passwd": PASSWORD + "000000"}
    )
    assert status == 403 or code == "000000"
