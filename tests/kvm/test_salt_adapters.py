"""The pikvm proxy and execution modules loaded by Salt's own loader, in this process, the way
a deltaproxy loads its sub-proxies: one proxy loader, one execution-module loader and one
``__context__`` per device, all in one process. No daemon (the daemon test is
tests/integration/test_pikvm.py)."""

from __future__ import annotations

import copy
import hashlib

import pytest
import salt.config
import salt.loader
from salt.exceptions import CommandExecutionError

from tests.kvm.conftest import PASSWORD, options_for
from tests.support.fakekvmd import FakeKvmd

OTHER_PASSWORD = "other-device-pw"


@pytest.fixture(scope="module")
def base_opts(tmp_path_factory):
    opts = copy.deepcopy(salt.config.DEFAULT_MINION_OPTS)
    root = tmp_path_factory.mktemp("minion")
    opts.update(
        {
            "cachedir": str(root / "cache"),
            "pki_dir": str(root / "pki"),
            "file_client": "local",
            "grains": {},
            "pillar": {},
        }
    )
    return opts


@pytest.fixture(scope="module")
def other_server():
    with FakeKvmd(password=OTHER_PASSWORD, image_delay=0.2, click_s=0.2) as fake:
        yield fake


@pytest.fixture
def other(other_server):
    other_server.reset()
    yield other_server


def _subproxy(base_opts, minion_id, device):
    """What deltaproxy's ``subproxy_post_master_init`` builds for one sub-proxy."""
    opts = copy.deepcopy(base_opts)
    pillar = {"proxy": {"proxytype": "pikvm", **device}}
    opts.update({"id": minion_id, "proxyid": minion_id, "subproxy": True, "pillar": pillar})
    opts["proxy"] = copy.deepcopy(pillar["proxy"])
    context = {"proxy_id": minion_id}
    proxy = salt.loader.proxy(opts, context=context)
    funcs = salt.loader.minion_mods(opts, context=context, proxy=proxy)
    funcs.pack["__proxy__"] = proxy
    proxy.pack["__salt__"] = funcs
    proxy.pack["__pillar__"] = pillar
    proxy.reload_modules()
    assert "pikvm.init" in proxy and "pikvm.shutdown" in proxy
    proxy["pikvm.init"](opts)
    return opts, context, proxy, funcs


def test_two_devices_in_one_process_keep_apart(base_opts, fake, other):
    a = _subproxy(base_opts, "pikvm-a", options_for(fake))
    b = _subproxy(base_opts, "pikvm-b", options_for(other, password=OTHER_PASSWORD))
    (opts_a, ctx_a, proxy_a, funcs_a), (opts_b, ctx_b, proxy_b, funcs_b) = a, b
    try:
        assert ctx_a["pikvm"]["id"] == "pikvm-a" and ctx_b["pikvm"]["id"] == "pikvm-b"
        assert proxy_a["pikvm.initialized"]() and proxy_b["pikvm.initialized"]()
        assert proxy_a["pikvm.ping"]() is True and proxy_b["pikvm.ping"]() is True
        assert proxy_a["pikvm.alive"](opts_a) is True

        other.power_led = True
        funcs_a["pikvm.power"]("on")
        funcs_b["pikvm.power"]("reset_hard")
        assert [r.params["action"] for r in fake.seen("/api/atx/power")] == ["on"]
        assert [r.params["action"] for r in other.seen("/api/atx/power")] == ["reset_hard"]

        grains_a = salt.loader.grains(opts_a, proxy=proxy_a, context=ctx_a)
        grains_b = salt.loader.grains(opts_b, proxy=proxy_b, context=ctx_b)
        assert grains_a["pikvm"]["api"] == f"https://127.0.0.1:{fake.port}"
        assert grains_b["pikvm"]["api"] == f"https://127.0.0.1:{other.port}"
        assert grains_a["os"] == grains_b["os"] == "PiKVM"

        assert funcs_a["pikvm.msd_state"]()["drive"]["connected"] is False

        # an error names the sub-proxy and the device
        with pytest.raises(CommandExecutionError) as err:
            funcs_b["pikvm.click"]("kick")
        assert str(err.value).startswith("pikvm-b: kvm 127.0.0.1: button 'kick'")
    finally:
        proxy_a["pikvm.shutdown"](opts_a)
        proxy_b["pikvm.shutdown"](opts_b)
    assert "pikvm" not in ctx_a and not proxy_a["pikvm.initialized"]()
    assert proxy_b["pikvm.alive"](opts_b) is False


def test_an_unreachable_device_starts_and_says_so(base_opts, fake):
    device = options_for(fake, port=1, connect_timeout=0.5)  # nothing listens on port 1
    opts, ctx, proxy, funcs = _subproxy(base_opts, "pikvm-down", device)
    try:
        assert proxy["pikvm.initialized"]() is True
        assert proxy["pikvm.alive"](opts) is False
        grains = proxy["pikvm.grains"]()
        assert grains["pikvm"]["reachable"] is False
        assert "kvm 127.0.0.1:" in grains["pikvm"]["error"]
        with pytest.raises(CommandExecutionError, match=r"^pikvm-down: kvm 127.0.0.1: "):
            funcs["pikvm.info"]()
    finally:
        proxy["pikvm.shutdown"](opts)


def test_a_bad_option_stops_init_naming_the_device(base_opts, fake):
    with pytest.raises(Exception, match=r"kvm 127.0.0.1: option 'port'"):
        _subproxy(base_opts, "pikvm-bad", options_for(fake, port="https"))


def test_regular_minion_on_the_pikvm_uses_its_pikvm_options(base_opts, fake, tmp_path):
    opts = copy.deepcopy(base_opts)
    opts["id"] = "pikvm-native"
    opts["pikvm"] = {"port": fake.port, "password": PASSWORD, "fingerprint": fake.fingerprint}
    funcs = salt.loader.minion_mods(opts, context={})
    assert "pikvm.power" in funcs
    assert funcs["pikvm.power"]("on", wait=True)["leds"]["power"] is True
    assert fake.seen("/api/atx/power")[-1].params["action"] == "on"
    iso = tmp_path / "native.iso"
    iso.write_bytes(b"native" * 1000)
    digest = hashlib.sha256(iso.read_bytes()).hexdigest()
    with pytest.raises(CommandExecutionError, match="sha256 mismatch"):
        funcs["pikvm.iso_mount"]("native.iso", str(iso), "f" * 64)
    assert fake.seen("/api/msd/write") == []
    result = funcs["pikvm.iso_mount"]("native.iso", str(iso), digest)
    assert result["drive"]["connected"] is True

    bare = copy.deepcopy(base_opts)
    bare["id"] = "not-a-pikvm"
    assert "pikvm.power" not in salt.loader.minion_mods(bare, context={})
