"""The console page in a real headless Chromium (Debian's), served by the engine's web server
with the fake kvmd behind it: the page draws the fake's MJPEG frames (their pixels are the
fake's colours and the count of drawn frames grows), an operator's key press reaches the fake
as a kvmd key event, a viewer's does not (and the engine's refusal shows on the page), and
leaving the page ends the session in the audit log with its start and end.
Screenshots: test-artifacts/screenshots/."""

from __future__ import annotations

import pytest

from tests.support.browser import launch_chromium, screenshot
from tests.support.fakekvmd import FakeKvmd
from tests.support.kvmconsole import DEVICE, PASSWORD, console_audit, console_server
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(120)
#: The fake's frame colours (tests/support/fakekvmd.py, _FRAME_COLOURS).
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]
PIXEL = """() => {
  const c = document.getElementById('console-canvas');
  const d = c.getContext('2d').getImageData(c.width >> 1, c.height >> 1, 1, 1).data;
  return [d[0], d[1], d[2], Number(c.dataset.frames), c.width, c.height];
}"""


def near(rgb, colour, slack=24) -> bool:
    return all(abs(a - b) <= slack for a, b in zip(rgb, colour, strict=True))


def new_page(browser):
    """A tab of its own; the WebRTC script (when this engine has the peer) is not loaded, so
    the page takes the MJPEG path this test is about at once."""
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    context.route("**/static/kvm_webrtc.js", lambda route: route.abort())
    page = context.new_page()
    page.set_default_timeout(10_000)
    return page


def log_in(page, url: str, username: str) -> None:
    page.goto(url + "/login")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_selector("a.account-link")


def test_the_console_shows_the_stream_and_only_an_operator_types(tmp_path):
    from playwright.sync_api import sync_playwright

    with (
        FakeKvmd(password="console-pw", fps=20, frame_size=(160, 120)) as fake,
        console_server(tmp_path, fake) as ui,
        sync_playwright() as pw,
    ):
        browser = launch_chromium(pw)
        try:
            # an operator: the device page links the console
            oper = new_page(browser)
            log_in(oper, ui["url"], "oper")
            oper.goto(f"{ui['url']}/kvm/{DEVICE}")
            oper.click("#kvm-console-link")
            oper.wait_for_selector('#console[data-ready="1"][data-video="mjpeg"]')
            # frames drawn, with the fake's pixels, changing
            oper.wait_for_function(
                "() => Number(document.getElementById('console-canvas').dataset.frames) >= 3"
            )
            seen = set()
            for _ in range(60):
                r, g, b, frames, width, height = oper.evaluate(PIXEL)
                assert (width, height) == (160, 120)
                match = [c for c in COLOURS if near((r, g, b), c)]
                assert match, f"pixel {(r, g, b)} is none of the fake's colours"
                seen.add(match[0])
                if len(seen) >= 2:
                    break
                oper.wait_for_timeout(50)
            assert len(seen) >= 2, "the picture never changed"
            oper.wait_for_function(
                "(n) => Number(document.getElementById('console-canvas').dataset.frames) >= n",
                arg=frames + 5,
            )
            screenshot(oper, "kvm-console-operator")

            # a key pressed in the page reaches the fake as a kvmd key event
            oper.click("#console-screen")
            oper.keyboard.press("KeyA")
            wait_for(
                "KeyA down and up at the fake",
                lambda: len([e for e in fake.hid_events if e.get("key") == "KeyA"]) >= 2,
                timeout=5,
                interval=0.05,
            )
            keys = [(e["via"], e["key"], e["state"]) for e in fake.hid_events if e["type"] == "key"]
            assert keys[:2] == [("ws", "KeyA", True), ("ws", "KeyA", False)]

            # the click's pointer move is sent on the page's next animation frame, which under
            # load can come after the key: let it arrive before the fake's record is cleared
            wait_for(
                "the operator's pointer move at the fake",
                lambda: any(e["type"] == "mouse_move" for e in fake.hid_events),
                timeout=5,
                interval=0.05,
            )

            # a viewer: the same picture, and no key of theirs reaches the fake
            fake.call(fake.hid_events.clear)
            viewer = new_page(browser)
            log_in(viewer, ui["url"], "watcher")
            viewer.goto(f"{ui['url']}/kvm/{DEVICE}/console")
            viewer.wait_for_selector('#console[data-ready="1"][data-input-allowed="0"]')
            viewer.wait_for_function(
                "() => Number(document.getElementById('console-canvas').dataset.frames) >= 3"
            )
            assert "view only" in viewer.inner_text("#console-mode")
            viewer.click("#console-screen")
            viewer.keyboard.press("KeyB")
            # even sent by hand, the engine refuses it and the page says so
            viewer.evaluate(
                "() => window.fleetConsole.send({event_type: 'key', event: {key: 'KeyB', state: true}})"
            )
            viewer.wait_for_selector('#console[data-last-error="refused"]')
            assert "may watch this console but not type" in viewer.inner_text("#console-error")
            screenshot(viewer, "kvm-console-viewer")
            assert fake.hid_events == []

            # leaving the page ends the session: its audit row has a start and an end
            oper.goto(f"{ui['url']}/kvm/{DEVICE}")
            ended = wait_for(
                "the operator's console session to end in the audit log",
                lambda: [
                    r
                    for r in console_audit(ui["engine"])
                    if r["action"] == "kvm.console.end"
                    and r["actor"] == "ui:oper"
                    and r["details"]["via"] == "ws"
                ],
                timeout=10,
                interval=0.1,
            )[0]["details"]
            assert ended["input"] is True and ended["forwarded"] >= 2
            assert ended["started"] < ended["ended"]
        finally:
            browser.close()
