"""Normalise a node's package inventory: pure logic, no Salt import.

The minion-side ``fleet.inventory`` execution module gathers raw material (Salt's
``pkg.list_pkgs``, ``dpkg-query``/``rpm`` output, a JSON listing per Python interpreter, Nix
store paths and profiles) and hands it to the functions here, which turn it into one
content-addressed document::

    {
        "packages": {ecosystem: {name: version}},
        "sources": {"deb" | "rpm": {binary: {"name": source, "version": source_version,
                                              "arch": the binary's architecture}}},
        "facts": {"os": ..., "os_family": ..., ..., "pip_python": {interpreter: "3.11.2"}},
        "digest": sha256 hex of the canonical JSON of packages + sources + facts,
        "errors": ["what could not be read, and why", ...],
    }

Ecosystems
----------
Packages Salt's ``pkg.list_pkgs`` reports are filed under an ecosystem named after the node's
``os_family`` grain (see :data:`OS_FAMILY_ECOSYSTEMS`):

=================  =============  ==================================================
os_family          ecosystem      note
=================  =============  ==================================================
Debian             ``deb``        names as Salt gives them (``libc6:i386`` for a
                                  foreign-architecture package)
RedHat, Suse       ``rpm``
MacOS              ``brew``       casks go to ``brew-cask`` (see below)
Arch               ``pacman``
Alpine             ``apk``
FreeBSD            ``pkg``
anything else      lowercase os_family, spaces replaced by ``-``
=================  =============  ==================================================

Ecosystems that do not come from ``pkg.list_pkgs``: ``pypi`` (distributions visible to each
configured Python interpreter, names normalised per PEP 503) and ``nix`` (the NixOS system
profile and the minion user's Nix profile).

Homebrew casks: Salt's ``mac_brew_pkg.list_pkgs`` reports each cask under its ``token``, its
``full_token`` and ``<tap>/<token>``, with ``homebrew/cask`` as the tap of official casks. A
name ``homebrew/cask/<token>`` is therefore a cask: it is filed under ``brew-cask`` as
``<token>``, and the bare ``<token>`` duplicate is dropped from ``brew`` (only that version, so a
formula of the same name stays). Casks from third-party taps cannot be told apart from
formulae in ``list_pkgs`` output and stay under ``brew``.

Versions
--------
Every version is a ``str``. A package installed in several versions has them joined with
``","`` (sorted, as Salt's ``pkg_resource.stringify`` does), and versions of one name that
come from two sources (two interpreters, the Nix system and user profiles) are merged the
same way.

Digest
------
``inventory_digest`` hashes ``{"packages", "sources", "facts"}`` serialised as canonical JSON:
``sort_keys=True``, separators ``(",", ":")``, ``ensure_ascii=False``, UTF-8. ``errors`` is not
part of it: a flaky command must not make an unchanged node look changed.

Hostile input
-------------
Everything here accepts any input: ``None``, wrong types, huge or non-UTF-8 output, lines with
missing columns. What can be parsed is returned; each problem is appended to the caller's
``problems`` list (it ends up in ``errors``) and logged. Nothing raises on bad data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping

from saltext_fleet.core.text import MAX_VALUE_CHARS, as_text, note, short

log = logging.getLogger(__name__)

#: Salt ``os_family`` grain -> ecosystem of the packages ``pkg.list_pkgs`` reports.
OS_FAMILY_ECOSYSTEMS = {
    "Debian": "deb",
    "RedHat": "rpm",
    "Suse": "rpm",
    "MacOS": "brew",
    "Arch": "pacman",
    "Alpine": "apk",
    "FreeBSD": "pkg",
}

#: Ecosystem used when the os_family grain is missing or unreadable.
UNKNOWN_ECOSYSTEM = "unknown"

#: Prefix under which Salt's mac_brew module reports official Homebrew casks.
BREW_CASK_PREFIX = "homebrew/cask/"

#: ``dpkg-query`` arguments whose output :func:`parse_deb_sources` reads.
DEB_SOURCES_CMD = [
    "dpkg-query",
    "-W",
    "-f",
    "${Package}\\t${Architecture}\\t${source:Package}\\t${source:Version}\\n",
]

#: ``rpm`` arguments whose output :func:`parse_rpm_sources` reads.
RPM_SOURCES_CMD = ["rpm", "-qa", "--qf", "%{NAME}\\t%{ARCH}\\t%{SOURCERPM}\\n"]

#: Files and folders whose modification time changes when the package manager of an
#: ecosystem installs, upgrades or removes something. Stat'ing them is cheap; running the
#: full inventory is not, so the beacon only does the latter when one of these moved.
PACKAGE_DB_STAMPS = {
    "deb": ("/var/lib/dpkg/status",),
    # rpmdb.sqlite is rewritten in place, so the folder's own mtime may not move: stat the
    # database files as well. /usr/lib/sysimage/rpm is the newer location (Fedora 36+, SUSE).
    "rpm": (
        "/var/lib/rpm",
        "/var/lib/rpm/rpmdb.sqlite",
        "/var/lib/rpm/Packages",
        "/var/lib/rpm/Packages.db",
        "/usr/lib/sysimage/rpm",
        "/usr/lib/sysimage/rpm/rpmdb.sqlite",
        "/usr/lib/sysimage/rpm/Packages.db",
    ),
    "pacman": ("/var/lib/pacman/local",),
    "apk": ("/lib/apk/db/installed",),
    "pkg": ("/var/db/pkg/local.sqlite",),
}

#: Homebrew prefixes (Apple silicon, Intel, Linuxbrew); ``Cellar`` and ``Caskroom`` below them.
BREW_PREFIXES = ("/opt/homebrew", "/usr/local", "/home/linuxbrew/.linuxbrew")

#: Nix profile links: they are re-pointed on every switch/install, so their target changes.
NIX_PROFILE_STAMPS = (
    "/run/current-system",
    "/nix/var/nix/profiles/default",
    "/nix/var/nix/profiles/system",
)

#: Per-user Nix profile links, relative to the minion user's home.
NIX_HOME_PROFILE_STAMPS = (".nix-profile", ".local/state/nix/profiles/profile")

#: The NixOS system profile whose references are the installed system packages.
NIX_SYSTEM_SW = "/run/current-system/sw"

#: At most this many per-line problems are reported for one input; the rest are counted.
MAX_LINE_PROBLEMS = 10

#: At most this many entries in ``errors``; a broken host must not produce a huge return.
MAX_ERRORS = 200

# Output names Nix appends to a store path name ("util-linux-2.39.4-bin"): not part of the
# version, and the outputs of one package should collapse into one entry.
_NIX_OUTPUT_SUFFIXES = frozenset(
    {"bin", "dev", "lib", "out", "man", "doc", "info", "debug", "devdoc", "static", "data"}
)

# Store path base name: 32 characters of Nix's base32 alphabet, a dash, the name.
_STORE_BASENAME = re.compile(r"^[0-9a-df-np-sv-z]{32}-(.+)$")

# "<name>-<version>-<release>.src.rpm" (or .nosrc.rpm for packages that ship no sources).
_SOURCE_RPM = re.compile(r"^(?P<name>.+)-(?P<version>[^-]+)-(?P<release>[^-]+)\.(?:no)?src\.rpm$")

_PEP503 = re.compile(r"[-_.]+")


# --------------------------------------------------------------------------------------------
# Ecosystems
# --------------------------------------------------------------------------------------------


def ecosystem_for(os_family, problems: list | None = None) -> str:
    """The ecosystem of the packages ``pkg.list_pkgs`` reports on a node of ``os_family``."""
    family = short(os_family, "grain os_family", problems)
    if family is None:
        note(problems, "grain os_family is missing; packages filed under 'unknown'")
        return UNKNOWN_ECOSYSTEM
    if family in OS_FAMILY_ECOSYSTEMS:
        return OS_FAMILY_ECOSYSTEMS[family]
    return re.sub(r"\s+", "-", family.strip().lower()) or UNKNOWN_ECOSYSTEM


def normalise_pypi_name(name: str) -> str:
    """PEP 503 normalised project name: runs of ``-_.`` become ``-``, lowercase."""
    return _PEP503.sub("-", name).lower()


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


class _Problems:
    """Problems of one input (one command's output, one mapping), reported with a cap.

    A hostile input can hold thousands of bad lines or entries; the first
    :data:`MAX_LINE_PROBLEMS` are reported one by one, the rest as a count by :meth:`close`.
    """

    def __init__(self, what: str, problems: list | None):
        self.what = what
        self.problems = problems
        self.count = 0

    def add(self, message: str) -> None:
        self.count += 1
        if self.count <= MAX_LINE_PROBLEMS:
            note(self.problems, f"{self.what}: {message}")

    def scalar(self, value, label: str) -> str | None:
        """``value`` as a bounded, stripped ``str`` (or ``None``), problems counted here."""
        if isinstance(value, str) and len(value) <= MAX_VALUE_CHARS and value.isascii():
            return value.strip() or None  # the common case: nothing to check or report
        if self.count >= MAX_LINE_PROBLEMS:
            # Past the cap: convert without logging, but still count what was wrong.
            local: list = []
            result = _quiet_scalar(value, local)
            self.count += len(local)
            return result
        local = []
        result = short(value, f"{self.what}: {label}", local)
        for message in local:
            self.count += 1
            if self.problems is not None and self.count <= MAX_LINE_PROBLEMS:
                self.problems.append(message)
        return result

    def close(self) -> None:
        if self.count > MAX_LINE_PROBLEMS:
            note(self.problems, f"{self.what}: {self.count - MAX_LINE_PROBLEMS} more problems")


def _quiet_scalar(value, problems: list) -> str | None:
    """What :func:`short` does, without logging (used once a problem cap is reached)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, bytes, bytearray, int, float)):
        problems.append("not a scalar")
        return None
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value[: MAX_VALUE_CHARS * 4]).decode("utf-8", errors="replace")
    if len(value) > MAX_VALUE_CHARS:
        problems.append("too long")
        value = value[:MAX_VALUE_CHARS]
    value = value.encode("utf-8", errors="replace").decode("utf-8")
    return value.strip() or None


