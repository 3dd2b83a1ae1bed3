"""Version ordering per package ecosystem: pure logic, no Salt import.

The drift engine uses these functions to tell whether a node runs an older or newer version
than expected, and how big the step is; vulnerability matching will use them to check
"fixed in" bounds. Every ecosystem has its own rules; each order below follows one source of
truth, and the tests pin known pairs from it.

Orders
------
``deb``
    dpkg's own algorithm (``parseversion`` in ``lib/dpkg/parsehelp.c`` and ``verrevcmp`` in
    ``lib/dpkg/version.c``; Debian Policy 5.6.12). ``[epoch:]upstream[-revision]``: the epoch
    is the digits before the *first* ``:``, the revision is what follows the *last* ``-``
    (missing = empty). Epochs compare as numbers, then upstream, then revision, each with
    ``verrevcmp``: alternating non-digit and digit runs; in non-digit runs ``~`` sorts before
    everything (even the end of the string), then the end, then letters, then every other
    character (by code point); digit runs compare as numbers. So ``1.0~rc1 < 1.0 < 1.0+b1``
    and ``1:0.1 > 2.0``. Characters dpkg would warn about (non-ASCII, NUL) sort like
    punctuation, by code point, as dpkg does on unsigned-``char`` platforms. An epoch that is
    not a number (dpkg refuses it) is not split off: the whole value is the version.
``rpm``
    ``rpmvercmp`` as in rpm 4.15 and later (``rpmio/rpmvercmp.c``), applied to epoch, version
    and release as ``rpmverCmp`` does (``[epoch:]version[-release]``, the release after the
    last ``-``, a missing epoch is 0). Runs of ASCII letters or digits are compared one by one,
    every other character only separates them (``2.0 == 2_0``); numbers compare as numbers and
    a number beats letters (``1.0a < 1.0.1``); ``~`` sorts before anything, even the end
    (``1.0~rc1 < 1.0``); ``^`` sorts after the end but before any further segment
    (``1.0 < 1.0^post1 < 1.0.1``). One deliberate difference: rpm skips the release when only
    one side has one (a dependency-matching rule that is not an order); here a missing release
    is the empty string, so ``1.0 < 1.0-1`` and the order stays total (as dpkg does for a
    missing revision).
``pypi``
    PEP 440, via :class:`packaging.version.Version` (``1.0rc1 < 1.0 < 1.0.post1``,
    ``1!0.1 > 2.0``, ``1.0 == 1.0.0``). A value that is not valid PEP 440 (or is longer than
    :data:`MAX_PEP440_CHARS`) uses the generic order below and sorts after every valid one;
    an empty value sorts before everything.
``npm``
    Semantic Versioning 2.0.0, section 11: ``+build`` metadata is ignored; the core before the
    first ``-`` uses the generic order; a version with a ``-prerelease`` sorts before the same
    core without one; pre-release identifiers (split on ``.``) compare numerically when both
    are digits, a numeric one sorts before an alphanumeric one, others compare as ASCII text,
    and a shorter list of equal identifiers sorts first (``1.0.0-alpha < 1.0.0-alpha.1 <
    1.0.0-beta < 1.0.0``).
everything else (``apk``, ``pacman``, ``brew``, ``brew-cask``, ``nix``, ``pkg``, unknown)
    A generic natural order, not any one tool's: an optional numeric epoch ``N:`` compared
    first; a single leading ``v`` before a digit is dropped; the rest is split into runs of
    ASCII digits and ASCII letters (every other character only separates them) and the runs
    are compared in turn. At each position: a pre-release marker < the end of the version <
    a word < a number. Numbers compare as numbers, words as text (case-sensitive). A word
    that comes after a number is a pre-release marker if it is one of ``dev < alpha = a <
    beta = b < pre < rc`` (case-insensitive: ``1.0rc1``, ``1.0-beta``, ``2.0.dev3``); the
    one-letter markers ``a`` and ``b`` only count when a digit follows at once (``1.0a1``),
    so an OpenSSL-style letter suffix stays a post-release (``1.0.2 < 1.0.2a < 1.0.3``).
    ``1.0 < 1.0.0``, as in dpkg and rpm. This is close to, but not exactly, what ``apk`` and
    ``pacman`` (an ``rpmvercmp`` variant) do.

Several installed versions
--------------------------
The inventory joins the versions of a package installed more than once with ``","``
(``"1.0,2.0"``). Such a value stands for its highest version in every function here;
:func:`satisfies_min` therefore asks "is any installed version at least the minimum".
Homebrew cask versions that themselves hold a comma are split the same way, as the inventory
already does. Empty parts are ignored and whitespace around a version is dropped.

Hostile input
-------------
Nothing here raises on bad data. Every public function accepts anything for the ecosystem
and the versions: ``None`` is the empty string, ``bytes`` are decoded as UTF-8 (undecodable
bytes replaced), any other non-``str`` becomes ``str(value)`` (``""`` if even that fails).
Two values that read the same after this compare equal. No algorithm here is worse than
linear in the length of its input, and digit runs are never converted to ``int`` (so a
10,000-digit "number" is fine).
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable
from typing import Any

from packaging.version import Version

#: Longest value handed to :class:`packaging.version.Version`. Longer ones (no real release
#: needs this much) are treated as not PEP 440, which also keeps ``int()`` away from huge
#: digit runs.
MAX_PEP440_CHARS = 256

#: Results of :func:`change_kind`.
CHANGE_KINDS = ("same", "major", "minor", "patch", "other")

#: Results of :func:`direction`.
DIRECTIONS = ("newer", "older", "same")

Comparator = Callable[[str, str], int]

_DIGITS = re.compile(r"[0-9]+")
_DIGITS_OPT = re.compile(r"[0-9]*")
_LETTERS_OPT = re.compile(r"[A-Za-z]*")
_DEB_RUNS = re.compile(r"([^0-9]*)([0-9]*)")
_GENERIC_RUNS = re.compile(r"[0-9]+|[A-Za-z]+")
_GENERIC_EPOCH = re.compile(r"([0-9]+):")
_LEADING_RELEASE = re.compile(r"[0-9]+(?:\.[0-9]+)*")
_DIGIT_CHARS = frozenset("0123456789")
_ASCII_ALNUM = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ASCII_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")

#: Generic pre-release markers and their order; ``a``/``b`` need a digit right after them.
_MARKERS = {"dev": 0, "alpha": 1, "a": 1, "beta": 2, "b": 2, "pre": 3, "rc": 4}
_SHORT_MARKERS = frozenset({"a", "b"})

# Generic tokens are (rank, int, str) so that any two compare without a TypeError.
_PRE, _END, _WORD, _NUM = 0, 1, 2, 3
_END_TOKEN = (_END, 0, "")


# --------------------------------------------------------------------------------------------
# Input
# --------------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    """``value`` as a stripped ``str``; never raises (see "Hostile input" above)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return str.__str__(value).strip()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace").strip()
    try:
        text = str(value)
    except Exception:  # noqa: BLE001 - a hostile __str__ (or a huge int) must not escape
        return ""
    return str.__str__(text).strip() if isinstance(text, str) else ""


