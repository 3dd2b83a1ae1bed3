"""Hostile-input helpers shared by the grains and the inventory.

Command output and grains come from machines we do not control: they may be missing, empty, of
the wrong type, enormous, or not UTF-8. Everything that parses such input first goes through
:func:`as_text`, which always returns a bounded ``str`` and tells the caller what it had to do.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

#: Largest command output we parse. Anything longer is cut (and the cut is reported): a real
#: package list is well under this, a runaway or hostile command is not.
MAX_OUTPUT_BYTES = 4 * 1024 * 1024

#: Longest single value (a version, a name, a fact) we keep.
MAX_VALUE_CHARS = 512


def as_text(value, what: str, problems: list | None = None, limit: int = MAX_OUTPUT_BYTES) -> str:
    """Return ``value`` as a bounded ``str``.

    ``None`` becomes ``""``; bytes are decoded as UTF-8 with undecodable bytes replaced; other
    types are refused (``""``). Output longer than ``limit`` characters is truncated. Each
    problem is appended to ``problems`` (when given) and logged, naming ``what``.
    """
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        text = bytes(value[: limit * 4]).decode("utf-8", errors="replace")
        if "\ufffd" in text:
            note(problems, f"{what}: output was not valid UTF-8; undecodable bytes replaced")
    elif isinstance(value, str):
        text = value
    else:
        note(problems, f"{what}: expected text, got {type(value).__name__}; ignored")
        return ""
    if len(text) > limit:
        note(problems, f"{what}: output of {len(text)} characters truncated to {limit}")
        text = text[:limit]
    # Lone surrogates (from surrogateescape decoding upstream) cannot be encoded as JSON/UTF-8.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", errors="replace").decode("utf-8")
        note(problems, f"{what}: output held unencodable characters; replaced")
    return text


def short(value, what: str, problems: list | None = None) -> str | None:
    """A single bounded scalar value (name, version, fact) as ``str``, or ``None``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, bytes, bytearray, int, float)):
        note(problems, f"{what}: expected a scalar, got {type(value).__name__}; ignored")
        return None
    if isinstance(value, (int, float)):
        return str(value)
    text = as_text(value, what, problems, limit=MAX_VALUE_CHARS).strip()
    return text or None


def note(problems: list | None, message: str) -> None:
    """Record a problem for the caller and log it."""
    log.warning("saltext-fleet: %s", message)
    if problems is not None:
        problems.append(message)
