"""Unit tests for saltext_fleet.core.hostinfo: every parser and decision, with hostile input."""

import datetime
import os
import pathlib

import pytest

from saltext_fleet.core import hostinfo
from saltext_fleet.core.text import MAX_OUTPUT_BYTES

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "fixtures"
MACOS = FIXTURES / "macos"
NIXOS = FIXTURES / "nixos"

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 1, 1, tzinfo=UTC)
TEN_MB = 10 * 1024 * 1024

SHA_DEV = "737869D2082B715013D7ED485284CAD02C391716"
SHA_DEVID = "F8D09B1318E284C6FC2A38B79873D7CB56BB417E"
SHA_EXPIRED = "0A264B6283335A37AC487CBD741F6536D4CC947D"
SHA_CA = "9853DEB759B51C2E5D01EA9C2C157F851BD63247"


def fixture(path: pathlib.Path) -> bytes:
    return path.read_bytes()


def mentions(problems: list, *words: str) -> bool:
    """True when one recorded problem contains every word."""
    return any(all(word in problem for word in words) for problem in problems)


# --------------------------------------------------------------------------------------------
# primary_ipv4
# --------------------------------------------------------------------------------------------


class TestPrimaryIpv4:
    def test_skips_loopback_interfaces_and_addresses(self):
        interfaces = {
            "lo": ["127.0.0.1"],
            "lo0": ["10.9.9.9"],  # loopback interface on macOS, even with a routable alias
            "eth0": ["127.0.1.1", "169.254.10.1", "192.0.2.5"],
        }
        assert hostinfo.primary_ipv4(interfaces) == "192.0.2.5"

    def test_prefers_default_route_interface(self):
        interfaces = {"docker0": ["172.17.0.1"], "eth0": ["192.0.2.5"]}
        assert hostinfo.primary_ipv4(interfaces) == "172.17.0.1"  # sorted order alone
        assert hostinfo.primary_ipv4(interfaces, "eth0") == "192.0.2.5"

    def test_default_interface_without_usable_address_falls_back_to_sorted(self):
        interfaces = {"wg0": ["169.254.1.1"], "eth1": ["198.51.100.7"], "eth0": []}
        assert hostinfo.primary_ipv4(interfaces, "wg0") == "198.51.100.7"

    def test_unknown_default_interface_is_ignored(self):
        assert hostinfo.primary_ipv4({"eth0": ["192.0.2.5"]}, "en9") == "192.0.2.5"

    def test_ipv6_forms_and_unspecified_are_skipped(self):
        interfaces = {"a": ["::1", "fe80::1", "FE80::2", "0.0.0.0"], "b": ["203.0.113.9"]}
        assert hostinfo.primary_ipv4(interfaces) == "203.0.113.9"

    def test_only_loopback_gives_none(self):
        assert hostinfo.primary_ipv4({"lo": ["127.0.0.1"], "eth0": ["127.0.0.2"]}) is None

    @pytest.mark.parametrize("value", [None, {}])
    def test_nothing_gives_none_quietly(self, value):
        problems = []
        assert hostinfo.primary_ipv4(value, problems=problems) is None
        assert problems == []

    @pytest.mark.parametrize("value", ["eth0", ["192.0.2.1"], 42])
    def test_wrong_type_is_reported(self, value):
        problems = []
        assert hostinfo.primary_ipv4(value, problems=problems) is None
        assert mentions(problems, "ip4_interfaces", "expected a mapping")

    def test_hostile_entries_keep_the_good_address(self):
        problems = []
        interfaces = {
            None: ["192.0.2.99"],  # not a name
            "a0": "x" * TEN_MB,  # a 10 MB string instead of a list
            "a1": 12,  # not a list
            "eth0": [b"192.0.2.44"],  # bytes are accepted
        }
        assert hostinfo.primary_ipv4(interfaces, problems=problems) == "192.0.2.44"
        assert mentions(problems, "interface name 'None' is not text")
        assert mentions(problems, "ip4_interfaces[a0]", "'xxxxxxxx", "is not an IPv4 address")
        assert mentions(problems, "ip4_interfaces[a1]", "list")
        assert max(len(problem) for problem in problems) < 200  # the 10 MB string is not copied

    def test_hostile_addresses_keep_the_good_one(self):
        problems = []
        interfaces = {
            "a2": [b"\xff\xfe\x00", None, {"x": 1}, "999.1.1.1"],
            "eth0": ["192.0.2.45"],
        }
        assert hostinfo.primary_ipv4(interfaces, problems=problems) == "192.0.2.45"
        assert mentions(problems, "ip4_interfaces[a2]", "'\ufffd\ufffd\\x00' is not an IPv4")
        assert mentions(problems, "ip4_interfaces[a2]", "type dict")
        assert mentions(problems, "'999.1.1.1' is not an IPv4 address")
        assert len(problems) == 3  # None is no address, not a problem

    def test_many_bad_entries_are_counted_not_listed(self):
        problems = []
        interfaces = {f"veth{i:04d}": ["junk"] for i in range(100_000)}
        interfaces["zz0"] = ["192.0.2.1"]
        assert hostinfo.primary_ipv4(interfaces, problems=problems) == "192.0.2.1"
        assert len(problems) == hostinfo.MAX_NOTES_PER_KIND + 1
        assert problems[-1] == "ip4_interfaces: 99995 more problems like these not listed"

    def test_lone_string_is_accepted(self):
        assert hostinfo.primary_ipv4({"eth0": "192.0.2.8"}) == "192.0.2.8"