def _ecosystem(value: Any) -> str:
    return _text(value).lower()


def _parts(value: Any) -> list[str]:
    """The versions in a (possibly ``","``-joined) value; ``[""]`` when there is none."""
    parts = [part.strip() for part in _text(value).split(",")]
    return [part for part in parts if part] or [""]


def _highest(cmp: Comparator, value: Any) -> str:
    """The highest version in a ``","``-joined value, in the order of ``cmp``."""
    parts = _parts(value)
    return functools.reduce(lambda best, part: part if cmp(part, best) > 0 else best, parts)


def _sign(value: int) -> int:
    return (value > 0) - (value < 0)


def _cmp_num(a: str, b: str) -> int:
    """Compare two runs of ASCII digits as numbers (empty = 0), without ``int()``."""
    a, b = a.lstrip("0"), b.lstrip("0")
    if len(a) != len(b):
        return -1 if len(a) < len(b) else 1
    return (a > b) - (a < b)


def _cmp_text(a: str, b: str) -> int:
    return (a > b) - (a < b)


# --------------------------------------------------------------------------------------------
# deb: dpkg
# --------------------------------------------------------------------------------------------


def _parse_deb(version: str) -> tuple[str, str, str]:
    """``(epoch, upstream, revision)`` as dpkg's ``parseversion`` splits them."""
    epoch, rest = "0", version
    head, colon, tail = version.partition(":")
    if colon and _DIGITS.fullmatch(head):
        epoch, rest = head, tail
    upstream, hyphen, revision = rest.rpartition("-")
    if not hyphen:
        return epoch, rest, ""
    return epoch, upstream, revision


