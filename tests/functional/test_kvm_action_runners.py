"""The PiKVM action runners and the ISO library through Salt's real runner loader (master
opts, no daemon) against two fake kvmd over real HTTPS, on SQLite and real PostgreSQL: an
image added once (refused and not kept on a wrong sha256) and mounted on two devices, the
rate limits refusing a second power action and an ISO action while another runs (nothing
sent to the device), two concurrent power actions of which exactly one reaches the device,
and every action in the audit chain with who, action and result."""

import hashlib
import os
import threading

import pytest
import salt.loader
import salt.utils.event
from salt.exceptions import SaltRunnerError

from saltext_fleet import config
from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.kvm.errors import KvmRateLimitError
from saltext_fleet.master import kvmops
from saltext_fleet.store import engine as store_engine
from saltext_fleet.store import kvm_actions as store_actions
from tests.support.fakekvmd import FakeKvmd
from tests.support.runners import master_opts

PASSWORD = "kvm-actions-pw-4410"
IMAGE = os.urandom(700 * 1024 + 17)
SHA = hashlib.sha256(IMAGE).hexdigest()


@pytest.fixture(scope="module")
def fakes():
    with (
        FakeKvmd(password=PASSWORD, image_delay=0.1, click_s=0.2) as one,
        FakeKvmd(password=PASSWORD, image_delay=0.1, click_s=0.2) as two,
    ):
        yield one, two


@pytest.fixture
def runners(db_url, tmp_path, fakes):
    for fake in fakes:
        fake.reset()
    opts = master_opts(tmp_path / "master", db_url)
    store_engine.ensure_schema(store_engine.get_engine(db_url))
    loaded = salt.loader.runner(opts)
    for n, fake in enumerate(fakes, 1):
        loaded["fleet.kvm_add"](
            f"pikvm-{n}",
            host="127.0.0.1",
            port=fake.port,
            password=PASSWORD,
            fingerprint=fake.fingerprint,
        )
    return loaded


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "debian-netinst.iso"
    path.write_bytes(IMAGE)
    return path


def kvm_events(runners, target):
    """The audit chain's ``kvm.*`` events on ``target``, oldest first: (actor, action,
    details)."""
    events = runners["fleet.audit"](limit=200, target=target)
    return [
        (e["actor"], e["action"], e["details"])
        for e in reversed(events)
        if e["action"].startswith("kvm.") and e["action"] not in ("kvm.add", "kvm.update")
    ]


def test_an_image_is_added_once_and_mounted_on_two_devices(runners, fakes, image, tmp_path):
    library_dir = config.load(runners.opts).kvm.iso_dir
    assert library_dir == str(tmp_path / "master" / "cache" / "fleet" / "iso")
    with pytest.raises(SaltRunnerError, match="sha256 mismatch.*refused, nothing was kept"):
        runners["fleet.iso_add"](str(image), sha256="ab" * 32)
    assert runners["fleet.iso_list"]() == {} and os.listdir(library_dir) == []

    added = runners["fleet.iso_add"](str(image), sha256=SHA)
    assert (added["name"], added["size"], added["sha256"]) == (
        "debian-netinst.iso",
        len(IMAGE),
        SHA,
    )
    listed = runners["fleet.iso_list"]()
    assert listed["debian-netinst.iso"]["present"] is True
    assert listed["debian-netinst.iso"]["added_by"].startswith("user:")
    with pytest.raises(SaltRunnerError, match="already there; overwrite=True"):
        runners["fleet.iso_add"](str(image), sha256=SHA)

    for n, fake in enumerate(fakes, 1):
        mounted = runners["fleet.kvm_iso_mount"](f"pikvm-{n}", "debian-netinst.iso")
        assert mounted["device"] == f"pikvm-{n}" and mounted["drive"]["connected"] is True
        assert fake.uploads["debian-netinst.iso"]["sha256"] == SHA  # the bytes that arrived
        assert fake.drive["connected"] and fake.drive["image"]["name"] == "debian-netinst.iso"
        assert fake.drive["cdrom"] is True
    # mounting again replaces the image on the device (the library's copy is the truth)
    again = runners["fleet.kvm_iso_mount"]("pikvm-1", "debian-netinst.iso")
    assert again["replaced"] is True and again["ejected"] == "debian-netinst.iso"

    ejected = runners["fleet.kvm_iso_eject"]("pikvm-1")
    assert ejected["was_connected"] is True and not fakes[0].drive["connected"]

    events = kvm_events(runners, "pikvm-1")
    assert [(a, d["result"]) for _, a, d in events] == [
        ("kvm.iso_mount", "ok"),
        ("kvm.iso_mount", "ok"),
        ("kvm.iso_eject", "ok"),
    ]
    assert events[0][0].startswith("user:") and events[0][2]["iso"] == "debian-netinst.iso"
    library_events = kvm_events(runners, "debian-netinst.iso")
    assert [(a, d["result"]) for _, a, d in library_events] == [
        ("kvm.iso_add", "refused"),
        ("kvm.iso_add", "ok"),
    ]

    assert runners["fleet.iso_remove"]("debian-netinst.iso")["sha256"] == SHA
    assert os.listdir(library_dir) == []
    with pytest.raises(SaltRunnerError, match="no image named 'debian-netinst.iso'"):
        runners["fleet.kvm_iso_mount"]("pikvm-2", "debian-netinst.iso")


