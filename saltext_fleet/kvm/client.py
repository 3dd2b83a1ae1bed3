"""A synchronous client for kvmd, the API daemon of a PiKVM.

One :class:`KvmClient` talks to one device over HTTPS through the device's nginx (paths under
``/api`` go to kvmd, ``/streamer`` to uStreamer), the way kvmd's own web UI does. It is
standard library only: ``http.client`` on a socket opened by :mod:`saltext_fleet.kvm.tls`
(verified, or pinned by fingerprint and checked before anything is sent) and the small
websocket client in :mod:`saltext_fleet.kvm.ws`. A client is not thread-safe; give each thread
(or each device poller) its own. It keeps one keep-alive connection and reopens it when the
device has closed it.

.. code-block:: python

    from saltext_fleet.kvm.client import KvmClient

    with KvmClient({"host": "pikvm-1", "password": "...", "fingerprint": "AB:CD:..."}) as kvm:
        kvm.atx_power("on")
        with open("debian.iso", "rb") as iso:
            kvm.msd_write("debian.iso", iso)
        kvm.wait_for_image("debian.iso")
        kvm.msd_set_params(image="debian.iso", cdrom=True)
        kvm.msd_set_connected(True)

Where each behaviour comes from in kvmd (4.197):

* authentication: ``kvmd/apps/kvmd/api/auth.py`` checks, in order, the ``X-KVMD-User`` /
  ``X-KVMD-Passwd`` headers, the ``auth_token`` cookie set by ``POST /api/auth/login`` (form
  fields ``user``, ``passwd``, ``expire``), then HTTP basic. No credentials is 401; wrong ones
  (or an unknown token) are 403. With 2FA on, ``kvmd/apps/kvmd/auth.py`` takes the last six
  characters of the password as the TOTP code (``valid_window=1``), so the client appends the
  current code to the password on every check it makes;
* ATX (``api/atx.py``), HID (``api/hid.py``), MSD (``api/msd.py``), streamer
  (``api/streamer.py``) and info (``api/info.py``): paths and query parameters as there; every
  handler's answer is the JSON envelope read by :mod:`saltext_fleet.kvm.envelope`;
* ``/api/msd/write`` reads the raw request body (not multipart) and needs ``Content-Length``
  (``valid_int_f0(req.content_length)``), so the upload is streamed from the file object with
  its size declared up front; the new image joins the storage's image list only when kvmd's
  inotify watcher reloads it (``plugins/msd/otg/__init__.py``, ``systask``), so until then
  ``set_params``/``remove`` answer ``MsdUnknownImageError``: :meth:`KvmClient.wait_for_image`
  polls ``/api/msd`` for it;
* the event stream ``/api/ws`` (``kvmd/apps/kvmd/server.py``): the first message is ``loop``
  with kvmd's version (``{"version": {"major": 4, "minor": 197}}``, an empty event before kvmd
  4.x late 2024), then the state of every subsystem; see :class:`KvmEvents`.
"""

from __future__ import annotations

import dataclasses
import http.client
import io
import json
import logging
import os
import select
import ssl
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from http.cookies import SimpleCookie
from typing import IO, Any

import pyotp

from saltext_fleet.kvm import envelope, hidcodes
from saltext_fleet.kvm.errors import (
    KvmAuthError,
    KvmConnectionError,
    KvmError,
    KvmProtocolError,
    KvmTimeoutError,
    KvmWsClosedError,
)
from saltext_fleet.kvm.options import KvmOptions, load_options
from saltext_fleet.kvm.tls import make_context, open_tls
from saltext_fleet.kvm.ws import OP_BINARY, OP_TEXT, WebSocket

log = logging.getLogger(__name__)

AUTH_COOKIE = "auth_token"  # kvmd/apps/kvmd/api/auth.py: _COOKIE_AUTH_TOKEN
UPLOAD_CHUNK = 256 * 1024
MJPEG_BOUNDARY = b"--boundarydonotcross"  # uStreamer's fixed boundary (src/ustreamer/http)
# A keep-alive connection idle longer than this is reopened rather than raced against the
# server's own idle timeout (nginx: keepalive_timeout 75 s by default).
IDLE_REOPEN_S = 30.0
ATX_POWER_ACTIONS = ("on", "off", "off_hard", "reset_hard")
ATX_BUTTONS = ("power", "power_long", "reset")


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """A JPEG from ``/api/streamer/snapshot`` and what uStreamer's headers say about it."""

    data: bytes
    online: bool | None
    width: int | None
    height: int | None