def _deb_order(char: str) -> int:
    """dpkg's ``order()`` for one non-digit character."""
    if char in _ASCII_LETTERS:
        return ord(char)
    if char == "~":
        return -1
    return ord(char) + 256


def _deb_cmp_nondigits(a: str, b: str) -> int:
    """Compare two non-digit runs character by character, the shorter padded with "end" (0)."""
    if a == b:
        return 0
    for i in range(max(len(a), len(b))):
        order_a = _deb_order(a[i]) if i < len(a) else 0
        order_b = _deb_order(b[i]) if i < len(b) else 0
        if order_a != order_b:
            return -1 if order_a < order_b else 1
    return 0


def _verrevcmp(a: str, b: str) -> int:
    """dpkg's ``verrevcmp``: alternate non-digit runs and digit runs."""
    if a == b:
        return 0
    runs = itertools.zip_longest(_DEB_RUNS.findall(a), _DEB_RUNS.findall(b), fillvalue=("", ""))
    for (text_a, num_a), (text_b, num_b) in runs:
        result = _deb_cmp_nondigits(text_a, text_b) or _cmp_num(num_a, num_b)
        if result:
            return result
    return 0


def _cmp_deb(a: str, b: str) -> int:
    epoch_a, upstream_a, revision_a = _parse_deb(a)
    epoch_b, upstream_b, revision_b = _parse_deb(b)
    return (
        _cmp_num(epoch_a, epoch_b)
        or _verrevcmp(upstream_a, upstream_b)
        or _verrevcmp(revision_a, revision_b)
    )


# --------------------------------------------------------------------------------------------
# rpm: rpmvercmp
# --------------------------------------------------------------------------------------------


def _parse_rpm(evr: str) -> tuple[str, str, str]:
    """``(epoch, version, release)`` as rpm's ``parseEVR`` splits them (missing = "0"/"")."""
    digits = _DIGITS_OPT.match(evr).end()
    if evr[digits : digits + 1] == ":":
        epoch, rest = evr[:digits] or "0", evr[digits + 1 :]
    else:
        epoch, rest = "0", evr
    version, hyphen, release = rest.rpartition("-")
    if not hyphen:
        return epoch, rest, ""
    return epoch, version, release


def _rpm_skip(text: str, pos: int) -> int:
    """Skip separators: anything but ASCII letters, digits, ``~`` and ``^``."""
    while pos < len(text) and text[pos] not in _ASCII_ALNUM and text[pos] not in "~^":
        pos += 1
    return pos


