"""The fleet_pkgset beacon, loaded by Salt's beacon loader over the real execution modules."""

import json
import os
import pathlib

import pytest
import salt.loader

from tests.functional.test_inventory import (
    build_wheel,
    make_venv,
    pip,
    pip_install_local,
    salt_functions_patched,
)

CONFIG = [{"interval": 60}, {"full_every": 3600}]


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory):
    return make_venv(tmp_path_factory.mktemp("beacon-venv") / "venv")


@pytest.fixture(scope="module")
def minion_config_overrides(venv_python):
    return {"fleet": {"inventory": {"pip": [str(venv_python)]}}}


def load_beacons(loaders):
    """A fresh beacon loader, as the minion builds one (its own ``__context__``)."""
    return salt.loader.beacons(loaders.opts, loaders.modules)


@pytest.fixture
def beacons(loaders):
    return load_beacons(loaders)


class Recorder:
    """Stands in for a Salt function and records its calls."""

    def __init__(self, func=None):
        self.calls = []
        self.func = func

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.func(*args, **kwargs) if self.func else True


def state_file(loaders) -> pathlib.Path:
    return pathlib.Path(loaders.opts["cachedir"]) / "fleet" / "pkgset_beacon.json"


def test_beacon_loads_and_validates(beacons):
    assert "fleet_pkgset.beacon" in beacons
    validate = beacons["fleet_pkgset.validate"]
    assert validate(CONFIG) == (True, "Valid beacon configuration")
    assert validate([{"interval": 60}])[0] is True
    assert validate({"interval": 60})[0] is False
    assert validate(["interval"])[0] is False
    assert validate([{"full_every": "often"}])[0] is False
    assert validate([{"full_every": -1}])[0] is False
    assert validate([{"full_every": True}])[0] is False


def test_change_fires_once(loaders, beacons, venv_python, tmp_path):
    beacon = beacons["fleet_pkgset.beacon"]
    real_inventory = loaders.modules["fleet.inventory"].func
    inventory = Recorder(real_inventory)
    send = Recorder()
    with salt_functions_patched(loaders, {"event.send": send, "fleet.inventory": inventory}):
        # First run: records the digest, fires nothing.
        assert beacon(CONFIG) == []
        assert len(inventory.calls) == 1
        saved = json.loads(state_file(loaders).read_text())
        first_digest = saved["digest"]
        assert len(first_digest) == 64

        # Nothing changed: the stamps are the same, so not even the inventory runs.
        assert beacon(CONFIG) == []
        assert len(inventory.calls) == 1
        assert send.calls == []

        pip_install_local(venv_python, build_wheel(tmp_path))
        try:
            ret = beacon(CONFIG)
            assert len(inventory.calls) == 2
            assert len(ret) == 1
            event = ret[0]
            assert event["tag"] == "changed"
            assert event["previous"] == first_digest
            assert event["digest"] != first_digest and len(event["digest"]) == 64
            assert event["counts"]["pypi"] >= 2  # pip (+ setuptools) + fleettiny
            assert event["counts"]["deb"] > 0
            assert send.calls == [
                (
                    (
                        "fleet/pkgset/changed",
                        {
                            "digest": event["digest"],
                            "previous": first_digest,
                            "counts": event["counts"],
                        },
                    ),
                    {},
                )
            ]
            # Reported once: the next run is quiet again.
            assert beacon(CONFIG) == []
            assert len(send.calls) == 1
        finally:
            pip(venv_python, "uninstall", "-y", "fleettiny")


def test_restart_does_not_fire_spuriously(loaders, venv_python):
    send = Recorder()
    with salt_functions_patched(loaders, {"event.send": send}):
        assert load_beacons(loaders)["fleet_pkgset.beacon"](CONFIG) == []
        digest = json.loads(state_file(loaders).read_text())["digest"]
        # A restarted minion: new loader, empty __context__, state from the cache file.
        inventory = Recorder(loaders.modules["fleet.inventory"].func)
        with salt_functions_patched(loaders, {"fleet.inventory": inventory}):
            assert load_beacons(loaders)["fleet_pkgset.beacon"](CONFIG) == []
            assert inventory.calls == []  # stamps from the file still match
            # full_every elapsed: the inventory runs, the digest is the same, no event.
            assert load_beacons(loaders)["fleet_pkgset.beacon"]([{"full_every": 0}]) == []
            assert len(inventory.calls) == 1
    assert send.calls == []
    assert json.loads(state_file(loaders).read_text())["digest"] == digest


def test_change_while_minion_was_down_fires_after_restart(loaders, venv_python, tmp_path):
    send = Recorder()
    with salt_functions_patched(loaders, {"event.send": send}):
        assert load_beacons(loaders)["fleet_pkgset.beacon"](CONFIG) == []
        pip_install_local(venv_python, build_wheel(tmp_path, name="fleetother"))
        try:
            ret = load_beacons(loaders)["fleet_pkgset.beacon"](CONFIG)
        finally:
            pip(venv_python, "uninstall", "-y", "fleetother")
    assert [e["tag"] for e in ret] == ["changed"]
    assert len(send.calls) == 1


def test_unreadable_state_file_and_failing_inventory(loaders):
    path = state_file(loaders)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff not json")
    send = Recorder()

    def broken_inventory():
        raise RuntimeError("boom")

    with salt_functions_patched(loaders, {"event.send": send, "fleet.inventory": broken_inventory}):
        assert load_beacons(loaders)["fleet_pkgset.beacon"](CONFIG) == []
    with salt_functions_patched(
        loaders, {"event.send": send, "fleet.inventory": lambda: {"digest": None}}
    ):
        assert load_beacons(loaders)["fleet_pkgset.beacon"](CONFIG) == []
    # A good run then records normally, replacing the bad file.
    with salt_functions_patched(loaders, {"event.send": send}):
        assert load_beacons(loaders)["fleet_pkgset.beacon"](CONFIG) == []
    assert len(json.loads(path.read_text())["digest"]) == 64
    assert send.calls == []
    assert not [p for p in os.listdir(path.parent) if p.startswith(".pkgset_beacon.")]
