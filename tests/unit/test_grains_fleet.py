"""Unit tests for the ``fleet`` grain module, loaded as a plain module.

The three helpers that touch the host (``_run``, ``_read``, ``_readlink``) are replaced by fakes
that serve the recorded outputs under tests/fixtures, so a Darwin and a NixOS host can be played
on this Linux machine. The real helpers are tested at the end against real processes and files.
"""

import datetime
import os
import pathlib
import sys

import pytest

import saltext_fleet.grains.fleet as fleet_mod
from saltext_fleet.core import hostinfo
from saltext_fleet.core.text import MAX_OUTPUT_BYTES, note

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "fixtures"
MACOS = FIXTURES / "macos"
NIXOS = FIXTURES / "nixos"
TEN_MB = 10 * 1024 * 1024

SHA_DEV = "737869D2082B715013D7ED485284CAD02C391716"
SHA_DEVID = "F8D09B1318E284C6FC2A38B79873D7CB56BB417E"
SHA_EXPIRED = "0A264B6283335A37AC487CBD741F6536D4CC947D"

XCODE_15 = "/Applications/Xcode-15.4.app"
XCODE_16 = "/Applications/Xcode-16.2.app"

ROUTE = (
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
    "enp1s0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
)


def darwin_grains() -> dict:
    return {
        "id": "mini-07",
        "host": "mini-07",
        "fqdn": "mini-07.example.net",
        "kernel": "Darwin",
        "kernelrelease": "23.4.0",
        "os": "MacOS",
        "os_family": "MacOS",
        "osrelease": "14.4.1",
        "cpuarch": "arm64",
        "productname": "Macmini9,1",
        "num_cpus": 8,
        "mem_total": 16384,
        # bridge100 (a VM bridge) sorts before en0: only the default route picks en0.
        "ip4_interfaces": {
            "lo0": ["127.0.0.1"],
            "bridge100": ["192.168.64.1"],
            "en0": ["192.0.2.10"],
        },
    }


def nixos_grains() -> dict:
    return {
        "id": "nix-03",
        "host": "3",
        "fqdn": "3.2.0.192.in-addr.arpa",  # a resolver without a real name
        "kernel": "Linux",
        "kernelrelease": "6.6.32",
        "os": "NixOS",
        "os_family": "NixOS",
        "osrelease": "24.05",
        "cpuarch": "x86_64",
        "productname": "ThinkCentre M90q",
        "num_cpus": 12,
        "mem_total": 65536,
        "ip4_interfaces": {
            "lo": ["127.0.0.1"],
            "docker0": ["172.17.0.1"],
            "enp1s0": ["192.0.2.3"],
        },
    }


class FakeHost:
    """Stands in for the host: commands, files and links served from the fixtures."""

    def __init__(self, commands=None, files=None, links=None):
        self.commands = commands or {}
        self.files = files or {}
        self.links = links or {}
        self.calls = []

    def run(self, argv, problems, env=None, timeout=fleet_mod.COMMAND_TIMEOUT):
        key = (os.path.basename(argv[0]), *argv[1:])
        if key[0] == "xcodebuild":
            key = (*key, (env or {}).get("DEVELOPER_DIR"))
        self.calls.append(key)
        value = self.commands.get(key, self.commands.get(key[0], FileNotFoundError))
        if value is FileNotFoundError:  # what the real helper does for a missing binary
            note(problems, f"{argv[0]}: not installed")
            return None
        if isinstance(value, BaseException) or (
            isinstance(value, type) and issubclass(value, BaseException)
        ):
            raise value
        return value

    def read(self, path, problems, missing_ok=False):
        if path in self.files:
            return self.files[path]
        if not missing_ok:
            note(problems, f"{path}: missing")
        return None

    def readlink(self, path, problems):
        if path in self.links:
            return self.links[path]
        note(problems, f"{path}: missing")
        return None

    def install(self, monkeypatch):
        monkeypatch.setattr(fleet_mod, "_run", self.run)
        monkeypatch.setattr(fleet_mod, "_read", self.read)
        monkeypatch.setattr(fleet_mod, "_readlink", self.readlink)
        monkeypatch.setattr(fleet_mod.glob, "glob", lambda pattern: [])
        return self