def _rpmvercmp(a: str, b: str) -> int:
    """rpm's ``rpmvercmp`` (rpm >= 4.15: ``~`` and ``^``), ported line by line."""
    if a == b:
        return 0
    one = two = 0
    while one < len(a) or two < len(b):
        one, two = _rpm_skip(a, one), _rpm_skip(b, two)
        char_a, char_b = a[one : one + 1], b[two : two + 1]
        if char_a == "~" or char_b == "~":
            if char_a != "~":
                return 1
            if char_b != "~":
                return -1
            one, two = one + 1, two + 1
            continue
        if char_a == "^" or char_b == "^":
            if not char_a:
                return -1
            if not char_b:
                return 1
            if char_a != "^":
                return 1
            if char_b != "^":
                return -1
            one, two = one + 1, two + 1
            continue
        if not (char_a and char_b):
            break
        is_num = char_a in _DIGIT_CHARS
        pattern = _DIGITS_OPT if is_num else _LETTERS_OPT
        seg_a, seg_b = pattern.match(a, one).group(), pattern.match(b, two).group()
        if not seg_b:
            return 1 if is_num else -1
        result = _cmp_num(seg_a, seg_b) if is_num else _cmp_text(seg_a, seg_b)
        if result:
            return result
        one, two = one + len(seg_a), two + len(seg_b)
    if one >= len(a) and two >= len(b):
        return 0
    return -1 if one >= len(a) else 1


def _cmp_rpm(a: str, b: str) -> int:
    epoch_a, version_a, release_a = _parse_rpm(a)
    epoch_b, version_b, release_b = _parse_rpm(b)
    return (
        _cmp_num(epoch_a, epoch_b)
        or _rpmvercmp(version_a, version_b)
        or _rpmvercmp(release_a, release_b)
    )


# --------------------------------------------------------------------------------------------
# generic natural order (and the core of npm)
# --------------------------------------------------------------------------------------------


def _split_generic(version: str) -> tuple[str, str]:
    """``(epoch, rest)``: a leading ``N:`` epoch (default "0") and a leading ``v`` dropped."""
    epoch = "0"
    match = _GENERIC_EPOCH.match(version)
    if match:
        epoch, version = match.group(1), version[match.end() :]
    if version[:1] in ("v", "V") and version[1:2] in _DIGIT_CHARS:
        version = version[1:]
    return epoch, version


def _generic_tokens(version: str) -> tuple[tuple[int, int, str], ...]:
    tokens: list[tuple[int, int, str]] = []
    after_number = False
    for match in _GENERIC_RUNS.finditer(version):
        run = match.group()
        if run[0] in _DIGIT_CHARS:
            stripped = run.lstrip("0")
            tokens.append((_NUM, len(stripped), stripped))
            after_number = True
            continue
        marker = run.lower()
        digit_next = version[match.end() : match.end() + 1] in _DIGIT_CHARS
        if after_number and marker in _MARKERS and (marker not in _SHORT_MARKERS or digit_next):
            tokens.append((_PRE, _MARKERS[marker], ""))
        else:
            tokens.append((_WORD, 0, run))
        after_number = False
    tokens.append(_END_TOKEN)
    return tuple(tokens)


def _generic_key(version: str) -> tuple[tuple[int, str], tuple[tuple[int, int, str], ...]]:
    epoch, rest = _split_generic(version)
    stripped = epoch.lstrip("0")
    return (len(stripped), stripped), _generic_tokens(rest)


def _cmp_generic(a: str, b: str) -> int:
    if a == b:
        return 0
    key_a, key_b = _generic_key(a), _generic_key(b)
    return (key_a > key_b) - (key_a < key_b)


# --------------------------------------------------------------------------------------------
# npm: semver
# --------------------------------------------------------------------------------------------


def _split_semver(version: str) -> tuple[str, str | None]:
    """``(core, prerelease or None)`` with ``+build`` dropped."""
    core, hyphen, prerelease = version.partition("+")[0].partition("-")
    return core, (prerelease if hyphen else None)


def _cmp_identifier(a: str, b: str) -> int:
    num_a, num_b = bool(_DIGITS.fullmatch(a)), bool(_DIGITS.fullmatch(b))
    if num_a and num_b:
        return _cmp_num(a, b)
    if num_a != num_b:
        return -1 if num_a else 1
    return _cmp_text(a, b)


def _cmp_prerelease(a: str | None, b: str | None) -> int:
    if a is None or b is None:
        return (a is None) - (b is None)
    ids_a, ids_b = a.split("."), b.split(".")
    for id_a, id_b in zip(ids_a, ids_b, strict=False):
        result = _cmp_identifier(id_a, id_b)
        if result:
            return result
    return _sign(len(ids_a) - len(ids_b))


