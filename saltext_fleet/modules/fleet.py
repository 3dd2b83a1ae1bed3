"""
Fleet: what is installed on this node, for the saltext-fleet control plane.

:depends: nothing beyond Salt. Uses whatever the node has: Salt's own ``pkg`` provider
    (``pkg.list_pkgs``), ``dpkg-query`` or ``rpm`` for source packages, the configured Python
    interpreters, and ``nix-store``/``nix-env``/``nix`` when Nix is installed.

Functions
---------
``fleet.inventory``
    Packages per ecosystem, distro source packages, a few facts and a content digest. The
    normalising logic (ecosystem names, parsers, digest) lives in
    :mod:`saltext_fleet.core.inventory`; its docstring describes the returned document.
``fleet.sbom``
    This node's CycloneDX 1.6 SBOM, built from ``fleet.inventory`` run now (the master's
    ``salt-run fleet.sbom`` builds the same document from the stored inventory); see
    :mod:`saltext_fleet.core.sbom`.
``fleet.started``
    When this minion's process started (the master confirms a start event with it).
``fleet.stamp_paths``
    The files whose modification times reveal a package change; the ``fleet_pkgset`` beacon
    stats them to decide, cheaply, whether to run the inventory again.

Configuration
-------------
Read with ``config.get``, so the minion config, grains or pillar may set it:

.. code-block:: yaml

    fleet:
      inventory:
        # Python interpreters whose distributions are listed under the "pypi" ecosystem.
        # Absolute paths; a single string is taken as a one-item list. Default: none.
        pip: [/usr/bin/python3, /opt/venv/bin/python]

Bad data never raises: whatever could be read is returned, and each problem (a failing
command, unreadable output, a bad option) is one entry of ``errors`` and a warning in the
minion log.
"""

from __future__ import annotations

import logging
import os

import psutil
import salt.utils.data
import salt.utils.json
import salt.utils.path
from salt.exceptions import CommandExecutionError

from saltext_fleet.core import inventory as core
from saltext_fleet.core import sbom as core_sbom
from saltext_fleet.core.text import note, short

log = logging.getLogger(__name__)

__virtualname__ = "fleet"

#: Seconds a package-listing command may run (rpm -qa on a big host takes a few seconds).
COMMAND_TIMEOUT = 300

#: Seconds one Python interpreter may take to list its distributions.
PIP_TIMEOUT = 120

#: ``__context__`` key: {interpreter: [site-packages dirs]}, refreshed by every inventory.
_SITE_DIRS_CONTEXT = "fleet.inventory.pip_site_dirs"

#: Grains reported as facts.
FACT_GRAINS = ("os", "os_family", "osrelease", "osarch", "kernelrelease", "saltversion")


def __virtual__():
    # Pure Python on top of Salt's own modules: nothing to require. Parts whose tools are
    # missing (no pkg provider, no Nix) are skipped at call time.
    return __virtualname__


# --------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------


def inventory() -> dict:
    """
    Return the packages installed on this node, per ecosystem, with facts and a digest.

    The document (see :mod:`saltext_fleet.core.inventory`)::

        packages: {ecosystem: {name: version}}      # deb/rpm/brew/brew-cask/..., pypi, nix
        sources:  {deb|rpm: {binary: {name: source package, version: source version,
                                      arch: the binary's architecture}}}
        facts:    {os, os_family, osrelease, osarch, kernelrelease, saltversion, xcode (macOS),
                   pip_python: {interpreter: python version}}
        digest:   sha256 of packages + sources + facts (errors excluded)
        errors:   [what could not be read, and why]

    Distribution packages come from Salt's ``pkg.list_pkgs`` (its cache bypassed, so a
    long-running minion sees changes). Python distributions are listed for each interpreter
    of the ``fleet:inventory:pip`` option.

    CLI Example:

    .. code-block:: bash

        salt '*' fleet.inventory
    """
    problems: list = []
    ecosystem = core.ecosystem_for(__grains__.get("os_family"), problems)
    packages: dict = {}
    _merge(packages, _os_packages(ecosystem, problems))
    sources = _source_packages(ecosystem, problems)
    pip_packages, pythons = _pip_listings(_pip_config(problems), problems)
    if pip_packages:
        _merge(packages, {"pypi": pip_packages})
    nix = _nix_packages(problems)
    if nix:
        _merge(packages, {"nix": nix})
    facts = _facts(pythons, problems)
    return core.build_inventory(packages, sources, facts, errors=problems)