def macos_host() -> FakeHost:
    return FakeHost(
        commands={
            ("route", "-n", "get", "default"): (MACOS / "route-get-default.txt").read_bytes(),
            "mdfind": (MACOS / "mdfind-xcode.txt").read_bytes(),
            ("xcode-select", "-p"): (MACOS / "xcode-select-p.txt").read_bytes(),
            ("xcodebuild", "-version", f"{XCODE_15}/Contents/Developer"): (
                MACOS / "xcodebuild-version-15.4.txt"
            ).read_bytes(),
            ("xcodebuild", "-version", f"{XCODE_16}/Contents/Developer"): (
                MACOS / "xcodebuild-version-16.2.txt"
            ).read_bytes(),
            ("security", "find-identity", "-v", "-p", "codesigning"): (
                MACOS / "find-identity.txt"
            ).read_bytes(),
            ("security", "find-certificate", "-a", "-Z", "-p"): (
                MACOS / "find-certificate.txt"
            ).read_bytes(),
        },
        # Xcode 16.2 answers from its version.plist; 15.4 has none and needs xcodebuild.
        files={
            f"{XCODE_16}/Contents/version.plist": (MACOS / "Xcode-16.2-version.plist").read_bytes()
        },
    )


def nixos_host() -> FakeHost:
    return FakeHost(
        commands={
            ("nixos-version", "--json"): (NIXOS / "nixos-version.json").read_bytes(),
        },
        files={
            "/proc/net/route": ROUTE.encode(),
            "/run/current-system/nixos-version": (
                NIXOS / "run-current-system-nixos-version.txt"
            ).read_bytes(),
        },
        links={"/nix/var/nix/profiles/system": (NIXOS / "system-profile-link.txt").read_text()},
    )