def _cmp_npm(a: str, b: str) -> int:
    if a == b:
        return 0
    core_a, pre_a = _split_semver(a)
    core_b, pre_b = _split_semver(b)
    return _cmp_generic(core_a, core_b) or _cmp_prerelease(pre_a, pre_b)


# --------------------------------------------------------------------------------------------
# pypi: PEP 440
# --------------------------------------------------------------------------------------------


def _pep440(version: str) -> Version | None:
    """The PEP 440 version, or ``None`` when ``version`` is not one (or is too long)."""
    if not version or len(version) > MAX_PEP440_CHARS:
        return None
    try:
        return Version(version)
    except Exception:  # noqa: BLE001 - InvalidVersion, or ValueError from int() limits
        return None


def _pypi_rank(version: str, parsed: Version | None) -> int:
    """0: empty, 1: valid PEP 440, 2: anything else."""
    if not version:
        return 0
    return 1 if parsed is not None else 2


def _cmp_pypi(a: str, b: str) -> int:
    if a == b:
        return 0
    parsed_a, parsed_b = _pep440(a), _pep440(b)
    rank_a, rank_b = _pypi_rank(a, parsed_a), _pypi_rank(b, parsed_b)
    if rank_a != rank_b:
        return -1 if rank_a < rank_b else 1
    if parsed_a is not None and parsed_b is not None:
        return (parsed_a > parsed_b) - (parsed_a < parsed_b)
    return _cmp_generic(a, b)


# --------------------------------------------------------------------------------------------
# Release numbers (for change_kind)
# --------------------------------------------------------------------------------------------

_COMPARATORS: dict[str, Comparator] = {
    "deb": _cmp_deb,
    "rpm": _cmp_rpm,
    "pypi": _cmp_pypi,
    "npm": _cmp_npm,
}


def _comparator(ecosystem: str) -> Comparator:
    return _COMPARATORS.get(ecosystem, _cmp_generic)


def _leading_numbers(text: str) -> tuple[str, ...]:
    """The leading dot-separated numbers of ``text``, leading zeros dropped (``()`` if none)."""
    match = _LEADING_RELEASE.match(text)
    if not match:
        return ()
    return tuple(part.lstrip("0") for part in match.group().split("."))


def _release(ecosystem: str, version: str) -> tuple[str, tuple[str, ...]]:
    """``(epoch, release numbers)`` of one version, numbers as digit strings without zeros."""
    if ecosystem == "deb":
        epoch, upstream, _revision = _parse_deb(version)
        return epoch, _leading_numbers(upstream)
    if ecosystem == "rpm":
        epoch, rpm_version, _release_part = _parse_rpm(version)
        return epoch, _leading_numbers(rpm_version)
    if ecosystem == "pypi":
        parsed = _pep440(version)
        if parsed is not None:
            return str(parsed.epoch), tuple(str(n).lstrip("0") for n in parsed.release)
    epoch, rest = _split_generic(version)
    return epoch, _leading_numbers(rest)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def compare(ecosystem: Any, a: Any, b: Any) -> int:
    """``-1``, ``0`` or ``1`` as ``a`` sorts before, with or after ``b`` in ``ecosystem``.

    ``","``-joined values compare by their highest version; see the module docstring for
    each ecosystem's order and for how non-``str`` input is read.
    """
    cmp = _comparator(_ecosystem(ecosystem))
    return _sign(cmp(_highest(cmp, a), _highest(cmp, b)))


def comparator(ecosystem: Any) -> Comparator:
    """The order of one ``ecosystem`` as a function of two single versions (``str``), giving a
    negative number, zero or a positive number. Unlike :func:`compare` it neither splits
    ``","``-joined values nor strips or converts its arguments: for callers that compare many
    clean version strings (vulnerability matching)."""
    return _comparator(_ecosystem(ecosystem))


