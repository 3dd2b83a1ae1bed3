"""Signatures on the events the master fires for itself.

Minions can fire almost any tag on the master's event bus (an event in a minion's ``events``
batch reaches the bus exactly as the sender wrote it), so a ``fleet/inventory/changed`` or
``fleet/states/ran`` event proves nothing by its tag or its data. The master's own processes
sign the ``fleet/...`` events they fire with a key that only they can read (a 0600 file under
the master's cachedir, see :mod:`saltext_fleet.master.eventsig`); the reactors that act on them
check the signature first. Minions never see the master's bus, so they cannot copy a signature
either.

The signature is HMAC-SHA256 over the tag and the event data in canonical JSON (sorted keys,
compact), without the ``sig`` field itself and without the fields Salt adds on the way
(``_stamp``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from typing import Any

from saltext_fleet.core.errors import FleetError

#: The data field that carries the signature.
SIG_FIELD = "sig"
#: Fields that are not part of what is signed: the signature, and what Salt adds.
UNSIGNED_FIELDS = frozenset({SIG_FIELD, "_stamp"})
#: Bytes of a new signing key.
KEY_BYTES = 32


class SignatureError(FleetError, ValueError):
    """An event that is not signed, or whose signature does not match."""


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def _message(tag: str, data: dict) -> bytes:
    body = {k: v for k, v in data.items() if k not in UNSIGNED_FIELDS}
    text = json.dumps(
        [tag, body], sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=repr
    )
    return text.encode("ascii")


def signature(key: bytes, tag: str, data: dict) -> str:
    """The hex HMAC-SHA256 of ``tag`` and ``data`` (see the module docstring)."""
    return hmac.new(key, _message(tag, data), hashlib.sha256).hexdigest()


def signed(key: bytes, tag: str, data: dict) -> dict:
    """A copy of ``data`` carrying its signature."""
    return {**data, SIG_FIELD: signature(key, tag, data)}


def check(key: bytes, tag: Any, data: Any) -> None:
    """Raise :class:`SignatureError` unless ``data`` carries a valid signature for ``tag``."""
    if not isinstance(tag, str) or not isinstance(data, dict):
        raise SignatureError("the event has no tag or its data is not a mapping")
    sig = data.get(SIG_FIELD)
    if not isinstance(sig, str) or not sig:
        raise SignatureError(f"the {tag} event is not signed by this master")
    if not hmac.compare_digest(sig, signature(key, tag, data)):
        raise SignatureError(f"the {tag} event carries a signature that is not this master's")
