"""Host facts for the ``fleet`` grain: parse what the host says, decide what to report.

Everything here is free of Salt so it can be tested without a minion. Most functions are pure:
they take the raw text a command or file produced and return plain values. A few small readers
(:func:`read_block_devices`, :func:`filesystem_total_gib`, :func:`storage_gib`) touch the
filesystem, take the path they read as an argument (so tests point them at a temporary folder)
and never raise.

Input is hostile until checked (see ``DESIGN.md``): every parser accepts ``None``, the wrong
type, non-UTF-8 bytes or megabytes of junk, returns whatever good part it can find, and appends
a sentence naming the problem to the ``problems`` list it is given (through
:mod:`saltext_fleet.core.text`). Nothing here raises on bad input.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import os
import plistlib
import re
import shutil
from collections.abc import Callable, Iterable, Mapping

from saltext_fleet.core.text import MAX_VALUE_CHARS, as_text, note, short

#: Interfaces that are never the host's address as the fleet sees it.
LOOPBACK_INTERFACES = frozenset({"lo", "lo0"})

#: Address prefixes skipped even when an interface reports them (loopback, link-local, and
#: IPv6 forms that sometimes leak into ``ip4_interfaces`` on odd platforms).
SKIPPED_ADDRESS_PREFIXES = ("127.", "169.254.", "::1", "fe80")

#: Reverse-DNS names: a host whose resolver returns these has no real name in DNS.
REVERSE_DNS_SUFFIXES = (".ip6.arpa", ".in-addr.arpa")

#: /sys/block names that are never a physical disk. Most of these also live under
#: /sys/devices/virtual/ (checked separately); the names catch the ones that do not, such as
#: optical drives (``sr``) and floppies (``fd``), and sysfs trees that cannot be resolved.
NON_DISK_PREFIXES = ("loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd", "zd", "drbd")

#: eMMC boot and RPMB areas show up in /sys/block next to their disk but are part of it.
_EMMC_AREA = re.compile(r"^mmcblk\d+(boot\d+|rpmb)$")

#: Most entries we look at in /sys/block; a real host has tens, not thousands.
MAX_BLOCK_DEVICES = 1024

#: ``size`` in /sys/block is always counted in 512-byte sectors, whatever the logical block size.
SECTOR_BYTES = 512

GIB = 1024**3

#: Longest ``nixos-version --json`` output decoded.
MAX_NIXOS_VERSION_JSON = 64 * 1024

_SHA1_HEX = re.compile(r"^[0-9A-F]{40}$")
_TEAM_ID = re.compile(r"^[A-Z0-9]{10}$")


#: Problems of one kind reported in full by one parse; the rest are only counted, so a
#: megabyte of bad lines costs one log line, not a hundred thousand.
MAX_NOTES_PER_KIND = 5

#: Most identities read from ``security find-identity``; a build host has a handful.
MAX_IDENTITIES = 256


class _Notes:
    """Report the first :data:`MAX_NOTES_PER_KIND` problems of a repeated kind, count the rest."""

    def __init__(self, problems: list | None, what: str):
        self.problems = problems
        self.what = what
        self.count = 0

    def __call__(self, message: str) -> None:
        self.count += 1
        if self.count <= MAX_NOTES_PER_KIND:
            note(self.problems, message)

    def done(self) -> None:
        hidden = self.count - MAX_NOTES_PER_KIND
        if hidden > 0:
            note(self.problems, f"{self.what}: {hidden} more problems like these not listed")


def _small_text(value, limit: int = 128) -> str | None:
    """A short scalar as text without logging (for per-item use); ``None`` if not a scalar."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value[: limit * 4]).decode("utf-8", errors="replace")[:limit]
    if isinstance(value, str):
        return value[:limit]
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


# --------------------------------------------------------------------------------------------
# Network and name
# --------------------------------------------------------------------------------------------