@dataclasses.dataclass(frozen=True)
class MjpegFrame:
    """One part of the ``/streamer/stream`` multipart stream."""

    data: bytes
    headers: dict[str, str]

    @property
    def online(self) -> bool | None:
        value = self.headers.get("x-ustreamer-online")
        return None if value is None else value == "true"


@dataclasses.dataclass(frozen=True)
class KvmEvent:
    """One JSON event from ``/api/ws``: ``event_type`` (``atx``, ``msd``, ``hid``, ...) and
    its ``event`` dict."""

    event_type: str
    event: dict


def parse_event(host: str, text: str | bytes) -> KvmEvent:
    """A ``/api/ws`` text message as :class:`KvmEvent` (shape: ``send_ws_event`` in
    ``kvmd/htserver.py``); :class:`KvmProtocolError` for anything else."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise KvmProtocolError(host, f"websocket: event is not JSON: {text[:80]!r}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("event_type"), str):
        raise KvmProtocolError(host, f"websocket: not a kvmd event: {text[:80]!r}")
    event = doc.get("event")
    return KvmEvent(doc["event_type"], event if isinstance(event, dict) else {})


def _bool(value: bool) -> str:
    return "1" if value else "0"


def _atx_wait(timeout: float, wait: bool) -> float:
    """With ``wait`` kvmd answers after the click: a long press holds 5.5 s + 1 s
    (``plugins/atx/gpio.py``), so allow that on top of the usual timeout."""
    return timeout + 6.5 if wait else timeout


class _Connection(http.client.HTTPSConnection):
    """``HTTPSConnection`` whose socket comes from :func:`open_tls` (pin checked first)."""

    def __init__(self, options: KvmOptions, context: ssl.SSLContext) -> None:
        super().__init__(
            options.server_hostname,
            options.port,
            timeout=options.timeout,
            context=context,
            blocksize=UPLOAD_CHUNK,
        )
        self.kvm_options = options
        self.kvm_context = context
        self.last_used = time.monotonic()

    def connect(self) -> None:
        self.sock = open_tls(self.kvm_options, self.kvm_context)
        self.sock.settimeout(self.timeout)

    def set_timeout(self, seconds: float) -> None:
        """The read/write timeout of this connection from now on (and after a reconnect)."""
        self.timeout = seconds
        if self.sock is not None:
            self.sock.settimeout(seconds)


class KvmClient:
    """A client for one kvmd device. ``options`` is a :class:`KvmOptions` or a mapping for
    :func:`~saltext_fleet.kvm.options.load_options`."""

    def __init__(self, options: KvmOptions | Mapping[str, Any]) -> None:
        self.options = options if isinstance(options, KvmOptions) else load_options(options)
        self.host = self.options.host
        self._context = make_context(self.options)
        self._conn: _Connection | None = None
        self._token: str | None = None
        self._totp = pyotp.TOTP(self.options.totp_secret) if self.options.totp_secret else None

    # ----- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> KvmClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the keep-alive connection (the kvmd session, if any, stays valid)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def detach(self) -> None:
        """Forget the keep-alive connection without closing it; keep the kvmd session.

        For a copy of the client made by ``fork()``: the parent still uses that socket, so the
        child must neither read from it nor shut it down, but it may reuse the session token
        (kvmd keeps a session until it restarts, so logging in again in every child would
        leave a session behind per job).
        """
        self._conn = None

    # ----- credentials -------------------------------------------------------------------

    def _password(self) -> str:
        """The password kvmd checks: with 2FA on, the current TOTP code appended."""
        if self._totp is None:
            return self.options.password
        return self.options.password + self._totp.now()

    def _auth_headers(self) -> dict[str, str]:
        if self.options.auth == "headers":
            return {"X-KVMD-User": self.options.user, "X-KVMD-Passwd": self._password()}
        if self._token is None:
            self.login()
        return {"Cookie": f"{AUTH_COOKIE}={self._token}"}

    def login(self) -> None:
        """``POST /api/auth/login``: open a kvmd session and keep its ``auth_token`` cookie.

        Called on its own by the first request in ``auth: session`` mode and again once when
        kvmd no longer knows the token (403 after a kvmd restart or the session's expiry).
        """
        form = urllib.parse.urlencode(
            {"user": self.options.user, "passwd": self._password(), "expire": "0"}
        )
        status, headers, body = self._exchange(
            "POST",
            "/api/auth/login",
            body=form.encode("ascii"),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        envelope.decode(self.host, "POST /api/auth/login", status, body)
        cookie = SimpleCookie()
        for value in headers.get_all("Set-Cookie") or []:
            cookie.load(value)
        token = cookie.get(AUTH_COOKIE)
        if token is None or not token.value:
            # kvmd with auth disabled answers 200 without a cookie; requests then need none.
            self._token = ""
            return
        self._token = token.value

    def logout(self) -> None:
        """``POST /api/auth/logout``: end the kvmd session.

        kvmd ends every session of the user, not only this one (``AuthManager.logout``): a
        browser logged in as the same user is logged out too. :meth:`close` does not log out.
        """
        if self.options.auth == "session" and self._token:
            try:
                self._call("POST", "/api/auth/logout")
            finally:
                self._token = None

    # ----- transport ---------------------------------------------------------------------

    def _connection(self) -> _Connection:
        conn = self._conn
        if conn is not None and conn.sock is not None:
            idle = time.monotonic() - conn.last_used
            readable = select.select([conn.sock], [], [], 0)[0]
            if idle > IDLE_REOPEN_S or readable:
                # Readable while idle means the device closed it (EOF): start afresh rather
                # than lose a request to the race.
                conn.close()
        if conn is None:
            conn = self._conn = _Connection(self.options, self._context)
        return conn

    def _url(self, path: str, params: Mapping[str, Any] | None) -> str:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        return path + ("?" + urllib.parse.urlencode(query) if query else "")

    def _exchange(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        upload: tuple[IO[bytes], int, Callable[[int], None] | None] | None = None,
        timeout: float | None = None,
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        """One request on the keep-alive connection: ``(status, headers, body)``.

        Transport failures become :class:`KvmTimeoutError` / :class:`KvmConnectionError` /
        :class:`KvmProtocolError` naming the request. ``upload`` streams ``(file, size,
        progress)`` as the body in chunks, never holding more than one chunk. ``timeout``
        replaces ``options.timeout`` for this request only.
        """
        request = f"{method} {url.split('?')[0]}"
        limit = self.options.timeout if timeout is None else timeout
        conn = self._connection()
        conn.set_timeout(limit)
        try:
            if upload is None:
                conn.request(method, url, body=body, headers=dict(headers or {}))
                response = conn.getresponse()
            else:
                response = self._send_upload(conn, method, url, headers or {}, *upload)
            data = response.read()
        except KvmError:
            conn.close()
            raise
        except TimeoutError as exc:
            conn.close()
            raise KvmTimeoutError(self.host, f"{request}: no answer within {limit:g} s") from exc
        except http.client.HTTPException as exc:
            conn.close()
            if isinstance(exc, http.client.RemoteDisconnected):
                raise KvmConnectionError(self.host, f"{request}: connection closed") from exc
            raise KvmProtocolError(self.host, f"{request}: bad HTTP answer: {exc!r}") from exc
        except OSError as exc:
            conn.close()
            raise KvmConnectionError(self.host, f"{request}: {exc}") from exc
        finally:
            conn.set_timeout(self.options.timeout)
        conn.last_used = time.monotonic()
        return response.status, response.headers, data

    def _send_upload(
        self,
        conn: _Connection,
        method: str,
        url: str,
        headers: Mapping[str, str],
        fileobj: IO[bytes],
        size: int,
        progress: Callable[[int], None] | None,
    ) -> http.client.HTTPResponse:
        conn.putrequest(method, url)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.putheader("Content-Type", "application/octet-stream")
        conn.putheader("Content-Length", str(size))
        conn.endheaders()
        sent = 0
        try:
            while sent < size:
                chunk = fileobj.read(min(UPLOAD_CHUNK, size - sent))
                if not chunk:
                    raise KvmError(
                        self.host,
                        f"{method} {url.split('?')[0]}: the file ended after {sent} of the "
                        f"{size} bytes declared; upload aborted",
                    )
                conn.send(chunk)
                sent += len(chunk)
                if progress is not None:
                    progress(sent)
        except (BrokenPipeError, ConnectionResetError):
            # kvmd may refuse before reading the body (MsdConnectedError, a bad name): its
            # answer explains more than the broken pipe does.
            pass
        return conn.getresponse()

    def _request(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        upload: tuple[IO[bytes], int, Callable[[int], None] | None] | None = None,
        timeout: float | None = None,
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        """An authenticated request; in session mode, one fresh login when kvmd has forgotten
        the token (it checks credentials before the handler runs, so nothing was done)."""
        url = self._url(path, params)
        start = upload[0].tell() if upload is not None and upload[0].seekable() else None
        for attempt in (1, 2):
            all_headers = {**self._auth_headers(), **(headers or {})}
            status, got, data = self._exchange(method, url, body, all_headers, upload, timeout)
            if (
                status == 403
                and attempt == 1
                and self.options.auth == "session"
                and (upload is None or start is not None)
            ):
                self._token = None
                if upload is not None:
                    upload[0].seek(start)
                continue
            return status, got, data
        return status, got, data

    def _call(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> dict:
        status, _, data = self._request(method, path, params, body, headers, timeout=timeout)
        return envelope.decode(self.host, f"{method} {path}", status, data)

    def call(self, method: str, path: str, params: Mapping[str, Any] | None = None) -> dict:
        """Any kvmd JSON endpoint (``"POST", "/api/hid/set_params", {"jiggler": "1"}``): its
        ``result``, or the :class:`~saltext_fleet.kvm.errors.KvmHttpError` kvmd's answer
        describes. For what the methods below do not cover (GPIO, switch, Redfish...)."""
        if not path.startswith("/api/"):
            raise KvmError(self.host, f"call: {path!r} is not a kvmd API path (/api/...)")
        return self._call(method.upper(), path, params)

    # ----- info --------------------------------------------------------------------------

    def info(self, fields: list[str] | None = None) -> dict:
        """``GET /api/info``: ``system`` (kvmd and streamer versions, platform), ``hw``
        (health: CPU temperature, throttling), ``meta``, ``extras``, ``uptime``, ``node``,
        ``fan``... ``fields`` limits the answer (kvmd's ``fields=`` parameter)."""
        params = {"fields": ",".join(fields)} if fields else None
        return self._call("GET", "/api/info", params)

    def auth_check(self) -> None:
        """``GET /api/auth/check``: raises :class:`KvmAuthError` unless the credentials work."""
        self._call("GET", "/api/auth/check")

    # ----- ATX ---------------------------------------------------------------------------

    def atx_state(self) -> dict:
        """``GET /api/atx``: ``enabled``, ``busy``, ``acts``, ``leds`` (``power``, ``hdd``)."""
        return self._call("GET", "/api/atx")

    def atx_power(self, action: str, wait: bool = False) -> None:
        """``POST /api/atx/power?action=on|off|off_hard|reset_hard``.

        kvmd only clicks when the power LED says it is needed (``on`` when off, the others
        when on); another click in progress answers 409 (:class:`KvmBusyError`). ``wait``
        makes kvmd answer when the click is over (``api/atx.py``, ``plugins/atx/gpio.py``).
        """
        if action not in ATX_POWER_ACTIONS:
            raise KvmError(self.host, f"ATX power action {action!r}: one of {ATX_POWER_ACTIONS}")
        self._call(
            "POST",
            "/api/atx/power",
            {"action": action, "wait": _bool(wait)},
            timeout=_atx_wait(self.options.timeout, wait),
        )

    def atx_click(self, button: str, wait: bool = False) -> None:
        """``POST /api/atx/click?button=power|power_long|reset``: press the button."""
        if button not in ATX_BUTTONS:
            raise KvmError(self.host, f"ATX button {button!r}: one of {ATX_BUTTONS}")
        self._call(
            "POST",
            "/api/atx/click",
            {"button": button, "wait": _bool(wait)},
            timeout=_atx_wait(self.options.timeout, wait),
        )

    # ----- HID ---------------------------------------------------------------------------

    def hid_state(self) -> dict:
        """``GET /api/hid``: online state of keyboard and mouse, outputs, jiggler."""
        return self._call("GET", "/api/hid")

    def send_key(self, key: str, state: bool | None = None, finish: bool = False) -> None:
        """``POST /api/hid/events/send_key``: without ``state`` kvmd presses and releases
        (``api/hid.py``; a modifier stays pressed, ``plugins/hid/__init__.py``)."""
        params: dict[str, Any] = {"key": key}
        if state is not None:
            params.update(state=_bool(state), finish=_bool(finish))
        self._call("POST", "/api/hid/events/send_key", params)

    def send_shortcut(self, keys: list[str]) -> None:
        """``POST /api/hid/events/send_shortcut?keys=ControlLeft,AltLeft,Delete``: press in
        order, release in reverse."""
        self._call("POST", "/api/hid/events/send_shortcut", {"keys": ",".join(keys)})

    def send_mouse_button(self, button: str, state: bool | None = None) -> None:
        """``POST /api/hid/events/send_mouse_button``: without ``state``, a click."""
        params: dict[str, Any] = {"button": button}
        if state is not None:
            params["state"] = _bool(state)
        self._call("POST", "/api/hid/events/send_mouse_button", params)

    def send_mouse_move(self, to_x: int, to_y: int) -> None:
        """``POST /api/hid/events/send_mouse_move``: absolute, -32768..32767 on each axis."""
        self._call("POST", "/api/hid/events/send_mouse_move", {"to_x": to_x, "to_y": to_y})

    def print_text(
        self,
        text: str,
        limit: int | None = None,
        keymap: str | None = None,
        slow: bool = False,
        delay: float | None = None,
        timeout: float | None = None,
    ) -> None:
        """``POST /api/hid/print``: type ``text`` (the request body) with ``keymap``.

        kvmd types at most ``limit`` characters (its default 1024; 0 means all) and answers
        when it is done, so the wait allowed grows with the text: ``timeout`` defaults to
        ``options.timeout`` plus two key events per character at the key delay (kvmd: 0.02 s
        when ``slow``).
        """
        params = {"limit": limit, "keymap": keymap, "slow": _bool(slow), "delay": delay}
        if timeout is None:
            per_key = delay if delay is not None else (0.02 if slow else 0.0)
            typed = len(text) if not limit else min(len(text), limit)
            timeout = self.options.timeout + 2 * typed * per_key
        self._call(
            "POST",
            "/api/hid/print",
            params,
            body=text.encode("utf-8"),
            headers={"Content-Type": "text/plain; charset=utf-8"},
            timeout=timeout,
        )

    # ----- MSD ---------------------------------------------------------------------------

    def msd_state(self) -> dict:
        """``GET /api/msd``: ``enabled``, ``online``, ``busy``, ``drive`` (image, connected,
        cdrom, rw) and ``storage`` (``images`` by name, ``parts``, ``uploading``)."""
        return self._call("GET", "/api/msd")

    def msd_write(
        self,
        name: str,
        fileobj: IO[bytes],
        size: int | None = None,
        prefix: str | None = None,
        remove_incomplete: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> dict:
        """``POST /api/msd/write?image=<name>``: stream ``fileobj`` to the device's storage.

        ``size`` defaults to what is left of a seekable file. Sent in chunks of
        ``UPLOAD_CHUNK`` bytes, never the whole image in memory; ``progress(bytes_sent)``
        after each. Returns kvmd's ``{"image": {"name", "size", "written"}}``. The image is
        not usable until :meth:`wait_for_image` sees it.
        """
        if size is None:
            size = self._remaining_size(fileobj)
        params = {"image": name, "prefix": prefix, "remove_incomplete": _bool(remove_incomplete)}
        if self.options.auth == "session":
            # Renew a forgotten session now rather than have kvmd refuse the upload after
            # its first chunks (and a file that cannot seek could not be sent again).
            self.auth_check()
        status, _, data = self._request(
            "POST", "/api/msd/write", params, upload=(fileobj, size, progress)
        )
        return envelope.decode(self.host, "POST /api/msd/write", status, data)

    def _remaining_size(self, fileobj: IO[bytes]) -> int:
        try:
            if hasattr(fileobj, "fileno"):
                return os.fstat(fileobj.fileno()).st_size - fileobj.tell()
        except (OSError, io.UnsupportedOperation):
            pass
        if fileobj.seekable():
            here = fileobj.tell()
            end = fileobj.seek(0, io.SEEK_END)
            fileobj.seek(here)
            return end - here
        raise KvmError(self.host, "msd_write: size is required for a file that cannot seek")

    def wait_for_image(self, name: str, timeout: float = 10.0, interval: float = 0.2) -> dict:
        """Poll ``/api/msd`` until ``name`` is in the storage and complete; its state.

        kvmd adds a written image to its list only when its inotify watcher reloads the
        storage, about a second after ``/api/msd/write`` answered; until then ``set_params``
        and ``remove`` refuse it with ``MsdUnknownImageError``. Raises
        :class:`KvmTimeoutError` when it does not show within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            storage = self.msd_state().get("storage") or {}
            image = (storage.get("images") or {}).get(name)
            if image is not None and image.get("complete", True):
                return image
            if time.monotonic() >= deadline:
                where = "still incomplete in" if image is not None else "not in"
                raise KvmTimeoutError(
                    self.host,
                    f"image {name!r} {where} the MSD storage {timeout:g} s after it was written",
                )
            time.sleep(interval)

    def msd_set_params(
        self, image: str | None = None, cdrom: bool | None = None, rw: bool | None = None
    ) -> None:
        """``POST /api/msd/set_params``: select ``image`` (``""`` unselects), CD-ROM or
        flash mode, read-write. Only while the drive is disconnected."""
        params = {
            "image": image,
            "cdrom": None if cdrom is None else _bool(cdrom),
            "rw": None if rw is None else _bool(rw),
        }
        self._call("POST", "/api/msd/set_params", params)

    def msd_set_connected(self, connected: bool) -> None:
        """``POST /api/msd/set_connected?connected=1|0``: plug the drive into the server."""
        self._call("POST", "/api/msd/set_connected", {"connected": _bool(connected)})

    def msd_remove(self, name: str) -> None:
        """``POST /api/msd/remove?image=<name>``: delete an image from the storage."""
        self._call("POST", "/api/msd/remove", {"image": name})

    # ----- streamer ----------------------------------------------------------------------

    def streamer_state(self) -> dict:
        """``GET /api/streamer``: ``features``, ``limits``, ``params``, ``streamer`` (the
        uStreamer state with the source's ``online`` flag, or null while stopped), ``snapshot``."""
        return self._call("GET", "/api/streamer")

    def snapshot(self, allow_offline: bool = False, save: bool = False) -> Snapshot:
        """``GET /api/streamer/snapshot``: a JPEG of the screen.

        Without a video signal kvmd answers 503 (:class:`KvmUnavailableError`) unless
        ``allow_offline``, which returns uStreamer's "no signal" picture (``api/streamer.py``,
        ``Streamer.take_snapshot`` in ``apps/kvmd/streamer/__init__.py``).
        """
        params = {"allow_offline": _bool(allow_offline), "save": _bool(save)}
        status, headers, data = self._request("GET", "/api/streamer/snapshot", params)
        envelope.raise_for_status(self.host, "GET /api/streamer/snapshot", status, data)
        if not data.startswith(b"\xff\xd8"):
            raise KvmProtocolError(self.host, "GET /api/streamer/snapshot: not a JPEG")
        online = headers.get("X-UStreamer-Online")
        width, height = headers.get("X-UStreamer-Width"), headers.get("X-UStreamer-Height")
        return Snapshot(
            data=data,
            online=None if online is None else online == "true",
            width=int(width) if width and width.isdigit() else None,
            height=int(height) if height and height.isdigit() else None,
        )

    def mjpeg_frames(self, max_frames: int | None = None) -> Iterator[MjpegFrame]:
        """Frames of ``/streamer/stream`` (uStreamer's MJPEG) on a connection of their own.

        Each frame waits at most ``timeout`` seconds. Stop by leaving the loop (or with
        ``max_frames``): the generator closes its connection.
        """
        conn = _Connection(self.options, self._context)
        request = "GET /streamer/stream"
        try:
            try:
                for attempt in (1, 2):
                    conn.request(
                        "GET", "/streamer/stream?extra_headers=1", headers=self._auth_headers()
                    )
                    response = conn.getresponse()
                    if response.status == 200:
                        break
                    body = response.read(4096)
                    if response.status == 403 and attempt == 1 and self.options.auth == "session":
                        self._token = None  # nginx asked kvmd, which forgot the session
                        conn.close()
                        continue
                    envelope.raise_for_status(self.host, request, response.status, body)
                count = 0
                while max_frames is None or count < max_frames:
                    frame = self._read_part(response, request)
                    if frame is None:
                        return
                    count += 1
                    yield frame
            except TimeoutError as exc:
                raise KvmTimeoutError(
                    self.host, f"{request}: no frame within {self.options.timeout:g} s"
                ) from exc
            except (OSError, http.client.HTTPException) as exc:
                raise KvmConnectionError(self.host, f"{request}: {exc!r}") from exc
        finally:
            conn.close()

    def _read_part(self, response: http.client.HTTPResponse, request: str) -> MjpegFrame | None:
        line = response.readline()
        while line.strip() != MJPEG_BOUNDARY:
            if not line:
                return None
            line = response.readline()
        headers: dict[str, str] = {}
        while True:
            line = response.readline()
            if not line:
                return None
            if not line.strip():
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = headers.get("content-length", "")
        if not length.isdigit():
            raise KvmProtocolError(self.host, f"{request}: MJPEG part without Content-Length")
        data = response.read(int(length))
        if len(data) != int(length):
            return None
        return MjpegFrame(data=data, headers=headers)

    # ----- event stream ------------------------------------------------------------------

    def events(self, stream: bool = False, idle_timeout: float = 60.0) -> KvmEvents:
        """Open ``/api/ws``: a :class:`KvmEvents` (iterate it; use it as a context manager).

        ``stream=False`` (kvmd's ``stream`` parameter) keeps this session from counting as a
        video viewer, so opening it does not start uStreamer (``__ws_handler`` and
        ``__stream_controller`` in ``apps/kvmd/server.py``). kvmd checks credentials before
        the upgrade: a refusal is the same :class:`KvmAuthError` as for any request.
        """
        path = "/api/ws?stream=" + _bool(stream)
        for attempt in (1, 2):
            sock = open_tls(self.options, self._context)
            try:
                ws = WebSocket.connect(
                    sock, self.host, self.options.netloc, path, self._auth_headers()
                )
                break
            except KvmAuthError as exc:
                sock.close()
                if exc.status == 403 and attempt == 1 and self.options.auth == "session":
                    self._token = None
                    continue
                raise
            except TimeoutError as exc:
                sock.close()
                raise KvmTimeoutError(
                    self.host, f"GET /api/ws: no handshake within {self.options.timeout:g} s"
                ) from exc
            except OSError as exc:
                sock.close()
                raise KvmConnectionError(self.host, f"GET /api/ws: {exc}") from exc
            except KvmError:
                sock.close()
                raise
        return KvmEvents(ws, self.host, idle_timeout)


class KvmEvents:
    """An open ``/api/ws`` session: kvmd's events in, HID events out.

    Opening it reads kvmd's first message, which must be ``loop``; :attr:`version` is then
    ``(major, minor)`` from it (``None`` for kvmd that sends an empty ``loop``). Iterating
    yields :class:`KvmEvent` for every JSON event after that (``hid``, ``atx``, ``msd``,
    ``streamer``, ``info``, ``hid_keymaps``, ``clients``, ``pong``...), raising
    :class:`KvmTimeoutError` when nothing at all arrives for ``idle_timeout`` seconds and
    ending when kvmd closes the session. HID events go out in kvmd's binary websocket format,
    the one its web UI uses (:mod:`saltext_fleet.kvm.hidcodes`); names and ranges are checked
    first because kvmd drops a bad event without a word.
    """

    def __init__(self, ws: WebSocket, host: str, idle_timeout: float) -> None:
        self._ws = ws
        self.host = host
        self.idle_timeout = idle_timeout
        self.version: tuple[int, int] | None = None
        try:
            first = self.next_event(timeout=ws.io_timeout)
        except KvmError:
            ws.close()
            raise
        if first is None or first.event_type != "loop":
            ws.close()
            raise KvmProtocolError(
                host, f"GET /api/ws: first event is {first and first.event_type!r}, not 'loop'"
            )
        version = first.event.get("version")
        if isinstance(version, dict):
            try:
                self.version = (int(version["major"]), int(version["minor"]))
            except (KeyError, TypeError, ValueError):
                self.version = None
        self.loop = first

    def __enter__(self) -> KvmEvents:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._ws.close()

    def next_event(self, timeout: float | None = None) -> KvmEvent | None:
        """The next JSON event, waiting at most ``timeout`` seconds (``idle_timeout`` when
        None) however many heartbeat pings or binary messages (pong) arrive meanwhile;
        ``None`` when kvmd closed the session. (kvmd pushes ``info`` at least every 5 s, so an
        idle stream means a dead one.)"""
        wait = self.idle_timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        try:
            while True:
                opcode, payload = self._ws.recv(timeout=max(0.0, deadline - time.monotonic()))
                if opcode == OP_TEXT:
                    return parse_event(self.host, payload)
                if opcode == OP_BINARY:
                    continue
        except TimeoutError as exc:
            raise KvmTimeoutError(self.host, f"/api/ws: no event within {wait:g} s") from exc
        except KvmWsClosedError:
            return None
        except OSError as exc:
            raise KvmConnectionError(self.host, f"/api/ws: {exc}") from exc

    def __iter__(self) -> Iterator[KvmEvent]:
        while True:
            event = self.next_event()
            if event is None:
                return
            yield event

    def wait_for(self, event_type: str, timeout: float = 10.0) -> KvmEvent:
        """Skip events until one of ``event_type``; :class:`KvmTimeoutError` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise KvmTimeoutError(
                    self.host, f"/api/ws: no {event_type!r} event in {timeout:g} s"
                )
            try:
                event = self.next_event(timeout=left)
            except KvmTimeoutError:
                continue
            if event is None:
                raise KvmConnectionError(self.host, f"/api/ws closed before a {event_type!r} event")
            if event.event_type == event_type:
                return event

    def _send(self, data: bytes | str) -> None:
        try:
            if isinstance(data, str):
                self._ws.send_text(data)
            else:
                self._ws.send_binary(data)
        except TimeoutError as exc:
            raise KvmTimeoutError(self.host, "/api/ws: send timed out") from exc
        except OSError as exc:
            raise KvmConnectionError(self.host, f"/api/ws: send failed: {exc}") from exc

    def _checked(self, build: Callable[[], bytes]) -> bytes:
        try:
            return build()
        except ValueError as exc:
            raise KvmError(self.host, f"/api/ws: {exc}") from exc

    def send_key(self, key: str, state: bool, finish: bool = False) -> None:
        """Press (``state=True``) or release a key."""
        self._send(self._checked(lambda: hidcodes.key_frame(key, state, finish)))

    def press_key(self, key: str) -> None:
        """Press and release ``key``."""
        self.send_key(key, True)
        self.send_key(key, False)

    def send_mouse_button(self, button: str, state: bool) -> None:
        self._send(self._checked(lambda: hidcodes.mouse_button_frame(button, state)))

    def send_mouse_move(self, to_x: int, to_y: int) -> None:
        """Absolute move, -32768..32767 on each axis."""
        self._send(self._checked(lambda: hidcodes.mouse_move_frame(to_x, to_y)))

    def send_mouse_relative(self, dx: int, dy: int, squash: bool = False) -> None:
        self._send(
            self._checked(
                lambda: hidcodes.mouse_delta_frame(hidcodes.OP_MOUSE_RELATIVE, [(dx, dy)], squash)
            )
        )

    def send_mouse_wheel(self, dx: int, dy: int) -> None:
        self._send(
            self._checked(lambda: hidcodes.mouse_delta_frame(hidcodes.OP_MOUSE_WHEEL, [(dx, dy)]))
        )

    def send_json_event(self, event_type: str, event: dict) -> None:
        """Send a JSON event as is (``{"event_type": ..., "event": ...}``): kvmd also takes
        ``key``, ``mouse_button``, ``mouse_move``, ``mouse_relative``, ``mouse_wheel`` and
        ``ping`` this way."""
        self._send(hidcodes.json_event(event_type, event))

    def ping(self) -> None:
        """kvmd's application ping (binary ``0``; it answers binary ``255``)."""
        self._send(bytes((hidcodes.OP_PING,)))