# --------------------------------------------------------------------------------------------
# Versions
# --------------------------------------------------------------------------------------------


def join_versions(value, what: str, problems: list | None = None) -> str | None:
    """One version string from whatever Salt or a parser produced.

    A ``str`` is kept (Salt already joins several versions with ``","``); a list/tuple/set is
    de-duplicated, sorted and joined with ``","``; a number becomes its ``str``; an empty
    string stays empty (Salt reports casks without a recorded version that way). Anything
    else is reported and gives ``None``.
    """
    return _join_versions(value, _Problems(what, problems), "version")


def _join_versions(value, report: _Problems, label: str) -> str | None:
    if isinstance(value, (list, tuple, set, frozenset)):
        parts = {p for p in (report.scalar(item, label) for item in value) if p is not None}
        if not parts:
            report.add(f"{label}: no readable version in a {type(value).__name__}")
            return None
        return ",".join(sorted(parts))
    if value is None:
        report.add(f"{label}: missing")
        return None
    if isinstance(value, str) and not value.strip():
        return ""
    return report.scalar(value, label)  # reports wrong types, truncation, bad bytes


def add_version(target: dict, name: str, version: str) -> None:
    """Record ``name`` at ``version`` in ``target``, merging with a version already there."""
    existing = target.get(name)
    if existing is None or existing == version:
        target[name] = version
        return
    merged = {v for v in existing.split(",") if v} | {v for v in version.split(",") if v}
    target[name] = ",".join(sorted(merged))