# --------------------------------------------------------------------------------------------
# Order keys: the same orders as plain tuples, computed once per version
# --------------------------------------------------------------------------------------------

_DEB_FILLER = ((0,), (0, ""))


def _num_key(digits: str) -> tuple[int, str]:
    stripped = digits.lstrip("0")
    return len(stripped), stripped


def _deb_runs_key(text: str) -> tuple:
    """``verrevcmp`` as a key: each run is (non-digit char orders ending in 0, number); the
    0 ends a run as dpkg's "end of string" does (``~`` is -1, every other char is > 0). The
    trailing runs that equal dpkg's filler for a missing run are dropped (but never the first
    run, the only one whose non-digit part can be empty) and one filler ends the key. A
    longer version then compares its next run against that filler, as dpkg does, and that
    run's non-empty non-digit part decides at once."""
    runs = [
        ((*(_deb_order(char) for char in chars), 0), _num_key(digits))
        for chars, digits in _DEB_RUNS.findall(text)
    ]
    while len(runs) > 1 and runs[-1] == _DEB_FILLER:
        runs.pop()
    runs.append(_DEB_FILLER)
    return tuple(runs)


def _deb_key(version: str) -> tuple:
    epoch, upstream, revision = _parse_deb(version)
    return _num_key(epoch), _deb_runs_key(upstream), _deb_runs_key(revision)


# rpmvercmp tokens: "~" < end < "^" < letters < number.
_RPM_TILDE, _RPM_END, _RPM_CARET, _RPM_ALPHA, _RPM_NUM = range(5)


def _rpm_tokens(text: str) -> tuple[tuple[int, int, str], ...]:
    tokens = []
    pos = 0
    while True:
        pos = _rpm_skip(text, pos)
        if pos >= len(text):
            break
        char = text[pos]
        if char == "~":
            tokens.append((_RPM_TILDE, 0, ""))
            pos += 1
        elif char == "^":
            tokens.append((_RPM_CARET, 0, ""))
            pos += 1
        elif char in _DIGIT_CHARS:
            segment = _DIGITS_OPT.match(text, pos).group()
            tokens.append((_RPM_NUM, *_num_key(segment)))
            pos += len(segment)
        else:
            segment = _LETTERS_OPT.match(text, pos).group()
            tokens.append((_RPM_ALPHA, 0, segment))
            pos += len(segment)
    tokens.append((_RPM_END, 0, ""))
    return tuple(tokens)


def _rpm_key(version: str) -> tuple:
    epoch, rpm_version, release = _parse_rpm(version)
    return _num_key(epoch), _rpm_tokens(rpm_version), _rpm_tokens(release)


def _npm_key(version: str) -> tuple:
    core, prerelease = _split_semver(version)
    if prerelease is None:
        return _generic_key(core), (1,)
    identifiers = tuple(
        (0, *_num_key(item)) if _DIGITS.fullmatch(item) else (1, 0, item)
        for item in prerelease.split(".")
    )
    return _generic_key(core), (0, identifiers)


def _pypi_key(version: str) -> tuple:
    parsed = _pep440(version)
    rank = _pypi_rank(version, parsed)
    if rank == 1:
        return (1, parsed)
    return (rank, _generic_key(version)) if rank else (0,)


_KEYS: dict[str, Callable[[str], Any]] = {
    "deb": _deb_key,
    "rpm": _rpm_key,
    "pypi": _pypi_key,
    "npm": _npm_key,
}


def order_key(ecosystem: Any) -> Callable[[str], Any]:
    """A function from one version (``str``) to a key whose natural order is
    :func:`comparator`'s order for ``ecosystem``: ``key(a) < key(b)`` exactly when
    ``comparator(ecosystem)(a, b) < 0``, and equal keys for equal versions. Compute a key once
    and compare it many times (vulnerability matching). Like :func:`comparator` it takes one
    clean version; keys of different ecosystems must not be compared with each other."""
    return _KEYS.get(_ecosystem(ecosystem), _generic_key)


