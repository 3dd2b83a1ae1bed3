"""The ``pikvm`` grain of a salt-minion on the PiKVM itself, against the fake kvmd (real HTTPS
on loopback), and on a host that is not a PiKVM (nothing sent, nothing reported)."""

from __future__ import annotations

import time

import salt.config
import salt.loader

from saltext_fleet.kvm import localgrains
from tests.kvm.conftest import PASSWORD, options_for
from tests.support.fakekvmd import make_certificate


def test_the_device_is_reported_from_kvmd(fake, tmp_path):
    grains = localgrains.device_grains(
        options_for(fake), kvmd_etc=str(tmp_path / "absent"), cert_file=str(tmp_path / "none")
    )
    assert set(grains) == {"pikvm"}  # the core grains (os, kernel...) are left alone
    pikvm = grains["pikvm"]
    assert pikvm["reachable"] is True
    assert pikvm["kvmd_version"] == fake.version
    assert pikvm["model"] == "v4plus" and pikvm["board"] == "rpi4"
    assert pikvm["serial"] == "10000000FAKE0001"
    assert pikvm["hardware"] == "Raspberry Pi 4 Model B Rev 1.5"
    assert pikvm["api"] == f"https://127.0.0.1:{fake.port}"
    assert [r.status for r in fake.seen("/api/info")] == [200]


def test_on_a_pikvm_the_certificate_is_pinned_to_the_devices_own(fake, tmp_path):
    etc = tmp_path / "kvmd"
    etc.mkdir()
    # no fingerprint, no verify: the pin comes from the device's certificate file
    raw = {"port": fake.port, "password": PASSWORD}
    grains = localgrains.device_grains(raw, kvmd_etc=str(etc), cert_file=fake.cert_path)
    assert grains["pikvm"]["reachable"] is True
    other = tmp_path / "other.crt"
    other.write_bytes(make_certificate().cert_pem)  # another device's certificate
    refused = localgrains.device_grains(raw, kvmd_etc=str(etc), cert_file=str(other))
    assert refused["pikvm"]["reachable"] is False
    assert "fingerprint" in refused["pikvm"]["error"]


def test_not_a_pikvm_reports_nothing_and_sends_nothing(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(localgrains, "KvmClient", lambda *a, **k: calls.append(a))
    began = time.monotonic()
    assert localgrains.device_grains(None, kvmd_etc=str(tmp_path / "kvmd")) == {}
    assert localgrains.device_grains({}, kvmd_etc=str(tmp_path / "kvmd")) == {}
    assert calls == [] and time.monotonic() - began < 0.1


def test_a_pikvm_without_credentials_or_kvmd_says_why(tmp_path):
    etc = tmp_path / "kvmd"
    etc.mkdir()
    no_password = localgrains.device_grains(None, kvmd_etc=str(etc))
    assert no_password == {"pikvm": {"reachable": False, "error": no_password["pikvm"]["error"]}}
    assert "'password': required" in no_password["pikvm"]["error"]

    # kvmd down: a refused connection, answered at once
    began = time.monotonic()
    down = localgrains.device_grains(
        {"port": 1, "password": "x", "fingerprint": "ab" * 32}, kvmd_etc=str(etc)
    )
    assert down["pikvm"]["reachable"] is False and "cannot connect" in down["pikvm"]["error"]
    assert time.monotonic() - began < localgrains.CONNECT_TIMEOUT_S + 1

    bad = localgrains.device_grains(["not", "a", "dict"], kvmd_etc=str(etc))
    assert bad["pikvm"]["error"] == "option 'pikvm' must be a dict, got list"


def test_salts_grains_loader_runs_it_with_the_minions_options(fake, tmp_path):
    opts = salt.config.minion_config(None)
    opts.update({"cachedir": str(tmp_path / "cache"), "pikvm": options_for(fake), "grains": {}})
    funcs = salt.loader.grain_funcs(opts)
    assert funcs["pikvm.pikvm"]()["pikvm"]["serial"] == "10000000FAKE0001"