# --------------------------------------------------------------------------------------------
# pick_hostname
# --------------------------------------------------------------------------------------------


class TestPickHostname:
    def test_host_grain_wins(self):
        assert hostinfo.pick_hostname("build-07", "build-07.example.net", "minion") == "build-07"

    def test_fqdn_when_no_host(self):
        assert hostinfo.pick_hostname("", "build-07.example.net.", "minion") == (
            "build-07.example.net"
        )

    @pytest.mark.parametrize(
        "fqdn",
        [
            "4.3.2.1.in-addr.arpa",
            "4.3.2.1.IN-ADDR.ARPA.",
            "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.0.0.0.0.1.2.3.4.ip6.arpa",
            "1.0.0.127.in-addr.arpa.",
        ],
    )
    def test_reverse_dns_fqdn_falls_back_to_id(self, fqdn):
        assert hostinfo.pick_hostname(None, fqdn, "mini-07") == "mini-07"

    def test_host_derived_from_reverse_dns_artefact_is_skipped(self):
        # Salt sets host to the first label of fqdn: "4" here is not a name.
        assert hostinfo.pick_hostname("4", "4.3.2.1.in-addr.arpa", "mini-07") == "mini-07"

    def test_real_host_survives_artefact_fqdn(self):
        assert hostinfo.pick_hostname("mini-07", "4.3.2.1.in-addr.arpa", "id") == "mini-07"

    def test_all_missing(self):
        assert hostinfo.pick_hostname(None, None, None) is None

    def test_hostile_values(self):
        problems = []
        name = hostinfo.pick_hostname(["not", "text"], b"\xffweird\xfe", "mini-07", problems)
        assert name == "\ufffdweird\ufffd"  # the readable part of the fqdn, decoded
        assert mentions(problems, "host grain", "expected a scalar")
        assert mentions(problems, "fqdn grain", "not valid UTF-8")

    def test_ten_megabyte_host_is_bounded(self):
        problems = []
        name = hostinfo.pick_hostname("h" * TEN_MB, None, "id", problems)
        assert name == "h" * 512
        assert mentions(problems, "host grain", "truncated")


# --------------------------------------------------------------------------------------------
# default_route_iface (/proc/net/route)
# --------------------------------------------------------------------------------------------

ROUTE_HEADER = (
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
)
ROUTE = (
    ROUTE_HEADER
    + "eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
    + "eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
    + "wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n"
    + "tun0\t00000000\t00000000\t0000\t0\t0\t0\t00000000\t0\t0\t0\n"  # default but down
)


class TestDefaultRouteIface:
    def test_lowest_metric_default_route(self):
        assert hostinfo.default_route_iface(ROUTE) == "eth0"

    def test_down_routes_are_ignored(self):
        text = ROUTE_HEADER + "tun0\t00000000\t00000000\t0000\t0\t0\t0\t00000000\t0\t0\t0\n"
        assert hostinfo.default_route_iface(text) is None

    def test_no_default_route(self):
        text = ROUTE_HEADER + "eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
        assert hostinfo.default_route_iface(text) is None

    def test_bytes_as_read_from_the_file(self):
        assert hostinfo.default_route_iface(ROUTE.encode()) == "eth0"

    @pytest.mark.parametrize("value", [None, "", b""])
    def test_empty(self, value):
        assert hostinfo.default_route_iface(value) is None

    def test_wrong_type(self):
        problems = []
        assert hostinfo.default_route_iface(["eth0"], problems) is None
        assert mentions(problems, "/proc/net/route", "expected text")

    def test_junk_lines_and_invalid_bytes_keep_the_route(self):
        problems = []
        text = (
            b"garbage\n\xff\xfe\xfd\n"
            + b"eth9\t00000000\t0\tZZZZ\t0\t0\tX\t00000000\n"  # unparsable flags/metric
            + ROUTE.encode()
        )
        assert hostinfo.default_route_iface(text, problems) == "eth0"
        assert mentions(problems, "not valid UTF-8")

    def test_ten_megabytes_of_junk_after_the_route(self):
        problems = []
        text = ROUTE + "x" * TEN_MB
        assert hostinfo.default_route_iface(text, problems) == "eth0"
        assert mentions(problems, "truncated to")


