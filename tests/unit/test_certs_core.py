"""The pure part of certificate expiry alerts and the Xcode matrix (core/certs.py), the
``fleet:alerts:cert_check_minutes`` option and the engine's check loop."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from saltext_fleet import config
from saltext_fleet.core import certs
from saltext_fleet.master import certcheck
from tests.support.waiting import wait_for

UTC = dt.timezone.utc
NOT_AFTER = dt.datetime(2030, 6, 30, 23, 59, 59, tzinfo=UTC)
DAY = dt.timedelta(days=1)
SECOND = dt.timedelta(seconds=1)


@pytest.mark.parametrize(
    ("before", "expected"),
    [
        (31 * DAY, []),
        (30 * DAY + SECOND, []),
        (30 * DAY, ["30d"]),
        (7 * DAY + SECOND, ["30d"]),
        (7 * DAY, ["30d", "7d"]),
        (DAY, ["30d", "7d", "1d"]),
        (SECOND, ["30d", "7d", "1d"]),
        (dt.timedelta(0), ["30d", "7d", "1d", "expired"]),
        (-400 * DAY, ["30d", "7d", "1d", "expired"]),
    ],
)
def test_crossed_thresholds(before, expected):
    assert certs.crossed(NOT_AFTER, NOT_AFTER - before) == expected


def test_plan_fires_the_most_urgent_new_threshold_only():
    now = NOT_AFTER - 3 * DAY
    assert certs.plan(NOT_AFTER, now, {}) == {
        "record": ["30d", "7d"],
        "fire": "7d",
        "rearm": [],
        "move": [],
    }
    done = {"30d": NOT_AFTER, "7d": NOT_AFTER}
    assert certs.plan(NOT_AFTER, now, done)["fire"] is None
    later = NOT_AFTER + 20 * DAY  # the date moved: 7d is no longer crossed, 30d still is
    todo = certs.plan(later, now, done)
    assert todo == {"record": [], "fire": None, "rearm": ["7d"], "move": ["30d"]}


def test_days_left_and_bands():
    now = dt.datetime(2030, 6, 1, tzinfo=UTC)
    assert certs.days_left(NOT_AFTER, now) == 29
    assert certs.days_left(NOT_AFTER, NOT_AFTER + SECOND) == -1
    assert [certs.band(d) for d in (None, -1, 0, 7, 8, 30, 31)] == [
        None,
        "expired",
        "7d",
        "7d",
        "30d",
        "30d",
        None,
    ]


@pytest.mark.parametrize(
    "value", ["2030-06-30", "2030-13-01T00:00:00Z", "2030-06-30T23:59:59+00:00", 5, None, "x"]
)
def test_not_after_in_another_shape_is_unknown(value):
    assert certs.parse_not_after(value) is None


def test_clean_identity_and_alert_data():
    raw = {
        "sha1": "ab" * 20,
        "name": "Apple Development: Jane Doe (ABCDE12345)",
        "team_id": "7XQ3K9LM2P",
        "not_after": "2030-06-30T23:59:59Z",
        "days_left": 9999,
    }
    identity = certs.clean_identity(raw)
    assert identity["sha1"] == "AB" * 20 and identity["not_after"] == NOT_AFTER
    assert certs.clean_identity({"sha1": "nope"}) is None
    assert certs.clean_identity("x") is None
    data = certs.alert_data("mac-07", identity, "7d", NOT_AFTER - 5 * DAY)
    assert data == {
        "id": "mac-07",
        "sha1": "AB" * 20,
        "name": raw["name"],
        "team_id": "7XQ3K9LM2P",
        "not_after": "2030-06-30T23:59:59Z",
        "days_left": 5,
        "threshold": "7d",
    }


def test_days_argument():
    assert certs.check_days("30") == 30 and certs.check_days(None) is None
    for bad in ("soon", True, 1.5, 10**6):
        with pytest.raises(certs.CertError, match="days"):
            certs.check_days(bad)


def test_xcode_versions():
    assert sorted(["16.2", "9.4", "15.4", "16.0"], key=certs.version_key) == [
        "9.4",
        "15.4",
        "16.0",
        "16.2",
    ]
    assert certs.lacks(["15.4"], "16.2") and not certs.lacks(["15.4", "16.2"], "16.2")
    assert not certs.lacks([], None)


def test_the_check_interval_option():
    assert config.load({}).cert_check.minutes == 60.0
    cfg = config.load({"fleet": {"alerts": {"cert_check_minutes": 5}}})
    assert cfg.cert_check.minutes == 5.0
    assert config.load({"fleet": cfg.as_dict()}).cert_check.minutes == 5.0
    for bad in (-1, "hourly", True, 10081):
        with pytest.raises(config.FleetConfigError, match="fleet:alerts:cert_check_minutes"):
            config.load({"fleet": {"alerts": {"cert_check_minutes": bad}}})


def test_the_loop_checks_and_survives_a_failing_check():
    calls = []
    failed_once = threading.Event()

    def check(opts):
        calls.append(opts)
        if not failed_once.is_set():
            failed_once.set()
            raise RuntimeError("the store is down")

    opts = {"fleet": {"alerts": {"cert_check_minutes": 0.001}}}
    loop = certcheck.CheckLoop(opts, check)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        wait_for("three checks", lambda: len(calls) >= 3, timeout=10)
    finally:
        loop.stop()
        thread.join(5)
    assert not thread.is_alive() and failed_once.is_set()


def test_the_loop_is_off_at_zero():
    calls = []
    loop = certcheck.CheckLoop({"fleet": {"alerts": {"cert_check_minutes": 0}}}, calls.append)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    loop.stop()
    thread.join(5)
    assert calls == [] and not thread.is_alive()