def sbom(format="cyclonedx-json", validate=False):
    """
    Return this node's CycloneDX 1.6 SBOM, built from its live inventory (``fleet.inventory``
    run now): the node (minion id, OS, hardware from the ``fleet`` grain) as the document's
    subject, and one component with a purl per installed package version. The master's
    ``salt-run fleet.sbom`` gives the same document from the inventory it stored.

    format
        ``cyclonedx-json`` (default; returned as data) or ``cyclonedx-xml`` (returned as
        text).
    validate
        Check the document against the CycloneDX 1.6 schema first (default ``False``).

    CLI Example:

    .. code-block:: bash

        salt web-01 fleet.sbom --out=json > web-01.cdx.json
        salt-call fleet.sbom format=cyclonedx-xml
    """
    try:
        fmt = core_sbom.check_format(format)
        grains = {"fleet": __grains__.get("fleet")}
        text, _count = core_sbom.node_document(__opts__["id"], inventory(), grains, fmt=fmt)
        if salt.utils.data.is_true(validate):
            core_sbom.validate(text, fmt)
    except core_sbom.SbomError as exc:
        raise CommandExecutionError(f"fleet.sbom: {exc}") from exc
    return salt.utils.json.loads(text) if fmt == "cyclonedx-json" else text


def stamp_paths() -> list:
    """
    Return the paths whose modification times change when this node's packages change.

    Used by the ``fleet_pkgset`` beacon, which stats them on every run and only runs
    ``fleet.inventory`` when one of them changed: the package database of the node's
    ecosystem (``/var/lib/dpkg/status``, ``/var/lib/rpm``, ...), Homebrew's ``Cellar`` and
    ``Caskroom`` (and each formula/cask folder in them), the site-packages folders of each
    ``fleet:inventory:pip`` interpreter (and the interpreter itself, which moves when a
    virtualenv is rebuilt), and the Nix system and user profile links. The package database
    paths and the interpreters are listed even when missing: the beacon treats "missing" as
    a value like any other, so a path appearing is a change too.

    CLI Example:

    .. code-block:: bash

        salt '*' fleet.stamp_paths
    """
    problems: list = []
    ecosystem = core.ecosystem_for(__grains__.get("os_family"), problems)
    paths = list(core.PACKAGE_DB_STAMPS.get(ecosystem, ()))
    if ecosystem == "brew" or salt.utils.path.which("brew"):
        paths.extend(_brew_stamp_paths())
    if salt.utils.path.which("nix-store") or salt.utils.path.which("nix-env"):
        home = os.path.expanduser("~")
        candidates = list(core.NIX_PROFILE_STAMPS)
        candidates += [os.path.join(home, rel) for rel in core.NIX_HOME_PROFILE_STAMPS]
        paths.extend(p for p in candidates if os.path.lexists(p))
    cache = __context__.setdefault(_SITE_DIRS_CONTEXT, {})
    for interpreter in _pip_config(problems):
        paths.append(interpreter)
        if interpreter not in cache:
            listing = _run_pip_script(interpreter, problems, paths_only=True)
            if listing is not None:
                cache[interpreter] = listing["site_dirs"]
        paths.extend(cache.get(interpreter, ()))
    return sorted(set(paths))


def started() -> dict:
    """
    Return when this salt-minion process started: ``{"started": <unix time>, "pid": <pid>}``.

    The master's onboarding asks this to confirm a ``salt/minion/<id>/start`` event (which
    another minion could have fired): it sets the node up again only when the minion that
    answers, under its own authenticated id, started after its last onboarding.

    CLI Example:

    .. code-block:: bash

        salt '*' fleet.started
    """
    proc = psutil.Process()
    if __opts__.get("multiprocessing", True):
        # the job runs in a process of its own, forked by the minion's process
        parent = proc.parent()
        if parent is not None:
            proc = parent
    return {"started": proc.create_time(), "pid": proc.pid}