# --------------------------------------------------------------------------------------------
# Storage
# --------------------------------------------------------------------------------------------


class TestIsPhysicalDisk:
    @pytest.mark.parametrize("name", ["sda", "vda", "xvdb", "nvme0n1", "mmcblk0", "hda"])
    def test_disks(self, name):
        assert hostinfo.is_physical_disk(name)

    @pytest.mark.parametrize(
        "name",
        ["loop0", "ram1", "zram0", "dm-0", "md127", "sr0", "fd0", "nbd3", "zd16", "drbd1"]
        + ["mmcblk0boot0", "mmcblk0boot1", "mmcblk0rpmb", "", None],
    )
    def test_not_disks(self, name):
        assert not hostinfo.is_physical_disk(name)

    def test_flags(self):
        assert not hostinfo.is_physical_disk("sdb", removable=True)
        assert not hostinfo.is_physical_disk("nvme0c0n1", hidden=True)
        assert not hostinfo.is_physical_disk("vdb", virtual=True)


class TestDiskTotalGib:
    def test_counts_physical_disks_only(self):
        devices = [
            {"name": "vda", "size": "536870912\n", "removable": "0\n", "virtual": False},
            {"name": "nvme0n1", "size": "2097152", "removable": "0", "hidden": "0"},
            {"name": "loop0", "size": "999999999", "virtual": True},
            {"name": "zram0", "size": "999999999", "virtual": True},
            {"name": "sdb", "size": "30000000", "removable": "1"},  # a USB stick
            {"name": "sr0", "size": "2097152"},
            {"name": "sdc", "size": "0"},  # a card reader without a card
        ]
        # 536870912 sectors * 512 = 256 GiB; 2097152 * 512 = 1 GiB
        assert hostinfo.disk_total_gib(devices) == 257.0

    def test_no_disk_gives_none(self):
        assert hostinfo.disk_total_gib([{"name": "loop0", "size": "8", "virtual": True}]) is None
        assert hostinfo.disk_total_gib([]) is None
        assert hostinfo.disk_total_gib(None) is None

    def test_hostile_entries_keep_the_good_disk(self):
        problems = []
        devices = [
            "not a mapping",
            {"name": "sda", "size": "lots"},
            {"name": "sdb", "size": b"\xff\xfe"},
            {"name": "sdc", "size": "x" * TEN_MB},
            {"name": ["sdd"], "size": "100"},
            {"name": "vda", "size": b"2097152\n", "removable": b"0\n"},
        ]
        assert hostinfo.disk_total_gib(devices, problems) == 1.0
        assert mentions(problems, "not a mapping")
        assert mentions(problems, "/sys/block/sda/size", "'lots' is not a number")
        assert mentions(problems, "/sys/block/sdb/size", "'\ufffd\ufffd' is not a number")
        assert mentions(problems, "/sys/block/sdc/size", "'xxxx", "not a number")
        assert mentions(problems, "a name of type list")
        assert len(problems) == 5

    def test_wrong_type(self):
        problems = []
        assert hostinfo.disk_total_gib("vda", problems) is None
        assert mentions(problems, "expected a list")


def make_sys_block(root: pathlib.Path) -> pathlib.Path:
    """A /sys/block look-alike: symlinks into devices/, as on a real kernel."""
    sys_block = root / "block"
    sys_block.mkdir()
    layout = {
        "vda": ("devices/pci0000:00/virtio1/block/vda", "536870912\n", "0\n"),
        "sdb": ("devices/pci0000:00/usb1/block/sdb", "60000000\n", "1\n"),
        "loop0": ("devices/virtual/block/loop0", "1000\n", "0\n"),
        "zram0": ("devices/virtual/block/zram0", "16000000\n", "0\n"),
    }
    for name, (target, size, removable) in layout.items():
        device = root / target
        device.mkdir(parents=True)
        (device / "size").write_text(size)
        (device / "removable").write_text(removable)
        (sys_block / name).symlink_to(device)
    return sys_block


