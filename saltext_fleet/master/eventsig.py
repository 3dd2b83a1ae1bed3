"""The master's event-signing key and the signing of the ``fleet/...`` events it fires.

The key is 32 random bytes in ``<cachedir>/fleet/event.key`` (mode 0600 in a 0700 folder),
made by whichever master process needs it first; every process of the master reads the same
file. See :mod:`saltext_fleet.core.signing` for why and what is signed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import threading

import salt.utils.event

from saltext_fleet.core import signing

log = logging.getLogger(__name__)

_CACHE: dict[str, bytes] = {}
_LOCK = threading.Lock()


def key_path(opts: dict) -> str:
    return os.path.join(opts["cachedir"], "fleet", "event.key")


def signing_key(opts: dict) -> bytes:
    """The key (created on first use; several processes racing end up with the same one)."""
    path = key_path(opts)
    with _LOCK:
        key = _CACHE.get(path)
        if key is not None:
            return key
        key = _read(path)
        if key is None:
            key = _create(path)
        _CACHE[path] = key
        return key


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return None
    if len(data) != signing.KEY_BYTES:
        raise signing.SignatureError(
            f"{path} holds {len(data)} bytes, not a {signing.KEY_BYTES}-byte event key; "
            "delete it and the master makes a new one"
        )
    return data


def _create(path: str) -> bytes:
    folder = os.path.dirname(path)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    key = signing.new_key()
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        # link() fails if another process made the key first: then use that one.
        os.link(tmp, path)
    except FileExistsError:
        key = _read(path) or key
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return key


def sign(opts: dict, tag: str, data: dict) -> dict:
    """``data`` with this master's signature for ``tag``."""
    return signing.signed(signing_key(opts), tag, data)


def check(opts: dict, tag, data) -> None:
    """:class:`~saltext_fleet.core.signing.SignatureError` unless this master signed it."""
    signing.check(signing_key(opts), tag, data)


def signed(opts: dict, tag: str, data: dict) -> dict:
    """``data`` as :func:`fire` sends it: signed (unsigned, and logged, when the key cannot
    be read), and a ``fleet/alert/*`` event with its ``raised_at``."""
    if tag.startswith("fleet/alert/") and "raised_at" not in data:
        data = {**data, "raised_at": dt.datetime.now(dt.timezone.utc).isoformat()}
    try:
        return sign(opts, tag, data)
    except (OSError, ValueError) as exc:
        log.error("fleet: cannot sign %s (%s); the reactors will ignore it", tag, exc)
        return data


def fire(opts: dict, tag: str, data: dict) -> bool:
    """Sign ``data`` and fire it on the master's event bus (a connection per event); a bus
    that is down is logged, not raised (what fired it is already recorded in the store).
    A ``fleet/alert/*`` event gets ``raised_at`` (now, ISO 8601) unless it has one: two
    alerts alike in all else are two events, and the alert worker measures from it."""
    data = signed(opts, tag, data)
    try:
        with salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=False) as event:
            if event.fire_event(data, tag):
                return True
    except Exception:
        log.debug("fleet: firing %s failed", tag, exc_info=True)
    log.warning("fleet: could not fire %s for %s (is the master running?)", tag, data.get("id"))
    return False
