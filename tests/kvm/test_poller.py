"""Polling many devices at once against the fake kvmd over real HTTPS: every device answers
in one cycle on kept-open connections, and a device that cannot be reached or does not
match its pin is a missed poll naming why, without holding up the others."""

import socket

import pytest

from saltext_fleet.kvm.options import load_options
from saltext_fleet.kvm.poller import Poller, poll_device
from tests.kvm.conftest import options_for


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_one_poll_reads_power_hid_msd_temperature_and_uptime(fake, client):
    fake.cpu_temp = 83.5
    poll = poll_device(client)
    assert poll.online and poll.error is None
    assert poll.power is False  # the fake's host starts powered off
    assert poll.hid_online is True and poll.msd_connected is False
    assert poll.temperature == 83.5 and poll.uptime_s >= 3600
    paths = [r.path for r in fake.seen() if r.path.startswith("/api/")]
    assert {"/api/info", "/api/atx", "/api/hid", "/api/msd"} <= set(paths)


def test_a_cycle_polls_every_device_and_reports_the_unreachable(fake):
    devices = {f"kvm-{i}": load_options(options_for(fake)) for i in range(12)}
    devices["kvm-gone"] = load_options(
        {**options_for(fake), "port": closed_port(), "connect_timeout": 1}
    )
    devices["kvm-impostor"] = load_options(options_for(fake, fingerprint="ab" * 32))
    with Poller(max_workers=8) as poller:
        first = poller.poll(devices)
        logins = len(fake.seen("/api/auth/login"))
        second = poller.poll(devices)
        assert len(fake.seen("/api/auth/login")) == logins
    assert set(first) == set(devices) == set(second)
    for name in (n for n in devices if n.startswith("kvm-") and n[4:].isdigit()):
        assert first[name].online and second[name].online, first[name]
    assert not first["kvm-gone"].online
    assert "cannot connect" in first["kvm-gone"].error
    assert not first["kvm-impostor"].online
    assert "fingerprint" in first["kvm-impostor"].error.lower()
    # the impostor's pin failed before anything was sent: every request the fake saw is from
    # the 12 good devices (one login each, then their polls)
    assert logins == 12


@pytest.mark.parametrize("dropped", [True, False])
def test_devices_left_out_of_a_cycle_are_closed(fake, dropped):
    devices = {"a": load_options(options_for(fake)), "b": load_options(options_for(fake))}
    with Poller(max_workers=2) as poller:
        poller.poll(devices)
        if dropped:
            devices.pop("b")
        assert set(poller.poll(devices)) == set(devices)