class TestBlockDeviceReader:
    def test_reads_a_sysfs_tree(self, tmp_path):
        sys_block = make_sys_block(tmp_path)
        devices = {d["name"]: d for d in hostinfo.read_block_devices(str(sys_block))}
        assert devices["loop0"]["virtual"] is True
        assert devices["vda"]["virtual"] is False
        assert devices["vda"]["size"].strip() == "536870912"
        assert devices["sdb"]["removable"].strip() == "1"
        assert hostinfo.storage_gib(str(sys_block), str(tmp_path)) == 256.0

    def test_missing_folder_falls_back_to_the_filesystem(self, tmp_path):
        problems = []
        total = hostinfo.storage_gib(str(tmp_path / "nope"), str(tmp_path), problems)
        stats = os.statvfs(tmp_path)
        assert total == round(stats.f_blocks * stats.f_frsize / 1024**3, 1)
        assert problems == []

    def test_unreadable_size_is_reported_not_raised(self, tmp_path):
        sys_block = make_sys_block(tmp_path)
        (tmp_path / "devices/pci0000:00/virtio1/block/vda/size").write_bytes(b"\xff\xfe")
        problems = []
        # vda unreadable, sdb removable: no disk left, so the filesystem size is used.
        total = hostinfo.storage_gib(str(sys_block), str(tmp_path), problems)
        assert total is not None and total > 0
        assert mentions(problems, "/sys/block/vda/size", "not a number")

    def test_filesystem_total_of_missing_path(self, tmp_path):
        problems = []
        assert hostinfo.filesystem_total_gib(str(tmp_path / "missing"), problems) is None
        assert mentions(problems, "disk usage of")


# --------------------------------------------------------------------------------------------
# Xcode
# --------------------------------------------------------------------------------------------


