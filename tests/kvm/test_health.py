"""The pure evaluation of PiKVM polls: what a poll says, and the alerts it raises."""

from saltext_fleet.kvm import health
from saltext_fleet.kvm.health import Poll, Status, evaluate, summarize

INFO = {
    "health": {
        "temp": {"cpu": 47.5},
        "throttling": {"parsed_flags": {"throttled": {"now": False, "past": True}}},
    },
    "uptime": {"total": 7200, "parts": {"hours": 2}},
}
ATX = {"enabled": True, "busy": False, "leds": {"power": True, "hdd": False}}
HID = {"enabled": True, "online": True}
MSD = {"enabled": True, "drive": {"connected": True, "image": {"name": "debian.iso"}}}


def test_summarize_reads_kvmds_answers_current_and_legacy_info():
    poll = summarize(INFO, ATX, HID, MSD)
    assert poll == Poll(
        online=True,
        power=True,
        hid_online=True,
        msd_connected=True,
        msd_image="debian.iso",
        temperature=47.5,
        uptime_s=7200,
        throttled=False,
    )
    legacy = {"hw": {"health": INFO["health"]}, "uptime": INFO["uptime"]}
    assert summarize(legacy, ATX, HID, MSD).temperature == 47.5


def test_summarize_tolerates_missing_and_malformed_parts():
    poll = summarize(
        {"health": {"temp": {"cpu": "hot"}}, "uptime": None},
        {"enabled": False, "leds": {"power": True}},  # ATX disabled: power unknown
        {"online": "yes"},
        {"drive": {"connected": False, "image": None}},
    )
    assert poll.online is True
    assert (poll.power, poll.hid_online, poll.temperature, poll.uptime_s) == (None,) * 4
    assert (poll.msd_connected, poll.msd_image) == (False, None)


def test_offline_after_three_missed_polls_then_online_once():
    status, raised = Status(), []
    for _ in range(2):
        status, raised = evaluate(status, health.missed("timed out"))
        assert raised == [] and status.state == "unreachable"
    status, raised = evaluate(status, health.missed("timed out"))
    assert raised == ["offline"] and status.state == "offline" and status.missed == 3
    status, raised = evaluate(status, health.missed("timed out"))
    assert raised == [] and status.offline  # no second alert while it lasts
    status, raised = evaluate(status, summarize(INFO, ATX, HID, MSD))
    assert raised == ["online"] and status == Status()
    # a single missed poll after that is a hiccup, not an outage
    status, raised = evaluate(status, health.missed("refused"), offline_after=3)
    assert raised == [] and status.state == "unreachable"
    assert evaluate(Status(), health.missed("x"), offline_after=1)[1] == ["offline"]


def test_over_temperature_with_hysteresis():
    def at(temp):
        return Poll(online=True, temperature=temp)

    status, raised = evaluate(Status(), at(79.9))
    assert raised == [] and not status.hot
    status, raised = evaluate(status, at(80.0))
    assert raised == ["over_temperature"] and status.hot
    status, raised = evaluate(status, at(77.0))  # cooler, not yet 5 degrees below
    assert raised == [] and status.hot
    status, raised = evaluate(status, health.missed("gone"))
    assert status.hot  # unknown temperature: still hot
    status, raised = evaluate(status, at(75.0))
    assert raised == ["temperature_ok"] and not status.hot
    status, raised = evaluate(Status(), at(70), over_temp_c=65, hysteresis_c=2)
    assert raised == ["over_temperature"]


def test_stored_status_of_any_shape():
    assert Status.from_dict(None) == Status()
    assert Status.from_dict({"missed": -4, "offline": "yes", "hot": 1}) == Status()
    status = Status(missed=3, offline=True, hot=True)
    assert Status.from_dict(status.as_dict()) == status
    assert status.as_dict()["state"] == "offline"