# --------------------------------------------------------------------------------------------
# Helpers: commands
# --------------------------------------------------------------------------------------------


def _run(cmd: list, what: str, problems: list, timeout: int = COMMAND_TIMEOUT):
    """Run ``cmd`` without a shell; ``(succeeded, stdout)``, problems recorded."""
    try:
        ret = __salt__["cmd.run_all"](
            cmd,
            python_shell=False,
            output_loglevel="quiet",
            ignore_retcode=True,
            # The interpreter's cwd is on sys.path for "-c" scripts on old Pythons: keep it
            # somewhere that holds no distributions.
            cwd="/",
            timeout=timeout,
        )
    except Exception as exc:  # noqa: BLE001 - any failure of pip is reported in problems
        note(problems, f"{what}: {type(exc).__name__}: {short(str(exc), what)}")
        return False, None
    if not isinstance(ret, dict):
        note(problems, f"{what}: cmd.run_all returned {type(ret).__name__}, not a dict")
        return False, None
    retcode = ret.get("retcode")
    if retcode != 0:
        stderr = short(ret.get("stderr"), f"{what} stderr") or ""
        note(problems, f"{what}: exited with {short(retcode, what)}: {stderr[:300]}")
        return False, ret.get("stdout")
    return True, ret.get("stdout")


def _merge(packages: dict, more: dict) -> None:
    for eco, table in more.items():
        target = packages.setdefault(eco, {})
        for name, version in table.items():
            core.add_version(target, name, version)


# --------------------------------------------------------------------------------------------
# Helpers: the parts of the inventory
# --------------------------------------------------------------------------------------------


def _os_packages(ecosystem: str, problems: list) -> dict:
    """Salt's ``pkg.list_pkgs`` as ``{ecosystem: {name: version}}``."""
    if "pkg.list_pkgs" not in __salt__:
        # NixOS and other systems without a Salt pkg provider: the other sources still count.
        log.debug("fleet.inventory: no pkg provider loaded; skipping pkg.list_pkgs")
        return {}
    try:
        # use_context=False: the providers cache the list in __context__, which would hide
        # changes from a long-running minion (see salt/modules/aptpkg.py list_pkgs).
        raw = __salt__["pkg.list_pkgs"](use_context=False)
    except Exception as exc:  # noqa: BLE001 - a provider's failure is reported in problems
        note(problems, f"pkg.list_pkgs: {type(exc).__name__}: {short(str(exc), 'pkg.list_pkgs')}")
        return {}
    return core.normalise_pkg_list(ecosystem, raw, problems)


def _source_packages(ecosystem: str, problems: list) -> dict:
    """``{"deb"|"rpm": {binary: {name, version}}}`` from dpkg-query or rpm."""
    if ecosystem == "deb" and salt.utils.path.which("dpkg-query"):
        _, out = _run(core.DEB_SOURCES_CMD, "dpkg-query", problems)
        return {"deb": core.parse_deb_sources(out, problems)}
    if ecosystem == "rpm" and salt.utils.path.which("rpm"):
        _, out = _run(core.RPM_SOURCES_CMD, "rpm -qa", problems)
        return {"rpm": core.parse_rpm_sources(out, problems)}
    return {}


def _pip_config(problems: list) -> list:
    try:
        value = __salt__["config.get"]("fleet:inventory:pip", [])
    except Exception as exc:  # noqa: BLE001 - a bad option is reported in problems
        note(problems, f"option fleet:inventory:pip: could not be read: {type(exc).__name__}")
        return []
    return core.pip_interpreters(value, problems)


def _run_pip_script(interpreter: str, problems: list, paths_only: bool = False):
    """The parsed listing of one interpreter, or ``None`` when it could not run."""
    what = f"python {interpreter}"
    if not (os.path.isfile(interpreter) and os.access(interpreter, os.X_OK)):
        note(problems, f"{what}: not an executable file")
        return None
    cmd = [interpreter, "-I", "-c", core.PIP_SCRIPT]
    if paths_only:
        cmd.append("--paths-only")
    ok, out = _run(cmd, what, problems, timeout=PIP_TIMEOUT)
    if not ok and not out:
        return None
    return core.parse_pip_listing(out, problems, interpreter=interpreter)