class TestXcode:
    def test_mdfind_fixture(self):
        paths = hostinfo.parse_app_paths(fixture(MACOS / "mdfind-xcode.txt"))
        assert paths == ["/Applications/Xcode-15.4.app", "/Applications/Xcode-16.2.app"]

    def test_mdfind_flood_of_bad_lines_is_counted(self):
        problems = []
        text = "junk\n" * 500_000 + "/Applications/Xcode.app\n"
        assert hostinfo.parse_app_paths(text, "mdfind", problems) == ["/Applications/Xcode.app"]
        assert problems[-1] == "mdfind: 499995 more problems like these not listed"
        assert len(problems) == hostinfo.MAX_NOTES_PER_KIND + 1

    def test_mdfind_hostile(self):
        problems = []
        text = (
            b"/Applications/Xcode-16.2.app\n"
            b"relative/Xcode.app\n"
            b"/Users/ci/.Trash/Xcode-14.app\n"
            b"/Applications/Xcode-16.2.app/\n"  # duplicate with a trailing slash
            b"/Applications/Xc\xffode.app\n"
            b"/Applications/NotAnApp\n" + b"y" * TEN_MB
        )
        paths = hostinfo.parse_app_paths(text, "mdfind", problems)
        assert paths[0] == "/Applications/Xcode-16.2.app"
        assert "/Applications/Xc\ufffdode.app" in paths
        assert not any("Trash" in path for path in paths)
        assert len(paths) == 2
        assert mentions(problems, "relative/Xcode.app", "not an application path")
        assert mentions(problems, "not valid UTF-8")
        assert mentions(problems, "truncated")

    @pytest.mark.parametrize("value", [None, "", 3.5])
    def test_mdfind_nothing(self, value):
        assert hostinfo.parse_app_paths(value) == []

    def test_merge_dedupes_symlinks(self):
        links = {"/Applications/Xcode.app": "/Applications/Xcode-16.2.app"}
        merged = hostinfo.merge_app_paths(
            ["/Applications/Xcode-16.2.app", "/Applications/Xcode-15.4.app"],
            ["/Applications/Xcode.app", None],
            None,
            resolve=lambda p: links.get(p, p),
        )
        assert merged == ["/Applications/Xcode-15.4.app", "/Applications/Xcode-16.2.app"]

    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            ("xcodebuild-version-15.4.txt", ("15.4", "15F31d")),
            ("xcodebuild-version-16.2.txt", ("16.2", "16C5032a")),
        ],
    )
    def test_xcodebuild_fixtures(self, name, expected):
        problems = []
        assert hostinfo.parse_xcodebuild_version(fixture(MACOS / name), problems) == expected
        assert problems == []

    def test_xcodebuild_with_noise_and_patch_version(self):
        text = "2024-01-01 warning: plugin failed to load\nXcode 15.0.1\nBuild version 15A507\n"
        assert hostinfo.parse_xcodebuild_version(text) == ("15.0.1", "15A507")

    def test_xcodebuild_license_prompt_is_reported(self):
        problems = []
        text = "You have not agreed to the Xcode license agreements. Please run 'sudo xcodebuild -license'."
        assert hostinfo.parse_xcodebuild_version(text, problems) == (None, None)
        assert mentions(problems, "no 'Xcode <version>' line")
        assert mentions(problems, "no 'Build version <build>' line")

    def test_xcodebuild_hostile_keeps_version(self):
        problems = []
        text = b"Xcode 16.2\n\xff\xfeBuild version \xff\n" + b"z" * TEN_MB
        assert hostinfo.parse_xcodebuild_version(text, problems) == ("16.2", None)
        assert mentions(problems, "not valid UTF-8")
        assert mentions(problems, "truncated")
        assert mentions(problems, "no 'Build version")

    @pytest.mark.parametrize("value", [None, 7, ["Xcode 1"]])
    def test_xcodebuild_nothing(self, value):
        problems = []
        assert hostinfo.parse_xcodebuild_version(value, problems) == (None, None)
        assert mentions(problems, "no 'Xcode <version>' line")

    def test_version_plist_fixture(self):
        data = fixture(MACOS / "Xcode-16.2-version.plist")
        assert hostinfo.parse_xcode_version_plist(data) == ("16.2", "16C5032a")

    def test_version_plist_binary_format(self):
        import plistlib

        data = plistlib.dumps(
            {"CFBundleShortVersionString": "15.4", "ProductBuildVersion": "15F31d"},
            fmt=plistlib.FMT_BINARY,
        )
        assert hostinfo.parse_xcode_version_plist(data) == ("15.4", "15F31d")

    def test_version_plist_hostile(self):
        problems = []
        assert hostinfo.parse_xcode_version_plist(b"\xff" * TEN_MB, problems) == (None, None)
        assert mentions(problems, "not a property list")
        problems = []
        assert hostinfo.parse_xcode_version_plist("text", problems) == (None, None)
        assert mentions(problems, "expected bytes")
        assert hostinfo.parse_xcode_version_plist(None) == (None, None)

    def test_version_plist_wrong_value_types_keep_the_good_one(self):
        import plistlib

        problems = []
        data = plistlib.dumps({"CFBundleShortVersionString": ["16"], "ProductBuildVersion": "X1"})
        assert hostinfo.parse_xcode_version_plist(data, problems) == (None, "X1")
        assert mentions(problems, "version.plist version", "expected a scalar")

    def test_developer_dir(self):
        assert (
            hostinfo.developer_dir_app(fixture(MACOS / "xcode-select-p.txt"))
            == "/Applications/Xcode-16.2.app"
        )
        assert hostinfo.developer_dir_app(b"/Library/Developer/CommandLineTools\n") is None
        assert hostinfo.developer_dir_app(None) is None

    def test_developer_dir_hostile(self):
        problems = []
        assert hostinfo.developer_dir_app(b"\xff" * TEN_MB, problems) is None
        assert mentions(problems, "xcode-select -p", "not valid UTF-8")

    def test_inventory_marks_selected_through_symlink(self):
        links = {"/Applications/Xcode.app": "/Applications/Xcode-16.2.app"}
        inventory = hostinfo.xcode_inventory(
            [
                ("/Applications/Xcode-16.2.app", "16.2", "16C5032a"),
                ("/Applications/Xcode-15.4.app", "15.4", "15F31d"),
            ],
            "/Applications/Xcode.app",
            resolve=lambda p: links.get(p, p),
        )
        assert inventory == [
            {
                "path": "/Applications/Xcode-15.4.app",
                "version": "15.4",
                "build": "15F31d",
                "selected": False,
            },
            {
                "path": "/Applications/Xcode-16.2.app",
                "version": "16.2",
                "build": "16C5032a",
                "selected": True,
            },
        ]

    def test_inventory_nothing_selected(self):
        inventory = hostinfo.xcode_inventory([("/Applications/Xcode.app", None, None)], None)
        assert inventory[0]["selected"] is False


# --------------------------------------------------------------------------------------------
# Code-signing identities
# --------------------------------------------------------------------------------------------