def _clean_package_map(raw, what: str, problems: list | None) -> dict | None:
    """``{name: version}`` with every key and value a bounded ``str``; bad entries reported.

    ``None`` (reported) when ``raw`` is not a mapping at all.
    """
    if not isinstance(raw, Mapping):
        if raw is not None:
            note(
                problems, f"{what}: expected a mapping of name to version, got {type(raw).__name__}"
            )
        return None
    report = _Problems(what, problems)
    result: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            report.add(f"package name of type {type(key).__name__} skipped")
            continue
        name = report.scalar(key, "package name")
        if name is None:
            report.add("empty package name skipped")
            continue
        version = _join_versions(value, report, f"version of {name[:80]!r}")
        if version is None:
            continue
        add_version(result, name, version)
    report.close()
    return result


def normalise_pkg_list(ecosystem: str, pkgs, problems: list | None = None) -> dict:
    """Salt's ``pkg.list_pkgs`` return as ``{ecosystem: {name: version}}``.

    On ``brew``, official casks (``homebrew/cask/<token>``) go to ``brew-cask``; see the
    module docstring. A return that is not a mapping at all gives ``{}`` (and a problem).
    """
    clean = _clean_package_map(pkgs, f"pkg.list_pkgs ({ecosystem})", problems)
    if clean is None:
        if pkgs is None:
            note(problems, f"pkg.list_pkgs ({ecosystem}): returned nothing")
        return {}
    if ecosystem != "brew":
        return {ecosystem: clean}
    formulae: dict[str, str] = {}
    casks: dict[str, str] = {}
    for name, version in clean.items():
        if name.startswith(BREW_CASK_PREFIX) and len(name) > len(BREW_CASK_PREFIX):
            casks[name[len(BREW_CASK_PREFIX) :]] = version
        else:
            formulae[name] = version
    for token, version in casks.items():
        # list_pkgs also lists the cask under its bare token: drop that duplicate, but only
        # the cask's version(s), so a formula that shares the name survives.
        if token not in formulae:
            continue
        cask_versions = set(version.split(","))
        remaining = [v for v in formulae[token].split(",") if v not in cask_versions]
        if remaining:
            formulae[token] = ",".join(remaining)
        else:
            del formulae[token]
    result = {"brew": formulae}
    if casks:
        result["brew-cask"] = casks
    return result


