"""Presence: a node is offline only after more than one missed check, and says why."""

import datetime as dt

from saltext_fleet.core.presence import (
    MISSES_OFFLINE,
    REASON_ANSWERED,
    REASON_DISCONNECTED,
    Presence,
    describe,
)
from saltext_fleet.master.onboard import _asker, beacon_config, beacon_interval, enable_beacon

T0 = dt.datetime(2026, 12, 5, 7, 0, tzinfo=dt.timezone.utc)


def at(minutes):
    return T0 + dt.timedelta(minutes=minutes)


def test_one_missed_check_keeps_a_node_online():
    online = Presence().checked(True, at(0))
    assert online == Presence("online", 0, at(0), REASON_ANSWERED)
    once = online.checked(False, at(5))
    assert once.status == "online" and once.misses == 1 and once.since == at(0)
    assert MISSES_OFFLINE == 2
    twice = once.checked(False, at(10))
    assert twice == Presence("offline", 2, at(10), "missed 2 presence checks")
    # offline since the check that made it so
    thrice = twice.checked(False, at(15))
    assert thrice.since == at(10) and thrice.reason == "missed 3 presence checks"
    assert describe(thrice) == "offline: missed 3 presence checks"


def test_an_answer_clears_the_misses_and_the_status_keeps_its_start():
    once = Presence("online", 0, at(0), REASON_ANSWERED).checked(False, at(5))
    back = once.checked(True, at(10))
    assert back == Presence("online", 0, at(0), REASON_ANSWERED)
    unknown = Presence().checked(False, at(1))
    assert unknown.status is None and unknown.misses == 1


def test_a_disconnect_seen_by_the_master_is_offline_at_once():
    gone = Presence("online", 0, at(0), REASON_ANSWERED).seen(False, at(3))
    assert gone == Presence("offline", 0, at(3), REASON_DISCONNECTED)
    assert describe(gone) == "offline: the master saw the minion disconnect"
    assert gone.seen(True, at(4)).status == "online"


def test_beacon_listing_and_config():
    assert beacon_interval({"fleet_pkgset": [{"interval": 60}]}) == 60
    assert beacon_interval({"fleet_pkgset": [{"interval": 60}, {"enabled": False}]}) == 0
    assert beacon_interval({"enabled": False, "fleet_pkgset": [{"interval": 60}]}) == 0
    assert beacon_interval({"fleet_pkgset": [{"full_every": 10}]}) == 1  # Salt's default
    assert beacon_interval({}) == 0 and beacon_interval(None) == 0
    assert beacon_interval("no answer") is None and beacon_interval(False) is None
    assert beacon_config([{"interval": 5}, {"full_every": 10}], 60) == [
        {"interval": 60},
        {"full_every": 10},
    ]
    assert beacon_config(None, 30) == [{"interval": 30}]


class SplitAnswersClient:
    """A stand-in for Salt's LocalClient with its two ways to an answer: ``cmd`` returns what
    came over the event bus (where another minion can fire ``salt/job/<jid>/ret/<id>``), and
    ``get_cache_returns`` what the master's job cache filed under the authenticated id. Here
    the bus carries a forged listing: the beacon already running at the wanted interval."""

    def __init__(self, forged, add_works=True):
        self.beacons = None  # the node's own truth: no beacons (Salt lists that as None)
        self.forged = forged
        self.add_works = add_works
        self.jobs = {}
        self.calls = []

    def cmd(self, tgt, fun, arg=(), tgt_type="glob", timeout=None, kwarg=None):
        self.calls.append(f"bus:{fun}")
        if fun == "beacons.list":
            return {tgt[0]: self.forged}
        return {tgt[0]: {"result": True}}

    def cmd_async(self, tgt, fun, arg=(), tgt_type="glob", kwarg=None):
        self.calls.append(fun)
        jid = f"2026120508000000{len(self.jobs):04d}"
        self.jobs[jid] = (tgt[0], fun, list(arg))
        return jid

    def get_cache_returns(self, jid):
        minion, fun, arg = self.jobs[jid]
        if fun == "beacons.list":
            return {minion: {"ret": self.beacons}}
        if fun in ("beacons.add", "beacons.modify"):
            if not self.add_works:
                return {minion: {"ret": {"result": False, "comment": "refused"}}}
            self.beacons = {arg[0]: arg[1]}
        return {minion: {"ret": {"result": True}}}


def test_onboarding_believes_the_nodes_own_beacon_listing_not_a_forged_one():
    client = SplitAnswersClient(forged={"fleet_pkgset": [{"interval": 60}]})
    assert enable_beacon("x", 60, _asker({}, client, "x")) == 60
    # the forged "already running" did not stop the beacon being added; nothing was read
    # off the bus
    assert client.calls == ["beacons.list", "beacons.add", "beacons.save", "beacons.list"]
    assert client.beacons == {"fleet_pkgset": [{"interval": 60}]}
    # and a forged listing after a failed add is not what is recorded either
    client = SplitAnswersClient(forged={"fleet_pkgset": [{"interval": 60}]}, add_works=False)
    assert enable_beacon("x", 60, _asker({}, client, "x")) == 0
    assert "beacons.save" not in client.calls
