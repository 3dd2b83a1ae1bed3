"""Secrets out of the job cache and the event store.

Salt records what a job was asked and what it answered: ``salt-run fleet.group_set
password=...`` puts the password in the job's load and in its ``salt/run/<jid>/new`` event;
``fleet.enrol`` returns the token it made. With ``master_job_cache: fleet`` and
``event_return: fleet`` all of that would reach the database in clear. The returner's write
path passes every load, return and event through :func:`redact` first: the value of a key
that names a secret is replaced by :data:`MASK`, at any depth.

The keys: ``password``, ``passwd``, ``ssh_passwd``, ``secret``, ``token``, ``private_key``,
``credential``, ``priv_passwd`` (any case, ``-`` or ``_``), the enrolment grain
``fleet_enrolment``, and the ``value`` argument of ``fleet.secret_set``. A key=value string
in an argument list (``"password=..."``) is masked too, and so is such an assignment inside
any text (``fleet_enrolment: <token>`` in the YAML that ``fleet.enrol`` returns,
``password=...`` in a command's output). Package names, states and everything else stay as
they are.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"

_SECRET_KEY = re.compile(
    r"(?i)(ssh_|priv_)?(pass(word|wd)?|secret|token|private[_-]?key|credentials?)"
    r"|fleet_enrolment"
)
#: Arguments that are secrets for one function only: ``{function: {argument names}}``.
_FUNCTION_ARGS = {"fleet.secret_set": {"value"}, "runner.fleet.secret_set": {"value"}}
_ARG_STRING = re.compile(
    r"(?i)^((?:ssh_|priv_)?(?:pass(?:word|wd)?|secret|token|private[_-]?key)|value)="
)
#: ``name: value`` / ``name=value`` inside text, for a secret name; the value (bare or quoted)
#: is group 3.
_IN_TEXT = re.compile(
    r"(?i)(?<![A-Za-z0-9_])((?:ssh_|priv_)?(?:pass(?:word|wd)?|secret|token|private[_-]?key"
    r"|credentials?)|fleet_enrolment)([\"']?[ \t]*[:=][ \t]*)"
    r"(?!\*\*\*)(\"[^\"\n]*\"|'[^'\n]*'|[^\s,;'\"}\]]+)"
)
_MAX_DEPTH = 64


def redact_text(text: str) -> str:
    """``text`` with the value of every ``secret-name: value`` / ``secret-name=value`` in it
    masked (the same string when there is none)."""
    if not _IN_TEXT.search(text):
        return text
    return _IN_TEXT.sub(lambda m: m.group(1) + m.group(2) + MASK, text)


def is_secret_key(key: Any, extra: frozenset | set = frozenset()) -> bool:
    return isinstance(key, str) and (bool(_SECRET_KEY.fullmatch(key)) or key in extra)


def redact(value: Any, fun: Any = None, _depth: int = 0, _extra: frozenset = frozenset()) -> Any:
    """A copy of ``value`` with secret values masked (``value`` itself is not changed).

    ``fun`` (the job's function, e.g. ``runner.fleet.secret_set``) adds the arguments that
    are secrets for that function. Only what needs masking is copied."""
    if _depth == 0 and isinstance(fun, str):
        _extra = frozenset(_FUNCTION_ARGS.get(fun, ()))
        if isinstance(value, dict) and isinstance(value.get("fun"), str):
            _extra = _extra | frozenset(_FUNCTION_ARGS.get(value["fun"], ()))
    elif _depth == 0 and isinstance(value, dict) and isinstance(value.get("fun"), str):
        _extra = frozenset(_FUNCTION_ARGS.get(value["fun"], ()))
    if isinstance(value, str):  # at any depth: text is cheap to scan
        return redact_text(value)
    if _depth > _MAX_DEPTH:
        return value
    if isinstance(value, dict):
        out = None
        for key, item in value.items():
            if is_secret_key(key, _extra) and item not in (None, "", MASK):
                new = MASK
            else:
                new = redact(item, None, _depth + 1, _extra)
            if new is not item:
                if out is None:
                    out = dict(value)
                out[key] = new
        return value if out is None else out
    if isinstance(value, list):
        out = None
        for i, item in enumerate(value):
            if (
                isinstance(item, str)
                and _ARG_STRING.match(item)
                and (not item.lower().startswith("value=") or _extra)
            ):
                new = item.split("=", 1)[0] + "=" + MASK
            else:
                new = redact(item, None, _depth + 1, _extra)
            if new is not item:
                if out is None:
                    out = list(value)
                out[i] = new
        return value if out is None else out
    return value