# --------------------------------------------------------------------------------------------
# Line-oriented parsers
# --------------------------------------------------------------------------------------------

# Longer lines are not package records; skipping them keeps a hostile output cheap to read.
_MAX_LINE_CHARS = 4 * MAX_VALUE_CHARS


def _lines(text: str, report: _Problems):
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if len(line) > _MAX_LINE_CHARS:
            report.add(f"line {lineno}: {len(line)} characters long; skipped")
            continue
        yield lineno, line


def _field(value: str) -> str | None:
    """A column of a line already bounded by :func:`_lines` (``as_text`` made it UTF-8 safe)."""
    value = value.strip()
    return value if value and len(value) <= MAX_VALUE_CHARS else None


def _key_by_arch(rows: list, separator: str) -> dict:
    """``{binary: source}`` from ``(binary, arch, source)`` rows; ``source`` gets ``"arch"``,
    the binary's own architecture (``amd64``, ``all``, ``x86_64``, ``noarch``...), when the
    row names one.

    A binary installed for two architectures also gets ``<binary><sep><arch>`` keys, the names
    Salt uses for such packages (``libc6:i386`` on Debian, ``glibc.i686`` on RPM systems).
    """
    arches: dict[str, set] = {}
    for name, arch, _ in rows:
        arches.setdefault(name, set()).add(arch)
    result: dict[str, dict] = {}
    for name, arch, source in rows:
        if arch:
            source = {**source, "arch": arch}
        result.setdefault(name, source)
        if len(arches[name]) > 1 and arch:
            result[f"{name}{separator}{arch}"] = source
    return result


def parse_deb_sources(output, problems: list | None = None) -> dict:
    """Source packages from ``dpkg-query -W -f`` output (see :data:`DEB_SOURCES_CMD`).

    Each line is ``package<TAB>architecture<TAB>source package<TAB>source version``. Returns
    ``{binary: {"name": source, "version": source_version, "arch": architecture}}`` (``arch``
    left out when the column is empty); dpkg fills an empty source name with the binary's own
    name, and so does this parser.
    """
    what = "dpkg-query source packages"
    text = as_text(output, what, problems)
    report = _Problems(what, problems)
    rows = []
    for lineno, line in _lines(text, report):
        cols = line.split("\t")
        if len(cols) < 4:
            report.add(f"line {lineno}: expected 4 tab-separated columns, got {len(cols)}")
            continue
        name, arch, src, src_version = (_field(c) for c in cols[:4])
        if not name or not src_version:
            report.add(f"line {lineno}: package name or source version is empty")
            continue
        # Old dpkg put the source version in parentheses after the name: "src (1.2-3)".
        src = (src or name).split(" ", 1)[0]
        rows.append((name, arch or "", {"name": src, "version": src_version}))
    report.close()
    return _key_by_arch(rows, ":")


