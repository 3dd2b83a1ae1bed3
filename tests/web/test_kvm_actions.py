"""The PiKVM device page's buttons: operators see power, mount and eject, a viewer sees none
and is refused (403) on a post; a power click runs ``fleet.kvm_power`` as the user and a
rate-limit refusal comes back as a flash; a mount takes the device's ISO slot first (a second
mount is refused there and then, audited), hands its hold to ``fleet.kvm_iso_mount`` in a
thread, and the page shows the upload's progress. (The runners themselves, against a fake
kvmd: tests/functional/test_kvm_action_runners.py.)"""

from __future__ import annotations

import html
import os
import re

import pytest

from saltext_fleet import config
from saltext_fleet.core.errors import FleetError
from saltext_fleet.master import kvmops
from saltext_fleet.store import audit as store_audit
from saltext_fleet.store import kvm as store_kvm
from saltext_fleet.store import kvm_actions as store_actions
from saltext_fleet.webui.salt import SaltError
from tests.support.waiting import wait_for

SHA = "ab" * 32


class StubKvm:
    """Just enough of a KvmClient for a power action: the LED is off, a press is counted."""

    presses: list[str] = []

    def __init__(self, options):
        self.host = options.host

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def atx_state(self):
        return {"leds": {"power": False, "hdd": False}}

    def atx_power(self, action, wait=False):
        StubKvm.presses.append(action)


@pytest.fixture
def kvm_app(app, engine, salt, fleet_config):
    """Two devices registered with the app's vault, an image in the library, and the
    ``fleet.kvm_power`` runner answered by the real actions (a stub device behind them)."""
    vault = app.extensions["fleet"].vault
    with engine.begin() as conn:
        store_kvm.add_device(conn, vault, "pikvm-web1", {"host": "10.0.0.11", "password": "pw"})
        store_kvm.add_device(conn, vault, "pikvm-web2", {"host": "10.0.0.12", "password": "pw"})
        store_actions.add_iso(conn, "boot.iso", SHA, 5 * 2**20, "/srv/boot.iso", "user:root")
    os.makedirs(fleet_config.kvm.iso_dir, exist_ok=True)
    with open(os.path.join(fleet_config.kvm.iso_dir, "boot.iso"), "wb") as handle:
        handle.write(b"x")
    StubKvm.presses = []

    def kvm_power(kwarg, user):
        ops = kvmops.KvmActions(engine, vault, fleet_config.kvm, user, client_factory=StubKvm)
        try:
            return ops.power(kwarg["device"], kwarg["action"])
        except FleetError as exc:  # what the runner does with it
            raise SaltError(f"fleet.kvm_power: {exc}") from exc

    salt.answers["fleet.kvm_power"] = lambda kwarg: kvm_power(kwarg, salt.calls[-1][3])
    salt.answers["fleet.kvm_iso_eject"] = {"image": "boot.iso", "was_connected": True}
    return app


def flashes(page: str) -> list[str]:
    found = re.search(r'<div class="flash" role="status">(.*?)</div>', page, re.S)
    shown = re.findall(r"<p>(.*?)</p>", found.group(1), re.S) if found else []
    return [html.unescape(message) for message in shown]


def runner_calls(salt, fun):
    return [c for c in salt.calls if c[0] == "runner" and c[1] == fun]