def _pip_listings(interpreters: list, problems: list) -> tuple:
    """``({name: version} over all interpreters, {interpreter: python version})``."""
    packages: dict = {}
    pythons: dict = {}
    cache = __context__.setdefault(_SITE_DIRS_CONTEXT, {})
    for interpreter in interpreters:
        listing = _run_pip_script(interpreter, problems)
        if listing is None:
            continue
        cache[interpreter] = listing["site_dirs"]
        if listing["python"]:
            pythons[interpreter] = listing["python"]
        for name, version in listing["packages"].items():
            core.add_version(packages, name, version)
    return packages, pythons


def _nix_packages(problems: list) -> dict:
    """NixOS system packages plus the minion user's Nix profile, ``{name: version}``."""
    packages: dict = {}
    if os.path.exists(core.NIX_SYSTEM_SW) and salt.utils.path.which("nix-store"):
        cmd = ["nix-store", "-q", "--references", core.NIX_SYSTEM_SW]
        _, out = _run(cmd, "nix-store", problems)
        _merge(packages, {"nix": core.parse_nix_store_paths(out, problems)})
    # The minion user's profile: nix-env reads profiles it made (manifest.nix) and refuses
    # those made by "nix profile" (manifest.json), which "nix profile list" reads. Try both;
    # report failures only when neither could read the profile.
    user: dict | None = None
    failures: list = []
    if salt.utils.path.which("nix-env"):
        cmd = ["nix-env", "-q", "--installed", "--json", "--out-path"]
        ok, out = _run(cmd, "nix-env", failures)
        if ok:
            user = core.parse_nix_env_json(out, problems)
    if user is None and salt.utils.path.which("nix"):
        cmd = ["nix", "--extra-experimental-features", "nix-command flakes"]
        ok, out = _run(cmd + ["profile", "list", "--json"], "nix profile list", failures)
        if ok:
            user = core.parse_nix_profile_json(out, problems)
    if user is None:
        problems.extend(failures)
    if user:
        _merge(packages, {"nix": user})
    return packages.get("nix", {})


def _facts(pythons: dict, problems: list) -> dict:
    facts: dict = {}
    for grain in FACT_GRAINS:
        value = __grains__.get(grain)
        facts[grain] = short(value, f"grain {grain}", problems)
    facts["pip_python"] = dict(pythons)
    xcode = _xcode_fact(__grains__.get("fleet"))
    if xcode:
        facts["xcode"] = xcode
    return facts


def _xcode_fact(fleet_grain) -> str | None:
    """The selected Xcode's version (else every installed version, comma-joined) on macOS."""
    macos = fleet_grain.get("macos") if isinstance(fleet_grain, dict) else None
    xcodes = macos.get("xcode") if isinstance(macos, dict) else None
    if not isinstance(xcodes, list):
        return None
    found = [x for x in xcodes if isinstance(x, dict) and isinstance(x.get("version"), str)]
    selected = [x["version"] for x in found if x.get("selected") is True]
    if selected:
        return selected[0]
    return ",".join(sorted({x["version"] for x in found})) or None


def _brew_stamp_paths() -> list:
    """Cellar/Caskroom and the folder of each formula and cask in them.

    An upgrade adds a version folder inside ``Cellar/<formula>``, which moves that folder's
    mtime but not Cellar's: both levels are needed.
    """
    paths = []
    for prefix in core.BREW_PREFIXES:
        for sub in ("Cellar", "Caskroom"):
            top = os.path.join(prefix, sub)
            if not os.path.isdir(top):
                continue
            paths.append(top)
            try:
                paths.extend(os.path.join(top, entry) for entry in os.listdir(top))
            except OSError as exc:
                log.debug("fleet.stamp_paths: cannot list %s: %s", top, exc)
    return paths