class SortKey:
    """A version wrapped for ``sorted(key=...)``, ordered as :func:`compare` orders it.

    Build it with :func:`sort_key`. Keys compare with the first key's ecosystem; they are not
    hashable (two different strings can be equal versions).
    """

    __slots__ = ("_cmp", "_version")
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, ecosystem: Any, version: Any) -> None:
        self._cmp = _comparator(_ecosystem(ecosystem))
        self._version = _highest(self._cmp, version)

    def _against(self, other: object) -> int | None:
        if not isinstance(other, SortKey):
            return None
        return _sign(self._cmp(self._version, other._version))

    def __eq__(self, other: object) -> bool:
        result = self._against(other)
        return NotImplemented if result is None else result == 0

    def __lt__(self, other: object) -> bool:
        result = self._against(other)
        return NotImplemented if result is None else result < 0

    def __le__(self, other: object) -> bool:
        result = self._against(other)
        return NotImplemented if result is None else result <= 0

    def __gt__(self, other: object) -> bool:
        result = self._against(other)
        return NotImplemented if result is None else result > 0

    def __ge__(self, other: object) -> bool:
        result = self._against(other)
        return NotImplemented if result is None else result >= 0

    def __repr__(self) -> str:
        return f"SortKey({self._version[:60]!r})"


def sort_key(ecosystem: Any, version: Any) -> SortKey:
    """A key for ``sorted()`` consistent with :func:`compare`.

    ``sorted(versions, key=lambda v: sort_key("deb", v))`` or
    ``key=functools.partial(sort_key, "deb")``.
    """
    return SortKey(ecosystem, version)


def change_kind(ecosystem: Any, old: Any, new: Any) -> str:
    """How big the step from ``old`` to ``new`` is: one of :data:`CHANGE_KINDS`.

    ``"same"`` when :func:`compare` says equal. Otherwise each side is reduced to its epoch
    and its leading release numbers (``deb``: of the upstream part; ``rpm``: of the version
    part; ``pypi``: ``Version.release``; else the leading dot-separated numbers after the
    epoch). A different epoch is ``"major"``; a side without any release number (``latest``,
    a git hash) gives ``"other"``; else the first release number that differs (a missing one
    is 0) decides: the first ``"major"``, the second ``"minor"``, any later one ``"patch"``.
    Equal release numbers (only the revision, release, pre-release, local or build part
    differs) are a ``"patch"``. ``","``-joined values use their highest versions.
    """
    eco = _ecosystem(ecosystem)
    cmp = _comparator(eco)
    old_version, new_version = _highest(cmp, old), _highest(cmp, new)
    if cmp(old_version, new_version) == 0:
        return "same"
    old_epoch, old_release = _release(eco, old_version)
    new_epoch, new_release = _release(eco, new_version)
    if _cmp_num(old_epoch, new_epoch):
        return "major"
    if not old_release or not new_release:
        return "other"
    pairs = itertools.zip_longest(old_release, new_release, fillvalue="")
    for index, (old_number, new_number) in enumerate(pairs):
        if old_number != new_number:
            return ("major", "minor")[index] if index < 2 else "patch"
    return "patch"


def direction(ecosystem: Any, expected: Any, actual: Any) -> str:
    """``"newer"``, ``"older"`` or ``"same"``: where ``actual`` stands against ``expected``."""
    result = compare(ecosystem, expected, actual)
    if result < 0:
        return "newer"
    return "older" if result > 0 else "same"


def satisfies_min(ecosystem: Any, version: Any, minimum: Any) -> bool:
    """Whether ``version`` is at least ``minimum`` in ``ecosystem``'s order.

    For a ``","``-joined ``version``: whether any installed version is. A missing or empty
    ``version`` (nothing installed) satisfies nothing; a missing or empty ``minimum``
    (no minimum) is satisfied by any non-empty version.
    """
    if _parts(version) == [""]:
        return False
    if _parts(minimum) == [""]:
        return True
    return compare(ecosystem, version, minimum) >= 0