def days_until(iso: str) -> set:
    """``days_left`` as the grain computes it, tolerant of a midnight passing mid-test."""
    moment = datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc
    )
    now = datetime.datetime.now(datetime.timezone.utc)
    return {int((moment - now).total_seconds() // 86400) + delta for delta in (-1, 0)}


def assert_darwin_core(facts: dict) -> None:
    assert facts["hardware_model"] == "Macmini9,1"
    assert facts["cpu_cores"] == 8
    assert facts["ram_gib"] == 16.0
    assert facts["hostname"] == "mini-07"
    assert facts["os"] == "MacOS"
    assert facts["os_family"] == "MacOS"
    assert facts["os_version"] == "14.4.1"
    assert facts["kernel"] == "Darwin"
    assert facts["kernel_release"] == "23.4.0"
    assert facts["arch"] == "arm64"
    assert facts["storage_gib"] == hostinfo.filesystem_total_gib("/")


# --------------------------------------------------------------------------------------------
# Darwin
# --------------------------------------------------------------------------------------------


def test_darwin_from_fixtures(monkeypatch):
    host = macos_host().install(monkeypatch)
    facts = fleet_mod.fleet(darwin_grains())["fleet"]

    assert_darwin_core(facts)
    assert facts["ipv4"] == "192.0.2.10"
    assert facts["macos"]["xcode"] == [
        {"path": XCODE_15, "version": "15.4", "build": "15F31d", "selected": False},
        {"path": XCODE_16, "version": "16.2", "build": "16C5032a", "selected": True},
    ]
    identities = facts["macos"]["signing_identities"]
    assert [(i["sha1"], i["status"], i["team_id"], i["not_after"]) for i in identities] == [
        (SHA_DEV, "valid", "7XQ3K9LM2P", "2030-06-30T23:59:59Z"),
        (SHA_DEVID, "valid", "7XQ3K9LM2P", "2031-02-01T10:00:00Z"),
        (SHA_EXPIRED, "CSSMERR_TP_CERT_EXPIRED", "7XQ3K9LM2P", "2024-05-01T08:30:00Z"),
    ]
    for identity in identities:
        assert identity["days_left"] in days_until(identity["not_after"])
    assert identities[2]["days_left"] < 0
    assert "errors" not in facts
    assert "nixos" not in facts
    # The plist answered for 16.2: xcodebuild ran only for the bundle without one.
    xcodebuild_calls = [call for call in host.calls if call[0] == "xcodebuild"]
    assert xcodebuild_calls == [("xcodebuild", "-version", f"{XCODE_15}/Contents/Developer")]


def test_darwin_without_identities_skips_the_certificate_dump(monkeypatch):
    host = macos_host()
    host.commands[("security", "find-identity", "-v", "-p", "codesigning")] = (
        b"     0 valid identities found\n"
    )
    host.install(monkeypatch)
    facts = fleet_mod.fleet(darwin_grains())["fleet"]
    assert facts["macos"]["signing_identities"] == []
    assert not any(call[:2] == ("security", "find-certificate") for call in host.calls)
    assert "errors" not in facts


def test_darwin_configured_keychains_are_searched(monkeypatch):
    host = macos_host()
    keychain = "/Users/ci/Library/Keychains/login.keychain-db"
    for key in list(host.commands):
        if key[0] == "security":
            host.commands[(*key, keychain)] = host.commands.pop(key)
    host.install(monkeypatch)
    monkeypatch.setattr(
        fleet_mod, "__opts__", {"fleet": {"grains": {"keychains": [keychain]}}}, raising=False
    )
    facts = fleet_mod.fleet(darwin_grains())["fleet"]
    assert len(facts["macos"]["signing_identities"]) == 3
    assert "errors" not in facts


def test_darwin_bad_keychain_config_is_reported(monkeypatch):
    host = macos_host().install(monkeypatch)
    monkeypatch.setattr(
        fleet_mod,
        "__opts__",
        {"fleet": {"grains": {"keychains": ["relative/login.keychain-db"]}}},
        raising=False,
    )
    facts = fleet_mod.fleet(darwin_grains())["fleet"]
    # The default search list is used instead: the identities are still reported.
    assert len(facts["macos"]["signing_identities"]) == 3
    assert ("security", "find-identity", "-v", "-p", "codesigning") in host.calls
    assert facts["errors"] == [
        "bad configuration option fleet:grains:keychains: 'relative/login.keychain-db' is not "
        "an absolute path; searching the default keychains"
    ]


def test_darwin_commands_missing(monkeypatch):
    FakeHost().install(monkeypatch)
    facts = fleet_mod.fleet(darwin_grains())["fleet"]
    assert_darwin_core(facts)
    # No default route known: interfaces in sorted order, the VM bridge first.
    assert facts["ipv4"] == "192.168.64.1"
    assert facts["macos"] == {"xcode": [], "signing_identities": []}
    for command in ("/sbin/route", "/usr/bin/mdfind", "/usr/bin/xcode-select", "/usr/bin/security"):
        assert f"{command}: not installed" in facts["errors"]


def test_darwin_commands_raise(monkeypatch):
    host = FakeHost(
        commands={
            "route": RuntimeError("boom"),
            "mdfind": OSError("boom"),
            "xcode-select": MemoryError,
            "security": ValueError("boom"),
        }
    ).install(monkeypatch)
    facts = fleet_mod.fleet(darwin_grains())["fleet"]
    assert_darwin_core(facts)
    assert host.calls  # the fakes were reached
    assert facts["ipv4"] is None
    assert facts["macos"] == {"xcode": [], "signing_identities": []}
    assert "ipv4: unexpected RuntimeError; see the minion log" in facts["errors"]
    assert "xcode: unexpected OSError; see the minion log" in facts["errors"]
    assert "signing identities: unexpected ValueError; see the minion log" in facts["errors"]


def test_darwin_ten_megabytes_of_junk(monkeypatch):
    junk = b"\x00junk " * (TEN_MB // 6)
    host = macos_host()
    for key in list(host.commands):
        if key == "mdfind" or key[0] == "security":
            host.commands[key] = junk
    host.install(monkeypatch)
    facts = fleet_mod.fleet(darwin_grains())["fleet"]
    assert_darwin_core(facts)
    assert facts["ipv4"] == "192.0.2.10"  # route still answered
    assert facts["macos"]["xcode"] == []  # no Xcode in the junk, none invented
    assert facts["macos"]["signing_identities"] == []
    assert any("mdfind" in e and "truncated" in e for e in facts["errors"])
    assert any("security find-identity" in e and "truncated" in e for e in facts["errors"])


def test_darwin_invalid_bytes_keep_the_good_parts(monkeypatch):
    host = macos_host()
    host.commands["mdfind"] = b"\xff\xfe\n" + (MACOS / "mdfind-xcode.txt").read_bytes()
    host.commands[("security", "find-identity", "-v", "-p", "codesigning")] = (
        b"\x80\x81 garbage\n" + (MACOS / "find-identity.txt").read_bytes()
    )
    host.commands[("xcodebuild", "-version", f"{XCODE_15}/Contents/Developer")] = b"\xff\xff"
    host.install(monkeypatch)
    facts = fleet_mod.fleet(darwin_grains())["fleet"]
    assert [x["path"] for x in facts["macos"]["xcode"]] == [XCODE_15, XCODE_16]
    # 15.4: no plist and unreadable xcodebuild output, so no version, and both reasons listed.
    assert facts["macos"]["xcode"][0]["version"] is None
    assert any(e.startswith(f"{XCODE_15}: ") and "missing" in e for e in facts["errors"])
    assert any(e.startswith(f"{XCODE_15}: ") and "no 'Xcode" in e for e in facts["errors"])
    assert facts["macos"]["xcode"][1]["version"] == "16.2"
    assert len(facts["macos"]["signing_identities"]) == 3
    assert any("not valid UTF-8" in e for e in facts["errors"])


def test_darwin_none_outputs(monkeypatch):
    host = macos_host()
    for key in host.commands:
        host.commands[key] = None
    host.install(monkeypatch)
    facts = fleet_mod.fleet(darwin_grains())["fleet"]
    assert_darwin_core(facts)
    assert facts["macos"] == {"xcode": [], "signing_identities": []}


# --------------------------------------------------------------------------------------------
# NixOS
# --------------------------------------------------------------------------------------------


def test_nixos_from_fixtures(monkeypatch):
    nixos_host().install(monkeypatch)
    facts = fleet_mod.fleet(nixos_grains())["fleet"]
    assert facts["nixos"] == {
        "generation": 123,
        "nixpkgs_revision": "4a3fc4cf736b7d2d288d7a8bf775ac8d4c0920b4",
        "nixos_version": "24.05.20240601.4a3fc4c",
    }
    assert facts["ipv4"] == "192.0.2.3"  # default route, not docker0 which sorts first
    assert facts["hostname"] == "nix-03"  # fqdn is a reverse-DNS artefact, host derived from it
    assert facts["hardware_model"] == "ThinkCentre M90q"
    assert facts["cpu_cores"] == 12
    assert facts["ram_gib"] == 64.0
    assert facts["os"] == "NixOS"
    assert facts["os_version"] == "24.05"
    assert facts["storage_gib"] == hostinfo.storage_gib()
    assert "macos" not in facts
    assert "errors" not in facts


def test_nixos_version_command_missing_uses_the_file(monkeypatch):
    host = nixos_host()
    del host.commands[("nixos-version", "--json")]
    host.install(monkeypatch)
    facts = fleet_mod.fleet(nixos_grains())["fleet"]
    assert facts["nixos"] == {
        "generation": 123,
        "nixpkgs_revision": None,
        "nixos_version": "24.05.20240601.4a3fc4c",
    }
    assert facts["errors"] == ["/run/current-system/sw/bin/nixos-version: not installed"]


@pytest.mark.parametrize(
    "output",
    [b"\xff\xfe{{{", b"[" * TEN_MB, None],
    ids=["invalid-bytes", "ten-megabytes", "none"],
)
def test_nixos_hostile_version_output(monkeypatch, output):
    host = nixos_host()
    host.commands[("nixos-version", "--json")] = output
    host.install(monkeypatch)
    facts = fleet_mod.fleet(nixos_grains())["fleet"]
    assert facts["nixos"]["generation"] == 123
    assert facts["nixos"]["nixos_version"] == "24.05.20240601.4a3fc4c"  # from the file
    assert facts["nixos"]["nixpkgs_revision"] is None
    assert facts["cpu_cores"] == 12
    if output is not None:
        assert any(e.startswith("nixos-version --json") for e in facts["errors"])


def test_nixos_everything_broken(monkeypatch):
    FakeHost(commands={"nixos-version": TimeoutError("stuck")}).install(monkeypatch)
    facts = fleet_mod.fleet(nixos_grains())["fleet"]
    assert facts["nixos"] == {"generation": None, "nixpkgs_revision": None, "nixos_version": None}
    assert "nixos: unexpected TimeoutError; see the minion log" in facts["errors"]
    assert facts["cpu_cores"] == 12  # the other facts survive
    assert facts["hostname"] == "nix-03"


# --------------------------------------------------------------------------------------------
# Hostile grains and the last line of defence
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("grains", [None, "junk", ["list"]])
def test_grains_not_a_mapping(monkeypatch, grains):
    FakeHost().install(monkeypatch)
    facts = fleet_mod.fleet(grains)["fleet"]
    assert facts["os"] is None and facts["cpu_cores"] is None
    assert facts["storage_gib"] == hostinfo.storage_gib()  # read from the host, not the grains
    if grains is not None:
        assert any("core grains: expected a mapping" in e for e in facts["errors"])


def test_hostile_grain_values(monkeypatch):
    FakeHost(files={"/proc/net/route": ROUTE.encode()}).install(monkeypatch)
    grains = nixos_grains()
    grains.update(
        {
            "os": "NixOS",
            "num_cpus": "x" * TEN_MB,
            "mem_total": {"MiB": 1},
            "productname": b"\xffBox\xfe",
            "osrelease": ["24.05"],
            "ip4_interfaces": {"enp1s0": [None, "not-an-ip", "192.0.2.3"]},
        }
    )
    facts = fleet_mod.fleet(grains)["fleet"]
    assert facts["cpu_cores"] is None
    assert facts["ram_gib"] is None
    assert facts["hardware_model"] == "\ufffdBox\ufffd"
    assert facts["os_version"] is None
    assert facts["ipv4"] == "192.0.2.3"
    assert facts["kernel"] == "Linux"
    errors = " | ".join(facts["errors"])
    for expected in ("num_cpus grain", "mem_total grain", "productname grain", "osrelease grain"):
        assert expected in errors
    assert "'not-an-ip' is not an IPv4 address" in errors


def test_unexpected_failure_outside_a_section(monkeypatch):
    def broken(grains):
        raise KeyError("surprise")

    FakeHost().install(monkeypatch)
    monkeypatch.setattr(fleet_mod, "_is_macos", broken)
    facts = fleet_mod.fleet(darwin_grains())["fleet"]
    assert facts["cpu_cores"] == 8  # gathered before the failure, kept
    assert "fleet grain: unexpected KeyError; see the minion log" in facts["errors"]


def test_errors_are_bounded(monkeypatch):
    FakeHost().install(monkeypatch)  # every command missing: several errors
    monkeypatch.setattr(fleet_mod, "MAX_ERRORS", 2)
    facts = fleet_mod.fleet(darwin_grains())["fleet"]
    assert facts["errors"][:2] == ["/sbin/route: not installed", "/usr/bin/mdfind: not installed"]
    assert len(facts["errors"]) == 3
    assert facts["errors"][-1] == "... and 2 more (see the log)"
    assert facts["cpu_cores"] == 8


def test_not_loaded_on_proxy_minions(monkeypatch):
    monkeypatch.setattr(fleet_mod.salt.utils.platform, "is_proxy", lambda: True)
    loaded, why = fleet_mod.__virtual__()
    assert loaded is False and "proxy" in why
    monkeypatch.setattr(fleet_mod.salt.utils.platform, "is_proxy", lambda: False)
    assert fleet_mod.__virtual__() == "fleet"


# --------------------------------------------------------------------------------------------
# The real host helpers
# --------------------------------------------------------------------------------------------


def test_run_returns_stdout_bytes_with_c_locale(monkeypatch):
    monkeypatch.setenv("DEVELOPER_DIR", "/stray")
    problems = []
    script = (
        "import os, sys; sys.stdout.write(os.environ['LC_ALL'] + ' ' "
        "+ os.environ.get('DEVELOPER_DIR', '-') + ' ' + os.environ.get('EXTRA', '-'))"
    )
    assert fleet_mod._run([sys.executable, "-c", script], problems) == b"C - -"
    assert fleet_mod._run([sys.executable, "-c", script], problems, env={"EXTRA": "x"}) == (
        b"C - x"
    )
    assert problems == []


def test_run_missing_binary_is_a_problem():
    problems = []
    assert fleet_mod._run(["/nonexistent/fleet-tool", "-p"], problems) is None
    assert problems == ["/nonexistent/fleet-tool: not installed"]


def test_run_timeout_is_a_problem():
    problems = []
    argv = [sys.executable, "-c", "import time; time.sleep(30)"]
    assert fleet_mod._run(argv, problems, timeout=0.5) is None
    assert problems == [f"{sys.executable} -c: no answer within 0.5 s"]


def test_run_failure_reports_the_first_stderr_line():
    problems = []
    argv = [sys.executable, "-c", "import sys; sys.stderr.write('boom\\nmore\\n'); sys.exit(3)"]
    assert fleet_mod._run(argv, problems) is None
    assert problems == [f"{sys.executable} -c: exit status 3: boom"]


def test_run_never_uses_a_shell():
    problems = []
    # With a shell this would print "expanded"; as an argv it is one literal argument.
    out = fleet_mod._run(
        [sys.executable, "-c", "import sys; print(sys.argv[1])", "$(echo expanded)"], problems
    )
    assert out.strip() == b"$(echo expanded)"


def test_read_bounds_and_reports(tmp_path):
    big = tmp_path / "big"
    big.write_bytes(b"a" * (MAX_OUTPUT_BYTES + 10))
    problems = []
    assert len(fleet_mod._read(str(big), problems)) == MAX_OUTPUT_BYTES
    assert any("truncated" in p for p in problems)
    problems = []
    assert fleet_mod._read(str(tmp_path / "missing"), problems) is None
    assert problems == [f"{tmp_path / 'missing'}: missing"]
    problems = []
    assert fleet_mod._read(str(tmp_path / "missing"), problems, missing_ok=True) is None
    assert problems == []
    problems = []
    assert fleet_mod._read(str(tmp_path), problems) is None  # a folder
    assert any("cannot read" in p for p in problems)


def test_readlink(tmp_path):
    (tmp_path / "system").symlink_to("system-42-link")
    problems = []
    assert fleet_mod._readlink(str(tmp_path / "system"), problems) == "system-42-link"
    assert fleet_mod._readlink(str(tmp_path / "nope"), problems) is None
    (tmp_path / "plain").write_text("x")
    assert fleet_mod._readlink(str(tmp_path / "plain"), problems) is None
    assert problems == [
        f"{tmp_path / 'nope'}: missing",
        f"{tmp_path / 'plain'}: not a readable link (Invalid argument)",
    ]