def parse_rpm_sources(output, problems: list | None = None) -> dict:
    """Source packages from ``rpm -qa --qf`` output (see :data:`RPM_SOURCES_CMD`).

    Each line is ``name<TAB>arch<TAB>source rpm file name``; ``bash-5.1.8-6.el9.src.rpm``
    becomes ``{"name": "bash", "version": "5.1.8-6.el9", "arch": <the binary's arch>}``. Packages without a source RPM
    (``(none)``, e.g. ``gpg-pubkey``) are not built from source and are skipped silently.
    """
    what = "rpm source packages"
    text = as_text(output, what, problems)
    report = _Problems(what, problems)
    rows = []
    for lineno, line in _lines(text, report):
        cols = line.split("\t")
        if len(cols) < 3:
            report.add(f"line {lineno}: expected 3 tab-separated columns, got {len(cols)}")
            continue
        name, arch, srpm = (_field(c) for c in cols[:3])
        if not name:
            report.add(f"line {lineno}: package name is empty")
            continue
        if srpm in (None, "(none)"):
            continue
        match = _SOURCE_RPM.match(srpm)
        if not match:
            report.add(f"line {lineno}: {srpm[:80]!r} is not <name>-<version>-<release>.src.rpm")
            continue
        source = {"name": match["name"], "version": f"{match['version']}-{match['release']}"}
        rows.append((name, arch or "", source))
    report.close()
    return _key_by_arch(rows, ".")


# --------------------------------------------------------------------------------------------
# Python interpreters
# --------------------------------------------------------------------------------------------

#: Run as ``<interpreter> -I -c PIP_SCRIPT [--paths-only]``. It uses importlib.metadata, so it
#: works in virtualenvs without pip, and sticks to syntax old interpreters still parse. It
#: prints one JSON object: the interpreter's version, its purelib/platlib and the
#: site-packages folders on its sys.path (the beacon stats those), and
#: {PEP 503 name: version} (several versions joined with ","). Problems it meets go into
#: "errors" instead of a traceback.
PIP_SCRIPT = r"""
import json, os, re, sys
def main():
    out = {"python": "%d.%d.%d" % tuple(sys.version_info[:3]), "purelib": None,
           "platlib": None, "site_dirs": [], "packages": {}, "errors": []}
    try:
        import sysconfig
        paths = sysconfig.get_paths()
        out["purelib"] = paths.get("purelib")
        out["platlib"] = paths.get("platlib")
    except Exception as exc:
        out["errors"].append("sysconfig: %s" % (exc,))
    dirs = []
    for entry in list(sys.path) + [out["purelib"], out["platlib"]]:
        if (entry and entry not in dirs and os.path.isdir(entry)
                and os.path.basename(entry) in ("site-packages", "dist-packages")):
            dirs.append(entry)
    out["site_dirs"] = dirs
    if "--paths-only" not in sys.argv[1:]:
        try:
            from importlib import metadata
        except ImportError:
            metadata = None
            out["errors"].append("importlib.metadata is missing (Python 3.8 or later needed)")
        found = {}
        for dist in (metadata.distributions() if metadata else ()):
            where = str(getattr(dist, "_path", "?"))
            try:
                name = dist.metadata["Name"]
                version = dist.version
            except Exception as exc:
                out["errors"].append("unreadable distribution at %s: %s" % (where, exc))
                continue
            if not name or not version:
                out["errors"].append("distribution at %s has no name or version" % (where,))
                continue
            key = re.sub(r"[-_.]+", "-", str(name)).lower()
            found.setdefault(key, set()).add(str(version))
        out["packages"] = dict((k, ",".join(sorted(v))) for k, v in found.items())
    sys.stdout.write(json.dumps(out) + "\n")
main()
"""


def _load_json(output, what: str, problems: list | None):
    """Parse JSON output; tolerate noise before it (a chatty sitecustomize, a warning)."""
    text = as_text(output, what, problems).strip()
    if not text:
        note(problems, f"{what}: no output")
        return None
    try:
        return json.loads(text)
    except ValueError:
        pass
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith(("{", "[")):
            try:
                return json.loads(line)
            except ValueError:
                break
    note(problems, f"{what}: output is not JSON: {text[:80]!r}")
    return None