class TestFindIdentity:
    def test_fixture(self):
        problems = []
        identities = hostinfo.parse_find_identity(fixture(MACOS / "find-identity.txt"), problems)
        assert identities == [
            {
                "sha1": SHA_DEV,
                "name": "Apple Development: Jane Doe (ABCDE12345)",
                "status": "valid",
            },
            {
                "sha1": SHA_DEVID,
                "name": "Developer ID Application: Example Builds Ltd (7XQ3K9LM2P)",
                "status": "valid",
            },
            {
                "sha1": SHA_EXPIRED,
                "name": "Apple Development: Jane Doe (ABCDE12345)",
                "status": "CSSMERR_TP_CERT_EXPIRED",
            },
        ]
        assert problems == []

    def test_no_identities(self):
        problems = []
        assert hostinfo.parse_find_identity("     0 valid identities found\n", problems) == []
        assert problems == []

    def test_name_with_quotes_and_parentheses(self):
        line = f'  1) {SHA_DEV} "Dev "Quoted" (Team) Name (ABCDE12345)" (CSSMERR_TP_CERT_REVOKED)\n'
        (identity,) = hostinfo.parse_find_identity(line + "     1 valid identities found\n")
        assert identity["name"] == 'Dev "Quoted" (Team) Name (ABCDE12345)'
        assert identity["status"] == "CSSMERR_TP_CERT_REVOKED"

    def test_duplicate_hash_listed_once(self):
        text = f'  1) {SHA_DEV} "A"\n  2) {SHA_DEV.lower()} "A"\n     2 valid identities found\n'
        assert [i["sha1"] for i in hostinfo.parse_find_identity(text)] == [SHA_DEV]

    def test_cut_output_is_reported(self):
        problems = []
        text = f'  1) {SHA_DEV} "A"\n     3 valid identities found\n'
        assert len(hostinfo.parse_find_identity(text, problems)) == 1
        assert mentions(problems, "summary says 3 identities, 1 lines listed")

    def test_hostile(self):
        problems = []
        text = (
            b'  1) !----- unable to get SHA-1 digest -----! "Broken"\n'
            + f'  2) {SHA_DEVID} "Developer ID Application: \xe9 (7XQ3K9LM2P)"\n'.encode("latin-1")
            + b"\xff\xfe junk\n"
            + b"     2 valid identities found\n"
            + b"q" * TEN_MB
        )
        identities = hostinfo.parse_find_identity(text, problems)
        assert [i["sha1"] for i in identities] == [SHA_DEVID]
        assert identities[0]["name"] == "Developer ID Application: \ufffd (7XQ3K9LM2P)"
        assert mentions(problems, "unreadable identity line")
        assert mentions(problems, "not valid UTF-8")
        assert mentions(problems, "truncated")

    @pytest.mark.parametrize("value", [None, "", {"1": 2}])
    def test_nothing(self, value):
        assert hostinfo.parse_find_identity(value) == []

    def test_a_flood_of_identities_is_capped(self):
        problems = []
        lines = "".join(f'{n:3d}) {n:040X} "Identity {n}"\n' for n in range(1, 50_001))
        text = lines + "     50000 valid identities found\n"
        identities = hostinfo.parse_find_identity(text, problems)
        assert len(identities) == hostinfo.MAX_IDENTITIES
        assert identities[0] == {"sha1": f"{1:040X}", "name": "Identity 1", "status": "valid"}
        assert len(problems) == hostinfo.MAX_NOTES_PER_KIND + 1
        assert mentions(problems, "more problems like these not listed")


class TestFindCertificate:
    def test_fixture_maps_every_certificate(self):
        problems = []
        certificates = hostinfo.parse_find_certificate(
            fixture(MACOS / "find-certificate.txt"), problems
        )
        assert set(certificates) == {SHA_CA, SHA_DEV, SHA_DEVID, SHA_EXPIRED}
        assert all(pem.startswith("-----BEGIN CERTIFICATE-----\n") for pem in certificates.values())
        assert problems == []

    def test_certificate_facts(self):
        certificates = hostinfo.parse_find_certificate(fixture(MACOS / "find-certificate.txt"))
        facts = hostinfo.certificate_facts(certificates[SHA_DEV], SHA_DEV)
        assert facts == {
            "not_after": datetime.datetime(2030, 6, 30, 23, 59, 59, tzinfo=UTC),
            "team_id": "7XQ3K9LM2P",
        }

    def test_hash_mismatch_is_refused(self):
        problems = []
        certificates = hostinfo.parse_find_certificate(fixture(MACOS / "find-certificate.txt"))
        assert hostinfo.certificate_facts(certificates[SHA_DEV], SHA_DEVID, problems) is None
        assert mentions(problems, f"listed as {SHA_DEVID}", SHA_DEV)

    def test_hostile_blocks_keep_the_good_certificate(self):
        problems = []
        good = fixture(MACOS / "find-certificate.txt").decode()
        dev_block = good[good.index(f"SHA-1 hash: {SHA_DEV}") :]
        dev_block = dev_block[: dev_block.index("-----END CERTIFICATE-----") + 26]
        text = (
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"  # no SHA-1 line
            + "SHA-1 hash: NOTHEX\n"
            + dev_block
            + "SHA-1 hash: "
            + SHA_DEVID
            + "\n-----BEGIN CERTIFICATE-----\n"
            + "QUFB\n" * 3000  # never ends
        ).encode() + b"\xff"
        certificates = hostinfo.parse_find_certificate(text, problems)
        assert list(certificates) == [SHA_DEV]
        assert mentions(problems, "without a SHA-1 line")
        assert mentions(problems, "bad SHA-1 'NOTHEX'")
        assert mentions(problems, "unterminated certificate")
        assert mentions(problems, "not valid UTF-8")

    def test_garbage_pem(self):
        problems = []
        pem = "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n"
        assert hostinfo.certificate_facts(pem, SHA_DEV, problems) is None
        assert mentions(problems, "not a readable X.509 PEM")
        assert hostinfo.certificate_facts(None) is None

    def test_team_id_from_name(self):
        assert hostinfo.team_id_from_name("Apple Distribution: X (TEAM123456)") == "TEAM123456"
        assert hostinfo.team_id_from_name("lldb_codesign") is None
        assert hostinfo.team_id_from_name(None) is None