def test_a_library_file_changed_on_disk_is_refused_before_a_byte_is_sent(runners, fakes, image):
    runners["fleet.iso_add"](str(image), sha256=SHA, name="boot.iso")
    path = os.path.join(config.load(runners.opts).kvm.iso_dir, "boot.iso")
    with open(path, "r+b") as handle:
        handle.write(b"X")
    with pytest.raises(SaltRunnerError, match="kvm pikvm-1: iso_mount: .*sha256 mismatch"):
        runners["fleet.kvm_iso_mount"]("pikvm-1", "boot.iso")
    assert fakes[0].seen("/api/msd/write") == [] and fakes[0].images == {}
    (event,) = kvm_events(runners, "pikvm-1")
    assert event[1] == "kvm.iso_mount" and event[2]["result"] == "failed"
    assert "sha256 mismatch" in event[2]["error"]
    # the slot was given back: the next ISO action runs
    assert runners["fleet.kvm_iso_eject"]("pikvm-1")["image"] is None


def test_rate_limits_refuse_and_say_when_and_every_attempt_is_audited(
    runners, fakes, image, db_url
):
    fake = fakes[0]
    first = runners["fleet.kvm_power"]("pikvm-1", True)  # an unquoted 'on' on the CLI
    assert first["action"] == "on" and first["clicked"] is True
    with pytest.raises(SaltRunnerError) as refused:
        runners["fleet.kvm_power"]("pikvm-1", "reset_hard")
    message = str(refused.value)
    assert message.startswith(
        "fleet.kvm_power: kvm pikvm-1: power reset_hard refused by the rate limit "
        "(one power action per 10 s): the last (power on by user:"
    )
    assert "retry in" in message
    with pytest.raises(SaltRunnerError, match="kvm pikvm-1: click reset refused"):
        runners["fleet.kvm_click"]("pikvm-1", "reset")
    assert fake.atx_clicks == ["power"]  # only the first reached the device
    assert runners["fleet.kvm_power"]("pikvm-2", "on")["clicked"] is True  # its own limit

    # another process is uploading to pikvm-1: a mount and an eject are refused, nothing sent
    runners["fleet.iso_add"](str(image), sha256=SHA)
    engine = store_engine.get_engine(db_url)
    store_actions.take(
        engine, "pikvm-1", "iso_mount", "ui:alice", 300, image="other.iso", total_bytes=100
    )
    with pytest.raises(SaltRunnerError) as busy:
        runners["fleet.kvm_iso_mount"]("pikvm-1", "debian-netinst.iso")
    assert "kvm pikvm-1: iso_mount refused: one ISO action at a time" in str(busy.value)
    assert "ui:alice's iso_mount of 'other.iso'" in str(busy.value)
    with pytest.raises(SaltRunnerError, match="kvm pikvm-1: iso_eject refused"):
        runners["fleet.kvm_iso_eject"]("pikvm-1")
    assert fake.seen("/api/msd/write") == [] and fake.seen("/api/msd/set_connected") == []

    events = kvm_events(runners, "pikvm-1")
    assert [(a, d.get("action") or d.get("button") or "", d["result"]) for _, a, d in events] == [
        ("kvm.power", "on", "ok"),
        ("kvm.power", "reset_hard", "refused"),
        ("kvm.click", "reset", "refused"),
        ("kvm.iso_mount", "", "refused"),
        ("kvm.iso_eject", "", "refused"),
    ]
    assert all(actor.startswith("user:") for actor, _, _ in events)
    assert "retry in" in events[1][2]["error"]
    assert runners["fleet.audit_verify"]()["ok"] is True


def test_bad_arguments_send_nothing(runners, fakes):
    with pytest.raises(SaltRunnerError, match="power action 'sideways': one of on, off"):
        runners["fleet.kvm_power"]("pikvm-1", "sideways")
    with pytest.raises(SaltRunnerError, match="no KVM device named 'pikvm-9'"):
        runners["fleet.kvm_power"]("pikvm-9", "on")
    with pytest.raises(SaltRunnerError, match="image name"):
        runners["fleet.kvm_iso_mount"]("pikvm-1", "../etc/passwd")
    with pytest.raises(SaltRunnerError, match="an absolute path expected"):
        runners["fleet.iso_add"]("relative.iso", sha256=SHA)
    assert fakes[0].seen("/api/atx/power") == [] and kvm_events(runners, "pikvm-1") == []


