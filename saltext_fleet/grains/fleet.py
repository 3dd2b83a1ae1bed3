"""
Fleet facts about this host, reported as one ``fleet`` grain.

The master's inventory, drift and the web UI read this grain to know what a node is: its
hardware model, CPU count, memory, disk capacity, primary IPv4 address and display name, its
operating system, and on build hosts the tooling that decides what they can build:

* **macOS**: every installed Xcode (version, build, and which one ``xcode-select`` points
  at) and the code-signing identities in the keychains with their certificate expiry.
* **NixOS**: the current system generation and the nixpkgs revision and NixOS version it was
  built from.

Shape of the grain (``salt-call grains.get fleet``):

.. code-block:: yaml

    fleet:
      hardware_model: Macmini9,1
      cpu_cores: 8
      ram_gib: 16.0
      storage_gib: 460.4
      ipv4: 192.0.2.10
      hostname: mini-07
      os: MacOS
      os_family: MacOS
      os_version: 14.4.1
      kernel: Darwin
      kernel_release: 23.4.0
      arch: arm64
      macos:
        xcode:
          - {path: /Applications/Xcode-15.4.app, version: "15.4", build: 15F31d, selected: false}
        signing_identities:
          - sha1: 0123...
            name: "Apple Development: Jane Doe (ABCDE12345)"
            team_id: 7XQ3K9LM2P
            status: valid
            not_after: "2030-06-30T23:59:59Z"
            days_left: 1500
      errors: ["..."]     # only when something could not be read

What it reads
-------------

The core grains Salt gathered before it (``productname``/``model``, ``num_cpus``,
``mem_total``, ``ip4_interfaces``, ``host``/``fqdn``/``id``, ``os``, ``os_family``,
``osrelease``, ``kernel``, ``kernelrelease``, ``cpuarch``), ``/proc/net/route`` and
``/sys/block`` on Linux, and on macOS ``mdfind``, ``/Applications/Xcode*.app``,
``<Xcode>/Contents/version.plist`` (``xcodebuild -version`` as fallback), ``xcode-select -p``,
``route -n get default``, ``security find-identity -v -p codesigning`` and
``security find-certificate -a -Z -p``. On NixOS it reads the ``/nix/var/nix/profiles/system``
link, ``nixos-version --json`` and ``/run/current-system/nixos-version``.

Every command runs without a shell, with ``LC_ALL=C`` and a timeout of a few seconds. A missing
command, a timeout or unreadable output is listed under ``errors`` and never stops the other
facts from being reported; the grain never raises.

Configuration
-------------

salt-minion usually runs as root, whose keychain search list does not include the build
user's login keychain. Name the keychains to search in the minion config (read through
:mod:`saltext_fleet.config`; a bad value is listed under ``errors`` and the default search
list is used):

.. code-block:: yaml

    fleet:
      grains:
        keychains:
          - /Users/ci/Library/Keychains/login.keychain-db

Without it the default search list of the minion's user is used.

Requirements
------------

Nothing beyond Salt on Linux. Certificate expiry on macOS needs the ``cryptography`` package
(a dependency of saltext-fleet); without it identities are listed without expiry.
"""

from __future__ import annotations

import glob
import logging
import os
import subprocess
from collections.abc import Mapping, MutableMapping

import salt.utils.platform

from saltext_fleet import config
from saltext_fleet.core import hostinfo
from saltext_fleet.core.text import MAX_OUTPUT_BYTES, as_text, note, short

log = logging.getLogger(__name__)

__virtualname__ = "fleet"

#: Seconds a command may take. Grains run at minion start and on every refresh: a hung
#: ``mdfind`` or ``security`` must cost seconds, not the minion's start-up.
COMMAND_TIMEOUT = 5

#: Most errors kept in the grain; the rest are counted (the log has them all).
MAX_ERRORS = 50

#: Most Xcode bundles examined; a build host has a handful.
MAX_XCODES = 32

