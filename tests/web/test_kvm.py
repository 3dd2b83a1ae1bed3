"""The PiKVM pages and their API: the devices with their state, one device's polls with its
temperature chart, the node page's KVM section, what a bad parameter gets, and no credential
anywhere. (Who may see what: the route walk.)"""

from __future__ import annotations

import datetime as dt
import re

import pytest

from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.kvm import health
from saltext_fleet.store import kvm as store_kvm
from tests.support.vulnfleet import make_vuln_fleet

PASSWORD = "web-kvm-pw-8812"


@pytest.fixture
def devices(engine, tmp_path):
    make_vuln_fleet(engine)  # nodes db1, web1, web2
    vault = core_secrets.Vault.open(tmp_path / "kvm.fernet")
    now = dt.datetime.now(dt.timezone.utc)
    with engine.begin() as conn:
        store_kvm.add_device(
            conn, vault, "pikvm-web1", {"host": "10.0.0.11", "password": PASSWORD}, "web1"
        )
        store_kvm.add_device(
            conn,
            vault,
            "pikvm-db1",
            {"host": "10.0.0.12", "port": 8443, "password": PASSWORD, "fingerprint": "ab" * 32},
            "db1",
        )
        for i, temp in enumerate((60.0, 72.5, 84.0)):
            store_kvm.record_polls(
                conn,
                {
                    "pikvm-web1": health.Poll(
                        online=True, power=True, temperature=temp, uptime_s=7260, hid_online=True
                    ),
                    "pikvm-db1": health.missed("kvm 10.0.0.12: <script>timed out</script>"),
                },
                now=now - dt.timedelta(minutes=10 - i),
            )
    return engine


@pytest.fixture
def viewer(devices, logged_in):
    client, _csrf = logged_in("viewer")
    return client


def text(resp) -> str:
    assert resp.status_code == 200, resp.get_data(as_text=True)[:500]
    return resp.get_data(as_text=True)


def test_the_devices_page_shows_state_power_and_temperature(viewer):
    page = text(viewer.get("/kvm"))
    assert re.findall(r'<tr data-device="([^"]+)">', page) == ["pikvm-db1", "pikvm-web1"]
    rows = dict(re.findall(r'<tr data-device="([^"]+)">(.*?)</tr>', page, re.S))
    assert ">offline<" in rows["pikvm-db1"] and "10.0.0.12:8443" in rows["pikvm-db1"]
    assert ">online<" in rows["pikvm-web1"] and "84.0 °C" in rows["pikvm-web1"]
    assert 'data-field="kvm-hot"' in rows["pikvm-web1"]  # 84 °C: over the default 80
    assert 'data-kvm-count="offline">1<' in page and 'data-kvm-count="hot">1<' in page
    assert PASSWORD not in page


def test_a_device_page_charts_its_temperature_and_lists_its_polls(viewer):
    page = text(viewer.get("/kvm/pikvm-web1"))
    chart = re.search(r'<figure id="kvm-chart">(.*?)</figure>', page, re.S).group(1)
    assert chart.count("<circle") == 3 and "84" in chart
    assert len(re.findall(r"<tr><td><time", page)) == 3
    assert "2 h 1 min" in page  # uptime 7,260 s
    down = text(viewer.get("/kvm/pikvm-db1?hours=6"))
    assert "no CPU temperature (°C) yet" in down or "chart-empty" in down
    assert 'data-field="kvm-missed">3<' in down and "pinned" in down
    # the device's own error text is escaped
    assert "&lt;script&gt;timed out" in down and "<script>timed out" not in down


def test_the_node_page_shows_the_device_that_controls_it(viewer):
    page = text(viewer.get("/nodes/web1"))
    section = re.search(r'<section id="kvm" class="card">(.*?)</section>', page, re.S).group(1)
    assert 'data-device="pikvm-web1"' in section and "pikvm-db1" not in section
    assert 'id="kvm"' not in text(viewer.get("/nodes/web2"))  # no device: no section


def test_the_api_and_bad_parameters(viewer):
    listed = viewer.get("/api/v1/kvm/devices").get_json()
    assert [d["name"] for d in listed["devices"]] == ["pikvm-db1", "pikvm-web1"]
    assert listed["counts"]["offline"] == 1
    one = viewer.get("/api/v1/kvm/devices/pikvm-web1?hours=168").get_json()
    assert [p["temperature"] for p in one["history"]] == [60.0, 72.5, 84.0]
    assert one["device"]["node"] == "web1" and one["hours"] == 168
    assert PASSWORD not in repr(listed) + repr(one)
    bad = viewer.get("/api/v1/kvm/devices/pikvm-web1?hours=5")
    assert bad.status_code == 400 and "hours: one of 24, 6, 168" in bad.get_data(as_text=True)
    assert viewer.get("/api/v1/kvm/devices/pikvm-nope").status_code == 404
    assert viewer.get("/kvm/..%2F..%2Fetc").status_code == 404


def test_no_device_yet_says_how_to_add_one(engine, logged_in):
    client, _csrf = logged_in("viewer")
    page = text(client.get("/kvm"))
    assert 'id="kvm-empty"' in page and "salt-run fleet.kvm_add" in page


def test_the_console_page_says_who_may_type(devices, logged_in):
    viewer, _csrf = logged_in("viewer")
    device = text(viewer.get("/kvm/pikvm-web1"))
    assert 'id="kvm-console-link"' in device and "Console (view only)" in device
    page = text(viewer.get("/kvm/pikvm-web1/console"))
    root = re.search(r'<section class="card console" id="console"(.*?)>', page, re.S).group(1)
    assert 'data-stream="/kvm/pikvm-web1/console/stream"' in root
    assert 'data-ws="/kvm/pikvm-web1/console/ws"' in root
    assert 'data-input="0"' in root and "view only" in page
    assert PASSWORD not in page
    operator, _csrf = logged_in("operator")
    assert 'data-input="1"' in text(operator.get("/kvm/pikvm-web1/console"))
    assert "Console (view only)" not in text(operator.get("/kvm/pikvm-web1"))
    assert viewer.get("/kvm/pikvm-nope/console").status_code == 404
