"""A real salt-master and a real salt-proxy (``proxytype: pikvm``, id ``pikvm-1``) for the
fake kvmd, pinned by its certificate's fingerprint; the extension is found through its entry
point. What the fake saw is what reached "the device"."""

from __future__ import annotations

import hashlib
import time

import pytest

from tests.support.fakekvmd import FakeKvmd
from tests.support.harness import ACCEPTED_BY_HARNESS

pytestmark = pytest.mark.integration

PROXY_ID = "pikvm-1"
PASSWORD = "proxy-pw-1"
ISO = b"FLEET-TEST-ISO " * 70_000  # about 1 MB
ISO_SHA256 = hashlib.sha256(ISO).hexdigest()

PILLAR_TOP = f"""
base:
  '{PROXY_ID}':
    - pikvm_1
"""


@pytest.fixture(scope="module")
def fake():
    # image_delay as kvmd's (about a second): iso_mount must wait for the image.
    with FakeKvmd(password=PASSWORD, image_delay=1.0, click_s=0.3, long_click_s=0.5) as fake:
        yield fake


@pytest.fixture(scope="module")
def pikvm_proxy(salt_master, fake):
    device = f"""
proxy:
  proxytype: pikvm
  host: 127.0.0.1
  port: {fake.port}
  user: admin
  password: {PASSWORD}
  fingerprint: "{fake.fingerprint}"
  connect_timeout: 3
  timeout: 10
"""
    ACCEPTED_BY_HARNESS.add(PROXY_ID)
    # salt-factories writes proxy: {proxytype: dummy} into the proxy's config; the device's
    # options come from the master's pillar, under the config file's proxy: dict.
    # file_client local + use_master_when_local: pillar still comes from the master, but the
    # proxy's start-up saltutil.sync_all uses its local fileserver. With the master's (Salt
    # 3008.4) that call never returns here: the master logs "Failed to authenticate message"
    # for the proxy's file-client request and the proxy waits forever, before any proxy
    # module is loaded (py-spy: metaproxy/proxy.py post_master_init -> sync_all -> fileclient
    # envs), so it does not depend on proxytype.
    factory = salt_master.salt_proxy_minion_daemon(
        PROXY_ID,
        overrides={
            "proxy": {"proxytype": "pikvm"},
            "file_client": "local",
            "use_master_when_local": True,
        },
    )
    with (
        salt_master.pillar_tree.base.temp_file("top.sls", PILLAR_TOP),
        salt_master.pillar_tree.base.temp_file("pikvm_1.sls", device),
        factory.started(start_timeout=60),
    ):
        yield factory


def _salt(salt_cli, *args):
    return salt_cli.run(*args, minion_tgt=PROXY_ID, _timeout=60)


def test_proxy_minion_drives_the_fake_kvmd(salt_cli, pikvm_proxy, fake, tmp_path):
    started = time.monotonic()
    assert _salt(salt_cli, "test.ping").data is True

    # grains: the device's /api/info
    ret = _salt(salt_cli, "grains.item", "os", "osrelease", "serialnumber", "pikvm")
    assert ret.returncode == 0, ret
    assert ret.data["os"] == "PiKVM" and ret.data["osrelease"] == "4.197"
    assert ret.data["serialnumber"] == "10000000FAKE0001"
    assert ret.data["pikvm"]["reachable"] is True
    assert ret.data["pikvm"]["platform"]["model"] == "v4plus"
    assert ret.data["pikvm"]["api"] == f"https://127.0.0.1:{fake.port}"

    # power: the host is on, so reset_hard presses the reset button
    fake.power_led = True
    ret = _salt(salt_cli, "pikvm.power", "reset_hard")
    assert ret.returncode == 0, ret
    assert ret.data["action"] == "reset_hard" and ret.data["clicked"] is True
    assert [r.params["action"] for r in fake.seen("/api/atx/power")] == ["reset_hard"]
    assert fake.seen("/api/atx/power")[0].user == "admin"
    assert fake.atx_clicks == ["reset"]

    # a bad argument is a clear error, and nothing reached the device
    ret = _salt(salt_cli, "pikvm.power", "explode")
    assert ret.returncode != 0
    assert "power action 'explode': one of on, off, off_hard, reset_hard" in str(ret.data)
    assert len(fake.seen("/api/atx/power")) == 1

    # iso_mount with a wrong sha256: refused, nothing uploaded
    local = tmp_path / "local.iso"
    local.write_bytes(ISO)
    wrong = hashlib.sha256(b"not the image").hexdigest()
    ret = _salt(salt_cli, "pikvm.iso_mount", "debian.iso", str(local), wrong)
    assert ret.returncode != 0
    assert f"sha256 mismatch: expected {wrong}, got {ISO_SHA256}" in str(ret.data)
    assert "pikvm-1: kvm 127.0.0.1: image 'debian.iso'" in str(ret.data)
    assert fake.seen("/api/msd/write") == [] and fake.uploads == {}

    # the good one (as a file:// URL): uploaded, selected, connected
    ret = _salt(salt_cli, "pikvm.iso_mount", "debian.iso", f"file://{local}", ISO_SHA256)
    assert ret.returncode == 0, ret
    assert ret.data["drive"] == {
        "image": "debian.iso",
        "connected": True,
        "cdrom": True,
        "rw": False,
    }
    assert fake.uploads["debian.iso"] == {
        "size": len(ISO),
        "written": len(ISO),
        "sha256": ISO_SHA256,
    }
    assert len(fake.seen("/api/msd/write")) == 1

    ret = _salt(salt_cli, "pikvm.msd_state")
    assert ret.returncode == 0, ret
    assert ret.data["images"]["debian.iso"] == {"size": len(ISO), "complete": True}
    assert ret.data["drive"]["image"] == "debian.iso" and ret.data["drive"]["connected"]

    # an unquoted `off` reaches the module as YAML's False: still the power action "off"
    ret = _salt(salt_cli, "pikvm.power", "off")
    assert ret.returncode == 0, ret
    assert ret.data["action"] == "off" and ret.data["clicked"] is True
    assert [r.params["action"] for r in fake.seen("/api/atx/power")] == ["reset_hard", "off"]

    # every request came over one pinned, authenticated session: the one the proxy opened at
    # start, which each job (a forked process) reuses instead of logging in again
    assert all(r.user == "admin" for r in fake.requests if r.path != "/api/auth/login")
    assert len(fake.seen("/api/auth/login")) == 1
    assert time.monotonic() - started < 60
