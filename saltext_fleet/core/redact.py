"""Secrets out of the job cache, the event store, the spool and the quarantine.

Salt records what a job was asked and what it answered: ``salt-run fleet.secret_set group
builders signing_password hunter2`` puts the secret in the job's load, in its
``salt/run/<jid>/new`` and ``/ret`` events and in the job cache's return; ``salt '*' test.arg
db_password=...`` in the publish load as a ``"db_password=..."`` string; ``fleet.enrol``
returns the token it made. The returner passes every load, return and event through
:func:`redact` before anything is spooled, remembered or stored.

What is masked (replaced by :data:`MASK`), at any depth:

* **The value of a key whose name names a secret.** The name is split into words (at any
  non-alphanumeric character and at camelCase humps, case ignored). It names a secret when
  one word is a secret word (``password``, ``passwd``, ``pass``, ``pwd``, ``passphrase``,
  ``secret``, ``token``, ``credential``, ``privkey``, ``apikey``, ...; plurals too), when a
  word ends with ``password``/``passwd``/``passphrase``/``secret``/``token`` glued to
  something (``dbpassword``, ``clientsecret``, ``authtoken``; not a library's name,
  ``libsecret``), when ``key`` follows a
  credential word (``private_key``, ``api-key``, ``aws_secret_access_key``, ``signing_key``),
  or it is the enrolment grain ``fleet_enrolment``. So ``db_password``, ``api_token``,
  ``aws_secret_access_key``, ``mysql.pass``, ``signingPassword`` are masked. Not masked:
  ``key``, ``pub``, ``pub_key``, ``public_key``, ``ssh-key``, ``keep_jobs``, ``bypass``,
  ``tokenizer``, ``libsecret-1-0``, ``PWD``, and a name whose last word says it describes the secret
  rather than holding it (``token_count``, ``password_file``, ``credential_kind``,
  ``secret_name``, ``token_ttl``...). ``None``, ``""`` and booleans are never masked (they
  hold nothing); numbers are (``db_password=123456`` reaches Salt as an int).
* **``name=value`` and ``name: value`` inside text** for a secret name (YAML that
  ``fleet.enrol`` returns, a command's output, the ``"db_password=..."`` strings Salt puts
  in argument lists). In text the name is matched by whole words only, and ``==`` (a pip
  pin) is no assignment.
* **The password of a URL** (``postgresql://user:PASS@host/db`` becomes
  ``postgresql://user:***@host/db``), in any text.
* **The secrets of our own runners, by position or keyword**: wherever a mapping names the
  function (``fun`` is ``fleet.secret_set``, ``runner.fleet.secret_set``, ...) its argument
  lists (``fun_args``, ``arg``, ``args``) lose the secret's position and its keyword
  (:data:`SECRET_ARGUMENTS`).

Package names and versions are data, never secrets: the ``return`` of a package-listing
function (``fleet.inventory``, ``pkg.*``, ``lowpkg.*``, ``pip.list``...,
:func:`is_data_function`, but not the repository functions such as ``pkg.list_repos``) and
the result of a ``pkg`` state (not ``pkgrepo``) never have their names taken for secret
names, though text in them is still scanned (a URL with a password in a fact), and the names in a ``packages``, ``pkgs`` or ``sources`` map anywhere (a baseline, a node
listing) are never taken for secret names, so ``passwd`` and ``libsecret-1-0`` keep their
versions; the arguments of those calls are still redacted.

A container nested deeper than 64 levels is masked as a whole rather than stored unread.

Pure module: no Salt, no database.
"""

from __future__ import annotations

import functools
import re
from typing import Any

MASK = "***"

