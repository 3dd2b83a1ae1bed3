"""The console's asyncio connections to kvmd (saltext_fleet.kvm.aio, used by the MJPEG
stream, the websocket bridge and the WebRTC peer) against the fake kvmd: both ways of
authenticating, the TLS rules (pinned, a CA bundle, refused), the input-only websocket
(``send``), and errors that name the device and what failed."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from saltext_fleet.kvm.aio import KvmAio
from saltext_fleet.kvm.errors import (
    KvmAuthError,
    KvmConnectionError,
    KvmFingerprintError,
    KvmTlsError,
)
from saltext_fleet.kvm.options import load_options
from tests.kvm.conftest import PASSWORD, TOTP_SECRET, options_for
from tests.support.fakekvmd import FakeKvmd


def run(coro):
    """``coro`` on a loop of its own, which then runs a moment longer: a TLS transport that
    was closed sends its last bytes (a websocket's close frame) and shuts down on the loop, and
    a loop that ends at once drops them (aiohttp's graceful-shutdown advice). The engine's
    loop runs on, so the product needs no such pause."""

    async def then_settle():
        try:
            return await coro
        finally:
            await asyncio.sleep(0.25)

    return asyncio.run(then_settle())


async def frames(options, count=3) -> list[bytes]:
    got = []
    async with KvmAio(load_options(options)) as kvm:
        async for frame in kvm.frames():
            got.append(frame)
            if len(got) == count:
                return got
    return got


async def first_events(options, count=3) -> list[dict]:
    async with KvmAio(load_options(options)) as kvm:
        ws = await kvm.events()
        try:
            out = []
            while len(out) < count:
                msg = await ws.receive(timeout=5)
                assert msg.type == aiohttp.WSMsgType.TEXT
                out.append(json.loads(msg.data))
            await ws.send_str(
                json.dumps({"event_type": "key", "event": {"key": "KeyQ", "state": True}})
            )
            return out
        finally:
            await ws.close()


@pytest.mark.parametrize("auth", ["session", "headers"])
def test_frames_and_events_with_either_auth(fake, auth):
    got = run(frames(options_for(fake, auth=auth)))
    assert len(got) == 3 and all(f.startswith(b"\xff\xd8") and f.endswith(b"\xff\xd9") for f in got)
    events = run(first_events(options_for(fake, auth=auth)))
    assert events[0] == {"event_type": "loop", "event": {"version": {"major": 4, "minor": 197}}}
    seen = {r.auth for r in fake.seen() if r.path in ("/streamer/stream", "/api/ws")}
    assert seen == ({"token"} if auth == "session" else {"xhdr"})
    assert [e["key"] for e in fake.hid_events if e["type"] == "key"] == ["KeyQ"]


def test_a_ca_bundle_verifies_the_device(fake):
    got = run(frames(options_for(fake, fingerprint=None, verify=fake.cert_path), count=1))
    assert len(got) == 1


def test_an_unverified_certificate_gets_nothing(fake):
    with pytest.raises(KvmTlsError, match="certificate verification failed") as exc:
        run(frames(options_for(fake, fingerprint=None)))
    assert str(exc.value).startswith("kvm 127.0.0.1: ")
    with pytest.raises(KvmFingerprintError, match="nothing was sent"):
        run(first_events(options_for(fake, fingerprint="cd" * 32)))
    with pytest.raises(KvmFingerprintError, match="nothing was sent"):
        run(send(options_for(fake, auth="headers", fingerprint="cd" * 32), [KEY_DOWN]))
    assert fake.requests == []


def test_wrong_credentials_say_so(fake):
    with pytest.raises(KvmAuthError, match=r"GET /streamer/stream: HTTP 403"):
        run(frames(options_for(fake, auth="headers", password="wrong-pw")))
    with pytest.raises(KvmAuthError, match=r"POST /api/auth/login: HTTP 403"):
        run(first_events(options_for(fake, password="wrong-pw")))
    with pytest.raises(KvmAuthError, match=r"GET /api/ws: HTTP 403"):
        run(first_events(options_for(fake, auth="headers", password="wrong-pw")))


@pytest.mark.parametrize("auth", ["session", "headers"])
def test_a_device_with_two_factors_gets_the_code_appended(certificate, auth):
    with FakeKvmd(password=PASSWORD, totp_secret=TOTP_SECRET, certificate=certificate) as fake:
        got = run(frames(options_for(fake, auth=auth, totp_secret=TOTP_SECRET), count=1))
        assert len(got) == 1 and fake.seen("/streamer/stream")[-1].user == "admin"
        with pytest.raises(KvmAuthError):  # without the code
            run(frames(options_for(fake, auth=auth), count=1))


KEY_DOWN = json.dumps({"event_type": "key", "event": {"key": "KeyS", "state": True}})
KEY_UP = json.dumps({"event_type": "key", "event": {"key": "KeyS", "state": False}})


async def send(options, texts) -> tuple[bool, bool]:
    """Send ``texts`` with one KvmAio; whether its websocket was open, and is after close."""
    kvm = KvmAio(load_options(options))
    try:
        for text in texts:
            await kvm.send(text)
        was_open = kvm.ws_open
    finally:
        await kvm.close()
    with pytest.raises(KvmConnectionError, match="console closed"):
        await kvm.send(KEY_DOWN)
    return was_open, kvm.ws_open


@pytest.mark.parametrize("auth", ["session", "headers"])
def test_send_opens_one_websocket_for_input_and_close_ends_it(fake, auth):
    assert run(send(options_for(fake, auth=auth), [KEY_DOWN, KEY_UP])) == (True, False)
    assert [(e["key"], e["state"]) for e in fake.hid_events] == [("KeyS", True), ("KeyS", False)]
    assert len(fake.seen("/api/ws")) == 1
    # (not asserted: when the fake's side ends. The test's loop ends right after the close,
    # and whether the TLS transport's last bytes left before it did varies with the machine's
    # load: the fake then notices by its heartbeat, up to 15 s later.)
