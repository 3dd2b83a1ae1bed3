"""A real browser on the console's WebRTC path: Debian's Chromium (Playwright), run as a
process inside a network namespace.

``python -m tests.support.webrtc_chromium <base_url> <cookie> <key> watch|fail`` opens a page
of the UI with the session ``cookie``, loads ``/static/kvm_webrtc.js`` and calls
``startWebRTC(video, "pikvm-1")``. ``watch``: once the promise resolves, it samples the centre
pixel of the playing video a few times, presses and releases ``key`` through the console
object and prints one JSON line ``{"input", "sent", "colours", "size", "ms"}`` (or
``{"error"}``). ``fail``: prints ``{"rejected": <message>, "ms"}`` or ``{"resolved": true}``
(with a 4 s ICE timeout). Either way it quits on the next stdin line.
"""

from __future__ import annotations

import json
import sys

from playwright.sync_api import sync_playwright

from tests.support.browser import launch_chromium

WATCH = """async ([key, wanted]) => {
  const video = document.createElement('video');
  video.muted = true; video.playsInline = true; document.body.appendChild(video);
  const started = performance.now();
  let kvm;
  try { kvm = await startWebRTC(video, 'pikvm-1'); } catch (e) { return {error: String(e)}; }
  const ms = performance.now() - started;
  window.kvm = kvm;
  const canvas = document.createElement('canvas');
  const colours = [];
  const deadline = performance.now() + 10000;
  let last = -1;
  while (colours.length < wanted && performance.now() < deadline) {
    await new Promise(r => setTimeout(r, 40));
    if (!video.videoWidth) continue;
    const quality = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
    const shown = quality ? quality.totalVideoFrames : colours.length + 1;
    if (shown === last) continue;
    last = shown;
    canvas.width = video.videoWidth; canvas.height = video.videoHeight;
    const ctx = canvas.getContext('2d');
    ctx.drawImage(video, 0, 0);
    const d = ctx.getImageData(video.videoWidth >> 1, video.videoHeight >> 1, 1, 1).data;
    colours.push([d[0], d[1], d[2]]);
  }
  const sent = kvm.sendKey(key, true) && kvm.sendKey(key, false);
  return {input: kvm.input, sent, colours, ms, size: [video.videoWidth, video.videoHeight]};
}"""

FAIL = """async () => {
  const video = document.createElement('video');
  const started = performance.now();
  try { await startWebRTC(video, 'pikvm-1', {timeoutMs: 4000}); return {resolved: true}; }
  catch (e) { return {rejected: String(e.message || e), ms: performance.now() - started}; }
}"""


def open_page(pw, base_url: str, cookie: str):
    browser = launch_chromium(pw)
    context = browser.new_context()
    context.add_cookies(
        [
            {"name": name.strip(), "value": value, "url": base_url}
            for name, _, value in (pair.partition("=") for pair in cookie.split(";"))
        ]
    )
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(base_url + "/kvm")
    page.add_script_tag(url="/static/kvm_webrtc.js")
    return browser, page


def main(base_url: str, cookie: str, key: str, mode: str) -> None:
    with sync_playwright() as pw:
        browser, page = open_page(pw, base_url, cookie)
        try:
            if mode == "watch":
                print(json.dumps(page.evaluate(WATCH, [key, 8])), flush=True)
            else:
                print(json.dumps(page.evaluate(FAIL)), flush=True)
            sys.stdin.readline()
        finally:
            browser.close()


if __name__ == "__main__":
    main(*sys.argv[1:5])
