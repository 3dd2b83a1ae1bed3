"""The KVM rate limits' rules and wording (no store), and their ``fleet:kvm`` options."""

import datetime as dt

import pytest

from saltext_fleet import config
from saltext_fleet.kvm import limits
from saltext_fleet.kvm.errors import KvmError, KvmRateLimitError

T0 = dt.datetime(2026, 12, 5, 12, 0, 0, tzinfo=dt.timezone.utc)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def test_each_action_takes_its_slot():
    assert [limits.slot_of(a) for a in ("power", "click", "iso_mount", "iso_eject")] == [
        "power",
        "power",
        "media",
        "media",
    ]
    with pytest.raises(ValueError, match="'snapshot' is not a rate-limited KVM action"):
        limits.slot_of("snapshot")


def test_a_slot_is_free_when_its_until_has_passed():
    assert limits.is_free(None, T0)
    assert limits.is_free({"until": None}, T0)
    assert not limits.is_free({"until": at(1)}, T0)
    assert limits.is_free({"until": at(0)}, T0)
    # SQLite gives naive datetimes back: they are UTC
    assert not limits.is_free({"until": at(5).replace(tzinfo=None)}, at(4))
    assert limits.is_free({"until": at(5).replace(tzinfo=None)}, at(5.5))


def test_a_power_refusal_names_the_device_the_last_action_and_when_to_retry():
    holder = {"actor": "ui:alice", "action": "power", "started_at": at(0), "until": at(10)}
    exc = limits.refusal("pikvm-07", "power", holder, at(2.5), interval=10)
    assert isinstance(exc, KvmRateLimitError) and isinstance(exc, KvmError)
    assert exc.kind == "power" and exc.retry_at == at(10) and exc.host == "pikvm-07"
    assert str(exc) == (
        "kvm pikvm-07: power refused by the rate limit (one power action per 10 s): the last "
        "(power by ui:alice at 12:00:00 UTC); retry in 8 s (from 12:00:10 UTC)"
    )
    click = limits.refusal("pikvm-07", "click", holder, at(9.9), interval=10)
    assert "click refused" in str(click) and "retry in 1 s" in str(click)


def test_a_media_refusal_names_who_uploads_what_how_far_and_when_the_hold_lapses():
    holder = {
        "actor": "user:root",
        "action": "iso_mount",
        "image": "debian.iso",
        "started_at": at(0),
        "until": at(300),
        "done_bytes": 450,
        "total_bytes": 1000,
    }
    exc = limits.refusal("pikvm-07", "iso_mount", holder, at(30))
    assert exc.kind == "media" and exc.retry_at is None
    assert str(exc) == (
        "kvm pikvm-07: iso_mount refused: one ISO action at a time on this device, and "
        "user:root's iso_mount of 'debian.iso' is running since 12:00:00 UTC, 45% uploaded; "
        "retry when it has ended; if it makes no progress its hold lapses at 12:05:00 UTC"
    )
    eject = limits.refusal("pikvm-07", "iso_eject", {**holder, "total_bytes": None}, at(30))
    assert "iso_eject refused" in str(eject) and "uploaded" not in str(eject)


@pytest.mark.parametrize(
    ("done", "total", "expected"),
    [(0, 10, 0), (5, 10, 50), (10, 10, 100), (11, 10, 100), (1, 0, None), (None, 10, None)],
)
def test_percent(done, total, expected):
    assert limits.percent(done, total) == expected


def test_the_kvm_options_have_defaults_and_name_a_bad_value(tmp_path):
    kvm = config.load({"cachedir": str(tmp_path)}).kvm
    assert kvm.power_interval == 10.0 and kvm.iso_stale_after == 300.0
    assert kvm.iso_dir == str(tmp_path / "fleet" / "iso")
    set_ = config.load(
        {"fleet": {"kvm": {"power_interval": 0, "iso_stale_after": 60, "iso_dir": "/srv/iso"}}}
    ).kvm
    assert (set_.power_interval, set_.iso_stale_after, set_.iso_dir) == (0.0, 60.0, "/srv/iso")
    for bad, option in (
        ({"power_interval": -1}, "fleet:kvm:power_interval"),
        ({"power_interval": "10s"}, "fleet:kvm:power_interval"),
        ({"iso_stale_after": 5}, "fleet:kvm:iso_stale_after"),
        ({"iso_dir": "iso"}, "fleet:kvm:iso_dir"),
        ({"iso_dir": 7}, "fleet:kvm:iso_dir"),
    ):
        with pytest.raises(config.FleetConfigError) as caught:
            config.load({"fleet": {"kvm": bad}})
        assert caught.value.option == option
