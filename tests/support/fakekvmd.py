"""A fake kvmd (PiKVM's API daemon, behind its nginx) for tests: not the real thing.

No public fake of kvmd exists, so this one is built from kvmd's source (pikvm/kvmd 4.197,
August 2026) and runs as a real HTTPS server on loopback, on aiohttp like kvmd itself, in a
thread of the test process, with a self-signed certificate made at start (``cryptography``).
It records every HTTP request it saw (method, path, query, authenticated user, status) and
every HID event with its arrival time, so tests assert what reached "the device" (and a bench
how long it took). :class:`FakeKvmdGroup` serves many fakes from one event loop, for a bench's
fleet of devices.

Faithful to (file of kvmd each comes from):

* the envelope ``{"ok": true, "result": {...}}`` and errors ``{"ok": false, "result":
  {"error": "<ExceptionClass>", "error_msg": ...}}``, JSON with ``sort_keys`` and ``indent=4``,
  and the status kvmd's server wrapper picks: 400 for ``ValidatorError``/``OperationError``,
  409 for ``IsBusyError``, 401/403/503 for ``HttpError`` (``kvmd/htserver.py``);
* the validators' messages (``kvmd/validators/*.py``): ``The argument 'x' is not a valid ATX
  power action``, ``None argument is not a valid ...``, ``Failed sub-validator ...``;
* auth (``kvmd/apps/kvmd/api/auth.py``, ``auth.py``): ``X-KVMD-User``/``X-KVMD-Passwd``, the
  ``auth_token`` cookie from ``POST /api/auth/login`` (form ``user``, ``passwd``, ``expire``;
  the token is 64 hex digits), then HTTP basic; no credentials 401, wrong credentials or an
  unknown token 403; a malformed user name 400; with a TOTP secret the last six characters of
  the password are the code (``valid_window=1``); logout ends every session of the user;
* ATX (``plugins/atx/gpio.py``): ``power``/``click`` validated, the power actions click only
  when the power LED calls for it, a click holds its region (power and reset are separate) for
  the click time and a second one meanwhile is 409 ``AtxIsBusyError``; ``wait=1`` answers when
  the click is over; a power click toggles the simulated host's power LED, a long one turns it
  off;
* HID (``api/hid.py``): ``send_key``/``send_shortcut``/``send_mouse_button``/
  ``send_mouse_move`` and ``/hid/print`` with their parameters and validators, the key names
  of ``WEB_TO_EVDEV``; on ``/api/ws`` the JSON events and the binary ones (ops 0-5) kvmd's web
  UI sends; malformed websocket events are dropped without an answer, as kvmd does;
* MSD (``api/msd.py``, ``plugins/msd/otg/``): ``/msd/write`` reads the raw body and needs
  ``Content-Length``; during an upload every other MSD operation is 409 ``MsdIsBusyError`` and
  ``storage.uploading`` shows the progress; a written image joins ``storage.images`` only
  ``image_delay`` seconds later (kvmd: its inotify watcher's reload), until then
  ``set_params``/``remove`` answer 400 ``MsdUnknownImageError``; ``MsdConnectedError``,
  ``MsdDisconnectedError``, ``MsdImageNotSelected``, ``MsdImageExistsError``; ``rw`` forced off
  for a CD-ROM or an ``.iso``; ``set_params`` with a URL is ``MsdRemoteDisabledError``;
* the streamer (``api/streamer.py``, ``streamer/__init__.py``): a snapshot without a signal is
  503 ``UnavailableError`` unless ``allow_offline=1``; uStreamer's ``X-UStreamer-*`` headers;
  ``/streamer/stream`` is uStreamer's MJPEG (``multipart/x-mixed-replace;
  boundary=boundarydonotcross``, each part with ``Content-Length`` and ``X-Timestamp``, with
  ``extra_headers=1`` the ``X-UStreamer-*`` ones) of small real JPEGs encoded with PyAV,
  behind nginx's ``auth_request`` (401/403 as nginx's HTML page, not JSON);
* ``/api/ws`` (``apps/kvmd/server.py``): auth before the upgrade; first message ``loop`` with
  ``{"version": {"major": 4, "minor": 197}}``, then the state of ``hid``, ``atx``, ``msd``,
  ``streamer``, ``info`` (one event per field), ``hid_keymaps`` and ``clients``; ``ping``
  answered with ``pong``, binary ``0`` with binary ``255``; ``atx``/``msd`` state pushed on
  every change.

Left out: GPIO, the switch, OCR, Redfish, logs, ``/msd/read``, ``/msd/write_remote``, H.264 and
Janus (WebRTC), ``/streamer/set_params``, partial (diff) ``msd`` events (full states are sent),
session expiry, unix-socket credentials, keymaps other than ``en-us`` and the real timing of
HID typing. The video is a few solid colour frames, not a screen.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import contextvars
import dataclasses
import datetime
import fractions
import hashlib
import ipaddress
import json
import re
import secrets
import socket
import ssl
import struct
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyotp
from aiohttp import WSMsgType, web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from saltext_fleet.core.errors import FleetError

# ----- kvmd's errors (the class name is what kvmd puts in "error") ----------------------


class KvmdFault(FleetError):
    """Base of the fake's kvmd exceptions: ``status`` is what kvmd's wrapper answers."""

    status = 500


class ValidatorError(KvmdFault):
    status = 400


class _Operation(KvmdFault):
    status = 400


class _Busy(KvmdFault):
    status = 409


class UnauthorizedError(KvmdFault):
    status = 401

    def __init__(self) -> None:
        super().__init__("Unauthorized")


class ForbiddenError(KvmdFault):
    status = 403

    def __init__(self) -> None:
        super().__init__("Forbidden")


class UnavailableError(KvmdFault):
    status = 503

    def __init__(self) -> None:
        super().__init__("Service Unavailable")


class AtxIsBusyError(_Busy):
    def __init__(self) -> None:
        super().__init__("Performing another ATX operation, please try again later")


class MsdIsBusyError(_Busy):
    def __init__(self) -> None:
        super().__init__("Performing another MSD operation, please try again later")


def _msd_error(name: str, message: str) -> type[_Operation]:
    def init(self: _Operation) -> None:
        _Operation.__init__(self, message)

    return type(name, (_Operation,), {"__init__": init})


MsdConnectedError = _msd_error(
    "MsdConnectedError", "MSD is connected to Server, but shouldn't for this operation"
)
MsdDisconnectedError = _msd_error(
    "MsdDisconnectedError", "MSD is disconnected from Server, but should be for this operation"
)
MsdImageNotSelected = _msd_error("MsdImageNotSelected", "The image is not selected")
MsdUnknownImageError = _msd_error("MsdUnknownImageError", "The image is not found in the storage")
MsdImageExistsError = _msd_error("MsdImageExistsError", "This image is already exists")
MsdRemoteDisabledError = _msd_error("MsdRemoteDisabledError", "Remote images binding is disabled")


# ----- kvmd's validators (kvmd/validators/*.py), same messages ----------------------------

WEB_KEYS = frozenset(
    """
    KeyA KeyB KeyC KeyD KeyE KeyF KeyG KeyH KeyI KeyJ KeyK KeyL KeyM KeyN KeyO KeyP KeyQ KeyR
    KeyS KeyT KeyU KeyV KeyW KeyX KeyY KeyZ Digit1 Digit2 Digit3 Digit4 Digit5 Digit6 Digit7
    Digit8 Digit9 Digit0 Enter Escape Backspace Tab Space Minus Equal BracketLeft BracketRight
    Backslash Semicolon Quote Backquote Comma Period Slash CapsLock F1 F2 F3 F4 F5 F6 F7 F8 F9
    F10 F11 F12 PrintScreen Insert Home PageUp Delete End PageDown ArrowRight ArrowLeft
    ArrowDown ArrowUp ControlLeft ShiftLeft AltLeft MetaLeft ControlRight ShiftRight AltRight
    MetaRight Pause ScrollLock NumLock ContextMenu NumpadDivide NumpadMultiply NumpadSubtract
    NumpadAdd NumpadEnter Numpad1 Numpad2 Numpad3 Numpad4 Numpad5 Numpad6 Numpad7 Numpad8
    Numpad9 Numpad0 NumpadDecimal Power IntlBackslash IntlYen IntlRo KanaMode Convert
    NonConvert AudioVolumeMute AudioVolumeUp AudioVolumeDown F20 F21 F22 F23 F24 F13 F14 F15
    F16 F17 F18 F19
    """.split()
)
MOUSE_BUTTONS = ("left", "right", "middle", "up", "down")
INFO_SUBS = ("system", "auth", "meta", "extras", "health", "uptime", "node", "fan")


def _raise_error(arg: Any, name: str, hide: bool = False) -> None:
    arg_str = " "
    if not hide:
        arg_str = f" {arg!r} " if isinstance(arg, (str, bytes)) else f" '{arg}' "
    raise ValidatorError(f"The argument{arg_str}is not a valid {name}")


def _raw_limit(arg: Any, limit: int) -> None:
    if limit > 0 and len(str(arg)) > limit:
        raise ValidatorError("RAW limit exceed")


def _not_none_string(arg: Any, name: str, strip: bool = True) -> str:
    if arg is None:
        raise ValidatorError(f"None argument is not a valid {name}")
    arg = str(arg)
    return arg.strip() if strip else arg


def _string_in_list(arg: Any, name: str, variants, lower: bool = True) -> str:
    arg = _not_none_string(arg, name)
    if lower:
        arg = arg.lower()
    if arg not in variants:
        _raise_error(arg, name)
    return arg


def valid_bool(arg: Any) -> bool:
    _raw_limit(arg, 16)
    true_args, false_args = ["1", "true", "yes"], ["0", "false", "no"]
    name = f"bool ({true_args!r} or {false_args!r})"
    if arg is not None and len(str(arg).strip()) == 0:
        arg = None
    arg = _not_none_string(arg, name).lower()
    if arg not in true_args + false_args:
        _raise_error(arg, name)
    return arg in true_args


def valid_number(arg: Any, min_=None, max_=None, type_=int, name: str = "") -> int | float:
    _raw_limit(arg, 16)
    name = name or type_.__name__
    if arg is not None and len(str(arg).strip()) == 0:
        arg = None
    arg = _not_none_string(arg, name)
    try:
        value = int(arg[2:], 16) if type_ is int and arg.startswith(("0x", "0X")) else type_(arg)
    except Exception:  # noqa: BLE001 - kvmd turns any conversion failure into its message
        _raise_error(arg, name)
    if min_ is not None and value < min_:
        raise ValidatorError(
            f"The argument '{value}' must be {name} and greater or equial than {min_}"
        )
    if max_ is not None and value > max_:
        raise ValidatorError(
            f"The argument '{value}' must be {name} and lesser or equal then {max_}"
        )
    return value


def valid_string_list(arg: Any, subval, name: str = "string list") -> list:
    _raw_limit(arg, 4096)
    arg = _not_none_string(arg, name)
    items = [item for item in re.split(r"[,\t ]+", arg) if item]
    try:
        return [subval(item) for item in items]
    except Exception:  # noqa: BLE001 - kvmd wraps any item failure the same way
        raise ValidatorError(f"Failed sub-validator on one of the item of {items!r}") from None


def valid_key(arg: Any) -> str:
    _raw_limit(arg, 16)
    return _string_in_list(arg, "Keyboard key", WEB_KEYS, lower=False)


def valid_mouse_button(arg: Any) -> str:
    _raw_limit(arg, 16)
    return _string_in_list(arg, "Mouse button", MOUSE_BUTTONS)


def valid_mouse_move(arg: Any) -> int:
    _raw_limit(arg, 8)
    return min(max(-32768, int(valid_number(arg, name="Mouse move"))), 32767)


def valid_mouse_delta(arg: Any) -> int:
    _raw_limit(arg, 8)
    return min(max(-127, int(valid_number(arg, name="Mouse delta"))), 127)


def valid_msd_image_name(arg: Any, allow_eject: bool = False) -> str:
    _raw_limit(arg, 4096)
    name = "MSD image name"
    arg = _not_none_string(arg, "stripped string")
    if not arg:
        if allow_eject:
            return ""
        _raise_error(arg, name)
    parts = [part for part in arg.split("/") if part]
    if not parts:
        _raise_error(arg, name)
    for index, part in enumerate(parts):
        part = part.strip()
        if not part or "/" in part or "\0" in part or part.startswith(".") or part == "lost+found":
            _raise_error(part, name)
        parts[index] = "".join(ch if ch.isprintable() else "_" for ch in part[:255])
    return "/".join(parts)


def valid_user(arg: Any) -> str:
    _raw_limit(arg, 128)
    arg = _not_none_string(arg, "username characters")
    if not re.match(r"^[a-z_]([a-z0-9@._-]*[a-z0-9_-])?$", arg):
        _raise_error(arg, "username characters")
    return arg


def valid_passwd(arg: Any) -> str:
    _raw_limit(arg, 512)
    arg = _not_none_string(arg, "passwd characters", strip=False)
    if not re.match(r"^[\x20-\x7e]*\Z", arg):
        _raise_error(arg, "passwd characters", hide=True)
    return arg


# ----- test-time certificate and frames ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Certificate:
    cert_pem: bytes
    key_pem: bytes
    fingerprint: str  # SHA-256 of the DER, 64 lowercase hex digits


def make_certificate() -> Certificate:
    """A self-signed certificate like the one a PiKVM makes for itself (``scripts/kvmd-gencert``:
    ``openssl ecparam -name prime256v1`` and ``openssl req -x509 -sha256 -subj
    "/C=US/O=PiKVM/OU=PiKVM/CN=localhost"``, which marks it CA:TRUE). Unlike the real one it
    also names 127.0.0.1 and localhost as subject alternative names, so a test can verify it
    as its own CA bundle; it is valid from an hour ago for a year."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "PiKVM"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "PiKVM"),
            x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
        ]
    )
    now = datetime.datetime.now(datetime.timezone.utc)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Certificate(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        fingerprint=hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
    )


