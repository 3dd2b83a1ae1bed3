"""The WebRTC console end to end, across a real network: the engine's web server, its aiortc
peer and the fake kvmd in one network namespace, a second aiortc peer (the "browser") in
another, joined by a veth pair (aiortc gathers no candidates on loopback). The browser's
offer goes through ``POST /kvm/<name>/console/webrtc`` with a session cookie, so this covers
signalling, auth, video and input. Needs root (the test machine runs as root).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.netns import namespaces, veth_chain, veth_pair

ROOT = Path(__file__).resolve().parents[2]
# the fake's frames: red, green, blue, yellow (tests/support/fakekvmd.py _FRAME_COLOURS)
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]
FRAMES = 12

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None,
    reason="network namespaces need root and iproute2",
)


def _start(pair, side, module, *args):
    return subprocess.Popen(
        pair.command(side, [sys.executable, "-m", module, *map(str, args)]),
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _line(proc, what):
    line = proc.stdout.readline()
    if not line:
        proc.wait(5)
        raise AssertionError(f"{what} ended without answering: {proc.stderr.read()[-3000:]}")
    return json.loads(line)


def _stop(proc):
    if proc.poll() is None:
        try:
            proc.stdin.write("quit\n")
            proc.stdin.flush()
            proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait(5)


def _nearest(rgb):
    return min(COLOURS, key=lambda c: sum((a - b) ** 2 for a, b in zip(c, rgb, strict=True)))


def _distance(a, b):
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def test_webrtc_video_and_datachannel_keys_across_namespaces(tmp_path):
    began = time.monotonic()
    with veth_pair() as pair:
        engine = browser = None
        try:
            engine = _start(pair, "a", "tests.support.webrtc_engine", tmp_path)
            ready = _line(engine, "the engine")
            url = f"http://{pair.address_a}:{ready['port']}/kvm/pikvm-1/console/webrtc"

            def events():
                engine.stdin.write("events\n")
                engine.stdin.flush()
                return _line(engine, "the engine")

            # a viewer watches: frames arrive, its keys are refused and never reach kvmd
            browser = _start(
                pair,
                "b",
                "tests.support.webrtc_browser",
                url,
                ready["cookies"]["viewer"],
                "KeyV",
                3,
            )
            seen = _line(browser, "the viewer's browser")
            assert seen["status"] == 200, seen
            assert seen["input"] is False
            assert len(seen["colours"]) == 3
            assert len(seen["replies"]) == 2, seen["replies"]
            # the websocket's refusal, word for word (ConsoleInput's)
            for reply in map(json.loads, seen["replies"]):
                assert reply["type"] == "refused", reply
                assert "your role (viewer) may watch this console but not type" in reply["error"]
            _stop(browser)

            # an operator watches and types
            browser = _start(
                pair,
                "b",
                "tests.support.webrtc_browser",
                url,
                ready["cookies"]["operator"],
                "KeyO",
                FRAMES,
            )
            seen = _line(browser, "the operator's browser")
            assert seen["status"] == 200, seen
            assert seen["input"] is True
            assert seen["state"] == "connected"
            colours = seen["colours"]
            assert len(colours) == FRAMES
            # each decoded frame is one of the fake's solid colours (VP8 is lossy) ...
            for rgb in colours:
                assert _distance(rgb, _nearest(rgb)) <= 20, (rgb, colours)
            # ... and the video moves: the fake cycles through its colours
            assert len({_nearest(rgb) for rgb in colours}) >= 2, colours

            deadline = time.monotonic() + 10
            keys = []
            while time.monotonic() < deadline:
                keys = [(e["key"], e["state"]) for e in events()["events"] if e["type"] == "key"]
                if len(keys) >= 2:
                    break
                time.sleep(0.1)
            assert keys == [("KeyO", True), ("KeyO", False)], keys
            assert all(e["via"] == "ws" for e in events()["events"])

            # the browser hangs up: the engine's peer closes its kvmd websocket
            browser.stdin.write("close\n")
            browser.stdin.flush()
            assert _line(browser, "the operator's browser") == {"closed": True}
            deadline = time.monotonic() + 10
            while events()["ws_open"] and time.monotonic() < deadline:
                time.sleep(0.1)
            assert events()["ws_open"] == 0
        finally:
            for proc in (browser, engine):
                if proc is not None:
                    _stop(proc)
    assert pair.a not in namespaces() and pair.b not in namespaces()
    assert time.monotonic() - began < 60


PROXY = """
import sys
from tests.support.tcpproxy import TCPProxy
proxy = TCPProxy(sys.argv[1], int(sys.argv[2]), listen_host=sys.argv[3]).start()
print(proxy.port, flush=True)
sys.stdin.readline()
"""


def test_chromium_console_page_script_and_its_rejection_without_a_udp_path(tmp_path):
    """Debian's Chromium calls startWebRTC() (static/kvm_webrtc.js) against the engine: the
    video plays with the fake's colours and a key reaches kvmd. A Chromium that reaches the UI
    only through a TCP proxy (no route for UDP to the master) gets a rejected promise within
    its timeout, which is when the console page falls back to MJPEG."""
    with veth_chain(3) as chain:
        engine = browser = proxy = None
        try:
            engine = _start(chain, "a", "tests.support.webrtc_engine", tmp_path)
            ready = _line(engine, "the engine")
            cookie = ready["cookies"]["operator"]
            base = f"http://{chain.address_a}:{ready['port']}"
            browser = _start(
                chain, "b", "tests.support.webrtc_chromium", base, cookie, "KeyC", "watch"
            )
            seen = _line(browser, "Chromium")
            assert "error" not in seen, seen
            assert seen["input"] is True and seen["sent"] is True
            assert seen["size"] == [64, 48]
            assert len(seen["colours"]) >= 4, seen
            for rgb in seen["colours"]:
                assert _distance(rgb, _nearest(rgb)) <= 24, seen["colours"]
            assert len({_nearest(rgb) for rgb in seen["colours"]}) >= 2, seen["colours"]

            deadline = time.monotonic() + 10
            keys = []
            while time.monotonic() < deadline:
                engine.stdin.write("events\n")
                engine.stdin.flush()
                got = _line(engine, "the engine")["events"]
                keys = [(e["key"], e["state"]) for e in got if e["type"] == "key"]
                if len(keys) >= 2:
                    break
                time.sleep(0.1)
            assert keys == [("KeyC", True), ("KeyC", False)]
            _stop(browser)

            # the third namespace reaches the UI only through a TCP proxy in the second
            proxy = subprocess.Popen(
                chain.command(
                    "b",
                    [
                        sys.executable,
                        "-c",
                        PROXY,
                        chain.address_a,
                        str(ready["port"]),
                        chain.address(1, 1),
                    ],
                ),
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
            proxied = f"http://{chain.address(1, 1)}:{int(proxy.stdout.readline())}"
            browser = _start(
                chain, "c", "tests.support.webrtc_chromium", proxied, cookie, "KeyC", "fail"
            )
            failed = _line(browser, "Chromium")
            assert "did not connect within 4000 ms" in failed.get("rejected", ""), failed
            assert failed["ms"] < 4000 + 2000 + 2000  # gathering, the offer, the timeout
        finally:
            for proc in (browser, proxy, engine):
                if proc is not None:
                    _stop(proc)
    assert not set(chain.names) & namespaces()