def test_operators_see_the_controls_and_a_viewer_neither_sees_nor_may_use_them(
    kvm_app, salt, logged_in, engine
):
    operator, _ = logged_in("operator")
    page = operator.get("/kvm/pikvm-web1").get_data(as_text=True)
    assert re.findall(r'data-kvm-power="([^"]+)"', page) == ["on", "off", "off_hard", "reset_hard"]
    assert '<option value="boot.iso">boot.iso (5.0 MiB)</option>' in page
    assert 'data-kvm-media="eject"' in page and page.count('name="csrf_token"') >= 6
    for role in ("viewer", "auditor"):
        client, csrf = logged_in(role)
        page = client.get("/kvm/pikvm-web1").get_data(as_text=True)
        assert 'id="kvm-controls"' not in page and "data-kvm-power" not in page
        for path, form in (
            ("/kvm/pikvm-web1/power", {"action": "reset_hard"}),
            ("/kvm/pikvm-web1/media/mount", {"iso": "boot.iso"}),
            ("/kvm/pikvm-web1/media/eject", {}),
        ):
            resp = client.post(path, data={**form, "csrf_token": csrf})
            assert resp.status_code == 403, (role, path)
    assert salt.calls == [] and StubKvm.presses == []
    with engine.connect() as conn:
        assert store_actions.slots(conn, "pikvm-web1") == {}


def test_power_runs_as_the_user_and_a_refusal_is_flashed(kvm_app, salt, logged_in, engine):
    client, csrf = logged_in("operator")
    resp = client.post("/kvm/pikvm-web1/power", data={"action": "on", "csrf_token": csrf})
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/kvm/pikvm-web1")
    assert flashes(client.get("/kvm/pikvm-web1").get_data(as_text=True)) == [
        "pikvm-web1: power on: done."
    ]
    (call,) = runner_calls(salt, "fleet.kvm_power")
    assert call[2] == {"device": "pikvm-web1", "action": "on"} and call[3] == "ui:operator"
    client.post("/kvm/pikvm-web1/power", data={"action": "reset_hard", "csrf_token": csrf})
    page = client.get("/kvm/pikvm-web1").get_data(as_text=True)
    (message,) = flashes(page)
    assert message.startswith(
        "fleet.kvm_power: kvm pikvm-web1: power reset_hard refused by the rate limit (one "
        "power action per 10 s): the last (power on by ui:operator at "
    )
    assert "retry in" in message
    assert StubKvm.presses == ["on"]
    # the refusal is in the audit chain, and on the page of those who may read it
    (refused,) = store_audit.events(engine, target="pikvm-web1", action="kvm.power", limit=1)
    assert refused["actor"] == "ui:operator" and refused["details"]["result"] == "refused"
    assert re.search(r"<td>kvm\.power reset_hard</td>\s*<td>refused: ", page)
    viewer, _ = logged_in("viewer")
    assert 'id="kvm-actions"' not in viewer.get("/kvm/pikvm-web1").get_data(as_text=True)
    # bad input
    bad = client.post("/kvm/pikvm-web1/power", data={"action": "explode", "csrf_token": csrf})
    assert bad.status_code == 400 and b"action: one of on, off" in bad.data
    gone = client.post("/kvm/pikvm-nope/power", data={"action": "on", "csrf_token": csrf})
    assert gone.status_code == 404
    assert client.post("/kvm/pikvm-web1/power", data={"action": "on"}).status_code in (400, 403)


