"""The console's WebRTC path: an aiortc peer on the engine's asyncio loop for one device.

The browser sends an SDP offer (a receive-only video transceiver and a DataChannel); the
engine's :class:`ConsolePeer` answers it, then

* reads the device's MJPEG stream through :class:`~saltext_fleet.kvm.aio.KvmAio` (the same
  connection, TLS rule, credentials and frame splitter as the MJPEG console), decodes each
  JPEG with PyAV (FFmpeg's ``mjpeg`` decoder, in a worker thread) and hands the newest frame
  to a :class:`DeviceVideoTrack`, which aiortc encodes (VP8 or H.264) for the browser;
* takes HID events on the DataChannel exactly as the console's websocket takes them: each
  message goes through :class:`~saltext_fleet.kvm.console.ConsoleInput` (the same checks,
  error messages, rate cap and read-only refusal), its answer (``{"type": "error" |
  "refused" | "pong", ...}``) goes back on the channel, and a checked event (rebuilt, never
  the browser's bytes) goes to kvmd's ``/api/ws`` (:meth:`KvmAio.send
  <saltext_fleet.kvm.aio.KvmAio.send>`, opened on the first event: a viewer's peer never
  opens it).

Closing the peer (:meth:`ConsolePeer.close`: the browser left, ICE failed or never connected,
the user's session ended, the engine stops) cancels the MJPEG reader, releases any key or
button still held down, closes the kvmd websocket and the HTTP session, and closes the
RTCPeerConnection.

aiortc gathers host candidates on every interface but loopback and uses no STUN or TURN
server unless given some (``ice_servers``): the browser must reach the master's address over
UDP (see ``docs/pikvm.rst``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import av
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import MediaStreamError

from saltext_fleet.kvm.aio import KvmAio
from saltext_fleet.kvm.console import ConsoleInput
from saltext_fleet.kvm.errors import KvmArgumentError, KvmError
from saltext_fleet.kvm.options import KvmOptions

log = logging.getLogger(__name__)

#: An offer's JSON body and its SDP: a browser's offer is a few KiB.
MAX_OFFER_BYTES = 64 * 1024
MAX_SDP_BYTES = 32 * 1024
MAX_MEDIA_SECTIONS = 4
#: Frames per second the video track sends at most (uStreamer may send more).
MAX_FPS = 30.0
VIDEO_CLOCK_RATE = 90000
#: Seconds a peer may take from its answer to a connected ICE transport.
CONNECT_TIMEOUT = 15.0
_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)


# ----- pure parts ---------------------------------------------------------------------------


def parse_offer(body: bytes | str, device: str) -> RTCSessionDescription:
    """The browser's offer ``{"sdp": ..., "type": "offer"}``, checked before aiortc sees it.

    Raises :class:`~saltext_fleet.kvm.errors.KvmArgumentError` naming the device and what is
    wrong: not JSON, not an offer, an SDP too long or without a video section, too many media
    sections, bytes that are not printable ASCII.
    """
    if len(body) > MAX_OFFER_BYTES:
        raise KvmArgumentError(device, f"WebRTC offer of {len(body)} bytes refused")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise KvmArgumentError(device, "WebRTC offer: not JSON") from None
    if not isinstance(doc, dict):
        raise KvmArgumentError(device, 'WebRTC offer: a JSON object {"sdp", "type"} expected')
    if doc.get("type") != "offer":
        raise KvmArgumentError(
            device, f"WebRTC offer: type must be 'offer', got {doc.get('type')!r}"
        )
    sdp = doc.get("sdp")
    if not isinstance(sdp, str) or not sdp:
        raise KvmArgumentError(device, "WebRTC offer: 'sdp' must be a non-empty string")
    if len(sdp) > MAX_SDP_BYTES:
        raise KvmArgumentError(device, f"WebRTC offer: SDP of {len(sdp)} characters refused")
    if any(not (" " <= ch <= "~") and ch not in "\r\n" for ch in sdp):
        raise KvmArgumentError(device, "WebRTC offer: SDP must be printable ASCII")
    lines = sdp.replace("\r\n", "\n").split("\n")
    if lines[0] != "v=0":
        raise KvmArgumentError(device, "WebRTC offer: SDP must start with 'v=0'")
    media = [line.split()[0][2:] for line in lines if line.startswith("m=") and line.split()]
    if len(media) > MAX_MEDIA_SECTIONS:
        raise KvmArgumentError(
            device, f"WebRTC offer: {len(media)} media sections, at most {MAX_MEDIA_SECTIONS}"
        )
    if "video" not in media:
        raise KvmArgumentError(device, "WebRTC offer: no video section (m=video) to answer")
    return RTCSessionDescription(sdp=sdp, type="offer")


class FramePacer:
    """When the next video frame may go and its timestamp (90 kHz, strictly increasing).

    At most ``max_fps`` frames a second leave; a frame offered earlier waits (and a newer one
    that arrives meanwhile replaces it). Times are :func:`time.monotonic` unless given.
    """

    def __init__(self, max_fps: float = MAX_FPS, clock_rate: int = VIDEO_CLOCK_RATE) -> None:
        if max_fps <= 0:
            raise ValueError("max_fps must be > 0")
        self.interval = 1.0 / max_fps
        self.clock_rate = clock_rate
        self._start: float | None = None
        self._last_at: float | None = None
        self._last_pts = -1

    def delay(self, now: float | None = None) -> float:
        """Seconds to wait before the next frame may go (0.0: now)."""
        now = time.monotonic() if now is None else now
        if self._last_at is None:
            return 0.0
        return max(0.0, self._last_at + self.interval - now)

    def stamp(self, now: float | None = None) -> int:
        """The timestamp of a frame going now (recorded as the last one)."""
        now = time.monotonic() if now is None else now
        if self._start is None:
            self._start = now
        pts = max(int((now - self._start) * self.clock_rate), self._last_pts + 1)
        self._last_at, self._last_pts = now, pts
        return pts


# ----- the browser side: a video track and the peer -----------------------------------------


class JpegDecoder:
    """JPEG bytes -> :class:`av.VideoFrame` in limited-range ``yuv420p`` (what aiortc's
    encoders take; without the range conversion the browser shows exaggerated contrast)."""

    def __init__(self) -> None:
        self._codec = av.CodecContext.create("mjpeg", "r")

    def decode(self, data: bytes) -> av.VideoFrame | None:
        frames = self._codec.decode(av.Packet(data))
        if not frames:
            return None
        frame = frames[-1]
        if frame.format.name == "yuv420p":
            return frame
        # uStreamer's JPEGs are full range (yuvj420p); the encoders take limited range
        return frame.reformat(format="yuv420p", src_color_range="JPEG", dst_color_range="MPEG")


class DeviceVideoTrack(VideoStreamTrack):
    """The device's newest decoded frame, paced by :class:`FramePacer`. A frame is sent once;
    the track waits for the next (a still screen costs nothing)."""

    kind = "video"

    def __init__(self, pacer: FramePacer | None = None) -> None:
        super().__init__()
        self.pacer = pacer or FramePacer()
        self._frame: av.VideoFrame | None = None
        self._fresh = asyncio.Event()
        self.frames_in = 0
        self.frames_out = 0

    def put(self, frame: av.VideoFrame) -> None:
        self._frame = frame
        self.frames_in += 1
        self._fresh.set()

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        wait = self.pacer.delay()
        if wait:
            await asyncio.sleep(wait)
        await self._fresh.wait()
        if self.readyState != "live":
            raise MediaStreamError
        self._fresh.clear()
        frame = self._frame
        frame.pts = self.pacer.stamp()
        frame.time_base = _TIME_BASE
        self.frames_out += 1
        return frame

    def stop(self) -> None:
        super().stop()
        self._fresh.set()  # wake a waiting recv() so that it ends


class ConsolePeer:
    """One browser's WebRTC console for one device, on the running asyncio loop.

    ``hid`` is the session's :class:`~saltext_fleet.kvm.console.ConsoleInput` (whether the
    user may type, the rate cap, the keys held). ``on_close`` callbacks run once when the peer
    closes (the session's limit slot is given back, the live hub forgets it, the audit records
    its end); ``reason`` says why it closed.
    """

    def __init__(
        self,
        device: str,
        options: KvmOptions,
        hid: ConsoleInput,
        ice_servers: list[str] | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        max_fps: float = MAX_FPS,
    ) -> None:
        self.device = device
        self.options = options
        self.hid = hid
        self.connect_timeout = connect_timeout
        self.kvm = KvmAio(options)
        self.track = DeviceVideoTrack(FramePacer(max_fps))
        self.stream_errors = 0
        self.closed = False
        self.reason = ""
        self.connected = asyncio.Event()
        self.on_close: list[Callable[[ConsolePeer], Any]] = []
        self._tasks: set[asyncio.Task] = set()
        self.pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[RTCIceServer(urls=url) for url in ice_servers or []])
        )
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("connectionstatechange", self._on_state)

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def answer(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        """Answer the browser's offer (ICE candidates gathered, no trickle) and start the
        video; closes the peer and raises :class:`KvmArgumentError` when aiortc cannot use it."""
        try:
            await self.pc.setRemoteDescription(offer)
            self.pc.addTrack(self.track)
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            await self.close("offer not usable")
            raise KvmArgumentError(self.device, f"WebRTC offer not usable: {exc}") from exc
        self._spawn(self._read_video())
        self._spawn(self._watch_connect())
        return self.pc.localDescription

    # video
    async def _read_video(self) -> None:
        decoder = JpegDecoder()
        backoff = 1.0
        while not self.closed:
            try:
                async for jpeg in self.kvm.frames():
                    frame = await asyncio.to_thread(decoder.decode, jpeg)
                    if frame is not None and not self.closed:
                        self.track.put(frame)
                        backoff = 1.0
                    if self.closed:
                        return
            except KvmError as exc:
                if self.closed:
                    return
                self.stream_errors += 1
                log.warning(
                    "kvm %s: console video: %s; retrying in %g s", self.device, exc, backoff
                )
            except av.error.FFmpegError as exc:  # a corrupt JPEG: start the stream again
                self.stream_errors += 1
                log.warning("kvm %s: console video: cannot decode a frame: %s", self.device, exc)
            if self.closed:
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    # input
    def _on_datachannel(self, channel) -> None:
        @channel.on("message")
        def on_message(message):
            self._spawn(self.handle_message(channel, message))

    async def handle_message(self, channel, message: str | bytes) -> None:
        """One DataChannel message, as the console's websocket takes one: the verdict of
        :meth:`ConsoleInput.handle <saltext_fleet.kvm.console.ConsoleInput.handle>` (a checked
        event to kvmd, an answer to the browser, or both)."""
        if self.closed:
            return
        verdict = self.hid.handle(message)
        if verdict.kvmd is not None:
            try:
                await self.kvm.send(verdict.kvmd)
            except KvmError as exc:
                self.hid.not_delivered()
                log.warning("kvm %s: console input not delivered: %s", self.device, exc)
                self._reply(
                    channel, {"type": "error", "error": f"not delivered to the device: {exc}"}
                )
                return
        if verdict.reply is not None:
            self._reply(channel, verdict.reply)

    @staticmethod
    def _reply(channel, doc: dict) -> None:
        if channel.readyState == "open":
            channel.send(json.dumps(doc))

    # life
    async def _on_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected":
            self.connected.set()
        elif state in ("failed", "closed"):
            await self.close(f"WebRTC connection {state}")

    async def _watch_connect(self) -> None:
        try:
            await asyncio.wait_for(self.connected.wait(), self.connect_timeout)
        except asyncio.TimeoutError:
            log.info(
                "kvm %s: console peer not connected within %g s: closed",
                self.device,
                self.connect_timeout,
            )
            await self.close(f"not connected within {self.connect_timeout:g} s")

    async def close(self, reason: str = "closed") -> None:
        """Stop everything this peer started (idempotent; the first ``reason`` stays)."""
        if self.closed:
            return
        self.closed = True
        self.reason = reason
        self.track.stop()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        releases = self.hid.release_all()  # no key or button stays held down on the device
        if self.kvm.ws_open:
            for text in releases:
                try:
                    await self.kvm.send(text)
                except KvmError:
                    break
        await self.kvm.close()
        with contextlib.suppress(Exception):
            await self.pc.close()
        for callback in self.on_close:
            try:
                callback(self)
            except Exception:
                log.exception("kvm %s: console peer close callback failed", self.device)