MDFIND = "/usr/bin/mdfind"
XCODE_SELECT = "/usr/bin/xcode-select"
XCODEBUILD = "/usr/bin/xcodebuild"
SECURITY = "/usr/bin/security"
ROUTE = "/sbin/route"
NIXOS_VERSION = "/run/current-system/sw/bin/nixos-version"
NIXOS_SYSTEM_PROFILE = "/nix/var/nix/profiles/system"
NIXOS_VERSION_FILE = "/run/current-system/nixos-version"

_FACT_KEYS = (
    "hardware_model",
    "cpu_cores",
    "ram_gib",
    "storage_gib",
    "ipv4",
    "hostname",
    "os",
    "os_family",
    "os_version",
    "kernel",
    "kernel_release",
    "arch",
)


def __virtual__():
    # A proxy minion's grains describe the device it fronts (a PiKVM), not the host it runs on.
    if salt.utils.platform.is_proxy():
        return (False, "fleet grains describe a real host; not loaded on proxy minions")
    return __virtualname__


def fleet(grains: dict | None = None) -> dict:
    """Return ``{"fleet": {...}}``: the host facts described in the module docstring.

    Salt passes the core grains gathered so far as ``grains``. The function never raises: a
    section that fails is logged, named under ``errors``, and the other sections still report.

    CLI Example:

    .. code-block:: bash

        salt '*' grains.get fleet
        salt-call grains.item fleet
    """
    problems: list[str] = []
    facts: dict = dict.fromkeys(_FACT_KEYS)
    try:
        if not isinstance(grains, dict):
            if grains is not None:
                note(problems, f"core grains: expected a mapping, got {type(grains).__name__}")
            grains = {}
        _section("core grains", _core_facts, grains, facts, problems)
        _section("ipv4", _ipv4_fact, grains, facts, problems)
        _section("hostname", _hostname_fact, grains, facts, problems)
        _section("storage", _storage_fact, grains, facts, problems)
        if _is_macos(grains):
            facts["macos"] = {"xcode": [], "signing_identities": []}
            _section("xcode", _xcode_facts, grains, facts, problems)
            _section("signing identities", _signing_facts, grains, facts, problems)
        if _is_nixos(grains):
            facts["nixos"] = {"generation": None, "nixpkgs_revision": None, "nixos_version": None}
            _section("nixos", _nixos_facts, grains, facts, problems)
    except Exception as exc:  # last line of defence: the grain must never raise
        log.exception("saltext-fleet: the fleet grain failed")
        problems.append(f"fleet grain: unexpected {type(exc).__name__}; see the minion log")
    if problems:
        facts["errors"] = problems[:MAX_ERRORS]
        if len(problems) > MAX_ERRORS:
            facts["errors"].append(f"... and {len(problems) - MAX_ERRORS} more (see the log)")
    return {"fleet": facts}


# --------------------------------------------------------------------------------------------
# Sections: each fills its part of ``facts`` and may fail alone.
# --------------------------------------------------------------------------------------------


def _section(name, func, grains, facts, problems) -> None:
    try:
        func(grains, facts, problems)
    except Exception as exc:
        log.exception("saltext-fleet: the %s facts failed", name)
        problems.append(f"{name}: unexpected {type(exc).__name__}; see the minion log")


def _core_facts(grains: dict, facts: dict, problems: list) -> None:
    facts["hardware_model"] = short(
        grains.get("productname"), "productname grain", problems
    ) or short(grains.get("model"), "model grain", problems)
    facts["cpu_cores"] = hostinfo.count_value(grains.get("num_cpus"), "num_cpus grain", problems)
    facts["ram_gib"] = hostinfo.mib_to_gib(grains.get("mem_total"), "mem_total grain", problems)
    facts["os"] = short(grains.get("os"), "os grain", problems)
    facts["os_family"] = short(grains.get("os_family"), "os_family grain", problems)
    facts["os_version"] = short(grains.get("osrelease"), "osrelease grain", problems)
    facts["kernel"] = short(grains.get("kernel"), "kernel grain", problems)
    facts["kernel_release"] = short(grains.get("kernelrelease"), "kernelrelease grain", problems)
    facts["arch"] = short(grains.get("cpuarch"), "cpuarch grain", problems)