def _usable_ipv4(address, iface: str, notes: _Notes) -> str | None:
    """``address`` as a dotted quad if the fleet should report it, else ``None``."""
    if address is None:
        return None
    text = _small_text(address, 64)
    if text is None:
        notes(f"ip4_interfaces[{iface}]: an address of type {type(address).__name__}; skipped")
        return None
    text = text.strip()
    if not text or text.lower().startswith(SKIPPED_ADDRESS_PREFIXES):
        return None
    try:
        parsed = ipaddress.IPv4Address(text)
    except ValueError:
        notes(f"ip4_interfaces[{iface}]: {text[:64]!r} is not an IPv4 address; skipped")
        return None
    if parsed.is_loopback or parsed.is_link_local or parsed.is_unspecified or parsed.is_multicast:
        return None
    return str(parsed)


def primary_ipv4(
    ip4_interfaces: dict, default_iface: str | None = None, problems: list | None = None
) -> str | None:
    """The address the fleet should know this host by, or ``None``.

    ``ip4_interfaces`` is Salt's grain of the same name (``{"eth0": ["192.0.2.2"], ...}``).
    Loopback interfaces and loopback/link-local addresses are skipped. The interface carrying
    the default route wins when given (it is the one other hosts reach us through); otherwise
    interfaces are tried in sorted order so the answer is stable between runs.
    """
    if ip4_interfaces is None:
        return None
    if not isinstance(ip4_interfaces, Mapping):
        note(problems, f"ip4_interfaces: expected a mapping, got {type(ip4_interfaces).__name__}")
        return None
    notes = _Notes(problems, "ip4_interfaces")
    try:
        return _primary_ipv4(ip4_interfaces, default_iface, notes)
    finally:
        notes.done()


def _primary_ipv4(ip4_interfaces: Mapping, default_iface, notes: _Notes) -> str | None:
    names = []
    for name in ip4_interfaces:
        if isinstance(name, str) and name:
            names.append(name)
        else:
            notes(f"ip4_interfaces: interface name {str(name)[:64]!r} is not text; skipped")
    order = sorted(names)
    if isinstance(default_iface, str) and default_iface in ip4_interfaces:
        order.remove(default_iface)
        order.insert(0, default_iface)
    for name in order:
        if name in LOOPBACK_INTERFACES:
            continue
        addresses = ip4_interfaces[name]
        if isinstance(addresses, (str, bytes)):
            # A lone string is a common shape mistake; accept it rather than iterate characters.
            addresses = [addresses]
        elif not isinstance(addresses, (list, tuple)):
            notes(f"ip4_interfaces[{name[:64]}]: expected a list of addresses")
            continue
        for address in addresses:
            usable = _usable_ipv4(address, name[:64], notes)
            if usable:
                return usable
    return None


def is_reverse_dns_name(name) -> bool:
    """True when ``name`` is a PTR-style artefact (``4.3.2.1.in-addr.arpa``), not a host name."""
    if not isinstance(name, str):
        return False
    return name.strip().rstrip(".").lower().endswith(REVERSE_DNS_SUFFIXES)


def pick_hostname(host, fqdn, minion_id, problems: list | None = None) -> str | None:
    """The name to show for this host: ``host`` grain, else ``fqdn``, else the minion id.

    The ``fqdn`` is skipped when it is a reverse-DNS artefact (``...in-addr.arpa`` or
    ``...ip6.arpa``, any case, trailing dot tolerated): a resolver without a real name returns
    those. Salt derives ``host`` from ``fqdn``, so in that case a ``host`` that is just the
    first label of the artefact (``"4"`` from ``4.3.2.1.in-addr.arpa``) is skipped too.
    """
    host_text = short(host, "host grain", problems)
    fqdn_text = short(fqdn, "fqdn grain", problems)
    fqdn_is_artefact = is_reverse_dns_name(fqdn_text)
    if host_text:
        derived_from_artefact = fqdn_is_artefact and fqdn_text.split(".", 1)[0] == host_text
        if not derived_from_artefact and not is_reverse_dns_name(host_text):
            return host_text
    if fqdn_text and not fqdn_is_artefact:
        return fqdn_text.rstrip(".")
    return short(minion_id, "minion id", problems)