def encode_jpeg(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A real baseline JPEG of one colour, encoded by FFmpeg's mjpeg encoder through PyAV."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, :] = rgb
    frame = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(format="yuvj420p")
    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuvj420p"
    codec.time_base = fractions.Fraction(1, 25)
    return b"".join(bytes(packet) for packet in [*codec.encode(frame), *codec.encode(None)])


_FRAME_COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]
_FRAMES_CACHE: dict[tuple[int, int], tuple[list[bytes], bytes]] = {}


def _frames(width: int, height: int) -> tuple[list[bytes], bytes]:
    if (width, height) not in _FRAMES_CACHE:
        _FRAMES_CACHE[width, height] = (
            [encode_jpeg(width, height, rgb) for rgb in _FRAME_COLOURS],
            encode_jpeg(width, height, (0, 0, 0)),  # uStreamer's "no signal" stand-in
        )
    return _FRAMES_CACHE[width, height]


# ----- records -----------------------------------------------------------------------------


@dataclasses.dataclass
class SeenRequest:
    """One HTTP request the fake saw. ``user`` is set only when authentication passed;
    ``credentials`` says whether the request carried any (header, cookie or basic)."""

    method: str
    path: str
    params: dict[str, str]
    user: str | None
    auth: str | None
    credentials: bool
    status: int | None = None


