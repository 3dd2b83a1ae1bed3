"""The master's ISO library on disk: images copied in once, each checked against the SHA-256
the operator gave, then mounted on many devices (``salt-run fleet.iso_add``,
``fleet.kvm_iso_mount``).

An image is copied into a hidden temporary file in the library's folder (``.<name>.part-``
plus random letters), hashed as it is copied: from a file on the master (an absolute path or
``file://``) or streamed from an ``http(s)://`` URL. On a mismatch the temporary file is
removed and :class:`IsoMismatchError` says both digests: nothing is kept. A match is moved to
``<folder>/<name>`` (:func:`place`, an atomic rename in one folder), in the same transaction
as its row in ``kvm_isos`` (:mod:`saltext_fleet.store.kvm_actions`). Names follow the rules of
the images on a PiKVM (:func:`saltext_fleet.kvm.actions.check_image_name`): one file name, not
hidden, so no temporary file can ever carry an image's name.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import IO

from saltext_fleet.core.errors import FleetError
from saltext_fleet.kvm import actions
from saltext_fleet.kvm.errors import KvmArgumentError

CHUNK = 1024 * 1024
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class IsoLibraryError(FleetError, ValueError):
    """An image cannot be added to (or found in) the ISO library; the message says why."""


class IsoMismatchError(IsoLibraryError):
    """The image's SHA-256 is not the one given: it was refused and nothing was kept."""

    def __init__(self, name: str, source: str, expected: str, actual: str) -> None:
        self.name = name
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"ISO library: image {name!r} from {source}: sha256 mismatch: expected "
            f"{expected}, got {actual}; refused, nothing was kept"
        )


def check_name(name: object) -> str:
    """An image name the library and a PiKVM both keep as given (see the module docstring)."""
    try:
        return actions.check_image_name("library", name)
    except KvmArgumentError as exc:
        raise IsoLibraryError(f"ISO library: {exc.what}") from None


def check_sha256(value: object) -> str:
    """64 hex digits (``sha256:`` prefix and any case allowed) as lowercase hex."""
    try:
        return actions.check_sha256("library", value)
    except KvmArgumentError as exc:
        raise IsoLibraryError(f"ISO library: {exc.what}") from None


def source_kind(source: object) -> str:
    """``file`` (an absolute path or ``file://``) or ``http`` (``http://``, ``https://``)."""
    if not isinstance(source, str) or not source:
        raise IsoLibraryError(f"ISO library: source {source!r}: a path or URL expected")
    match = _SCHEME_RE.match(source)
    if match is None:
        if not os.path.isabs(source):
            raise IsoLibraryError(f"ISO library: source {source!r}: an absolute path expected")
        return "file"
    scheme = match.group(1).lower()
    if scheme in ("http", "https"):
        return "http"
    if scheme == "file":
        return "file"
    raise IsoLibraryError(
        f"ISO library: source {source!r}: a path on the master, file:// or http(s):// expected"
    )


def default_name(source: str) -> str:
    """The image name a source gives when none is asked for: its last path part."""
    if source_kind(source) == "http" or source.lower().startswith("file://"):
        path = urllib.parse.unquote(urllib.parse.urlsplit(source).path)
    else:
        path = source
    return check_name(os.path.basename(path.rstrip("/")))


def path_of(directory: str, name: str) -> str:
    """Where the library keeps the image ``name``."""
    return os.path.join(directory, check_name(name))


def _copy(
    reader: IO[bytes],
    writer: IO[bytes],
    total: int | None,
    progress: Callable[[int, int | None], None] | None,
) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    while chunk := reader.read(CHUNK):
        digest.update(chunk)
        writer.write(chunk)
        size += len(chunk)
        if progress is not None:
            progress(size, total)
    return digest.hexdigest(), size


def copy_in(
    source: str,
    directory: str,
    name: str,
    sha256: str,
    progress: Callable[[int, int | None], None] | None = None,
    timeout: float = 60.0,
) -> tuple[str, int]:
    """Copy ``source`` into a temporary file in ``directory`` (made, mode 0700, if missing),
    hashing it; ``(temporary path, size)`` when its SHA-256 is ``sha256``.

    :class:`IsoMismatchError` on a mismatch and :class:`IsoLibraryError` when the source
    cannot be read; either way the temporary file is gone. ``progress(bytes, total or
    None)`` after each chunk.
    """
    name = check_name(name)
    expected = check_sha256(sha256)
    kind = source_kind(source)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    temp = os.path.join(directory, f".{name}.part-{secrets.token_hex(6)}")
    try:
        with open(temp, "xb") as writer:
            os.chmod(temp, 0o600)
            if kind == "file":
                path = source
                if source.lower().startswith("file://"):
                    path = urllib.parse.unquote(urllib.parse.urlsplit(source).path)
                try:
                    with open(path, "rb") as reader:
                        total = os.fstat(reader.fileno()).st_size
                        actual, size = _copy(reader, writer, total, progress)
                except OSError as exc:
                    raise IsoLibraryError(
                        f"ISO library: source {source!r}: cannot read it: {exc.strerror or exc}"
                    ) from exc
            else:
                try:
                    with urllib.request.urlopen(source, timeout=timeout) as response:
                        length = response.headers.get("Content-Length")
                        total = int(length) if length and length.isdigit() else None
                        actual, size = _copy(response, writer, total, progress)
                except (urllib.error.URLError, OSError, ValueError) as exc:
                    raise IsoLibraryError(
                        f"ISO library: source {source!r}: download failed: {exc}"
                    ) from exc
            writer.flush()
            os.fsync(writer.fileno())
        if not hmac.compare_digest(actual, expected):
            raise IsoMismatchError(name, source, expected, actual)
    except BaseException:
        discard(temp)
        raise
    return temp, size


def place(temp: str, directory: str, name: str) -> str:
    """Move a checked temporary file to its name in the library (replacing an older one)."""
    final = path_of(directory, name)
    os.replace(temp, final)
    return final


def discard(path: str) -> None:
    """Remove a file of the library if it is there."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