def parse_pip_listing(output, problems: list | None = None, interpreter: str = "python") -> dict:
    """The JSON printed by :data:`PIP_SCRIPT` under one interpreter.

    Returns ``{"python": version or None, "purelib": ..., "platlib": ..., "site_dirs": [...],
    "packages": {normalised name: version}}``. Names are normalised again here: the output
    is as untrusted as any other.
    """
    what = f"python listing of {interpreter}"
    result: dict = {
        "python": None,
        "purelib": None,
        "platlib": None,
        "site_dirs": [],
        "packages": {},
    }
    data = _load_json(output, what, problems)
    if data is None:
        return result
    if not isinstance(data, Mapping):
        note(problems, f"{what}: expected a JSON object, got {type(data).__name__}")
        return result
    report = _Problems(what, problems)
    result["python"] = report.scalar(data.get("python"), "python version")
    for key in ("purelib", "platlib"):
        result[key] = report.scalar(data.get(key), key)
    site_dirs = data.get("site_dirs")
    if isinstance(site_dirs, list):
        for entry in site_dirs:
            path = report.scalar(entry, "site dir")
            if path and os.path.isabs(path) and path not in result["site_dirs"]:
                result["site_dirs"].append(path)
    elif site_dirs is not None:
        report.add(f"site_dirs: expected a list, got {type(site_dirs).__name__}")
    errors = data.get("errors")
    if isinstance(errors, list):
        for message in errors:
            text = report.scalar(message, "error")
            if text:
                report.add(text)
    report.close()
    packages = _clean_package_map(data.get("packages"), f"{what}: packages", problems)
    if packages is None and "packages" not in data:
        note(problems, f"{what}: no 'packages' in the listing")
    for name, version in (packages or {}).items():
        add_version(result["packages"], normalise_pypi_name(name), version)
    return result


def pip_interpreters(value, problems: list | None = None) -> list:
    """Validate the ``fleet:inventory:pip`` option: a list of absolute interpreter paths.

    A single string is taken as a one-item list. Entries that are not absolute paths are
    reported and skipped; any other type is reported and gives ``[]``.
    """
    what = "option fleet:inventory:pip"
    if value is None or value == "" or value == []:
        return []
    if isinstance(value, (str, bytes)):
        value = [value]
    if not isinstance(value, (list, tuple)):
        note(problems, f"{what}: expected a list of absolute paths, got {type(value).__name__}")
        return []
    report = _Problems(what, problems)
    result = []
    for entry in value:
        if not isinstance(entry, (str, bytes)):
            report.add(f"entry of type {type(entry).__name__} is not a path; skipped")
            continue
        path = report.scalar(entry, "entry")
        if not path or not os.path.isabs(path) or "\x00" in path:
            report.add(f"{(path or '')[:80]!r} is not an absolute path; skipped")
            continue
        if path not in result:
            result.append(path)
    report.close()
    return result


# --------------------------------------------------------------------------------------------
# Nix
# --------------------------------------------------------------------------------------------


def split_drv_name(name: str) -> tuple:
    """Split a Nix package name into ``(name, version)`` the way Nix's ``DrvName`` does.

    The name ends at the first ``-`` that is not followed by a letter (in practice, by a
    digit): ``apache-httpd-2.0.48`` -> ``("apache-httpd", "2.0.48")``. A name without such
    a dash has the version ``""``. A trailing output name (``-bin``, ``-man``, ...) is dropped
    from the version so that the outputs of one package collapse into one entry.
    """
    for i in range(len(name) - 1):
        if name[i] == "-" and not name[i + 1].isalpha():
            pname, version = name[:i], name[i + 1 :]
            head, sep, tail = version.rpartition("-")
            if sep and head and tail in _NIX_OUTPUT_SUFFIXES:
                version = head
            return pname, version
    return name, ""


def split_store_path(path) -> tuple | None:
    """``("hello", "2.12.1")`` for ``/nix/store/<hash>-hello-2.12.1``; ``None`` if not one."""
    if not isinstance(path, str) or len(path) > _MAX_LINE_CHARS:
        return None
    base = path.strip().rstrip("/").rsplit("/", 1)[-1]
    match = _STORE_BASENAME.match(base)
    if not match or base.endswith(".drv"):
        return None
    name, version = split_drv_name(match[1])
    if not name or len(name) > MAX_VALUE_CHARS or len(version) > MAX_VALUE_CHARS:
        return None
    return name, version


def parse_nix_store_paths(output, problems: list | None = None) -> dict:
    """``{name: version}`` from one store path per line (``nix-store -q --references``)."""
    what = "nix-store references"
    text = as_text(output, what, problems)
    report = _Problems(what, problems)
    result: dict[str, str] = {}
    for lineno, line in _lines(text, report):
        if line.strip().endswith(".drv"):
            continue  # a build recipe, not an installed package
        parsed = split_store_path(line)
        if parsed is None:
            report.add(f"line {lineno}: {line.strip()[:80]!r} is not a Nix store path")
            continue
        add_version(result, *parsed)
    report.close()
    return result