#: Words that name a secret on their own (after splitting a name into words).
SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "pass",
        "pwd",
        "passphrase",
        "secret",
        "token",
        "credential",
        "credentials",
        "creds",
        "privkey",
        "privatekey",
        "apikey",
        "accesskey",
        "secretkey",
        "authkey",
        "signingkey",
        "encryptionkey",
        "psk",
    }
)
#: Plurals: a secret name in a mapping (the whole collection is masked), not in text
#: ("Passwords: 3 changed" is a count).
PLURAL_WORDS = frozenset({"passwords", "passphrases", "secrets", "tokens", "privkeys", "apikeys"})
#: A word ending with one of these is a secret word glued to something (``dbpassword``).
SECRET_ENDINGS = ("password", "passwd", "passphrase", "secret", "token")
#: Words that make a following ``key``/``keys`` a credential (``private_key``, ``api-key``).
KEY_QUALIFIERS = frozenset(
    {"private", "priv", "api", "access", "secret", "signing", "sign", "auth", "encryption", "enc"}
)
#: A name whose last word is one of these describes a secret without holding it.
DESCRIPTIVE_LAST_WORDS = frozenset(
    {
        "count",
        "counts",
        "len",
        "length",
        "size",
        "type",
        "kind",
        "file",
        "path",
        "dir",
        "name",
        "names",
        "ttl",
        "expire",
        "expires",
        "expiry",
        "age",
        "set",
        "changed",
        "policy",
        "min",
        "max",
        "required",
        "enabled",
        "fingerprint",
    }
)
#: Names that are secrets although no word says so.
SECRET_NAMES = frozenset({"fleet_enrolment"})
#: Names that look like secrets and are not: the shell's working directories.
NOT_SECRET_NAMES = frozenset({"pwd", "oldpwd"})

#: Our own functions that take a secret: ``{function: (position of the secret among the
#: positional arguments, its keyword, the arguments that are no secret)}`` (``runner.``
#: prefixes are ignored). In their argument lists every positional argument from that
#: position on, and every keyword argument not known to be harmless, is masked: a value with
#: ``=`` in it may reach Salt as a keyword argument of any name.
SECRET_ARGUMENTS: dict[str, tuple[int, str, frozenset[str]]] = {
    # fleet.secret_set(scope, owner, name, value=None, value_file=None)
    "fleet.secret_set": (3, "value", frozenset({"scope", "owner", "name", "value_file"})),
    # fleet.group_set(name, description, user, port, states, password, private_key_file)
    "fleet.group_set": (
        5,
        "password",
        frozenset({"name", "description", "user", "port", "states", "private_key_file"}),
    ),
}
_ARG_LISTS = ("fun_args", "arg", "args")
_KWARG_MAPS = ("kwarg", "kwargs")
#: How Salt tells a ``name=value`` argument string from a positional one.
_KWARG_STRING = re.compile(r"^([^\d\W][\w.-]*)=(?!=)(.*)$", re.DOTALL)

#: Functions whose return maps package (or other data) names to versions: kept as they are.
DATA_FUNCTIONS = frozenset(
    {
        "fleet.inventory",
        "pip.list",
        "pip.freeze",
        "pip.list_upgrades",
        "gem.list",
        "npm.list",
        "cpan.list",
    }
)
#: Keys whose value maps package names (baselines, node listings, ``pkg.installed``'s
#: ``pkgs``): the names in it are data; its text is still scanned.
DATA_KEYS = frozenset({"packages", "pkgs", "sources"})
_DATA_PREFIXES = ("pkg.", "lowpkg.", "pkgng.", "pkgutil.", "yumpkg.", "aptpkg.", "opkg.")
#: State ids of package states (``pkg_|-curl_|-curl_|-installed``): their results are data.
#: Not ``pkgrepo`` states: a repository's settings can hold credentials.
_DATA_STATE = re.compile(r"^(pkg|pip|gem|npm)_\|-")

