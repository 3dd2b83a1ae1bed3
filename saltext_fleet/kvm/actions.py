"""What the ``pikvm`` Salt modules do to a device, with no Salt in it.

The proxy module and the execution module (``saltext_fleet/proxy/pikvm.py``,
``saltext_fleet/modules/pikvm.py``) read their options, get a
:class:`~saltext_fleet.kvm.client.KvmClient` and call the functions here, which check the
arguments first (a bad one is a :class:`~saltext_fleet.kvm.errors.KvmArgumentError` and
nothing is sent), do the work through the client and answer plain dicts.

Mounting an image (:func:`iso_mount`) follows one rule: **no byte of an image whose SHA-256
is not the expected one reaches the device.** The image is read once to hash it before
anything is uploaded (an ``http(s)://`` or ``salt://`` source is first streamed into a
temporary file, hashed as it arrives); on a mismatch it is refused with
:class:`~saltext_fleet.kvm.errors.KvmImageMismatchError`. The upload then reads the same
file through :class:`VerifyingReader`, which hashes it again and raises before handing over
the last chunk if the file changed in between, so kvmd gets an incomplete upload and drops
it (``remove_incomplete``).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import hmac
import os
import re
import ssl
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any

from saltext_fleet.kvm.client import ATX_BUTTONS, ATX_POWER_ACTIONS, KvmClient
from saltext_fleet.kvm.errors import (
    KvmArgumentError,
    KvmBusyError,
    KvmError,
    KvmImageMismatchError,
)
from saltext_fleet.kvm.options import KvmOptions, load_options

#: Where kvmd-gencert puts the certificate of the PiKVM's nginx.
DEVICE_CERT = "/etc/kvmd/nginx/ssl/server.crt"
#: Keys of a proxy's ``proxy:`` dict that are Salt's, not the device's.
SALT_PROXY_KEYS = ("proxytype",)
HASH_CHUNK = 1024 * 1024

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_URL_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


# ----- options -------------------------------------------------------------------------------


def proxy_options(raw: Mapping[str, Any]) -> KvmOptions:
    """A proxy's ``proxy:`` dict (``proxytype: pikvm`` plus the device's options) as
    :class:`KvmOptions`; a :class:`~saltext_fleet.kvm.errors.KvmConfigError` names a bad one."""
    return load_options({k: v for k, v in raw.items() if k not in SALT_PROXY_KEYS})


def certificate_fingerprint_of(pem_path: str) -> str | None:
    """SHA-256 (hex) of the first certificate in a PEM file; None when it cannot be read."""
    try:
        with open(pem_path, encoding="ascii") as handle:
            pem = handle.read()
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def local_options(raw: Mapping[str, Any] | None, cert_file: str = DEVICE_CERT) -> KvmOptions:
    """Options for kvmd on the machine itself (a salt-minion running on the PiKVM).

    ``host`` defaults to ``127.0.0.1`` (the PiKVM's nginx listens there on 443). Without
    ``fingerprint`` or ``verify`` the certificate is pinned to the one in ``cert_file``, the
    device's own (kvmd-gencert's certificate names only ``localhost`` and is self-signed, so
    nothing else would accept it); reading it needs root, as salt-minion runs.
    """
    options = dict(raw or {})
    options.setdefault("host", "127.0.0.1")
    if not options.get("fingerprint") and "verify" not in options:
        pinned = certificate_fingerprint_of(cert_file)
        if pinned is not None:
            options["fingerprint"] = pinned
    return load_options(options)


# ----- argument checks -----------------------------------------------------------------------


def check_choice(host: str, what: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise KvmArgumentError(host, f"{what} {value!r}: one of {', '.join(choices)}")
    return value


def check_sha256(host: str, value: Any) -> str:
    """64 hex digits (any case, ``sha256:`` prefix allowed) as lowercase hex."""
    if not isinstance(value, str):
        raise KvmArgumentError(
            host,
            f"sha256 {value!r}: 64 hex digits expected as a string (quote it on the command line)",
        )
    text = value.strip().lower()
    text = text.removeprefix("sha256:")
    if not _SHA256_RE.match(text):
        raise KvmArgumentError(host, f"sha256 {value!r}: 64 hex digits expected")
    return text


def check_image_name(host: str, name: Any) -> str:
    """An image name kvmd stores as given: one path part, printable, not hidden.

    kvmd's own validator (``valid_msd_image_name``) would quietly rewrite a name (strip it,
    replace unprintable characters, split at ``/``) and the image would then not be found
    under the name asked for; refuse those instead.
    """
    if not isinstance(name, str) or not name:
        raise KvmArgumentError(host, f"image name {name!r}: a non-empty string expected")
    if (
        name != name.strip()
        or "/" in name
        or name.startswith(".")
        or name == "lost+found"
        or len(name.encode("utf-8")) > 255
        or not name.isprintable()
    ):
        raise KvmArgumentError(
            host,
            f"image name {name!r}: one file name (no '/', not starting with '.', printable, "
            "at most 255 bytes, no leading or trailing spaces)",
        )
    return name


def source_kind(host: str, source: Any) -> str:
    """``file`` (an absolute path or ``file://``), ``http`` (http/https) or ``salt``."""
    if not isinstance(source, str) or not source:
        raise KvmArgumentError(host, f"image source {source!r}: a path or URL expected")
    match = _URL_SCHEME_RE.match(source)
    if match is None:
        if not os.path.isabs(source):
            raise KvmArgumentError(host, f"image source {source!r}: an absolute path expected")
        return "file"
    scheme = match.group(1).lower()
    if scheme in ("http", "https"):
        return "http"
    if scheme == "salt":
        return "salt"
    if scheme == "file":
        return "file"
    raise KvmArgumentError(
        host, f"image source {source!r}: a path, file://, http(s):// or salt:// URL expected"
    )


def _local_path(source: str) -> str:
    if source.lower().startswith("file://"):
        return urllib.parse.unquote(urllib.parse.urlsplit(source).path)
    return source


# ----- staging and verifying an image ---------------------------------------------------------


@dataclasses.dataclass
class StagedImage:
    """An image whose SHA-256 matched: ``path`` to upload from, ``temporary`` if we made it."""

    path: str
    size: int
    sha256: str
    temporary: bool

    def discard(self) -> None:
        if self.temporary:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def _hash_file(host: str, path: str) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(HASH_CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise KvmArgumentError(host, f"image source {path!r}: cannot read it: {exc}") from exc
    return digest.hexdigest(), size


def _download(host: str, url: str, dest: IO[bytes], timeout: float) -> tuple[str, int]:
    """Stream ``url`` into ``dest``, hashing as it arrives: ``(sha256, size)``."""
    digest = hashlib.sha256()
    size = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            while chunk := response.read(HASH_CHUNK):
                digest.update(chunk)
                dest.write(chunk)
                size += len(chunk)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise KvmArgumentError(host, f"image source {url!r}: download failed: {exc}") from exc
    dest.flush()
    return digest.hexdigest(), size


@contextlib.contextmanager
def staged_image(
    host: str,
    name: str,
    source: str,
    sha256: str,
    fetch: Callable[[str, str], Any] | None = None,
    tmp_dir: str | None = None,
    timeout: float = 60.0,
) -> Iterator[StagedImage]:
    """The image from ``source``, its SHA-256 checked against ``sha256``; removed afterwards
    if it was downloaded.

    A local file is hashed in place. An ``http(s)`` URL is streamed into a temporary file in
    ``tmp_dir`` and hashed on the way; a ``salt://`` URL is written there by ``fetch(url,
    dest_path)`` (Salt's file client; the Salt module passes ``cp.get_url``) and then hashed.
    A mismatch raises :class:`KvmImageMismatchError` (the temporary file is removed).
    """
    kind = source_kind(host, source)
    expected = check_sha256(host, sha256)
    if kind == "file":
        path = _local_path(source)
        if not os.path.isfile(path):
            raise KvmArgumentError(host, f"image source {source!r}: no such file")
        actual, size = _hash_file(host, path)
        staged = StagedImage(path, size, actual, temporary=False)
    else:
        handle = tempfile.NamedTemporaryFile(
            prefix="pikvm-", suffix="-" + name, dir=tmp_dir, delete=False
        )
        staged = StagedImage(handle.name, 0, "", temporary=True)
        try:
            if kind == "http":
                with handle:
                    actual, size = _download(host, source, handle, timeout)
            else:
                handle.close()
                if fetch is None:
                    raise KvmArgumentError(
                        host, f"image source {source!r}: salt:// needs Salt's file client"
                    )
                if not fetch(source, handle.name):
                    raise KvmArgumentError(
                        host, f"image source {source!r}: not found on the Salt fileserver"
                    )
                actual, size = _hash_file(host, handle.name)
        except BaseException:
            staged.discard()
            raise
        staged.size, staged.sha256 = size, actual
    try:
        if not hmac.compare_digest(actual, expected):
            raise KvmImageMismatchError(host, name, expected, actual)
        yield staged
    finally:
        staged.discard()


class VerifyingReader:
    """A file read for upload that must still be the bytes that were hashed.

    Reads ``size`` bytes from ``fileobj``, hashing them; the read that reaches the end raises
    :class:`KvmImageMismatchError` instead of returning its chunk when the digest is not
    ``sha256`` (the file changed after it was checked), so the upload stays incomplete.
    Seeking back to the start (the client's retry after a forgotten session) starts over.
    """

    def __init__(self, host: str, name: str, fileobj: IO[bytes], size: int, sha256: str):
        self.host = host
        self.name = name
        self._file = fileobj
        self._size = size
        self._sha256 = sha256
        self._start = fileobj.tell()
        self.seek(0)

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._read

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if offset != 0 or whence != os.SEEK_SET:
            raise OSError("VerifyingReader seeks back to the start only")
        self._file.seek(self._start)
        self._digest = hashlib.sha256()
        self._read = 0
        return 0

    def read(self, n: int = -1) -> bytes:
        left = self._size - self._read
        if n < 0 or n > left:
            n = left
        chunk = self._file.read(n)
        self._digest.update(chunk)
        self._read += len(chunk)
        if self._read >= self._size or not chunk:
            actual = self._digest.hexdigest()
            if self._read != self._size or not hmac.compare_digest(actual, self._sha256):
                raise KvmImageMismatchError(
                    self.host, self.name, self._sha256, f"{actual} (changed while uploading)"
                )
        return chunk


# ----- actions --------------------------------------------------------------------------------


def _leds(kvm: KvmClient) -> dict:
    leds = kvm.atx_state().get("leds") or {}
    return {"power": leds.get("power"), "hdd": leds.get("hdd")}


def power(kvm: KvmClient, action: Any, wait: bool = False) -> dict:
    """``on``/``off``/``off_hard``/``reset_hard``; the power LED before and after.

    kvmd clicks only when the LED calls for it (``on`` when off, the others when on), so
    ``clicked`` says whether anything happened. ``True``/``False`` stand for ``on``/``off``:
    Salt's command line reads an unquoted ``on`` or ``off`` as a YAML boolean.
    """
    if isinstance(action, bool):
        action = "on" if action else "off"
    action = check_choice(kvm.host, "power action", action, ATX_POWER_ACTIONS)
    before = _leds(kvm)["power"]
    needed = (not before) if action == "on" else bool(before)
    kvm.atx_power(action, wait=bool(wait))
    return {"action": action, "clicked": needed, "power_before": before, "leds": _leds(kvm)}


def click(kvm: KvmClient, button: Any, wait: bool = False) -> dict:
    """Press ``power``, ``power_long`` or ``reset`` whatever the LED says."""
    button = check_choice(kvm.host, "button", button, ATX_BUTTONS)
    kvm.atx_click(button, wait=bool(wait))
    return {"button": button, "leds": _leds(kvm)}


def msd_summary(state: Mapping[str, Any]) -> dict:
    """The parts of ``/api/msd`` an operator reads: drive, images, upload in progress."""
    storage = state.get("storage") or {}
    drive = state.get("drive") or {}
    image = drive.get("image") or None
    parts = storage.get("parts") or {}
    root = parts.get("") or {}
    return {
        "enabled": bool(state.get("enabled")),
        "online": bool(state.get("online")),
        "busy": bool(state.get("busy")),
        "drive": {
            "image": image.get("name") if isinstance(image, Mapping) else None,
            "connected": bool(drive.get("connected")),
            "cdrom": bool(drive.get("cdrom")),
            "rw": bool(drive.get("rw")),
        },
        "images": {
            name: {"size": info.get("size"), "complete": info.get("complete", True)}
            for name, info in sorted((storage.get("images") or {}).items())
        },
        "uploading": storage.get("uploading"),
        "free": root.get("free"),
        "size": root.get("size"),
    }


def msd_state(kvm: KvmClient) -> dict:
    return msd_summary(kvm.msd_state())


def iso_mount(
    kvm: KvmClient,
    name: Any,
    source: Any,
    sha256: Any,
    fetch: Callable[[str, str], Any] | None = None,
    tmp_dir: str | None = None,
    cdrom: bool = True,
    overwrite: bool = False,
    image_timeout: float = 30.0,
    download_timeout: float = 60.0,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Put the image ``source`` on the device as ``name`` and connect it to the server.

    In order: arguments checked; the device's MSD state read (enabled, not busy, ``name``
    absent unless ``overwrite``); the image staged and its SHA-256 checked (refused on a
    mismatch: nothing has been sent); a connected drive disconnected; an old ``name`` removed
    (``overwrite``); the upload (``/api/msd/write``, verified while read); the wait until
    kvmd lists the image (about a second); ``set_params`` image + ``cdrom``;
    ``set_connected``. Answers the drive's state afterwards. ``progress(bytes_sent, size)``
    is called as the upload goes.
    """
    host = kvm.host
    name = check_image_name(host, name)
    expected = check_sha256(host, sha256)
    source_kind(host, source)
    state = kvm.msd_state()
    if not state.get("enabled"):
        raise KvmError(host, "iso_mount: mass storage (MSD) is disabled on this device")
    if state.get("busy"):
        raise KvmBusyError(
            host, "iso_mount", 409, "MsdIsBusyError", "an upload is in progress, try again later"
        )
    exists = name in ((state.get("storage") or {}).get("images") or {})
    if exists and not overwrite:
        raise KvmArgumentError(
            host,
            f"iso_mount: image {name!r} is already on the device; overwrite=True replaces it",
        )
    with staged_image(host, name, source, expected, fetch, tmp_dir, download_timeout) as staged:
        drive = state.get("drive") or {}
        ejected = None
        if drive.get("connected"):
            ejected = (drive.get("image") or {}).get("name")
            kvm.msd_set_connected(False)
        if exists:
            kvm.msd_remove(name)
        with open(staged.path, "rb") as handle:
            reader = VerifyingReader(host, name, handle, staged.size, expected)
            size = staged.size
            sent = None if progress is None else (lambda done: progress(done, size))
            kvm.msd_write(name, reader, size=size, progress=sent)
        kvm.wait_for_image(name, timeout=image_timeout)
        kvm.msd_set_params(image=name, cdrom=bool(cdrom))
        kvm.msd_set_connected(True)
        size = staged.size
    after = msd_summary(kvm.msd_state())
    return {
        "name": name,
        "size": size,
        "sha256": expected,
        "replaced": exists,
        "ejected": ejected,
        "drive": after["drive"],
    }


def iso_eject(kvm: KvmClient, remove: bool = False) -> dict:
    """Disconnect the drive from the server (if connected), unselect its image, and with
    ``remove`` delete that image from the device's storage."""
    state = kvm.msd_state()
    drive = state.get("drive") or {}
    image = (drive.get("image") or {}).get("name")
    was_connected = bool(drive.get("connected"))
    if was_connected:
        kvm.msd_set_connected(False)
    if image is not None:
        kvm.msd_set_params(image="")
    removed = False
    if remove and image is not None:
        kvm.msd_remove(image)
        removed = True
    return {
        "image": image,
        "was_connected": was_connected,
        "removed": removed,
        "drive": msd_summary(kvm.msd_state())["drive"],
    }


def snapshot(kvm: KvmClient, path: Any = None, allow_offline: bool = False) -> dict:
    """A JPEG of the screen: written to ``path`` (absolute; replaced atomically) or returned
    as ``jpeg_base64``."""
    if path is not None and (not isinstance(path, str) or not os.path.isabs(path)):
        raise KvmArgumentError(kvm.host, f"snapshot path {path!r}: an absolute path expected")
    if path is not None and not os.path.isdir(os.path.dirname(path)):
        raise KvmArgumentError(kvm.host, f"snapshot path {path!r}: its folder does not exist")
    snap = kvm.snapshot(allow_offline=bool(allow_offline))
    answer: dict[str, Any] = {
        "bytes": len(snap.data),
        "width": snap.width,
        "height": snap.height,
        "online": snap.online,
    }
    if path is None:
        answer["jpeg_base64"] = base64.b64encode(snap.data).decode("ascii")
        return answer
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as handle:
        handle.write(snap.data)
    os.replace(tmp, path)
    answer["path"] = path
    return answer


def info_grains(info: Mapping[str, Any], options: KvmOptions | None = None) -> dict:
    """Grains for a proxy minion from ``/api/info``: everything under ``pikvm`` and the usual
    top-level ones (``os``, ``osrelease``, ``kernelrelease``, ``cpuarch``, ``serialnumber``,
    ``productname``...) describing the device, not the host running the proxy. Values that
    change by the second (temperature, uptime) are left out: grains are cached."""
    system = info.get("system") or {}
    hw = info.get("hw") or {}
    platform = hw.get("platform") or system.get("platform") or {}
    kernel = system.get("kernel") or {}
    streamer = system.get("streamer") or {}
    meta = info.get("meta") or {}
    version = (system.get("kvmd") or {}).get("version")
    host = (meta.get("server") or {}).get("host") or (info.get("node") or {}).get("host")
    pikvm: dict[str, Any] = {
        "kvmd_version": version,
        "streamer": {"app": streamer.get("app"), "version": streamer.get("version")},
        "platform": dict(platform),
        "kernel": dict(kernel),
        "meta": dict(meta),
        "host": host,
        "auth_enabled": (info.get("auth") or {}).get("enabled"),
        "extras": sorted(info.get("extras") or {}),
    }
    if options is not None:
        pikvm["api"] = f"https://{options.netloc}"
    grains = {
        "pikvm": pikvm,
        "os": "PiKVM",
        "os_family": "PiKVM",
        "manufacturer": "PiKVM",
        "osrelease": version,
        "osfullname": f"PiKVM (kvmd {version})" if version else "PiKVM",
        "kernel": kernel.get("system"),
        "kernelrelease": kernel.get("release"),
        "cpuarch": kernel.get("machine"),
        "serialnumber": platform.get("serial"),
        "productname": platform.get("base"),
        "model": platform.get("model"),
        "host": host,
    }
    return {k: v for k, v in grains.items() if v is not None}