def test_a_mount_takes_the_slot_first_and_hands_its_hold_to_the_runner(
    kvm_app, salt, logged_in, engine, fleet_config
):
    client, csrf = logged_in("operator")
    resp = client.post("/kvm/pikvm-web1/media/mount", data={"iso": "boot.iso", "csrf_token": csrf})
    assert resp.status_code == 303
    (call,) = wait_for(
        "the mount runner", lambda: runner_calls(salt, "fleet.kvm_iso_mount"), 10, 0.01
    )
    kwarg = call[2]
    assert (kwarg["device"], kwarg["iso"], call[3]) == ("pikvm-web1", "boot.iso", "ui:operator")
    # the hold handed over is the one holding the device's ISO slot
    assert store_actions.renew(
        engine, "pikvm-web1", "media", kwarg["hold"], 300, done_bytes=2 * 2**20
    )
    page = client.get("/kvm/pikvm-web1").get_data(as_text=True)
    assert flashes(page) == [
        "pikvm-web1: mounting boot.iso started; its progress shows on this page."
    ]
    assert '<progress id="kvm-upload-progress" max="100" value="40">' in page
    assert "ui:operator: iso mount of <code>boot.iso</code>" in page
    media = client.get("/api/v1/kvm/devices/pikvm-web1").get_json()["media"]
    assert media["percent"] == 40 and media["image"] == "boot.iso"

    # a second mount (or an eject) while it runs is refused on the spot, and audited
    client.post("/kvm/pikvm-web1/media/mount", data={"iso": "boot.iso", "csrf_token": csrf})
    (message,) = flashes(client.get("/kvm/pikvm-web1").get_data(as_text=True))
    assert message.startswith("kvm pikvm-web1: iso_mount refused: one ISO action at a time")
    assert "ui:operator's iso_mount of 'boot.iso'" in message and "40% uploaded" in message
    assert len(runner_calls(salt, "fleet.kvm_iso_mount")) == 1
    (refused,) = store_audit.events(engine, target="pikvm-web1", action="kvm.iso_mount")
    assert refused["details"]["result"] == "refused" and refused["actor"] == "ui:operator"
    # another device is not held up
    client.post("/kvm/pikvm-web2/media/mount", data={"iso": "boot.iso", "csrf_token": csrf})
    assert flashes(client.get("/kvm/pikvm-web2").get_data(as_text=True)) == [
        "pikvm-web2: mounting boot.iso started; its progress shows on this page."
    ]
    wait_for(
        "the second device's mount",
        lambda: len(runner_calls(salt, "fleet.kvm_iso_mount")) == 2,
        10,
        0.01,
    )

    # an image that is not in the library: said before the slot is even asked for
    client.post("/kvm/pikvm-web1/media/mount", data={"iso": "nope.iso", "csrf_token": csrf})
    assert flashes(client.get("/kvm/pikvm-web1").get_data(as_text=True)) == [
        "the ISO library has no image named 'nope.iso'"
    ]
    assert client.post("/kvm/pikvm-web1/media/mount", data={"csrf_token": csrf}).status_code == 400


def test_a_mount_whose_runner_fails_gives_the_slot_back(kvm_app, salt, logged_in, engine):
    salt.answers["fleet.kvm_iso_mount"] = SaltError("fleet.kvm_iso_mount: kvm pikvm-web1: down")
    client, csrf = logged_in("operator")
    client.post("/kvm/pikvm-web2/media/mount", data={"iso": "nope.iso", "csrf_token": csrf})
    (message,) = flashes(client.get("/kvm/pikvm-web2").get_data(as_text=True))
    assert message == "the ISO library has no image named 'nope.iso'"
    client.post("/kvm/pikvm-web1/media/mount", data={"iso": "boot.iso", "csrf_token": csrf})
    assert flashes(client.get("/kvm/pikvm-web1").get_data(as_text=True)) == [
        "pikvm-web1: mounting boot.iso started; its progress shows on this page."
    ]

    def free():
        with engine.connect() as conn:
            return store_actions.running_media(conn, "pikvm-web1") is None

    wait_for("the slot given back", free, 10, 0.01)
    resp = client.post("/kvm/pikvm-web1/media/eject", data={"csrf_token": csrf})
    assert resp.status_code == 303
    assert flashes(client.get("/kvm/pikvm-web1").get_data(as_text=True)) == [
        "pikvm-web1: virtual drive ejected (boot.iso)."
    ]
    (call,) = runner_calls(salt, "fleet.kvm_iso_eject")
    assert call[2] == {"device": "pikvm-web1"} and call[3] == "ui:operator"


def test_an_empty_library_says_how_to_fill_it(app, engine, logged_in):
    with engine.begin() as conn:
        store_kvm.add_device(
            conn, app.extensions["fleet"].vault, "pikvm-x", {"host": "10.0.0.9", "password": "p"}
        )
    client, _ = logged_in("admin")
    page = client.get("/kvm/pikvm-x").get_data(as_text=True)
    assert 'id="kvm-library-empty"' in page and "salt-run fleet.iso_add" in page
    assert config.KvmConfig().power_interval == 10.0