class TestSigningIdentities:
    def test_fixtures_end_to_end(self):
        problems = []
        identities = hostinfo.signing_identities(
            fixture(MACOS / "find-identity.txt"),
            fixture(MACOS / "find-certificate.txt"),
            now=NOW,
            problems=problems,
        )
        assert identities == [
            {
                "sha1": SHA_DEV,
                "name": "Apple Development: Jane Doe (ABCDE12345)",
                # The OU of the certificate, not the developer id in the parenthesis.
                "team_id": "7XQ3K9LM2P",
                "status": "valid",
                "not_after": "2030-06-30T23:59:59Z",
                "days_left": 1641,
            },
            {
                "sha1": SHA_DEVID,
                "name": "Developer ID Application: Example Builds Ltd (7XQ3K9LM2P)",
                "team_id": "7XQ3K9LM2P",
                "status": "valid",
                "not_after": "2031-02-01T10:00:00Z",
                "days_left": 1857,
            },
            {
                "sha1": SHA_EXPIRED,
                "name": "Apple Development: Jane Doe (ABCDE12345)",
                "team_id": "7XQ3K9LM2P",
                "status": "CSSMERR_TP_CERT_EXPIRED",
                "not_after": "2024-05-01T08:30:00Z",
                "days_left": -610,
            },
        ]
        assert problems == []

    def test_missing_certificates_keep_the_identities(self):
        problems = []
        identities = hostinfo.signing_identities(
            fixture(MACOS / "find-identity.txt"), None, now=NOW, problems=problems
        )
        assert [i["sha1"] for i in identities] == [SHA_DEV, SHA_DEVID, SHA_EXPIRED]
        assert identities[0]["not_after"] is None and identities[0]["days_left"] is None
        # Without the certificate the parenthesis is the best guess at a team id.
        assert identities[0]["team_id"] == "ABCDE12345"
        assert mentions(problems, SHA_DEV, "no certificate")

    def test_junk_certificates_keep_the_identities(self):
        problems = []
        identities = hostinfo.signing_identities(
            fixture(MACOS / "find-identity.txt"), b"\xff" * TEN_MB, now=NOW, problems=problems
        )
        assert len(identities) == 3
        assert mentions(problems, "security find-certificate", "not valid UTF-8")

    def test_naive_now_is_taken_as_utc(self):
        identities = hostinfo.signing_identities(
            fixture(MACOS / "find-identity.txt"),
            fixture(MACOS / "find-certificate.txt"),
            now=datetime.datetime(2026, 1, 1),
        )
        assert identities[0]["days_left"] == 1641

    def test_route_get_default(self):
        assert hostinfo.parse_route_get_default(fixture(MACOS / "route-get-default.txt")) == "en0"
        assert hostinfo.parse_route_get_default(None) is None
        problems = []
        assert hostinfo.parse_route_get_default(b"\xff\n  interface: en1\n", problems) == "en1"
        assert mentions(problems, "not valid UTF-8")


# --------------------------------------------------------------------------------------------
# NixOS
# --------------------------------------------------------------------------------------------