def test_two_concurrent_power_actions_exactly_one_reaches_the_device(runners, fakes, db_url):
    """Two masters' worth of actors (each its own KvmActions, connections and client) press
    power on the same device at once: one is done, one refused, the device saw one click."""
    cfg = config.load(runners.opts)
    engine = store_engine.get_engine(db_url)
    vault = core_secrets.Vault.open(cfg.key_file)
    barrier = threading.Barrier(2)
    outcomes = []

    def press(who):
        ops = kvmops.KvmActions(engine, vault, cfg.kvm, who)
        barrier.wait()
        try:
            outcomes.append(("ok", ops.power("pikvm-2", "on")["action"]))
        except KvmRateLimitError as exc:
            outcomes.append(("refused", str(exc)))

    threads = [threading.Thread(target=press, args=(f"ui:{n}",)) for n in ("ann", "bob")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(kind for kind, _ in outcomes) == ["ok", "refused"], outcomes
    assert len(fakes[1].seen("/api/atx/power")) == 1 and fakes[1].atx_clicks == ["power"]
    results = sorted(d["result"] for _, _, d in kvm_events(runners, "pikvm-2"))
    assert results == ["ok", "refused"]


def test_a_mount_reports_progress_and_keeps_its_hold_fresh(runners, fakes, image, db_url):
    """The UI's way: the slot taken first (a second taker refused), the mount run with that
    hold, progress heard and recorded, the slot free afterwards."""
    cfg = config.load(runners.opts)
    engine = store_engine.get_engine(db_url)
    heard = []
    ops = kvmops.KvmActions(
        engine,
        core_secrets.Vault.open(cfg.key_file),
        cfg.kvm,
        "ui:carol",
        progress=lambda message, done, total: heard.append((message, done, total)),
    )
    runners["fleet.iso_add"](str(image), sha256=SHA)
    token = ops.take_media("pikvm-1", "debian-netinst.iso")
    with engine.connect() as conn:
        running = store_actions.running_media(conn, "pikvm-1")
    assert running["actor"] == "ui:carol" and running["percent"] == 0
    with pytest.raises(SaltRunnerError, match="ui:carol's iso_mount of 'debian-netinst.iso'"):
        runners["fleet.kvm_iso_mount"]("pikvm-1", "debian-netinst.iso")
    with pytest.raises(SaltRunnerError, match="the hold taken for it is not held any more"):
        runners["fleet.kvm_iso_mount"]("pikvm-1", "debian-netinst.iso", hold="f" * 32)
    ops.iso_mount("pikvm-1", "debian-netinst.iso", hold=token)
    assert heard[0][0].startswith("uploading debian-netinst.iso to pikvm-1")
    assert heard[-1] == ("debian-netinst.iso mounted on pikvm-1", len(IMAGE), len(IMAGE))
    with engine.connect() as conn:
        assert store_actions.running_media(conn, "pikvm-1") is None
        slot = store_actions.slots(conn, "pikvm-1")["media"]
    assert slot["done_bytes"] == len(IMAGE) and slot["actor"] == "ui:carol"
    assert fakes[0].drive["connected"]


class Bus:
    def __init__(self):
        self.fired = []

    def fire_event(self, data, tag):
        self.fired.append((tag, data))
        return True


def test_adding_and_mounting_report_progress_events(runners, fakes, image, monkeypatch):
    """``salt-run`` gives a runner ``__jid_event__``; the copy into the library and the
    upload fire ``salt/run/<jid>/progress`` events on it (not printed with --out=json)."""
    jid_event = salt.utils.event.NamespacedEvent(Bus(), "salt/run/20261205160000000001")
    module_globals = runners["fleet.iso_add"].__globals__
    monkeypatch.setitem(module_globals, "__jid_event__", jid_event)
    monkeypatch.setitem(runners.opts, "output", "json")
    runners["fleet.iso_add"](str(image), sha256=SHA)
    runners["fleet.kvm_iso_mount"]("pikvm-2", "debian-netinst.iso")
    fired = [
        (tag, data["message"], data.get("done"), data.get("total"))
        for tag, data in jid_event.event.fired
    ]
    assert {tag for tag, *_ in fired} == {"salt/run/20261205160000000001/progress"}
    messages = [m for _, m, _, _ in fired]
    assert "copying debian-netinst.iso into the library: 0.7 of 0.7 MiB" in messages
    assert messages[-1] == "debian-netinst.iso mounted on pikvm-2"
    assert any(m.startswith("uploading debian-netinst.iso to pikvm-2: ") for m in messages)
    assert fired[-1][2:] == (len(IMAGE), len(IMAGE))