_SPLIT = re.compile(r"[^A-Za-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
#: A cheap test before the expensive ones: could this text hold a secret at all? One of these,
#: in any case, in the text (:func:`_hinted`).
HINTS = ("pass", "pwd", "secret", "token", "cred", "key", "psk", "enrolment", "://")
#: ``name: value`` / ``name=value`` in text: name (1), separator (2), value (3, bare or quoted).
_IN_TEXT = re.compile(
    r"(?<![\w.-])([A-Za-z_][\w.-]*)([\"']?[ \t]*(?::|=(?!=))[ \t]*)"
    r"(?!\*\*\*)(\"[^\"\n]*\"|'[^'\n]*'|[^\s,;'\"}\]]+)"
)
#: The password of a URL: ``scheme://user:PASSWORD@``.
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/?#@\s]*:)([^@/?#\s]+)@")
_MAX_DEPTH = 64


def _words(name: str) -> list[str]:
    return [w.lower() for part in _SPLIT.split(name) if part for w in _CAMEL.split(part) if w]


def is_secret_name(name: Any, in_text: bool = False) -> bool:
    """Whether ``name`` (a mapping key, or the name before ``=``/``:`` in text) names a
    secret. ``in_text`` matches whole words only, and no plurals."""
    if not isinstance(name, str) or not name or len(name) > 200:
        return False
    return _is_secret_name(name, in_text)


@functools.lru_cache(maxsize=8192)  # the same keys come again and again
def _is_secret_name(name: str, in_text: bool) -> bool:
    lowered = name.lower()
    if lowered in SECRET_NAMES:
        return True
    if lowered in NOT_SECRET_NAMES:
        return False
    words = _words(name)
    if not words or words[-1] in DESCRIPTIVE_LAST_WORDS:
        return False
    previous = ""
    for word in words:
        if word in SECRET_WORDS or (not in_text and word in PLURAL_WORDS):
            return True
        if word in ("key", "keys") and previous in KEY_QUALIFIERS:
            return True
        if not in_text and word.endswith(SECRET_ENDINGS) and not word.startswith("lib"):
            return True
        previous = word
    return False


def is_secret_key(key: Any, extra: frozenset | set = frozenset()) -> bool:
    """Whether the value under mapping key ``key`` is masked (``extra``: the secret
    arguments of the function at hand)."""
    return isinstance(key, str) and (key in extra or is_secret_name(key))


def _hinted(text: str) -> bool:
    """Whether one of :data:`HINTS` is in ``text``, case ignored.

    ``casefold`` and substring search instead of one case-insensitive regular expression: 20
    times faster on a command's output of a few KB (the regex tries every alternative at every
    position). No text the regex ``(?i)pass|pwd|...`` matches is missed: every character that
    matches a hint's letter case-insensitively (``S``, ``ſ``, the Kelvin sign) folds to that
    letter. Folding finds a few more (``ß`` folds to ``ss``); those only get the full scan."""
    folded = text.casefold()
    for hint in HINTS:
        if hint in folded:
            return True
    return False


def redact_text(text: str) -> str:
    """``text`` with every secret assignment and URL password in it masked (the same
    string when there is none)."""
    if not _hinted(text):
        return text
    out = text
    if "://" in out:
        out = _URL_PASSWORD.sub(
            lambda m: m.group(0) if m.group(2) == MASK else m.group(1) + MASK + "@", out
        )
    if "=" in out or ":" in out:
        out = _IN_TEXT.sub(_mask_assignment, out)
    return text if out == text else out


def _mask_assignment(m: re.Match) -> str:
    if not is_secret_name(m.group(1), in_text=True):
        return m.group(0)
    return m.group(1) + m.group(2) + MASK


def _function(fun: Any) -> str | None:
    if not isinstance(fun, str):
        return None
    return fun[7:] if fun.startswith("runner.") else fun


def is_data_function(fun: Any) -> bool:
    """Whether the return of ``fun`` maps package names (data, never secret names): package
    lists, not repositories (``pkg.list_repos`` and the like can hold credentials)."""
    fun = _function(fun)
    return (
        fun is not None
        and (fun in DATA_FUNCTIONS or fun.startswith(_DATA_PREFIXES))
        and "repo" not in fun
    )


def _masked(item: Any) -> bool:
    """Whether ``item`` is worth masking (nothing, empty and booleans hold no secret)."""
    return not (item is None or item == "" or item == MASK or isinstance(item, bool))


def redact(value: Any, fun: Any = None, _depth: int = 0, _extra: frozenset = frozenset()) -> Any:
    """A copy of ``value`` with secret values masked (``value`` itself is not changed).

    ``fun`` (the job's function, e.g. ``runner.fleet.secret_set``) names the function whose
    arguments ``value`` holds when ``value`` does not say itself (a mapping with ``fun``
    does). Only what needs masking is copied: a value with nothing to mask comes back as
    the same object."""
    if isinstance(value, str):  # at any depth: text is cheap to scan
        return redact_text(value)
    if _depth > _MAX_DEPTH:
        # too deep to look into (Salt's data is nowhere near this): masked, not kept unread
        return MASK if isinstance(value, (dict, list, tuple)) else value
    if isinstance(value, dict):
        return _redact_mapping(value, fun if _depth == 0 else None, _depth, _extra)
    if isinstance(value, (list, tuple)):
        return _redact_list(value, _depth, _extra, None)
    return value


def _redact_mapping(value: dict, fun: Any, depth: int, extra: frozenset) -> dict:
    own = _function(value.get("fun")) or _function(fun)
    spec = SECRET_ARGUMENTS.get(own) if own is not None else None
    if spec is not None:
        extra = extra | {spec[1]}
    data_return = own is not None and is_data_function(own)
    out = None
    for key, item in value.items():
        if isinstance(key, str) and "_|-" in key:  # a state's id: its name is no secret
            if _DATA_STATE.match(key):
                new = _redact_data(item, depth + 1)  # names are data; text still scanned
            else:
                new = redact(item, None, depth + 1, extra)
        elif is_secret_key(key, extra) and _masked(item):
            new = MASK
        elif data_return and key == "return":
            # package names and versions are data; text in them is still scanned (a URL
            # with a password in a fact, a version, a source)
            new = _redact_data(item, depth + 1)
        elif key in DATA_KEYS and isinstance(item, (dict, list, tuple)):
            new = _redact_data(item, depth + 1)
        elif spec is not None and key in _ARG_LISTS and isinstance(item, (list, tuple)):
            new = _redact_list(item, depth + 1, extra, spec)
        elif spec is not None and key in _KWARG_MAPS and isinstance(item, dict):
            new = _redact_kwargs(item, depth + 1, extra, spec)
        else:
            new = redact(item, None, depth + 1, extra)
        if new is not item:
            if out is None:
                out = dict(value)
            out[key] = new
    return value if out is None else out


def _values_text(value: dict) -> str:
    """The texts of a map of texts (``{name: version}``), joined; TypeError for another shape."""
    return "\n".join(value.values())


def _nested_values_text(value: dict) -> str:
    """The texts of a map of maps of texts (``{name: {"name": ..., "version": ...}}``),
    joined; TypeError for another shape."""
    return "\n".join(map("\n".join, map(dict.values, value.values())))


def _redact_data(value, depth: int):
    """Package maps (``{ecosystem: {name: version}}`` and the like): the names are data,
    never secret names; text in them is still scanned (a URL with a password)."""
    if depth > _MAX_DEPTH:
        return MASK
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict) and depth + 2 <= _MAX_DEPTH:
        # An inventory's package and source maps (1,500 packages): one test of all their text
        # at once, in C, instead of one per package. No hint spans two texts ("\n" is in
        # none), so joined texts without a hint mean no text with one.
        for joined in (_values_text, _nested_values_text):
            try:
                text = joined(value)
            except TypeError:
                continue
            if not _hinted(text):
                return value
            break
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return value
    out = None
    for key, item in items:
        new = _redact_data(item, depth + 1)
        if new is not item:
            if out is None:
                out = dict(value) if isinstance(value, dict) else list(value)
            out[key] = new
    if out is None:
        return value
    return tuple(out) if isinstance(value, tuple) else out


