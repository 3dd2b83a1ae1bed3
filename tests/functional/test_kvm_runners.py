"""The PiKVM runners through Salt's real runner loader (master opts, no daemon) against the
fake kvmd over real HTTPS, on SQLite and on real PostgreSQL: register with the password from
a file, poll (alerts on transitions), history, remove. The events on a real master's bus are
checked in tests/integration/test_runner_output.py."""

import threading

import pytest
import salt.loader
import salt.utils.event
from salt.exceptions import SaltRunnerError

from saltext_fleet.master import eventsig, kvmpoll
from saltext_fleet.store import engine as store_engine
from tests.support.fakekvmd import FakeKvmd
from tests.support.runners import master_bus, master_opts
from tests.support.store import dump_tables
from tests.support.waiting import wait_for

PASSWORD = "kvm-runner-pw-5521"


@pytest.fixture(scope="module")
def fake():
    with FakeKvmd(password=PASSWORD, image_delay=0.1, click_s=0.2) as server:
        yield server


@pytest.fixture
def runners(db_url, tmp_path):
    opts = master_opts(
        tmp_path / "master", db_url, {"kvm": {"offline_after": 2, "over_temp_c": 70}}
    )
    store_engine.ensure_schema(store_engine.get_engine(db_url))
    return salt.loader.runner(opts)


def test_register_poll_history_remove(runners, fake, tmp_path, db_url):
    fake.reset()
    secret = tmp_path / "pikvm.pw"
    secret.write_text(PASSWORD + "\n")
    added = runners["fleet.kvm_add"](
        "pikvm-1",
        host="127.0.0.1",
        port=fake.port,
        password_file=str(secret),
        fingerprint=fake.fingerprint,
        node="mini-07",
    )
    assert added["created"]["node"] == "mini-07" and added["created"]["port"] == fake.port
    assert "password" not in repr(added)
    # a second device on a port nobody listens on
    runners["fleet.kvm_add"](
        "pikvm-2", host="127.0.0.1", port=1, password="x", fingerprint=fake.fingerprint
    )
    assert PASSWORD not in dump_tables(store_engine.get_engine(db_url))

    fake.cpu_temp = 75.0
    first = runners["fleet.kvm_poll"]()
    assert first["pikvm-1"]["poll"]["online"] is True
    assert first["pikvm-1"]["poll"]["temperature"] == 75.0
    assert first["pikvm-1"]["alerts"] == ["over_temperature"]
    assert first["pikvm-2"]["poll"]["online"] is False and first["pikvm-2"]["alerts"] == []
    second = runners["fleet.kvm_poll"]()
    assert second["pikvm-1"]["alerts"] == [] and second["pikvm-2"]["alerts"] == ["offline"]
    assert set(runners["fleet.kvm_poll"]("pikvm-1")) == {"pikvm-1"}

    listed = runners["fleet.kvm_list"]()
    assert listed["pikvm-2"]["state"] == "offline" and listed["pikvm-1"]["state"] == "online"
    assert set(runners["fleet.kvm_list"](node="mini-07")) == {"pikvm-1"}
    history = runners["fleet.kvm_history"]("pikvm-1")
    assert [h["temperature"] for h in history] == [75.0, 75.0, 75.0]

    assert runners["fleet.kvm_remove"]("pikvm-2") == {"removed": "pikvm-2"}
    with pytest.raises(SaltRunnerError, match="no KVM device named 'pikvm-2'"):
        runners["fleet.kvm_remove"]("pikvm-2")
    with pytest.raises(SaltRunnerError, match="no KVM device named 'pikvm-2'"):
        runners["fleet.kvm_history"]("pikvm-2")


def test_bad_registrations_say_what_is_wrong(runners, tmp_path):
    with pytest.raises(SaltRunnerError, match="option 'password': required"):
        runners["fleet.kvm_add"]("pikvm-3", host="10.0.0.3")
    with pytest.raises(SaltRunnerError, match="password or password_file, not both"):
        runners["fleet.kvm_add"]("pikvm-3", host="10.0.0.3", password="a", password_file="/x")
    with pytest.raises(SaltRunnerError, match="not an absolute path"):
        runners["fleet.kvm_add"]("pikvm-3", host="10.0.0.3", password_file="rel.pw")
    with pytest.raises(SaltRunnerError, match="unknown option"):
        runners["fleet.kvm_add"]("pikvm-3", host="10.0.0.3", password="a", colour="red")
    with pytest.raises(SaltRunnerError, match="device name"):
        runners["fleet.kvm_add"]("../../x", host="10.0.0.3", password="a")
    with pytest.raises(SaltRunnerError, match="no KVM device named 'nope'"):
        runners["fleet.kvm_poll"]("nope")
    with pytest.raises(SaltRunnerError, match="hours='soon' is not a number"):
        runners["fleet.kvm_history"]("pikvm-3", hours="soon")
    assert runners["fleet.kvm_list"]() == {}


def test_the_engines_poll_loop_polls_on_its_interval_and_alerts_once(
    runners, fake, db_url, monkeypatch
):
    """What the ``fleet`` engine runs in a thread: a cycle each ``fleet:kvm:poll_interval``
    on kept-open connections, each poll stored, an alert fired once on its transition
    (signed by the master)."""
    fake.reset()
    fake.cpu_temp = 90.0
    runners["fleet.kvm_add"](
        "pikvm-9", host="127.0.0.1", port=fake.port, password=PASSWORD, fingerprint=fake.fingerprint
    )
    opts = dict(runners.opts)
    opts["fleet"] = {**opts["fleet"], "kvm": {"poll_interval": 1}}
    fired = master_bus(monkeypatch)  # the master's event bus, as the loop's events reach it
    loop = kvmpoll.PollLoop(opts)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        wait_for("three poll cycles", lambda: loop.cycles >= 3, timeout=20)
    finally:
        loop.stop()
        thread.join(10)
    assert not thread.is_alive()
    history = runners["fleet.kvm_history"]("pikvm-9")
    assert len(history) >= 3 and all(h["temperature"] == 90.0 for h in history)
    assert [(tag, data["alert"], data["id"]) for tag, data in fired] == [
        ("fleet/alert/kvm", "over_temperature", "pikvm-9")
    ]
    eventsig.check(opts, "fleet/alert/kvm", fired[0][1])  # raises unless the master signed it
    assert len(fake.seen("/api/auth/login")) == 1  # one session, kept between cycles