def parse_nix_env_json(output, problems: list | None = None) -> dict:
    """``{name: version}`` from ``nix-env -q --installed --json --out-path``.

    The output is an object keyed by attribute path (list indices such as ``"0"`` for an
    installed profile) whose values carry ``pname`` and ``version``; failing those, ``name``
    (split as Nix does) or the ``out`` store path.
    """
    what = "nix-env query"
    data = _load_json(output, what, problems)
    result: dict[str, str] = {}
    if data is None:
        return result
    if not isinstance(data, Mapping):
        note(problems, f"{what}: expected a JSON object, got {type(data).__name__}")
        return result
    report = _Problems(what, problems)
    for key, item in data.items():
        label = f"entry {str(key)[:80]!r}"
        if not isinstance(item, Mapping):
            report.add(f"{label}: expected an object, got {type(item).__name__}")
            continue
        pname = report.scalar(item.get("pname"), f"{label} pname")
        version = report.scalar(item.get("version"), f"{label} version")
        if not pname:
            full = report.scalar(item.get("name"), f"{label} name")
            outputs = item.get("outputs")
            parsed = split_store_path(outputs.get("out")) if isinstance(outputs, Mapping) else None
            if full:
                pname, version = split_drv_name(full)
            elif parsed:
                pname, version = parsed
        if not pname:
            report.add(f"{label}: no readable name")
            continue
        add_version(result, pname, version or "")
    report.close()
    return result


def parse_nix_profile_json(output, problems: list | None = None) -> dict:
    """``{name: version}`` from ``nix profile list --json``.

    Manifest versions 1 and 2 have ``elements`` as a list, version 3 as an object keyed by
    element name; each element has ``storePaths`` (named and versioned from the store path)
    and ``active`` (inactive elements are not in the profile's tree and are skipped).
    """
    what = "nix profile list"
    data = _load_json(output, what, problems)
    result: dict[str, str] = {}
    if data is None:
        return result
    if not isinstance(data, Mapping):
        note(problems, f"{what}: expected a JSON object, got {type(data).__name__}")
        return result
    elements = data.get("elements")
    if isinstance(elements, Mapping):
        items = list(elements.values())
    elif isinstance(elements, list):
        items = elements
    else:
        note(problems, f"{what}: 'elements' is missing or not a list/object")
        return result
    report = _Problems(what, problems)
    for index, element in enumerate(items):
        if not isinstance(element, Mapping):
            report.add(f"element {index}: expected an object, got {type(element).__name__}")
            continue
        if element.get("active", True) is False:
            continue
        paths = element.get("storePaths")
        if not isinstance(paths, list) or not paths:
            report.add(f"element {index}: no storePaths")
            continue
        for path in paths:
            parsed = split_store_path(path)
            if parsed is None:
                report.add(f"element {index}: {str(path)[:80]!r} is not a Nix store path")
                continue
            add_version(result, *parsed)
    report.close()
    return result


# --------------------------------------------------------------------------------------------
# The document
# --------------------------------------------------------------------------------------------


def _clean_facts(raw, problems: list | None) -> dict:
    """Facts: ``{name: str or None}``; one level of ``{key: str}`` allowed (``pip_python``)."""
    facts: dict = {}
    if raw is None:
        return facts
    if not isinstance(raw, Mapping):
        note(problems, f"facts: expected a mapping, got {type(raw).__name__}")
        return facts
    report = _Problems("facts", problems)
    for key, value in raw.items():
        if not isinstance(key, str) or not key or len(key) > MAX_VALUE_CHARS:
            report.add(f"fact name of type {type(key).__name__} skipped")
            continue
        if isinstance(value, Mapping):
            inner = {}
            for ikey, ivalue in value.items():
                if not isinstance(ikey, str) or len(ikey) > MAX_VALUE_CHARS:
                    report.add(f"{key}: key of type {type(ikey).__name__} skipped")
                    continue
                text = report.scalar(ivalue, f"{key} {ikey[:80]!r}")
                inner[ikey] = text
            facts[key] = dict(sorted(inner.items()))
        elif value is None or isinstance(value, (str, bytes, bytearray, int, float)):
            facts[key] = report.scalar(value, key) if value is not None else None
        else:
            report.add(f"{key}: expected a scalar, got {type(value).__name__}; skipped")
    report.close()
    return facts