# The record of the request being handled (the middleware and its handler share one task).
_RECORD: contextvars.ContextVar[SeenRequest] = contextvars.ContextVar("fakekvmd_record")

_NGINX_PAGES = {
    401: "<html>\r\n<head><title>401 Authorization Required</title></head>\r\n<body>\r\n"
    "<center><h1>401 Authorization Required</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n",
    403: "<html>\r\n<head><title>403 Forbidden</title></head>\r\n<body>\r\n"
    "<center><h1>403 Forbidden</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n"
    "</html>\r\n",
}


def json_response(result: dict | None = None, status: int = 200) -> web.Response:
    """kvmd's ``make_json_response``."""
    return web.Response(
        text=json.dumps({"ok": status == 200, "result": result or {}}, sort_keys=True, indent=4),
        status=status,
        content_type="application/json",
    )


def json_exception(exc: KvmdFault) -> web.Response:
    """kvmd's ``make_json_exception``: the class name and message, with its status."""
    return json_response({"error": type(exc).__name__, "error_msg": str(exc)}, exc.status)


class FakeKvmd:
    """A fake kvmd on ``https://127.0.0.1:<port>``; see the module docstring.

    ``start()``/``stop()`` or a ``with`` block. Timing knobs keep tests fast:
    ``image_delay`` (kvmd: about 1 s until a written image is known), ``click_s`` and
    ``long_click_s`` (kvmd: 0.1 s + 1 s and 5.5 s + 1 s the ATX regions stay busy), ``fps``.
    """

    def __init__(
        self,
        user: str = "admin",
        password: str = "admin",
        totp_secret: str | None = None,
        version: str = "4.197",
        loop_version: bool = True,
        ws_heartbeat: float = 15.0,
        image_delay: float = 1.0,
        click_s: float = 1.1,
        long_click_s: float = 6.5,
        fps: float = 20.0,
        frame_size: tuple[int, int] = (64, 48),
        certificate: Certificate | None = None,
    ) -> None:
        self.users = {user: password}
        self.totp_secret = totp_secret
        self.version = version
        self.loop_version = loop_version  # False: kvmd before late 2024 sent an empty loop
        self.ws_heartbeat = ws_heartbeat  # kvmd: server.heartbeat, protocol pings
        self.image_delay = image_delay
        self.click_s = click_s
        self.long_click_s = long_click_s
        self.fps = fps
        self.frame_size = frame_size
        self.certificate = certificate or make_certificate()
        self.port: int | None = None
        self.requests: list[SeenRequest] = []
        self.hid_events: list[dict] = []
        # time.monotonic() of each HID event's arrival (CLOCK_MONOTONIC: comparable across
        # the processes of one machine), in step with hid_events
        self.hid_event_times: list[float] = []
        self.printed: list[dict] = []
        self.atx_clicks: list[str] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="fakekvmd-")
        self.reset()

    # ----- state for tests ---------------------------------------------------------------

    def reset(self) -> None:
        """Forget records and restore the device's default state (host off, signal on)."""
        with self._lock:
            self.requests.clear()
            self.hid_events.clear()
            self.hid_event_times.clear()
            self.printed.clear()
            self.atx_clicks.clear()
        # Work started before a reset (an ATX press, an image about to appear) must not
        # change the state the next test starts from.
        self.generation = getattr(self, "generation", 0) + 1
        self.sessions: dict[str, str] = {}
        self.power_led = False
        self.hdd_led = False
        self.atx_busy = {"power": False, "reset": False}
        self.signal = True
        self.cpu_temp = 47.2
        self.stalls: dict[str, float] = {}
        self.images: dict[str, dict] = {}
        self.pending_images: set[str] = set()
        self.uploads: dict[str, dict] = {}
        self.uploading: dict | None = None
        self.drive = {"image": None, "connected": False, "cdrom": False, "rw": False}
        self.started_ts = time.time()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def fingerprint(self) -> str:
        return self.certificate.fingerprint

    @property
    def cert_path(self) -> str:
        """The certificate as a PEM file, for a client's ``verify: <CA bundle>``."""
        return str(Path(self._tmp.name) / "server.crt")

    def stall(self, path: str, seconds: float) -> None:
        """Hold every request to ``path`` (``/api/info``) ``seconds`` before answering."""
        self.stalls[path] = seconds

    def seen(self, path: str | None = None, method: str | None = None) -> list[SeenRequest]:
        with self._lock:
            return [
                r
                for r in self.requests
                if (path is None or r.path == path) and (method is None or r.method == method)
            ]

    def hid_record(self) -> tuple[list[dict], list[float]]:
        """Copies of :attr:`hid_events` and :attr:`hid_event_times`, taken together."""
        with self._lock:
            return list(self.hid_events), list(self.hid_event_times)

    def connected_ws(self) -> int:
        return len(self._ws_sessions) if hasattr(self, "_ws_sessions") else 0

    # ----- lifecycle ---------------------------------------------------------------------

    def start(self) -> FakeKvmd:
        context = self._tls_context()

        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            await self._serve(context)

        async def cleanup() -> None:
            await self._runner.cleanup()

        self._thread = _start_loop_thread("fakekvmd", serve, cleanup, timeout=10)
        return self

    def _tls_context(self) -> ssl.SSLContext:
        cert_file = Path(self._tmp.name) / "server.crt"
        key_file = Path(self._tmp.name) / "server.key"
        cert_file.write_bytes(self.certificate.cert_pem)
        key_file.write_bytes(self.certificate.key_pem)
        key_file.chmod(0o600)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        self._frames, self._no_signal = _frames(*self.frame_size)
        return context

    async def _serve(self, context: ssl.SSLContext) -> None:
        self._stopping = asyncio.Event()
        self._ws_sessions: set[web.WebSocketResponse] = set()
        app = web.Application(middlewares=[self._middleware], client_max_size=0)
        self._routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        site = web.SockSite(self._runner, sock, ssl_context=context, shutdown_timeout=0.5)
        await site.start()

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return

        async def closing() -> None:
            self._stopping.set()
            for ws in list(self._ws_sessions):
                await ws.close()

        asyncio.run_coroutine_threadsafe(closing(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        self._thread = None
        self._loop = None
        self._tmp.cleanup()

    def __enter__(self) -> FakeKvmd:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @contextlib.contextmanager
    def fresh(self):
        """The fake for one test (a per-test fixture's body): reset, with no websocket of an
        earlier test counted (:meth:`forget_websockets`), and reset again afterwards."""
        self.reset()
        self.forget_websockets()
        try:
            yield self
        finally:
            self.reset()

    def forget_websockets(self) -> None:
        """Stop counting (and broadcasting to) the ``/api/ws`` sessions open now: a test's
        fixture calls it so that the one before it does not count in :meth:`connected_ws`. A
        client whose loop ended right after closing may never have sent its close, and this
        side would notice only by its heartbeat, seconds later."""
        if self._loop is not None:
            self.call(self._ws_sessions.clear)

    def call(self, func, *args):
        """Run ``func(*args)`` on the server's loop (to change state a handler reads)."""

        async def wrapper():
            return func(*args)

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(5)

    # ----- routing, auth and recording ---------------------------------------------------

    def _routes(self, app: web.Application) -> None:
        api = [
            ("POST", "/auth/login", self._login),
            ("POST", "/auth/logout", self._logout),
            ("GET", "/auth/check", self._ok),
            ("GET", "/info", self._info),
            ("GET", "/atx", self._atx_state),
            ("POST", "/atx/power", self._atx_power),
            ("POST", "/atx/click", self._atx_click),
            ("GET", "/hid", self._hid_state),
            ("POST", "/hid/events/send_key", self._send_key),
            ("POST", "/hid/events/send_shortcut", self._send_shortcut),
            ("POST", "/hid/events/send_mouse_button", self._send_mouse_button),
            ("POST", "/hid/events/send_mouse_move", self._send_mouse_move),
            ("POST", "/hid/print", self._print),
            ("GET", "/msd", self._msd_state),
            ("POST", "/msd/write", self._msd_write),
            ("POST", "/msd/set_params", self._msd_set_params),
            ("POST", "/msd/set_connected", self._msd_set_connected),
            ("POST", "/msd/remove", self._msd_remove),
            ("GET", "/streamer", self._streamer_state),
            ("GET", "/streamer/snapshot", self._snapshot),
            ("GET", "/ws", self._ws),
        ]
        for method, path, handler in api:
            app.router.add_route(method, "/api" + path, handler)
        app.router.add_route("GET", "/streamer/stream", self._mjpeg)

    def _check_auth(self, request: web.Request, record: SeenRequest) -> None:
        """kvmd's ``check_request_auth``: headers, then the cookie, then basic."""
        user = request.headers.get("X-KVMD-User", "")
        if user:
            user = valid_user(user)
            record.auth = "xhdr"
            if self._authorize(user, valid_passwd(request.headers.get("X-KVMD-Passwd", ""))):
                record.user = user
                return
            raise ForbiddenError()
        token = request.cookies.get("auth_token", "")
        if token:
            record.auth = "token"
            if not re.match(r"^[0-9a-f]{64}$", token):
                _raise_error(token, "auth token", hide=True)
            if token in self.sessions:
                record.user = self.sessions[token]
                return
            raise ForbiddenError()
        basic = request.headers.get("Authorization", "")
        if basic[:6].lower() == "basic ":
            record.auth = "basic"
            try:
                user, passwd = base64.b64decode(basic[6:]).decode("utf-8").split(":")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                raise UnauthorizedError() from None
            user = valid_user(user)
            if self._authorize(user, valid_passwd(passwd)):
                record.user = user
                return
            raise ForbiddenError()
        raise UnauthorizedError()

    def _authorize(self, user: str, passwd: str) -> bool:
        """kvmd's ``AuthManager.authorize``: the TOTP code is the password's last 6 chars."""
        if self.totp_secret:
            if not pyotp.TOTP(self.totp_secret).verify(passwd[-6:], valid_window=1):
                return False
            passwd = passwd[:-6]
        expected = self.users.get(user)
        return expected is not None and secrets.compare_digest(expected, passwd)

    @web.middleware
    async def _middleware(self, request: web.Request, handler) -> web.StreamResponse:
        record = SeenRequest(
            method=request.method,
            path=request.path,
            params=dict(request.query),
            user=None,
            auth=None,
            credentials=bool(
                request.headers.get("X-KVMD-User")
                or request.cookies.get("auth_token")
                or request.headers.get("Authorization")
            ),
        )
        _RECORD.set(record)
        with self._lock:
            self.requests.append(record)
        stall = self.stalls.get(request.path)
        if stall:
            try:
                await asyncio.wait_for(self._stopping.wait(), stall)
            except TimeoutError:
                pass
        nginx_auth = request.path.startswith("/streamer")
        try:
            if request.path != "/api/auth/login":
                self._check_auth(request, record)
            response = await handler(request)
        except KvmdFault as exc:
            if nginx_auth and exc.status in _NGINX_PAGES:
                # nginx's auth_request (kvmd.ctx-server.conf) answers with its own page.
                response = web.Response(
                    text=_NGINX_PAGES[exc.status], status=exc.status, content_type="text/html"
                )
            else:
                response = json_exception(exc)
        record.status = response.status
        return response

    async def _ok(self, request: web.Request) -> web.Response:
        return json_response()

    async def _login(self, request: web.Request) -> web.Response:
        form = await request.post()
        user = valid_user(form.get("user", ""))
        passwd = valid_passwd(form.get("passwd", ""))
        valid_number(form.get("expire", "0"), min_=0, name="expiration time")
        if not self._authorize(user, passwd):
            raise ForbiddenError()
        token = secrets.token_hex(32)
        self.sessions[token] = user
        _RECORD.get().user, _RECORD.get().auth = user, "login"
        response = json_response()
        response.set_cookie("auth_token", token, httponly=True, samesite="Strict")
        return response

    async def _logout(self, request: web.Request) -> web.Response:
        token = request.cookies.get("auth_token", "")
        user = self.sessions.get(token)
        if user is not None:
            for key in [k for k, v in self.sessions.items() if v == user]:
                del self.sessions[key]
        return json_response()

    # ----- info --------------------------------------------------------------------------

    def _info_sub(self, field: str) -> Any:
        """One field of ``/api/info``, shaped as kvmd's info submanagers answer it."""
        if field == "system":
            return {
                "kvmd": {"version": self.version},
                "streamer": {
                    "app": "ustreamer",
                    "version": "6.36",
                    "features": {"WITH_GPIO": True, "HAS_PDEATHSIG": True, "WITH_V4P": True},
                },
                "kernel": {
                    "system": "Linux",
                    "release": "6.6.45-1-rpi",
                    "version": "#1 SMP PREEMPT",
                    "machine": "aarch64",
                },
                "platform": {
                    "type": "rpi",
                    "base": "Raspberry Pi 4 Model B Rev 1.5",
                    "serial": "10000000FAKE0001",
                    "model": "v4plus",
                    "video": "hdmi",
                    "board": "rpi4",
                },
            }
        if field == "health":
            return {
                "temp": {"cpu": self.cpu_temp},
                "cpu": {"percent": 3},
                "mem": {"percent": 21.5, "total": 3974135808, "available": 3119734784},
                "throttling": {
                    "raw_flags": 0,
                    "parsed_flags": {
                        "undervoltage": {"now": False, "past": False},
                        "freq_capped": {"now": False, "past": False},
                        "throttled": {"now": False, "past": False},
                    },
                    "ignore_past": False,
                },
            }
        if field == "uptime":
            total = int(time.time() - self.started_ts) + 3600
            return {
                "total": total,
                "parts": {
                    "days": total // 86400,
                    "hours": total % 86400 // 3600,
                    "minutes": total % 3600 // 60,
                    "seconds": total % 60,
                },
            }
        return {
            "auth": {"enabled": True},
            "meta": {"server": {"host": "pikvm-fake"}, "kvm": {}},
            "extras": {},
            "node": {"host": "pikvm-fake"},
            "fan": {"monitored": False, "state": None},
        }[field]

    async def _info(self, request: web.Request) -> web.Response:
        """``api/info.py`` + ``InfoManager.get_state_legacy``: ``legacy`` (default on) adds
        ``hw`` (health + platform) and leaves ``health`` out of the default fields."""
        legacy = valid_bool(request.query.get("legacy", "1"))
        available = set(INFO_SUBS) | ({"hw"} if legacy else set())
        default = available - ({"health"} if legacy else set())
        raw = request.query.get("fields", ",".join(sorted(default)))
        _raw_limit(raw, 512)
        fields = set(
            valid_string_list(
                str(raw).strip(),
                lambda f: _string_in_list(f, "info field", available),
                name="info fields list",
            )
        ) or set(available)
        if not legacy:
            return json_response({f: self._info_sub(f) for f in sorted(fields)})
        wanted = set(fields)
        hw = "hw" in wanted
        if hw:
            wanted -= {"hw"}
            wanted |= {"health", "system"}
        state = {f: self._info_sub(f) for f in sorted(wanted)}
        if hw:
            state["hw"] = {
                "health": state.pop("health"),
                "platform": state["system"].pop("platform"),
            }
            if "system" not in fields:
                state.pop("system")
        return json_response(state)

    # ----- ATX (plugins/atx/gpio.py) -----------------------------------------------------

    def _atx(self) -> dict:
        busy = self.atx_busy
        return {
            "enabled": True,
            "busy": busy["power"] or busy["reset"],
            "acts": dict(busy),
            "leds": {"power": self.power_led, "hdd": self.hdd_led},
        }

    async def _atx_state(self, request: web.Request) -> web.Response:
        return json_response(self._atx())

    async def _click(self, button: str, wait: bool) -> None:
        region = "reset" if button == "reset" else "power"
        if self.atx_busy[region]:
            raise AtxIsBusyError()
        self.atx_busy[region] = True
        with self._lock:
            self.atx_clicks.append(button)
        await self._broadcast("atx", self._atx())

        generation = self.generation

        async def press() -> None:
            try:
                await asyncio.sleep(self.long_click_s if button == "power_long" else self.click_s)
                if generation != self.generation:
                    return
                if button == "power":
                    self.power_led = not self.power_led
                elif button == "power_long":
                    self.power_led = False
            finally:
                if generation == self.generation:
                    self.atx_busy[region] = False
                    await self._broadcast("atx", self._atx())

        if wait:
            await press()
        else:
            asyncio.ensure_future(press())

    async def _atx_power(self, request: web.Request) -> web.Response:
        action = _string_in_list(
            request.query.get("action"), "ATX power action", ["on", "off", "off_hard", "reset_hard"]
        )
        wait = valid_bool(request.query.get("wait", "0"))
        button = {"on": "power", "off": "power", "off_hard": "power_long", "reset_hard": "reset"}
        needed = (not self.power_led) if action == "on" else self.power_led
        if needed:
            await self._click(button[action], wait)
        return json_response()

    async def _atx_click(self, request: web.Request) -> web.Response:
        button = _string_in_list(
            request.query.get("button"), "ATX button", ["power", "power_long", "reset"]
        )
        await self._click(button, valid_bool(request.query.get("wait", "0")))
        return json_response()

    # ----- HID (api/hid.py) --------------------------------------------------------------

    def _hid(self) -> dict:
        return {
            "enabled": True,
            "online": True,
            "busy": False,
            "connected": None,
            "keyboard": {
                "online": True,
                "leds": {"caps": False, "scroll": False, "num": False},
                "outputs": {"available": [], "active": ""},
            },
            "mouse": {
                "outputs": {"available": ["usb", "usb_rel"], "active": "usb"},
                "online": True,
                "absolute": True,
            },
            "jiggler": {"enabled": True, "active": False, "interval": 60},
        }

    def _hid_event(self, **event: Any) -> None:
        arrived = time.monotonic()
        with self._lock:
            self.hid_events.append(event)
            self.hid_event_times.append(arrived)

    async def _hid_state(self, request: web.Request) -> web.Response:
        return json_response(self._hid())

    async def _send_key(self, request: web.Request) -> web.Response:
        key = valid_key(request.query.get("key"))
        if "state" in request.query:
            state = valid_bool(request.query["state"])
            finish = valid_bool(request.query.get("finish", "0"))
        else:
            state, finish = True, True
        self._hid_event(via="http", type="key", key=key, state=state, finish=finish)
        return json_response()

    async def _send_shortcut(self, request: web.Request) -> web.Response:
        keys = valid_string_list(request.query.get("keys"), valid_key)
        for key in keys:
            self._hid_event(via="http", type="key", key=key, state=True, finish=False)
        for key in reversed(keys):
            self._hid_event(via="http", type="key", key=key, state=False, finish=False)
        return json_response()

    async def _send_mouse_button(self, request: web.Request) -> web.Response:
        button = valid_mouse_button(request.query.get("button"))
        if "state" in request.query:
            self._hid_event(
                via="http",
                type="mouse_button",
                button=button,
                state=valid_bool(request.query["state"]),
            )
        else:
            self._hid_event(via="http", type="mouse_button", button=button, state=True)
            self._hid_event(via="http", type="mouse_button", button=button, state=False)
        return json_response()

    async def _send_mouse_move(self, request: web.Request) -> web.Response:
        to_x = valid_mouse_move(request.query.get("to_x"))
        to_y = valid_mouse_move(request.query.get("to_y"))
        self._hid_event(via="http", type="mouse_move", to_x=to_x, to_y=to_y)
        return json_response()

    async def _print(self, request: web.Request) -> web.Response:
        text = await request.text()
        limit = int(valid_number(request.query.get("limit", "1024"), min_=0))
        if limit > 0:
            text = text[:limit]
        keymap = request.query.get("keymap", "en-us")
        if keymap != "en-us":
            _raise_error(keymap, "keymap")
        slow = valid_bool(request.query.get("slow", "0"))
        delay = valid_number(
            request.query.get("delay", "0.02" if slow else "0"),
            min_=0,
            max_=5,
            type_=float,
            name="keys delay",
        )
        with self._lock:
            self.printed.append({"text": text, "keymap": keymap, "slow": slow, "delay": delay})
        return json_response()

    # ----- MSD (api/msd.py, plugins/msd/otg) ---------------------------------------------

    def _msd(self) -> dict:
        drive = dict(self.drive)
        if drive["image"] is not None:
            drive["image"] = dict(drive["image"])
        return {
            "enabled": True,
            "online": True,
            "busy": self.uploading is not None,
            "storage": {
                "images": {name: dict(image) for name, image in self.images.items()},
                "parts": {"": {"size": 30 * 2**30, "free": 20 * 2**30, "writable": True}},
                "downloading": None,
                "uploading": dict(self.uploading) if self.uploading else None,
            },
            "drive": drive,
        }

    def _msd_check_free(self) -> None:
        """``busy_locked`` + ``check_online_disconnected``: not during an upload, not while
        the drive is connected."""
        if self.uploading is not None:
            raise MsdIsBusyError()
        if self.drive["connected"]:
            raise MsdConnectedError()

    def _known_image(self, name: str) -> dict:
        """``Storage.get_image_by_name``: only images the last storage reload listed."""
        image = self.images.get(name)
        if image is None:
            raise MsdUnknownImageError()
        return image

    async def _msd_state(self, request: web.Request) -> web.Response:
        return json_response(self._msd())

    async def _msd_write(self, request: web.Request) -> web.Response:
        name = valid_msd_image_name(
            request.query.get("prefix", "") + "/" + request.query.get("image", "")
        )
        size = int(valid_number(request.content_length, min_=0))
        remove_incomplete = valid_bool(request.query.get("remove_incomplete", "0"))
        self._msd_check_free()
        if name in self.images or name in self.pending_images:
            raise MsdImageExistsError()
        digest = hashlib.sha256()
        written = 0
        self.uploading = {"name": name, "size": size, "written": 0}
        await self._broadcast("msd", self._msd())
        try:
            while True:
                chunk = await request.content.read(65536)
                if not chunk:
                    break
                digest.update(chunk)
                written += len(chunk)
                self.uploading["written"] = written
        finally:
            self.uploading = None
            complete = written >= size
            self.uploads[name] = {"size": size, "written": written, "sha256": digest.hexdigest()}
            if complete or not remove_incomplete:
                self.pending_images.add(name)
                # kvmd lists the image only when its inotify watcher reloads the storage.
                asyncio.get_running_loop().call_later(
                    self.image_delay, self._image_appears, name, written, complete
                )
            await self._broadcast("msd", self._msd())
        return json_response({"image": {"name": name, "size": size, "written": written}})

    def _image_appears(self, name: str, size: int, complete: bool) -> None:
        if name not in self.pending_images:
            return
        self.pending_images.discard(name)
        self.images[name] = {
            "complete": complete,
            "removable": True,
            "writable": not name.lower().endswith(".iso"),
            "size": size,
            "mod_ts": time.time(),
        }
        asyncio.ensure_future(self._broadcast("msd", self._msd()))

    async def _msd_set_params(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        params: dict[str, Any] = {}
        if query.get("image") is not None:
            image = _not_none_string(query.pop("image"), "MSD image name or URL")
            if re.match(r"^[a-zA-Z][a-zA-Z0-9._+-]+[a-zA-Z]://[a-zA-Z0-9\[]", image):
                raise MsdRemoteDisabledError()
            params["name"] = valid_msd_image_name(image, allow_eject=True)
        for key in ("cdrom", "rw"):
            if query.get(key) is not None:
                params[key] = valid_bool(query[key])
        self._msd_check_free()
        drive = self.drive
        if "name" in params:
            if params["name"]:
                image = self._known_image(params["name"])
                drive["image"] = {"name": params["name"], "in_storage": True, **image}
            else:
                drive["image"] = None
        if "cdrom" in params:
            drive["cdrom"] = params["cdrom"]
        if "rw" in params:
            drive["rw"] = params["rw"]
        if drive["rw"] and (drive["cdrom"] or (drive["image"] and not drive["image"]["writable"])):
            drive["rw"] = False
        await self._broadcast("msd", self._msd())
        return json_response()

    async def _msd_set_connected(self, request: web.Request) -> web.Response:
        connected = valid_bool(request.query.get("connected"))
        if self.uploading is not None:
            raise MsdIsBusyError()
        if connected:
            if self.drive["connected"]:
                raise MsdConnectedError()
            if self.drive["image"] is None:
                raise MsdImageNotSelected()
            if self.drive["image"]["name"] not in self.images:
                raise MsdUnknownImageError()
            self.drive["connected"] = True
        else:
            if not self.drive["connected"]:
                raise MsdDisconnectedError()
            self.drive["connected"] = False
        await self._broadcast("msd", self._msd())
        return json_response()

    async def _msd_remove(self, request: web.Request) -> web.Response:
        name = valid_msd_image_name(request.query.get("image"))
        self._msd_check_free()
        self._known_image(name)
        if self.drive["image"] and self.drive["image"]["name"] == name:
            self.drive["image"] = None
        del self.images[name]
        await self._broadcast("msd", self._msd())
        return json_response()

    # ----- streamer (api/streamer.py; uStreamer) -----------------------------------------

    def _streamer(self) -> dict:
        width, height = self.frame_size
        return {
            "features": {"quality": True, "resolution": False, "h264": True},
            "limits": {
                "desired_fps": {"min": 0, "max": 70},
                "h264_bitrate": {"min": 25, "max": 20000},
                "h264_gop": {"min": 0, "max": 60},
            },
            "params": {"quality": 80, "desired_fps": 40, "h264_bitrate": 5000, "h264_gop": 30},
            "streamer": {
                "instance_id": "",
                "encoder": {"type": "CPU", "quality": 80},
                "source": {
                    "resolution": {"width": width, "height": height},
                    "online": self.signal,
                    "desired_fps": 40,
                    "captured_fps": int(self.fps) if self.signal else 0,
                },
                "stream": {"queued_fps": 0, "clients": 0, "clients_stat": {}},
            },
            "snapshot": {"saved": None},
        }

    def _ustreamer_headers(self) -> dict[str, str]:
        width, height = self.frame_size
        return {
            "X-UStreamer-Online": "true" if self.signal else "false",
            "X-UStreamer-Width": str(width),
            "X-UStreamer-Height": str(height),
            "X-Timestamp": f"{time.time():.06f}",
            "Cache-Control": "no-store, no-cache, must-revalidate, proxy-revalidate, "
            "pre-check=0, post-check=0, max-age=0",
        }

    def _frame(self, index: int) -> bytes:
        return self._frames[index % len(self._frames)] if self.signal else self._no_signal

    async def _streamer_state(self, request: web.Request) -> web.Response:
        return json_response(self._streamer())

    async def _snapshot(self, request: web.Request) -> web.Response:
        save = valid_bool(request.query.get("save", "0"))
        valid_bool(request.query.get("load", "0"))
        allow_offline = valid_bool(request.query.get("allow_offline", "0"))
        del save
        if not self.signal and not allow_offline:
            raise UnavailableError()  # "Stream is offline, no signal or so"
        return web.Response(
            body=self._frame(int(time.time() * self.fps)),
            headers=self._ustreamer_headers(),
            content_type="image/jpeg",
        )

    async def _mjpeg(self, request: web.Request) -> web.StreamResponse:
        """uStreamer's ``/stream`` (``_http_callback_stream_write``), through nginx."""
        extra = request.query.get("extra_headers", "0") in ("1", "true", "yes")
        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "multipart/x-mixed-replace;boundary=boundarydonotcross",
                "Cache-Control": "no-store, no-cache, must-revalidate, proxy-revalidate, "
                "pre-check=0, post-check=0, max-age=0",
                "Pragma": "no-cache",
                "Expires": "Mon, 3 Jan 2000 12:34:56 GMT",
            },
        )
        await response.prepare(request)
        _RECORD.get().status = 200  # the stream goes on until the client leaves
        await response.write(b"--boundarydonotcross\r\n")
        index = 0
        try:
            while not self._stopping.is_set():
                data = self._frame(index)
                head = f"Content-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n"
                head += f"X-Timestamp: {time.time():.06f}\r\n"
                if extra:
                    for name, value in self._ustreamer_headers().items():
                        if name.startswith("X-UStreamer"):
                            head += f"{name}: {value}\r\n"
                await response.write(
                    head.encode() + b"\r\n" + data + b"\r\n--boundarydonotcross\r\n"
                )
                index += 1
                try:
                    await asyncio.wait_for(self._stopping.wait(), 1 / self.fps)
                except TimeoutError:
                    pass
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    # ----- /api/ws (apps/kvmd/server.py) -------------------------------------------------

    async def _broadcast(self, event_type: str, event: dict) -> None:
        text = json.dumps({"event_type": event_type, "event": event})
        for ws in list(self._ws_sessions):
            if not ws.closed:
                try:
                    await ws.send_str(text)
                except (ConnectionResetError, RuntimeError):
                    pass

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        valid_bool(request.query.get("stream", "1"))
        ws = web.WebSocketResponse(heartbeat=self.ws_heartbeat)
        await ws.prepare(request)
        _RECORD.get().status = 101  # switched protocols; the session goes on
        self._ws_sessions.add(ws)
        try:
            major, minor = self.version.split(".")
            loop = {"version": {"major": int(major), "minor": int(minor)}}
            await ws.send_str(
                json.dumps({"event_type": "loop", "event": loop if self.loop_version else {}})
            )
            await ws.send_str(json.dumps({"event_type": "hid", "event": self._hid()}))
            await ws.send_str(json.dumps({"event_type": "atx", "event": self._atx()}))
            await ws.send_str(json.dumps({"event_type": "msd", "event": self._msd()}))
            await ws.send_str(json.dumps({"event_type": "streamer", "event": self._streamer()}))
            for field in INFO_SUBS:
                await ws.send_str(
                    json.dumps({"event_type": "info", "event": {field: self._info_sub(field)}})
                )
            keymaps = {"keymaps": {"default": "en-us", "available": ["en-us"]}}
            await ws.send_str(json.dumps({"event_type": "hid_keymaps", "event": keymaps}))
            await ws.send_str(
                json.dumps({"event_type": "clients", "event": {"count": len(self._ws_sessions)}})
            )
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._ws_json(ws, msg.data)
                elif msg.type == WSMsgType.BINARY and len(msg.data) >= 1:
                    await self._ws_binary(ws, msg.data)
                else:
                    break
        finally:
            self._ws_sessions.discard(ws)
        return ws

    async def _ws_json(self, ws: web.WebSocketResponse, text: str) -> None:
        """``parse_ws_event`` then the ``@exposed_ws`` handler; bad events are dropped."""
        try:
            doc = json.loads(text)
            event_type, event = doc["event_type"], doc["event"]
            if not isinstance(event_type, str) or not isinstance(event, dict):
                return
        except (ValueError, KeyError, TypeError):
            return
        try:
            if event_type == "ping":
                await ws.send_str(json.dumps({"event_type": "pong", "event": {}}))
            elif event_type == "key":
                self._hid_event(
                    via="ws",
                    type="key",
                    key=valid_key(event["key"]),
                    state=valid_bool(event["state"]),
                    finish=valid_bool(event.get("finish", False)),
                )
            elif event_type == "mouse_button":
                self._hid_event(
                    via="ws",
                    type="mouse_button",
                    button=valid_mouse_button(event["button"]),
                    state=valid_bool(event["state"]),
                )
            elif event_type == "mouse_move":
                self._hid_event(
                    via="ws",
                    type="mouse_move",
                    to_x=valid_mouse_move(event["to"]["x"]),
                    to_y=valid_mouse_move(event["to"]["y"]),
                )
            elif event_type in ("mouse_relative", "mouse_wheel"):
                raw = event["delta"]
                deltas = [
                    (valid_mouse_delta(d["x"]), valid_mouse_delta(d["y"]))
                    for d in (raw if isinstance(raw, list) else [raw])
                ]
                self._hid_event(via="ws", type=event_type, deltas=deltas)
        except (KvmdFault, KeyError, TypeError):
            return

    async def _ws_binary(self, ws: web.WebSocketResponse, data: bytes) -> None:
        """The binary ops of ``api/hid.py`` and ``server.py``; malformed ones dropped."""
        op, body = data[0], data[1:]
        try:
            if op == 0:
                await ws.send_bytes(bytes((255,)))
            elif op == 1:
                if body[0] & 0b10000000:
                    return  # an evdev code: the fake knows only web key names
                self._hid_event(
                    via="ws-bin",
                    type="key",
                    key=valid_key(body[1:33].decode("ascii")),
                    state=bool(body[0] & 1),
                    finish=bool(body[0] & 2),
                )
            elif op == 2:
                if body[0] & 0b10000000:
                    return
                self._hid_event(
                    via="ws-bin",
                    type="mouse_button",
                    button=valid_mouse_button(body[1:33].decode("ascii")),
                    state=bool(body[0] & 1),
                )
            elif op == 3:
                to_x, to_y = struct.unpack(">hh", body)
                self._hid_event(via="ws-bin", type="mouse_move", to_x=to_x, to_y=to_y)
            elif op in (4, 5):
                pairs = body[1:]
                deltas = [struct.unpack(">bb", pairs[i : i + 2]) for i in range(0, len(pairs), 2)]
                self._hid_event(
                    via="ws-bin",
                    type="mouse_relative" if op == 4 else "mouse_wheel",
                    deltas=[tuple(d) for d in deltas],
                )
        except (KvmdFault, IndexError, struct.error, UnicodeDecodeError):
            return


def _start_loop_thread(name: str, serve, cleanup, timeout: float) -> threading.Thread:
    """Run ``serve()`` on a new event loop in a daemon thread, then that loop until it is
    stopped, then ``cleanup()``. Returns the thread once ``serve()`` is done, raising what
    ``serve()`` raised."""
    ready = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(serve())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller to raise
            failure.append(exc)
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(cleanup())
        loop.close()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    ready.wait(timeout)
    if failure:
        raise failure[0]
    return thread


class FakeKvmdGroup:
    """Many fakes (a bench's fleet of devices) served by one event loop in one thread, each
    on its own port with its own certificate, as :class:`FakeKvmd` would serve one.

    ``kwargs`` go to every :class:`FakeKvmd`; without ``certificate`` each makes its own, as
    every PiKVM does. ``start()``/``stop()`` or a ``with`` block; :attr:`fakes` in order.
    """

    def __init__(self, count: int, **kwargs: Any) -> None:
        self.fakes = [FakeKvmd(**kwargs) for _ in range(count)]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeKvmdGroup:
        contexts = [fake._tls_context() for fake in self.fakes]

        async def serve_all() -> None:
            self._loop = asyncio.get_running_loop()
            for fake, context in zip(self.fakes, contexts, strict=True):
                fake._loop = self._loop
                await fake._serve(context)

        async def cleanup() -> None:
            for fake in self.fakes:
                if fake._runner is not None:
                    await fake._runner.cleanup()

        self._thread = _start_loop_thread("fakekvmd-group", serve_all, cleanup, timeout=60)
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return

        async def closing() -> None:
            for fake in self.fakes:
                if fake._stopping is not None:
                    fake._stopping.set()
                    for ws in list(fake._ws_sessions):
                        await ws.close()

        asyncio.run_coroutine_threadsafe(closing(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(30)
        self._thread = None
        self._loop = None
        for fake in self.fakes:
            fake._loop = None
            fake._tmp.cleanup()

    def __enter__(self) -> FakeKvmdGroup:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
