"""Hostile-input helpers shared by the grains and the inventory.

Command output and grains come from machines we do not control: they may be missing, empty, of
the wrong type, enormous, or not UTF-8. Everything that parses such input first goes through
:func:`as_text`, which always returns a bounded ``str`` and tells the caller what it had to do.
"""

from __future__ import annotations

import logging
import re

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


# Terminal escape sequences, as ECMA-48 defines them (7-bit ESC forms and their 8-bit C1
# introducers): CSI (ESC [ or U+009B) parameters and a final byte; OSC, DCS, SOS, PM and APC
# strings (ESC ] P X ^ _, or U+009D U+0090 U+0098 U+009E U+009F) up to BEL or ST; any other
# ESC with its intermediate and final bytes. An unterminated string runs to the end.
_ESCAPE_RE = re.compile(
    r"(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\\\|\x9c)?"
    r"|\x1b[\x20-\x2f]*[\x30-\x7e]?"
)
# What is left after the sequences: C0 controls, DEL, C1 controls, and the Unicode controls
# that reorder or hide text (bidi embeddings, overrides and isolates, marks; zero-width joins
# are harmless and kept).
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def terminal_safe(value, limit: int | None = None) -> str:
    """``value`` as text that prints inert in a terminal or a log line: escape sequences
    (colours, window titles, screen clears, hyperlinks) removed whole, every other control
    character (newlines and tabs included) replaced by ``?``. Names and versions that minions
    report go through this before a ``salt-run`` outputter or a log line shows them.
    ``limit``: cut to that many characters (``...`` marks the cut)."""
    text = value if isinstance(value, str) else str(value)
    if _CONTROL_RE.search(text):
        text = _CONTROL_RE.sub("?", _ESCAPE_RE.sub("", text))
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 3)] + "..."
    return text


def note(problems: list | None, message: str) -> None:
    """Record a problem for the caller and log it (made terminal-safe: problems quote what
    machines sent)."""
    message = terminal_safe(message)
    log.warning("saltext-fleet: %s", message)
    if problems is not None:
        problems.append(message)
