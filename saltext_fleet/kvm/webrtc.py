"""The console's WebRTC path: an aiortc peer on the engine's asyncio loop for one device.

The browser sends an SDP offer (a receive-only video transceiver and a DataChannel); the
engine's :class:`ConsolePeer` answers it, then

* reads the device's MJPEG stream (``/streamer/stream``, uStreamer through nginx) with an
  aiohttp client under the device's TLS rule (verified, or pinned by SHA-256 with
  :class:`aiohttp.Fingerprint`, checked after the handshake and before the request, so before
  any credential), splits it into JPEG parts (:class:`MjpegParser`), decodes each with PyAV
  (FFmpeg's ``mjpeg`` decoder, in a worker thread) and hands the newest frame to a
  :class:`DeviceVideoTrack`, which aiortc encodes (VP8 or H.264) for the browser;
* takes HID events on the DataChannel as kvmd's own JSON events (``{"event_type": "key",
  "event": {"key": "KeyA", "state": true}}``), checks each (:func:`check_hid_message`: known
  key and button names, bounded coordinates and deltas, a size cap) and a rate cap, and
  forwards the checked event (rebuilt, never the browser's bytes) to kvmd's ``/api/ws``.
  A read-only peer (a viewer) forwards nothing: it answers every event with an error message
  on the channel and never opens the kvmd websocket.

Closing the peer (:meth:`ConsolePeer.close`: the browser left, ICE failed or never connected,
the user's session ended, the engine stops) cancels the MJPEG reader, releases any key still
held down, closes the kvmd websocket and the HTTP session, and closes the RTCPeerConnection.

aiortc gathers host candidates on every interface but loopback and uses no STUN or TURN
server unless given some (``ice_servers``): the browser must reach the master's address over
UDP (see ``docs/pikvm.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fractions
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import av
import pyotp
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import MediaStreamError

from saltext_fleet.core.webauth import RateLimit
from saltext_fleet.kvm import hidcodes
from saltext_fleet.kvm.errors import (
    KvmArgumentError,
    KvmConnectionError,
    KvmError,
    KvmFingerprintError,
    KvmProtocolError,
    KvmTimeoutError,
    KvmTlsError,
    http_error,
)
from saltext_fleet.kvm.options import KvmOptions, format_fingerprint
from saltext_fleet.kvm.tls import make_context

log = logging.getLogger(__name__)

#: An offer's JSON body and its SDP: a browser's offer is a few KiB.
MAX_OFFER_BYTES = 64 * 1024
MAX_SDP_BYTES = 32 * 1024
MAX_MEDIA_SECTIONS = 4
#: One HID event on the DataChannel; kvmd's own events are well under 200 bytes.
MAX_HID_MESSAGE = 512
#: HID events per second a peer forwards on average, and at once.
HID_PER_SECOND = 100.0
HID_BURST = 200
#: One JPEG of the stream (a 1080p uStreamer frame is a few hundred KiB).
MAX_JPEG_BYTES = 8 * 1024 * 1024
MAX_PART_HEADER = 4096
#: Frames per second the video track sends at most (uStreamer may send more).
MAX_FPS = 30.0
VIDEO_CLOCK_RATE = 90000
#: Seconds a peer may take from its answer to a connected ICE transport.
CONNECT_TIMEOUT = 15.0
MJPEG_PATH = "/streamer/stream"
WS_PATH = "/api/ws?stream=0"
WS_HEARTBEAT = 15.0
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


def _bool(event: dict, name: str, device: str, default: bool | None = None) -> bool:
    value = event.get(name, default)
    if not isinstance(value, bool):
        raise KvmArgumentError(device, f"HID event: {name!r} must be true or false")
    return value


def _int(value: Any, check: Callable[[int, str], int], name: str, device: str) -> int:
    try:
        return check(value, name)
    except ValueError as exc:
        raise KvmArgumentError(device, f"HID event: {exc}") from None


def _point(event: dict, key: str, check, device: str) -> dict[str, int]:
    point = event.get(key)
    if not isinstance(point, dict):
        raise KvmArgumentError(device, f'HID event: {key!r} must be {{"x": .., "y": ..}}')
    return {
        "x": _int(point.get("x"), check, f"{key} x", device),
        "y": _int(point.get("y"), check, f"{key} y", device),
    }


def check_hid_message(data: str | bytes, device: str) -> tuple[str, dict]:
    """``(event_type, event)`` of one DataChannel message, rebuilt from checked values.

    Accepted (kvmd's ``/api/ws`` JSON events): ``key`` (``key``, ``state``), ``mouse_button``
    (``button``, ``state``), ``mouse_move`` (``to: {x, y}`` from -32768 to 32767),
    ``mouse_relative`` and ``mouse_wheel`` (``delta: {x, y}`` from -127 to 127). Anything
    else raises :class:`~saltext_fleet.kvm.errors.KvmArgumentError` saying what was wrong.
    """
    if len(data) > MAX_HID_MESSAGE:
        raise KvmArgumentError(device, f"HID event of {len(data)} bytes refused")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise KvmArgumentError(device, "HID event: not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("event"), dict):
        raise KvmArgumentError(device, 'HID event: {"event_type": .., "event": {..}} expected')
    event_type, event = doc.get("event_type"), doc["event"]
    if event_type == "key":
        try:
            key = hidcodes.check_key(event.get("key"))
        except (ValueError, TypeError):
            raise KvmArgumentError(
                device, f"HID event: {str(event.get('key'))[:40]!r} is not a kvmd key name"
            ) from None
        return "key", {"key": key, "state": _bool(event, "state", device)}
    if event_type == "mouse_button":
        try:
            button = hidcodes.check_button(event.get("button"))
        except (ValueError, TypeError):
            raise KvmArgumentError(
                device, f"HID event: {str(event.get('button'))[:40]!r} is not a mouse button"
            ) from None
        return "mouse_button", {"button": button, "state": _bool(event, "state", device)}
    if event_type == "mouse_move":
        return "mouse_move", {"to": _point(event, "to", hidcodes.check_position, device)}
    if event_type in ("mouse_relative", "mouse_wheel"):
        return event_type, {"delta": _point(event, "delta", hidcodes.check_delta, device)}
    raise KvmArgumentError(device, f"HID event: unknown event_type {str(event_type)[:40]!r}")


class MjpegParser:
    """Splits uStreamer's ``multipart/x-mixed-replace`` stream into JPEGs, fed any chunks.

    Each part has headers with ``Content-Length`` (uStreamer always sends it), a blank line and
    that many bytes; whatever lies between parts (the boundary line, CRLFs) is skipped. A part
    without a length, a length above ``max_bytes`` or headers above ``MAX_PART_HEADER`` raise
    :class:`~saltext_fleet.kvm.errors.KvmProtocolError`.
    """

    def __init__(self, device: str, max_bytes: int = MAX_JPEG_BYTES) -> None:
        self.device = device
        self.max_bytes = max_bytes
        self._buf = bytearray()
        self._length: int | None = None  # of the part whose body is awaited

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        self._buf += chunk
        while True:
            if self._length is None:
                end = self._buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buf) > MAX_PART_HEADER:
                        raise KvmProtocolError(self.device, "MJPEG part headers too long")
                    return
                self._length = self._part_length(bytes(self._buf[:end]))
                del self._buf[: end + 4]
            if len(self._buf) < self._length:
                return
            data = bytes(self._buf[: self._length])
            del self._buf[: self._length]
            self._length = None
            yield data

    def _part_length(self, head: bytes) -> int:
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                text = value.strip()
                if not text.isdigit():
                    break
                length = int(text)
                if length > self.max_bytes:
                    raise KvmProtocolError(
                        self.device, f"MJPEG part of {length} bytes refused (max {self.max_bytes})"
                    )
                return length
        raise KvmProtocolError(self.device, "MJPEG part without a valid Content-Length")


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


# ----- the device side: MJPEG in, HID out ---------------------------------------------------


def _ssl_for(options: KvmOptions) -> Any:
    """aiohttp's ``ssl=`` for the device: a pin, a verifying context, or (logged) none."""
    if options.fingerprint:
        return aiohttp.Fingerprint(bytes.fromhex(options.fingerprint))
    if options.verify is False:
        log.warning(
            "kvm %s: TLS certificate not verified (verify: false, no fingerprint)", options.host
        )
        return False
    return make_context(options)


def _device_error(options: KvmOptions, request: str, exc: BaseException) -> KvmError:
    """The :class:`KvmError` an aiohttp failure means."""
    host = options.host
    if isinstance(exc, aiohttp.ServerFingerprintMismatch):
        return KvmFingerprintError(
            host, format_fingerprint(exc.expected.hex()), format_fingerprint(exc.got.hex())
        )
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return KvmTlsError(host, f"{request}: certificate verification failed: {exc}")
    if isinstance(exc, aiohttp.ClientSSLError):
        return KvmTlsError(host, f"{request}: TLS handshake failed: {exc}")
    if isinstance(exc, asyncio.TimeoutError):
        return KvmTimeoutError(host, f"{request}: timed out")
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return http_error(host, request, exc.status, "", exc.message)
    return KvmConnectionError(host, f"{request}: {exc!r}")


class DeviceLink:
    """The peer's connections to one device: its MJPEG stream and (for input) ``/api/ws``.

    One :class:`aiohttp.ClientSession` on the running loop; credentials in kvmd's
    ``X-KVMD-User``/``X-KVMD-Passwd`` headers (nginx's ``auth_request`` for the stream accepts
    them too), a fresh TOTP code appended to the password where the device uses one.
    """

    def __init__(self, options: KvmOptions) -> None:
        self.options = options
        self.host = options.host
        self._totp = pyotp.TOTP(options.totp_secret) if options.totp_secret else None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ws_reader: asyncio.Task | None = None
        self._ws_lock = asyncio.Lock()
        self.closed = False

    def _headers(self) -> dict[str, str]:
        password = self.options.password + (self._totp.now() if self._totp else "")
        return {"X-KVMD-User": self.options.user, "X-KVMD-Passwd": password}

    def _url(self, path: str) -> str:
        return f"https://{self.options.netloc}{path}"

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=_ssl_for(self.options), limit=4),
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=self.options.connect_timeout,
                    sock_read=self.options.timeout,
                ),
            )
        return self._session

    async def jpegs(self) -> Any:
        """The stream's JPEGs as they come (an async iterator); raises :class:`KvmError`."""
        request = f"GET {MJPEG_PATH}"
        parser = MjpegParser(self.host)
        try:
            async with self.session().get(
                self._url(MJPEG_PATH), headers=self._headers(), allow_redirects=False
            ) as response:
                if response.status != 200:
                    body = await response.content.read(4096)
                    raise http_error(
                        self.host, request, response.status, "", body[:200].decode("latin-1")
                    )
                async for chunk in response.content.iter_any():
                    for jpeg in parser.feed(chunk):
                        yield jpeg
        except KvmError:
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise _device_error(self.options, request, exc) from exc

    async def send_event(self, event_type: str, event: dict) -> None:
        """Send one checked HID event on ``/api/ws`` (opened on first use)."""
        async with self._ws_lock:
            if self.closed:
                raise KvmConnectionError(self.host, "console closed")
            if self._ws is None or self._ws.closed:
                await self._open_ws()
            await self._ws.send_str(hidcodes.json_event(event_type, event))

    async def _open_ws(self) -> None:
        request = "GET /api/ws"
        try:
            self._ws = await self.session().ws_connect(
                self._url(WS_PATH), headers=self._headers(), heartbeat=WS_HEARTBEAT
            )
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise _device_error(self.options, request, exc) from exc
        # kvmd's state events are read and dropped: reading also answers its pings
        self._ws_reader = asyncio.get_running_loop().create_task(self._drain(self._ws))

    @staticmethod
    async def _drain(ws: aiohttp.ClientWebSocketResponse) -> None:
        async for _msg in ws:
            pass

    @property
    def ws_open(self) -> bool:
        return self._ws is not None and not self._ws.closed

    async def close(self) -> None:
        self.closed = True
        async with self._ws_lock:
            if self._ws is not None:
                await self._ws.close()
            if self._ws_reader is not None:
                self._ws_reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._ws_reader
            if self._session is not None:
                await self._session.close()


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