def _ipv4_fact(grains: dict, facts: dict, problems: list) -> None:
    default_iface = None
    if _is_macos(grains):
        default_iface = hostinfo.parse_route_get_default(
            _run([ROUTE, "-n", "get", "default"], problems), problems
        )
    elif grains.get("kernel") == "Linux" or os.path.exists("/proc/net/route"):
        default_iface = hostinfo.default_route_iface(
            _read("/proc/net/route", problems, missing_ok=True), problems
        )
    facts["ipv4"] = hostinfo.primary_ipv4(grains.get("ip4_interfaces"), default_iface, problems)


def _hostname_fact(grains: dict, facts: dict, problems: list) -> None:
    minion_id = grains.get("id")
    if minion_id is None:
        minion_id = _opts().get("id")
    facts["hostname"] = hostinfo.pick_hostname(
        grains.get("host"), grains.get("fqdn"), minion_id, problems
    )


def _storage_fact(grains: dict, facts: dict, problems: list) -> None:
    if _is_macos(grains):
        # No /sys/block on macOS; the root volume's APFS container is the disk's capacity.
        facts["storage_gib"] = hostinfo.filesystem_total_gib("/", problems)
    else:
        facts["storage_gib"] = hostinfo.storage_gib("/sys/block", "/", problems)


def _xcode_facts(grains: dict, facts: dict, problems: list) -> None:
    spotlight = hostinfo.parse_app_paths(
        _run([MDFIND, "kMDItemCFBundleIdentifier == 'com.apple.dt.Xcode'"], problems),
        "mdfind",
        problems,
    )
    # Spotlight misses bundles when indexing is off (common on build hosts), hence the glob.
    paths = hostinfo.merge_app_paths(
        spotlight, glob.glob("/Applications/Xcode*.app"), resolve=os.path.realpath
    )
    if len(paths) > MAX_XCODES:
        note(problems, f"xcode: {len(paths)} bundles found, only {MAX_XCODES} examined")
        paths = paths[:MAX_XCODES]
    selected = hostinfo.developer_dir_app(_run([XCODE_SELECT, "-p"], problems), problems)
    apps = [(path, *_xcode_version(path, problems)) for path in paths]
    facts["macos"]["xcode"] = hostinfo.xcode_inventory(apps, selected, resolve=os.path.realpath)


def _xcode_version(app: str, problems: list) -> tuple[str | None, str | None]:
    """``(version, build)`` of one bundle: its version.plist, else ``xcodebuild -version``.

    Problems of the first try are kept only when the second also fails: a working fallback
    has lost nothing worth an error.
    """
    plist_problems: list[str] = []
    data = _read(os.path.join(app, "Contents", "version.plist"), plist_problems)
    version, build = hostinfo.parse_xcode_version_plist(data, plist_problems)
    if version and build:
        return version, build
    command_problems: list[str] = []
    output = _run(
        [XCODEBUILD, "-version"],
        command_problems,
        env={"DEVELOPER_DIR": os.path.join(app, "Contents", "Developer")},
    )
    if output is not None:
        cmd_version, cmd_build = hostinfo.parse_xcodebuild_version(output, command_problems)
        if cmd_version and cmd_build:
            return cmd_version, cmd_build
        version, build = version or cmd_version, build or cmd_build
    problems.extend(f"{app}: {problem}" for problem in plist_problems + command_problems)
    return version, build


def _signing_facts(grains: dict, facts: dict, problems: list) -> None:
    keychains = _configured_keychains(problems)
    identities = hostinfo.parse_find_identity(
        _run([SECURITY, "find-identity", "-v", "-p", "codesigning", *keychains], problems),
        problems,
    )
    if not identities:
        return
    # Only asked when there is something to match: the full certificate dump is the slow part.
    certificates = _run([SECURITY, "find-certificate", "-a", "-Z", "-p", *keychains], problems)
    facts["macos"]["signing_identities"] = hostinfo.identities_with_expiry(
        identities, certificates, problems=problems
    )


