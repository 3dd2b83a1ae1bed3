"""The ``fleet`` grain through Salt's real loader on this (Linux) machine, checked against reality.

Each expectation is computed here from the operating system directly, not from the grain's own
helpers, so a wrong decision in the grain shows up as a mismatch.
"""

import ipaddress
import os
import platform
import shutil
import socket

import pytest


@pytest.fixture
def grains(loaders):
    return loaders.grains


@pytest.fixture
def fleet(grains):
    assert "fleet" in grains, "the fleet grain was not loaded through the salt.loader entry point"
    return grains["fleet"]


def test_no_errors_on_a_healthy_host(fleet):
    assert "errors" not in fleet, fleet.get("errors")


def test_linux_host_has_no_platform_sections(fleet):
    assert "macos" not in fleet
    if not os.path.exists("/etc/NIXOS"):
        assert "nixos" not in fleet


def test_cpu_cores(fleet, grains):
    assert fleet["cpu_cores"] == grains["num_cpus"]
    assert fleet["cpu_cores"] in {os.cpu_count(), len(os.sched_getaffinity(0))}


def test_ram_matches_proc_meminfo(fleet):
    with open("/proc/meminfo", encoding="ascii") as handle:
        total_kib = next(int(line.split()[1]) for line in handle if line.startswith("MemTotal:"))
    assert fleet["ram_gib"] == pytest.approx(total_kib / 1024 / 1024, abs=0.1)


def test_hostname_matches_the_system(fleet, grains):
    system_name = socket.gethostname()
    if system_name.rstrip(".").lower().endswith((".in-addr.arpa", ".ip6.arpa")):
        assert fleet["hostname"] == grains["id"]
    else:
        assert fleet["hostname"].split(".")[0] == system_name.split(".")[0]


def test_os_facts(fleet):
    os_release = {}
    with open("/etc/os-release", encoding="utf-8") as handle:
        for line in handle:
            key, _, value = line.strip().partition("=")
            os_release[key] = value.strip('"')
    assert fleet["os_family"] == "Debian"
    assert fleet["os"] == "Debian"
    assert fleet["os_version"] == os_release["VERSION_ID"]
    assert fleet["kernel"] == "Linux"
    assert fleet["kernel_release"] == platform.release()
    assert fleet["arch"] == platform.machine()


def test_ipv4_is_routable_and_is_the_default_route_source(fleet, grains):
    address = fleet["ipv4"]
    if address is None:
        usable = [
            a
            for iface, addresses in grains["ip4_interfaces"].items()
            if iface not in ("lo", "lo0")
            for a in addresses
            if not ipaddress.IPv4Address(a).is_loopback
            and not ipaddress.IPv4Address(a).is_link_local
        ]
        assert usable == [], "a usable address exists but the grain reported none"
        return
    parsed = ipaddress.IPv4Address(address)
    assert not parsed.is_loopback and not parsed.is_link_local
    assert any(address in addresses for addresses in grains["ip4_interfaces"].values())
    # The kernel's own choice of source address for the default route (a UDP connect sends no
    # packet): the grain must agree with it.
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.123", 9))
        source = probe.getsockname()[0]
    except OSError as exc:
        # The grain reported an address, so the host has a route: this must not fail.
        raise AssertionError(
            f"the grain reported {address} but the kernel has no route: {exc}"
        ) from exc
    finally:
        probe.close()
    assert address == source


def test_storage_covers_the_root_filesystem(fleet):
    storage = fleet["storage_gib"]
    assert isinstance(storage, float) and storage > 0
    root_gib = shutil.disk_usage("/").total / 1024**3
    # Disks are counted whole (partition tables, other partitions), so never less than "/".
    assert storage >= round(root_gib, 1) - 0.1


def test_hardware_model_is_text_or_unknown(fleet, grains):
    expected = grains.get("productname") or grains.get("model")
    assert fleet["hardware_model"] == (expected or None)