def default_route_iface(route_text, problems: list | None = None) -> str | None:
    """The interface of the default IPv4 route, from the text of ``/proc/net/route``.

    A default route has destination and mask ``00000000`` and the ``RTF_UP`` flag. With several
    (multi-homed hosts) the lowest metric wins, as in the kernel.
    """
    text = as_text(route_text, "/proc/net/route", problems)
    best: tuple[int, str] | None = None
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8 or fields[0] == "Iface":
            continue
        iface, destination, flags, metric, mask = (
            fields[0],
            fields[1],
            fields[3],
            fields[6],
            fields[7],
        )
        try:
            is_up = int(flags, 16) & 0x1
            metric_value = int(metric)
        except ValueError:
            continue
        if destination == "00000000" and mask == "00000000" and is_up:
            if best is None or metric_value < best[0]:
                best = (metric_value, iface[:64])
    return best[1] if best else None


# --------------------------------------------------------------------------------------------
# Storage (Linux)
# --------------------------------------------------------------------------------------------


def _flag(value) -> bool:
    """A sysfs 0/1 attribute as a bool; anything unreadable counts as unset."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value[:16]).decode("ascii", errors="replace")
    return isinstance(value, (str, int)) and str(value).strip() == "1"


def is_physical_disk(
    name: str, *, virtual: bool = False, removable: bool = False, hidden: bool = False
) -> bool:
    """Whether a /sys/block entry counts towards the host's storage.

    Counted: whole physical disks (``sd*``, ``nvme*n*``, ``vd*``, ``xvd*``, ``mmcblk*``...).
    Not counted: anything under /sys/devices/virtual (loop, ram, zram, device-mapper, md RAID:
    they sit on top of disks already counted, or hold no data), optical and floppy drives,
    network block devices, eMMC boot/RPMB areas, hidden NVMe multipath legs (``nvme0c0n1``)
    and removable media (a USB stick plugged in should not change the host's storage fact and
    trigger drift).
    """
    if not isinstance(name, str) or not name:
        return False
    if virtual or hidden or removable:
        return False
    if name.startswith(NON_DISK_PREFIXES):
        return False
    return not _EMMC_AREA.match(name)


def disk_total_gib(devices, problems: list | None = None) -> float | None:
    """Total GiB of the physical disks in ``devices``, or ``None`` when there are none.

    ``devices`` is what :func:`read_block_devices` returns: mappings with ``name``, ``size``
    (512-byte sectors, as text), ``removable``, ``hidden`` and ``virtual``.
    """
    if devices is None:
        return None
    if not isinstance(devices, (list, tuple)):
        note(problems, f"block devices: expected a list, got {type(devices).__name__}")
        return None
    notes = _Notes(problems, "block devices")
    total_bytes = 0
    counted = 0
    for device in devices[:MAX_BLOCK_DEVICES]:
        if not isinstance(device, Mapping):
            notes("block devices: an entry is not a mapping; skipped")
            continue
        name = _small_text(device.get("name"), 64)
        if name is None and device.get("name") is not None:
            notes(f"block devices: a name of type {type(device.get('name')).__name__}; skipped")
        if not name or not is_physical_disk(
            name,
            virtual=bool(device.get("virtual")),
            removable=_flag(device.get("removable")),
            hidden=_flag(device.get("hidden")),
        ):
            continue
        size_text = _small_text(device.get("size"), 64)
        try:
            sectors = int((size_text or "").strip())
        except ValueError:
            notes(f"/sys/block/{name}/size: {size_text!r:.64} is not a number; skipped")
            continue
        if sectors <= 0:
            continue  # an empty card reader or a drive without media
        total_bytes += sectors * SECTOR_BYTES
        counted += 1
    notes.done()
    if not counted:
        return None
    return round(total_bytes / GIB, 1)


def _read_small(path: str, limit: int = 64) -> str | None:
    try:
        with open(path, "rb") as handle:
            return handle.read(limit).decode("ascii", errors="replace")
    except OSError:
        return None


def read_block_devices(sys_block: str = "/sys/block", problems: list | None = None) -> list:
    """Describe each entry of ``sys_block`` (reads the filesystem; never raises).

    Returns ``[{"name", "size", "removable", "hidden", "virtual"}, ...]`` for
    :func:`disk_total_gib`. A missing folder (macOS, containers) gives ``[]`` silently: the
    caller falls back to :func:`filesystem_total_gib`.
    """
    try:
        names = sorted(os.listdir(sys_block))
    except FileNotFoundError:
        return []
    except OSError as exc:
        note(problems, f"{sys_block}: cannot list ({exc.strerror or exc})")
        return []
    if len(names) > MAX_BLOCK_DEVICES:
        note(problems, f"{sys_block}: {len(names)} entries, only {MAX_BLOCK_DEVICES} read")
        names = names[:MAX_BLOCK_DEVICES]
    devices = []
    for name in names:
        entry = os.path.join(sys_block, name)
        try:
            real = os.path.realpath(entry)
        except (OSError, ValueError):
            real = entry
        devices.append(
            {
                "name": name,
                "size": _read_small(os.path.join(entry, "size")),
                "removable": _read_small(os.path.join(entry, "removable")),
                "hidden": _read_small(os.path.join(entry, "hidden")),
                "virtual": "/devices/virtual/" in real.replace(os.sep, "/"),
            }
        )
    return devices


def filesystem_total_gib(path: str = "/", problems: list | None = None) -> float | None:
    """Size in GiB of the filesystem holding ``path`` (the fallback when no disk is visible).

    ``shutil.disk_usage`` is ``statvfs`` (``f_blocks * f_frsize``) on POSIX and also works on
    Windows, so a Windows minion gets a number instead of an error.
    """
    try:
        total = shutil.disk_usage(path).total
    except (OSError, ValueError) as exc:
        note(problems, f"disk usage of {path}: {exc}")
        return None
    if total <= 0:
        return None
    return round(total / GIB, 1)


def storage_gib(
    sys_block: str = "/sys/block", root: str = "/", problems: list | None = None
) -> float | None:
    """Physical disk capacity from ``sys_block``, else the size of the ``root`` filesystem."""
    total = disk_total_gib(read_block_devices(sys_block, problems), problems)
    if total is not None:
        return total
    return filesystem_total_gib(root, problems)


# --------------------------------------------------------------------------------------------
# macOS: Xcode
# --------------------------------------------------------------------------------------------


def parse_app_paths(text, what: str = "mdfind", problems: list | None = None) -> list[str]:
    """Absolute ``*.app`` paths, one a line (``mdfind`` output), in order, without duplicates."""
    paths: list[str] = []
    notes = _Notes(problems, what)
    for line in as_text(text, what, problems).splitlines():
        path = line.strip()
        if not path:
            continue
        if not path.startswith("/") or not path.rstrip("/").endswith(".app") or "\x00" in path:
            notes(f"{what}: {path[:80]!r} is not an application path; skipped")
            continue
        path = path.rstrip("/")
        if "/.Trash" in path:
            continue  # Spotlight also indexes the Trash; a binned Xcode is not installed
        if len(path) > 1024:
            notes(f"{what}: a path of {len(path)} characters skipped")
            continue
        if path not in paths:
            paths.append(path)
    notes.done()
    return paths


def merge_app_paths(*lists: Iterable[str], resolve: Callable[[str], str] | None = None) -> list:
    """One sorted list of app bundles from several sources, each bundle once.

    ``resolve`` (``os.path.realpath`` in the grain) maps a symlink such as
    ``/Applications/Xcode.app -> Xcode-16.2.app`` to the bundle it points at, so one Xcode is
    not reported twice.
    """
    seen: set[str] = set()
    for paths in lists:
        for path in paths or ():
            if not isinstance(path, str):
                continue
            try:
                resolved = resolve(path) if resolve else path
            except (OSError, ValueError):
                resolved = path
            seen.add(resolved)
    return sorted(seen)


def parse_xcodebuild_version(text, problems: list | None = None) -> tuple[str | None, str | None]:
    """``(version, build)`` from ``xcodebuild -version`` (``Xcode 15.3`` / ``Build version 15E204a``).

    Anything else on stdout (license prompts, plugin warnings) is ignored; a missing part is
    reported as a problem and returned as ``None``.
    """
    version = build = None
    for line in as_text(text, "xcodebuild -version", problems).splitlines():
        line = line.strip()
        match = re.match(r"^Xcode\s+(\d+(?:\.\d+){0,3})\b", line)
        if match and version is None:
            version = match.group(1)
            continue
        match = re.match(r"^Build version\s+([0-9A-Za-z]{1,32})$", line)
        if match and build is None:
            build = match.group(1)
    if version is None:
        note(problems, "xcodebuild -version: no 'Xcode <version>' line")
    if build is None:
        note(problems, "xcodebuild -version: no 'Build version <build>' line")
    return version, build


def parse_xcode_version_plist(data, problems: list | None = None) -> tuple[str | None, str | None]:
    """``(version, build)`` from an Xcode bundle's ``Contents/version.plist``.

    Reading the plist needs no subprocess and works before the Xcode license is accepted (when
    ``xcodebuild`` refuses to run), so the grain tries it first.
    """
    if data is None:
        return None, None
    if not isinstance(data, (bytes, bytearray)):
        note(problems, f"version.plist: expected bytes, got {type(data).__name__}")
        return None, None
    try:
        plist = plistlib.loads(bytes(data))
    except Exception as exc:  # noqa: BLE001 - plistlib raises several unrelated types on junk
        note(problems, f"version.plist: not a property list ({type(exc).__name__})")
        return None, None
    if not isinstance(plist, dict):
        note(problems, "version.plist: top level is not a dictionary")
        return None, None
    version = short(plist.get("CFBundleShortVersionString"), "version.plist version", problems)
    build = short(plist.get("ProductBuildVersion"), "version.plist build", problems)
    return version, build


def developer_dir_app(text, problems: list | None = None) -> str | None:
    """The Xcode bundle selected by ``xcode-select -p``, or ``None``.

    ``/Applications/Xcode.app/Contents/Developer`` gives ``/Applications/Xcode.app``. The
    Command Line Tools (``/Library/Developer/CommandLineTools``) are not an Xcode: ``None``.
    """
    path = as_text(text, "xcode-select -p", problems).strip().rstrip("/")
    if not path:
        return None
    suffix = "/Contents/Developer"
    if path.endswith(suffix) and path[: -len(suffix)].endswith(".app"):
        return path[: -len(suffix)]
    return None


def xcode_inventory(
    apps: Iterable[tuple[str, str | None, str | None]],
    selected_app: str | None,
    resolve: Callable[[str], str] | None = None,
) -> list[dict]:
    """``[{"path", "version", "build", "selected"}, ...]`` sorted by path.

    ``apps`` holds ``(path, version, build)``; ``selected`` is true for the bundle
    ``xcode-select`` points at (compared after ``resolve``, so a symlinked selection matches).
    """

    def _resolved(path: str | None) -> str | None:
        if path is None or resolve is None:
            return path
        try:
            return resolve(path)
        except (OSError, ValueError):
            return path

    selected = _resolved(selected_app)
    inventory = []
    for path, version, build in sorted(apps, key=lambda item: item[0]):
        inventory.append(
            {
                "path": path,
                "version": version,
                "build": build,
                "selected": selected is not None and _resolved(path) == selected,
            }
        )
    return inventory


# --------------------------------------------------------------------------------------------
# macOS: code-signing identities
# --------------------------------------------------------------------------------------------

# `security find-identity` prints "%3d) <SHA-1> \"<label>\"" and, when trust evaluation
# failed, " (<CSSM error>)"; it ends with "     N valid identities found". The label is printed
# raw, so it may itself hold quotes and parentheses: the greedy (.*) runs to the last quote.
_IDENTITY_LINE = re.compile(
    r'^\s*\d+\)\s+(?P<sha1>[0-9A-Fa-f]{40})\s+"(?P<name>.*)"(?:\s+\((?P<status>[^()"]*)\))?\s*$'
)
_IDENTITY_COUNT = re.compile(r"^\s*(\d+)\s+(?:valid\s+)?identities found\s*$")


def parse_find_identity(text, problems: list | None = None) -> list[dict]:
    """Identities from ``security find-identity -v -p codesigning``.

    Returns ``[{"sha1", "name", "status"}, ...]`` in listed order, each SHA-1 once. ``status``
    is ``"valid"`` or the trust error the tool printed (``CSSMERR_TP_CERT_EXPIRED``,
    ``CSSMERR_TP_CERT_REVOKED``...): even with ``-v`` the tool lists such identities and counts
    them in its summary. A summary that disagrees with the lines read means the output was cut
    or mangled, and is reported.
    """
    identities: list[dict] = []
    seen: set[str] = set()
    listed = 0
    summary: int | None = None
    notes = _Notes(problems, "security find-identity")
    for line in as_text(text, "security find-identity", problems).splitlines():
        if not line.strip():
            continue
        match = _IDENTITY_LINE.match(line)
        if match:
            listed += 1
            sha1 = match.group("sha1").upper()
            if sha1 in seen:
                continue
            if len(identities) >= MAX_IDENTITIES:
                notes(
                    f"security find-identity: more than {MAX_IDENTITIES} identities; {sha1} skipped"
                )
                continue
            seen.add(sha1)
            name = match.group("name").strip()
            if len(name) > MAX_VALUE_CHARS:
                notes(f"security find-identity: name of {sha1} cut to {MAX_VALUE_CHARS} characters")
            identities.append(
                {
                    "sha1": sha1,
                    "name": name[:MAX_VALUE_CHARS] or None,
                    "status": (match.group("status") or "").strip()[:64] or "valid",
                }
            )
            continue
        count = _IDENTITY_COUNT.match(line)
        if count:
            summary = int(count.group(1))
            continue
        if re.match(r"^\s*\d+\)", line):
            listed += 1
            notes(f"security find-identity: unreadable identity line {line[:100]!r}")
    notes.done()
    if summary is not None and summary != listed:
        note(
            problems,
            f"security find-identity: summary says {summary} identities, {listed} lines listed",
        )
    return identities


def parse_find_certificate(text, problems: list | None = None) -> dict[str, str]:
    """``{SHA-1: PEM}`` from ``security find-certificate -a -Z -p``.

    Each certificate is printed as ``SHA-256 hash: ...``, ``SHA-1 hash: ...`` and its PEM. A
    PEM without a preceding SHA-1 line cannot be matched to an identity and is skipped.
    """
    certificates: dict[str, str] = {}
    sha1: str | None = None
    pem_lines: list[str] | None = None
    notes = _Notes(problems, "security find-certificate")
    for raw_line in as_text(text, "security find-certificate", problems).splitlines():
        line = raw_line.strip()
        if pem_lines is not None:
            pem_lines.append(line)
            if line == "-----END CERTIFICATE-----":
                if sha1:
                    certificates.setdefault(sha1, "\n".join(pem_lines) + "\n")
                else:
                    notes("security find-certificate: a certificate without a SHA-1 line")
                sha1, pem_lines = None, None
            elif len(pem_lines) > 2048:  # ~100 KB of base64: no real certificate is that big
                notes("security find-certificate: unterminated certificate skipped")
                sha1, pem_lines = None, None
            continue
        if line.startswith("SHA-1 hash:"):
            candidate = line.split(":", 1)[1].strip().upper()
            sha1 = candidate if _SHA1_HEX.match(candidate) else None
            if sha1 is None:
                notes(f"security find-certificate: bad SHA-1 {candidate[:64]!r}")
        elif line == "-----BEGIN CERTIFICATE-----":
            pem_lines = [line]
    notes.done()
    if pem_lines is not None:
        note(problems, "security find-certificate: output ends inside a certificate")
    return certificates


def certificate_facts(pem, sha1: str | None = None, problems: list | None = None) -> dict | None:
    """``{"not_after": datetime (UTC), "team_id": str | None}`` of one PEM certificate.

    When ``sha1`` is given the certificate's own SHA-1 must match it, so a certificate printed
    under the wrong hash is never attributed to an identity. The team id is the subject's OU:
    Apple puts the Team ID there, while the parenthesis in an ``Apple Development`` name can be
    the developer's personal id.
    """
    # Imported here: only macOS hosts with identities need it, and a minion without
    # cryptography must still report every other fact.
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding
        from cryptography.x509.oid import NameOID
    except ImportError:
        note(problems, "certificate expiry needs the 'cryptography' package, which is missing")
        return None

    text = as_text(pem, "certificate", problems)
    if not text:
        return None
    try:
        cert = x509.load_pem_x509_certificate(text.encode("ascii", errors="replace"))
    except Exception as exc:  # noqa: BLE001 - cryptography raises ValueError and friends
        note(problems, f"certificate {sha1 or ''}: not a readable X.509 PEM ({type(exc).__name__})")
        return None
    actual = hashlib.sha1(cert.public_bytes(Encoding.DER)).hexdigest().upper()
    if sha1 and actual != sha1.upper():
        note(problems, f"certificate listed as {sha1} has SHA-1 {actual}; ignored")
        return None
    team_id = None
    try:
        units = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    except Exception:  # noqa: BLE001 - a malformed subject must not lose the expiry
        units = []
    for unit in units:
        value = unit.value if isinstance(unit.value, str) else None
        if value and _TEAM_ID.match(value):
            team_id = value
            break
    not_after = getattr(cert, "not_valid_after_utc", None)
    if not_after is None:  # cryptography < 42 only has the naive (UTC) attribute
        not_after = cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)
    return {"not_after": not_after, "team_id": team_id}


def team_id_from_name(name) -> str | None:
    """The 10-character id in the trailing parenthesis of an identity name, or ``None``."""
    if not isinstance(name, str):
        return None
    match = re.search(r"\(([A-Z0-9]{10})\)\s*$", name)
    return match.group(1) if match else None


def isoformat_utc(moment: datetime.datetime) -> str:
    """``2030-06-30T23:59:59Z``: ISO 8601 in UTC, the form every consumer can sort."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def identities_with_expiry(
    identities: list[dict],
    certificate_text,
    now: datetime.datetime | None = None,
    problems: list | None = None,
) -> list[dict]:
    """Add certificate facts to identities from :func:`parse_find_identity`.

    Returns ``[{"sha1", "name", "team_id", "status", "not_after", "days_left"}, ...]``.
    ``not_after`` is ISO 8601 UTC and ``days_left`` whole days from ``now`` (negative once
    expired); both are ``None`` when the certificate could not be found or read, which is
    reported. ``team_id`` comes from the certificate (subject OU), else from the name.
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if now.tzinfo is None:
        now = now.replace(tzinfo=datetime.timezone.utc)
    certificates = parse_find_certificate(certificate_text, problems) if identities else {}
    result = []
    notes = _Notes(problems, "signing identities")
    for identity in identities[:MAX_IDENTITIES]:
        sha1 = identity["sha1"]
        facts = None
        if sha1 in certificates:
            facts = certificate_facts(certificates[sha1], sha1, problems)
        else:
            notes(f"identity {sha1}: no certificate with that SHA-1 in the keychains")
        not_after = facts["not_after"] if facts else None
        result.append(
            {
                "sha1": sha1,
                "name": identity["name"],
                "team_id": (facts or {}).get("team_id") or team_id_from_name(identity["name"]),
                "status": identity["status"],
                "not_after": isoformat_utc(not_after) if not_after else None,
                "days_left": (
                    int((not_after - now).total_seconds() // 86400) if not_after else None
                ),
            }
        )
    notes.done()
    return result


def signing_identities(
    identity_text,
    certificate_text,
    now: datetime.datetime | None = None,
    problems: list | None = None,
) -> list[dict]:
    """Code-signing identities with expiry, from the two ``security`` outputs (see
    :func:`parse_find_identity` and :func:`identities_with_expiry`)."""
    identities = parse_find_identity(identity_text, problems)
    return identities_with_expiry(identities, certificate_text, now, problems)


def parse_route_get_default(text, problems: list | None = None) -> str | None:
    """The interface of the default route from macOS ``route -n get default``.

    The output holds a line ``  interface: en0``. Knowing it matters on Mac build hosts: a VM
    bridge (``bridge100``) sorts before ``en0`` and would otherwise be taken as the address.
    """
    for line in as_text(text, "route -n get default", problems).splitlines():
        key, _, value = line.strip().partition(":")
        if key == "interface" and value.strip():
            return value.strip()[:64]
    return None


# --------------------------------------------------------------------------------------------
# NixOS
# --------------------------------------------------------------------------------------------


def parse_generation(link_target, problems: list | None = None) -> int | None:
    """The generation number from the target of ``/nix/var/nix/profiles/system``.

    The link points at ``system-<N>-link`` (relative, or absolute in the same folder).
    """
    text = short(link_target, "system profile link", problems)
    if not text:
        return None
    match = re.match(r"^system-(\d{1,9})-link$", os.path.basename(text.rstrip("/")))
    if not match:
        note(problems, f"system profile link: {text[:80]!r} is not system-<N>-link")
        return None
    return int(match.group(1))


def parse_nixos_version_json(text, problems: list | None = None) -> dict:
    """``{"nixos_version", "nixpkgs_revision", "configuration_revision"}`` from
    ``nixos-version --json`` (keys missing from the output are ``None``)."""
    result = {"nixos_version": None, "nixpkgs_revision": None, "configuration_revision": None}
    raw = as_text(text, "nixos-version --json", problems).strip()
    if not raw:
        return result
    if len(raw) > MAX_NIXOS_VERSION_JSON:
        # The real object is a few hundred bytes; anything larger is not worth decoding.
        note(problems, f"nixos-version --json: {len(raw)} characters is not a version object")
        return result
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: deeply nested arrays
        note(problems, "nixos-version --json: output is not JSON")
        return result
    if not isinstance(data, dict):
        note(problems, "nixos-version --json: output is not a JSON object")
        return result
    result["nixos_version"] = short(data.get("nixosVersion"), "nixosVersion", problems)
    for key, field in (
        ("nixpkgs_revision", "nixpkgsRevision"),
        ("configuration_revision", "configurationRevision"),
    ):
        value = short(data.get(field), field, problems)
        if value and not re.match(r"^[0-9a-zA-Z._-]{1,128}$", value):
            note(problems, f"nixos-version --json: {field} {value[:64]!r} is not a revision")
            value = None
        result[key] = value
    return result


def parse_nixos_version_file(text, problems: list | None = None) -> str | None:
    """The NixOS version from ``/run/current-system/nixos-version``.

    The file holds the system label: the version, prefixed by ``<tag>-`` for each configured
    ``system.nixos.tags``. Versions contain no ``-``, so the last component is the version.
    """
    label = short(text, "/run/current-system/nixos-version", problems)
    if not label:
        return None
    return label.splitlines()[0].strip().rsplit("-", 1)[-1] or None


def nixos_facts(
    link_target, version_json, version_file, problems: list | None = None
) -> dict[str, object]:
    """``{"generation", "nixpkgs_revision", "nixos_version"}`` for a NixOS host.

    ``nixos-version --json`` is preferred; the version file is the fallback for the version
    (it carries no revision).
    """
    versions = parse_nixos_version_json(version_json, problems)
    nixos_version = versions["nixos_version"]
    if nixos_version is None and version_file is not None:
        nixos_version = parse_nixos_version_file(version_file, problems)
    return {
        "generation": parse_generation(link_target, problems),
        "nixpkgs_revision": versions["nixpkgs_revision"],
        "nixos_version": nixos_version,
    }


# --------------------------------------------------------------------------------------------
# Plain grains
# --------------------------------------------------------------------------------------------


def count_value(
    value, what: str, problems: list | None = None, maximum: int = 1_000_000
) -> int | None:
    """A positive whole number up to ``maximum`` from a grain (``num_cpus``), or ``None``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        note(problems, f"{what}: expected a number, got {type(value).__name__}")
        return None
    try:
        number = int(float(value)) if isinstance(value, str) else int(value)
    except (ValueError, OverflowError):
        note(problems, f"{what}: {str(value)[:32]!r} is not a number")
        return None
    if number <= 0 or number > maximum:
        note(problems, f"{what}: {number} is out of range")
        return None
    return number


def mib_to_gib(value, what: str = "mem_total", problems: list | None = None) -> float | None:
    """MiB (Salt's ``mem_total``) as GiB rounded to 0.1, or ``None``."""
    mib = count_value(value, what, problems, maximum=1 << 40)
    if mib is None:
        return None
    return round(mib / 1024, 1)