def _clean_sources(raw, packages: dict, problems: list | None) -> dict:
    sources: dict = {}
    if raw is None:
        return sources
    if not isinstance(raw, Mapping):
        note(problems, f"sources: expected a mapping, got {type(raw).__name__}")
        return sources
    for eco, table in raw.items():
        if not isinstance(eco, str) or not eco or len(eco) > MAX_VALUE_CHARS:
            note(problems, f"sources: ecosystem of type {type(eco).__name__} skipped")
            continue
        if not isinstance(table, Mapping):
            note(problems, f"sources {eco}: expected a mapping, got {type(table).__name__}")
            continue
        installed = packages.get(eco)
        report = _Problems(f"sources {eco}", problems)
        clean = {}
        for binary, src in table.items():
            if not isinstance(binary, str) or not isinstance(src, Mapping):
                report.add(f"entry of type {type(src).__name__} skipped")
                continue
            # dpkg-query/rpm also list packages that are only half there (config files
            # left behind): keep the sources of what pkg.list_pkgs calls installed.
            if installed is not None and binary not in installed:
                continue
            name = report.scalar(src.get("name"), f"{binary[:80]!r} source name")
            version = report.scalar(src.get("version"), f"{binary[:80]!r} source version")
            if not name or not version:
                report.add(f"{binary[:80]!r}: source name or version missing")
                continue
            clean[binary] = {"name": name, "version": version}
            arch = report.scalar(src.get("arch"), f"{binary[:80]!r} architecture")
            if arch:
                clean[binary]["arch"] = arch
        report.close()
        sources[eco] = dict(sorted(clean.items()))
    return dict(sorted(sources.items()))


def canonical_json(value) -> bytes:
    """The canonical serialisation the digest is computed over."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # Inputs are sanitised before they get here; surrogatepass keeps this total anyway.
    return text.encode("utf-8", errors="surrogatepass")


def inventory_digest(packages: dict, sources: dict, facts: dict) -> str:
    """sha256 hex of the canonical JSON of ``{"packages", "sources", "facts"}``."""
    body = {"packages": packages, "sources": sources, "facts": facts}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def _clean_errors(errors) -> list:
    if errors is None:
        return []
    if isinstance(errors, (str, bytes)) or not isinstance(errors, Iterable):
        errors = [errors]
    result = []
    for message in errors:
        text = message if isinstance(message, str) else _quiet_scalar(message, [])
        if text:
            result.append(as_text(text, "error message", limit=2000))
    return result


def build_inventory(packages, sources, facts, errors: Iterable | None = None) -> dict:
    """The inventory document from parsed parts; see the module docstring.

    ``packages`` is ``{ecosystem: {name: version}}``, ``sources`` is
    ``{ecosystem: {binary: {"name", "version"}}}``, ``facts`` is ``{name: value}``; any of them
    may be malformed: what is readable is kept, the rest is reported. Sources are kept only
    for binaries listed under the same ecosystem in ``packages`` (when it has one). ``errors``
    are problems met while gathering the parts; they are returned (before this function's
    own) but not hashed.
    """
    problems = _clean_errors(errors)
    clean_packages: dict = {}
    if packages is not None and not isinstance(packages, Mapping):
        note(problems, f"packages: expected a mapping, got {type(packages).__name__}")
    elif packages:
        for eco, table in packages.items():
            if not isinstance(eco, str) or not eco or len(eco) > MAX_VALUE_CHARS:
                note(problems, f"packages: ecosystem of type {type(eco).__name__} skipped")
                continue
            clean = _clean_package_map(table, f"packages {eco}", problems)
            if clean is not None:
                clean_packages[eco] = dict(sorted(clean.items()))
    clean_packages = dict(sorted(clean_packages.items()))
    clean_sources = _clean_sources(sources, clean_packages, problems)
    clean_facts = dict(sorted(_clean_facts(facts, problems).items()))
    if len(problems) > MAX_ERRORS:
        extra = len(problems) - MAX_ERRORS
        problems = problems[:MAX_ERRORS] + [f"{extra} more errors not shown"]
    return {
        "packages": clean_packages,
        "sources": clean_sources,
        "facts": clean_facts,
        "digest": inventory_digest(clean_packages, clean_sources, clean_facts),
        "errors": problems,
    }