def _nixos_facts(grains: dict, facts: dict, problems: list) -> None:
    version_json = _run([NIXOS_VERSION, "--json"], problems)
    version_file = _read(NIXOS_VERSION_FILE, problems, missing_ok=True)
    facts["nixos"] = hostinfo.nixos_facts(
        _readlink(NIXOS_SYSTEM_PROFILE, problems), version_json, version_file, problems
    )


# --------------------------------------------------------------------------------------------
# Platform tests and configuration
# --------------------------------------------------------------------------------------------


def _is_macos(grains: dict) -> bool:
    return grains.get("kernel") == "Darwin" or grains.get("os") == "MacOS"


def _is_nixos(grains: dict) -> bool:
    return "NixOS" in (grains.get("os"), grains.get("os_family")) or os.path.exists("/etc/NIXOS")


def _opts() -> Mapping:
    # Salt injects __opts__ at load time (a dict, or a loader context proxy that acts as one);
    # loaded as a plain module, as in the unit tests, there is none.
    opts = globals().get("__opts__")
    return opts if opts is not None and hasattr(opts, "get") else {}


def _context() -> MutableMapping | None:
    # __context__ as Salt's loader injects it; None loaded as a plain module
    context = globals().get("__context__")
    return context if context is not None and hasattr(context, "get") else None


def _configured_keychains(problems: list) -> list[str]:
    """``fleet:grains:keychains`` through :mod:`saltext_fleet.config`; bad config is an error."""
    try:
        return list(config.cached(_opts(), _context()).grains.keychains)
    except config.FleetConfigError as exc:
        note(problems, f"{exc}; searching the default keychains")
        return []


# --------------------------------------------------------------------------------------------
# The only places that touch the host. Tests replace these three.
# --------------------------------------------------------------------------------------------


def _run(
    argv: list[str], problems: list, env: dict | None = None, timeout: float = COMMAND_TIMEOUT
) -> bytes | None:
    """Run ``argv`` (never through a shell) and return its stdout bytes, or ``None``.

    A missing binary, a timeout or a non-zero exit status is recorded in ``problems``. The
    environment is the minion's with ``LC_ALL=C`` (stable, parseable output) and without a
    stray ``DEVELOPER_DIR`` (it would override ``xcode-select``), plus ``env``.
    """
    what = " ".join(argv[:2])
    run_env = {key: value for key, value in os.environ.items() if key != "DEVELOPER_DIR"}
    run_env.update({"LC_ALL": "C", "LANG": "C"})
    run_env.update(env or {})
    try:
        completed = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            env=run_env,
            check=False,
        )
    except FileNotFoundError:
        note(problems, f"{argv[0]}: not installed")
        return None
    except subprocess.TimeoutExpired:
        note(problems, f"{what}: no answer within {timeout} s")
        return None
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        note(problems, f"{what}: could not run ({exc})")
        return None
    if completed.returncode != 0:
        detail = as_text(completed.stderr, what, limit=300).strip().splitlines()
        note(
            problems,
            f"{what}: exit status {completed.returncode}" + (f": {detail[0]}" if detail else ""),
        )
        return None
    return completed.stdout


def _read(path: str, problems: list, missing_ok: bool = False) -> bytes | None:
    """The first :data:`MAX_OUTPUT_BYTES` of a file, or ``None`` (recorded unless missing_ok)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_OUTPUT_BYTES + 1)
    except FileNotFoundError:
        if not missing_ok:
            note(problems, f"{path}: missing")
        return None
    except OSError as exc:
        note(problems, f"{path}: cannot read ({exc.strerror or exc})")
        return None
    if len(data) > MAX_OUTPUT_BYTES:
        note(problems, f"{path}: longer than {MAX_OUTPUT_BYTES} bytes; truncated")
        data = data[:MAX_OUTPUT_BYTES]
    return data


def _readlink(path: str, problems: list) -> str | None:
    """Where the symlink ``path`` points, or ``None`` (recorded)."""
    try:
        return os.readlink(path)
    except FileNotFoundError:
        note(problems, f"{path}: missing")
    except OSError as exc:
        note(problems, f"{path}: not a readable link ({exc.strerror or exc})")
    return None
