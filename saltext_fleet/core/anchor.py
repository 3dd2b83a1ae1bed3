"""The audit chain's anchor: where the chain ends, signed, outside the database. Pure logic and
file handling, no Salt import.

The chain (:mod:`saltext_fleet.core.audit`) makes an edited, inserted or removed event evident,
but someone who can write the database can delete the newest events together with the
``audit_head`` row, or rewrite the whole chain and recompute every hash: nothing in the
database alone tells. So after each append the store writes, beside the master's key file
(``fleet:key_file``, mode 0600), the file ``<key_file>.audit-anchor``:

.. code-block:: json

    {"version": 1, "last_id": 1234, "last_hash": "9f2c...", "key_id": "3b1e0c9a4f21",
     "mac": "<64 hex digits>"}

``mac`` is HMAC-SHA256 over ``"saltext-fleet audit anchor v1\\n<last_id>\\n<last_hash>"``
with a key derived from the newest key of the key file (:meth:`Vault.derive` with the label
:data:`LABEL`); ``key_id`` names that key. Without the key file nobody can make a valid
anchor, so a truncated chain ("the chain ends at id N but the anchor says M") or a rewritten
one (the event at the anchor's id has another hash) is named by ``fleet.audit_verify``.

Writing: under an ``flock`` on the key file's directory (the lock the key rotation takes),
the current anchor is read and the new one is written only if it moves forward (a higher id;
the same id only to re-sign or to correct a hash), through a 0600 temporary file, ``fsync``
and :func:`os.replace`; root keeps the key file's owner on it. The store writes it just
before the append's transaction commits, while it still holds the chain's head lock, so
appends from several processes write their anchors in chain order.

What it cannot see: events appended by a writer that has no key file (they are reported as
"after the anchor"), and a commit that fails after its anchor was written (the anchor is then
one event ahead until the next append).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets as _random
from typing import Any

from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.core.errors import FleetError

log = logging.getLogger(__name__)

#: The label the anchor's key is derived with (and the first line of what is signed).
LABEL = b"saltext-fleet audit anchor v1"
SUFFIX = ".audit-anchor"
VERSION = 1
#: An anchor file is one short line; anything larger is not one.
MAX_BYTES = 4096

_HEX64 = re.compile(r"[0-9a-f]{64}")


class AnchorError(FleetError, ValueError):
    """The anchor file is unreadable, malformed or not signed by a key of the key file."""


def path_for(key_file: str | os.PathLike) -> str:
    """Where the anchor of the chain signed with ``key_file``'s keys is kept (beside it; a
    symlinked key file keeps its anchor beside the link)."""
    return os.path.abspath(os.fspath(key_file)) + SUFFIX


def mac(key: bytes, last_id: int, last_hash: str) -> str:
    message = LABEL + b"\n" + str(int(last_id)).encode("ascii") + b"\n" + last_hash.encode("ascii")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def sign(vault: core_secrets.Vault, last_id: int, last_hash: str) -> dict[str, Any]:
    """The anchor record for a chain ending at ``(last_id, last_hash)``, signed with the
    vault's newest key."""
    if isinstance(last_id, bool) or not isinstance(last_id, int) or last_id < 0:
        raise AnchorError(f"last_id: expected a whole number, got {last_id!r}")
    if not isinstance(last_hash, str) or not _HEX64.fullmatch(last_hash):
        raise AnchorError(f"last_hash: {last_hash!r:.80} is not 64 lowercase hex digits")
    return {
        "version": VERSION,
        "last_id": last_id,
        "last_hash": last_hash,
        "key_id": vault.key_id,
        "mac": mac(vault.derive(LABEL), last_id, last_hash),
    }


def check(record: Any, vault: core_secrets.Vault, where: str = "the anchor") -> dict[str, Any]:
    """``{"last_id", "last_hash", "key_id"}`` of a signed record; :class:`AnchorError` saying
    what is wrong otherwise. A record signed with any key still in the key file is accepted
    (``key_id`` tells whether it is the newest)."""
    if not isinstance(record, dict) or record.get("version") != VERSION:
        raise AnchorError(f"{where} is not a version {VERSION} anchor record")
    last_id, last_hash, signature = (
        record.get("last_id"),
        record.get("last_hash"),
        record.get("mac"),
    )
    if isinstance(last_id, bool) or not isinstance(last_id, int) or last_id < 0:
        raise AnchorError(f"{where}: last_id is not a whole number")
    if not isinstance(last_hash, str) or not _HEX64.fullmatch(last_hash):
        raise AnchorError(f"{where}: last_hash is not 64 lowercase hex digits")
    if not isinstance(signature, str):
        raise AnchorError(f"{where}: no signature")
    for key_id, key in vault.derived_keys(LABEL):
        if hmac.compare_digest(mac(key, last_id, last_hash), signature):
            return {"last_id": last_id, "last_hash": last_hash, "key_id": key_id}
    raise AnchorError(
        f"{where}: the signature does not match any key of {vault.path}: the anchor was "
        "altered, or written with a key this file no longer holds"
    )


def read(path: str, vault: core_secrets.Vault) -> dict[str, Any] | None:
    """The checked anchor at ``path`` (see :func:`check`), or None when there is no file."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AnchorError(f"{path}: cannot read the anchor: {exc.strerror}") from exc
    if len(data) > MAX_BYTES:
        raise AnchorError(f"{path} is larger than an anchor file ({MAX_BYTES} bytes at most)")
    try:
        record = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise AnchorError(f"{path} is not an anchor file (not JSON)") from exc
    return check(record, vault, path)


def advance(
    path: str, vault: core_secrets.Vault, last_id: int, last_hash: str, resign: bool = False
) -> bool:
    """Move the anchor at ``path`` to ``(last_id, last_hash)`` if that is forward; returns
    whether the file was written. ``resign``: write it even at the same id (after a key
    rotation, to sign with the newest key). An anchor that does not check (altered, or a
    retired key) is replaced, with a warning in the log."""
    record = sign(vault, last_id, last_hash)
    directory = os.path.dirname(path)
    with core_secrets.locked_dir(directory):  # the rotation's own lock
        try:
            current = read(path, vault)
        except AnchorError as exc:
            log.warning("saltext-fleet: replacing an audit anchor that does not check: %s", exc)
            current = None
        if current is not None:
            if current["last_id"] > last_id:
                return False  # another process already anchored a later event
            if (
                current["last_id"] == last_id
                and current["last_hash"] == last_hash
                and (not resign or current["key_id"] == vault.key_id)
            ):
                return False
        _replace(path, (json.dumps(record, sort_keys=True) + "\n").encode("ascii"), vault.path)
    return True


def resign(path: str, vault: core_secrets.Vault) -> bool:
    """Sign the existing anchor again with the vault's newest key (after a rotation, before
    the old keys are retired). False when there is no anchor; :class:`AnchorError` when the
    one there does not check."""
    current = read(path, vault)
    if current is None:
        return False
    return advance(path, vault, current["last_id"], current["last_hash"], resign=True)


def _replace(path: str, data: bytes, key_file: str) -> None:
    head, tail = os.path.split(path)
    temp = os.path.join(head, f".{tail}.{os.getpid()}.{_random.token_hex(6)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(temp, flags, 0o600)
    try:
        if os.geteuid() == 0:
            # root (salt-run) anchoring the chain of a master that runs as another user
            owner = os.stat(os.path.realpath(key_file))
            os.fchown(fd, owner.st_uid, owner.st_gid)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(temp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise
    core_secrets.fsync_dir(head)