@dataclasses.dataclass
class PeerStats:
    """What a peer did, for the audit record at its end."""

    hid_forwarded: int = 0
    hid_refused: int = 0
    hid_dropped: int = 0  # over the rate cap
    frames_in: int = 0
    frames_out: int = 0
    stream_errors: int = 0


class ConsolePeer:
    """One browser's WebRTC console for one device, on the running asyncio loop.

    ``readonly``: the user may watch but not type; DataChannel input is refused. ``on_close``
    callbacks run once when the peer closes (a registry forgets it, the audit records its end).
    """

    def __init__(
        self,
        device: str,
        options: KvmOptions,
        readonly: bool,
        ice_servers: list[str] | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        max_fps: float = MAX_FPS,
    ) -> None:
        self.device = device
        self.options = options
        self.readonly = readonly
        self.connect_timeout = connect_timeout
        self.link = DeviceLink(options)
        self.track = DeviceVideoTrack(FramePacer(max_fps))
        self.stats = PeerStats()
        self.rate = RateLimit(per_second=HID_PER_SECOND, burst=HID_BURST, max_keys=1)
        self.pressed: set[str] = set()
        self.closed = False
        self.connected = asyncio.Event()
        self.on_close: list[Callable[[ConsolePeer], Any]] = []
        self._tasks: set[asyncio.Task] = set()
        self._told_rate = False
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
            await self.close()
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
                async for jpeg in self.link.jpegs():
                    frame = await asyncio.to_thread(decoder.decode, jpeg)
                    if frame is not None and not self.closed:
                        self.track.put(frame)
                        backoff = 1.0
                    if self.closed:
                        return
            except KvmError as exc:
                self.stats.stream_errors += 1
                log.warning(
                    "kvm %s: console video: %s; retrying in %g s", self.device, exc, backoff
                )
            except av.error.FFmpegError as exc:  # a corrupt JPEG: start the stream again
                self.stats.stream_errors += 1
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
        """One DataChannel message: refused (read-only, malformed), dropped (over the rate
        cap) or forwarded to kvmd; the browser is told why anything was not forwarded."""
        if self.closed:
            return
        if self.readonly:
            self.stats.hid_refused += 1
            self._reply(channel, {"error": "read-only console: your role may watch, not type"})
            return
        try:
            event_type, event = check_hid_message(message, self.device)
        except KvmArgumentError as exc:
            self.stats.hid_refused += 1
            self._reply(channel, {"error": exc.what})
            return
        if not self.rate.allow("hid"):
            self.stats.hid_dropped += 1
            if not self._told_rate:
                self._told_rate = True
                self._reply(channel, {"error": "too many HID events: some were dropped"})
            return
        try:
            await self.link.send_event(event_type, event)
        except (KvmError, aiohttp.ClientError, ConnectionError) as exc:
            log.warning("kvm %s: console input not delivered: %s", self.device, exc)
            self._reply(channel, {"error": f"not delivered to the device: {exc}"})
            return
        self.stats.hid_forwarded += 1
        if event_type == "key":
            (self.pressed.add if event["state"] else self.pressed.discard)(event["key"])

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
            await self.close()

    async def _watch_connect(self) -> None:
        try:
            await asyncio.wait_for(self.connected.wait(), self.connect_timeout)
        except asyncio.TimeoutError:
            log.info(
                "kvm %s: console peer not connected within %g s: closed",
                self.device,
                self.connect_timeout,
            )
            await self.close()

    async def close(self) -> None:
        """Stop everything this peer started (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self.track.stop()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        if self.pressed and self.link.ws_open:  # no key stays held down on the device
            for key in sorted(self.pressed):
                with contextlib.suppress(Exception):
                    await self.link.send_event("key", {"key": key, "state": False})
            self.pressed.clear()
        await self.link.close()
        with contextlib.suppress(Exception):
            await self.pc.close()
        self.stats.frames_in, self.stats.frames_out = self.track.frames_in, self.track.frames_out
        for callback in self.on_close:
            try:
                callback(self)
            except Exception:
                log.exception("kvm %s: console peer close callback failed", self.device)