def _redact_kwargs(value: dict, depth: int, extra: frozenset, spec: tuple) -> dict:
    """The keyword arguments of a secret-taking function: all but the harmless masked."""
    out = None
    for key, item in value.items():
        if key not in spec[2] and not str(key).startswith("__") and _masked(item):
            new = MASK
        else:
            new = redact(item, None, depth + 1, extra)
        if new is not item:
            if out is None:
                out = dict(value)
            out[key] = new
    return value if out is None else out


def _redact_list(value, depth: int, extra: frozenset, spec: tuple | None = None):
    """An argument list (or any list): ``name=value`` strings are judged by their name (a
    secret name, or with ``spec`` any name but the harmless ones), positional arguments of a
    secret-taking function from its secret's position on are masked."""
    out = None
    position = 0
    for i, item in enumerate(value):
        kwarg = _KWARG_STRING.match(item) if isinstance(item, str) else None
        if kwarg is not None:
            name, rest = kwarg.groups()
            secret = name not in spec[2] if spec is not None else is_secret_key(name, extra)
            new = f"{name}={MASK}" if secret and rest not in ("", MASK) else redact_text(item)
        elif spec is not None and isinstance(item, dict):
            new = _redact_kwargs(item, depth + 1, extra, spec)
        else:
            if spec is not None and position >= spec[0] and _masked(item):
                new = MASK
            else:
                new = redact(item, None, depth + 1, extra)
            position += 1
        if new is not item:
            if out is None:
                out = list(value)
            out[i] = new
    if out is None:
        return value
    return tuple(out) if isinstance(value, tuple) else out