class TestNixos:
    def test_generation(self):
        assert hostinfo.parse_generation(fixture(NIXOS / "system-profile-link.txt")) == 123
        assert hostinfo.parse_generation("/nix/var/nix/profiles/system-7-link") == 7
        assert hostinfo.parse_generation(None) is None

    @pytest.mark.parametrize(
        "value", ["/nix/store/abc-nixos-system", "system--link", "system-12a-link"]
    )
    def test_generation_unexpected_target(self, value):
        problems = []
        assert hostinfo.parse_generation(value, problems) is None
        assert mentions(problems, "is not system-<N>-link")

    def test_generation_hostile(self):
        problems = []
        assert hostinfo.parse_generation(b"system-\xff-link", problems) is None
        assert mentions(problems, "not valid UTF-8")
        problems = []
        assert hostinfo.parse_generation({"x": 1}, problems) is None
        assert mentions(problems, "expected a scalar")

    def test_version_json(self):
        problems = []
        assert hostinfo.parse_nixos_version_json(
            fixture(NIXOS / "nixos-version-flake.json"), problems
        ) == {
            "nixos_version": "24.05.20240601.4a3fc4c",
            "nixpkgs_revision": "4a3fc4cf736b7d2d288d7a8bf775ac8d4c0920b4",
            "configuration_revision": "9f1c2d3e4b5a69788796a5b4c3d2e1f009182736",
        }
        assert problems == []

    def test_version_json_without_revisions(self):
        assert hostinfo.parse_nixos_version_json('{"nixosVersion":"24.11pre-git"}') == {
            "nixos_version": "24.11pre-git",
            "nixpkgs_revision": None,
            "configuration_revision": None,
        }

    def test_version_json_hostile(self):
        problems = []
        result = hostinfo.parse_nixos_version_json(
            '{"nixosVersion": "24.05.1", "nixpkgsRevision": "$(rm -rf /)", '
            '"configurationRevision": ["x"]}',
            problems,
        )
        assert result["nixos_version"] == "24.05.1"
        assert result["nixpkgs_revision"] is None
        assert result["configuration_revision"] is None
        assert mentions(problems, "nixpkgsRevision", "is not a revision")
        assert mentions(problems, "configurationRevision", "expected a scalar")

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            (b"\xff{not json", "not JSON"),
            ("[1, 2]", "not a JSON object"),
            ("{" * TEN_MB, "truncated"),
            ("[" * TEN_MB, "is not a version object"),
            ("[" * 70_000, "is not a version object"),
            ("[" * 20_000, "not JSON"),  # deep enough to exhaust the JSON decoder's recursion
            (42, "expected text"),
        ],
    )
    def test_version_json_junk(self, value, message):
        problems = []
        result = hostinfo.parse_nixos_version_json(value, problems)
        assert set(result.values()) == {None}
        assert mentions(problems, message)

    def test_version_file(self):
        text = fixture(NIXOS / "run-current-system-nixos-version.txt")
        assert hostinfo.parse_nixos_version_file(text) == "24.05.20240601.4a3fc4c"
        assert hostinfo.parse_nixos_version_file("gpu-lab-24.05.20240601.4a3fc4c\n") == (
            "24.05.20240601.4a3fc4c"
        )
        assert hostinfo.parse_nixos_version_file(None) is None

    def test_facts_prefer_json_and_fall_back_to_file(self):
        facts = hostinfo.nixos_facts(
            fixture(NIXOS / "system-profile-link.txt"),
            fixture(NIXOS / "nixos-version.json"),
            b"99.99.old",
        )
        assert facts == {
            "generation": 123,
            "nixpkgs_revision": "4a3fc4cf736b7d2d288d7a8bf775ac8d4c0920b4",
            "nixos_version": "24.05.20240601.4a3fc4c",
        }
        problems = []
        facts = hostinfo.nixos_facts(
            "system-9-link",
            b"\xff" * TEN_MB,
            fixture(NIXOS / "run-current-system-nixos-version.txt"),
            problems,
        )
        assert facts == {
            "generation": 9,
            "nixpkgs_revision": None,
            "nixos_version": "24.05.20240601.4a3fc4c",
        }
        assert mentions(problems, "nixos-version --json")


# --------------------------------------------------------------------------------------------
# Plain grain values
# --------------------------------------------------------------------------------------------


class TestGrainValues:
    def test_counts(self):
        assert hostinfo.count_value(8, "num_cpus") == 8
        assert hostinfo.count_value("8", "num_cpus") == 8
        assert hostinfo.count_value(None, "num_cpus") is None

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            (True, "expected a number"),
            ([8], "expected a number"),
            ("eight", "is not a number"),
            ("x" * TEN_MB, "is not a number"),
            (float("inf"), "is not a number"),
            (float("nan"), "is not a number"),
            (-2, "out of range"),
            (10**12, "out of range"),
        ],
    )
    def test_bad_counts(self, value, message):
        problems = []
        assert hostinfo.count_value(value, "num_cpus", problems) is None
        assert mentions(problems, "num_cpus", message)

    def test_mib_to_gib(self):
        assert hostinfo.mib_to_gib(24105) == 23.5
        assert hostinfo.mib_to_gib(2 * 1024 * 1024) == 2048.0  # a 2 TiB server
        problems = []
        assert hostinfo.mib_to_gib("lots", "mem_total", problems) is None
        assert mentions(problems, "mem_total", "not a number")

    def test_isoformat_utc(self):
        moment = datetime.datetime(
            2030, 1, 2, 3, 4, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
        )
        assert hostinfo.isoformat_utc(moment) == "2030-01-02T01:04:05Z"
        assert hostinfo.isoformat_utc(datetime.datetime(2030, 1, 2)) == "2030-01-02T00:00:00Z"


def test_max_output_is_what_the_tests_assume():
    # The hostile tests rely on 10 MB exceeding the bound text.as_text applies.
    assert TEN_MB > MAX_OUTPUT_BYTES
