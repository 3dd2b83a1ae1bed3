"""Certificate expiry alerts and the Xcode matrix over the store, on SQLite and PostgreSQL,
with the macOS fixtures' certificates (tests/fixtures/macos, generate_certificates.py)."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import select

from saltext_fleet.core import baseline as core_baseline
from saltext_fleet.core import certs as core_certs
from saltext_fleet.master import certcheck
from saltext_fleet.store import certs as store_certs
from saltext_fleet.store import drift as store_drift
from saltext_fleet.store import writer
from saltext_fleet.store.models import CertAlert, DriftCurrent
from tests.support.certs import (
    BUILDS,
    BUILDS_NOT_AFTER,
    JANE,
    JANE_NOT_AFTER,
    OLD,
    fixture_identities,
    mac_grains,
    store_grains,
    xcode,
)
from tests.support.store import write

UTC = dt.timezone.utc
DAY = dt.timedelta(days=1)


class Bus:
    """What ``fire`` sent: the events, in order (``up=False``: the bus refuses them)."""

    def __init__(self):
        self.events: list[tuple[str, dict]] = []
        self.up = True
        self.lock = threading.Lock()

    def __call__(self, tag, data):
        if not self.up:
            return False
        with self.lock:
            self.events.append((tag, dict(data)))
        return True

    def fired(self, node=None, sha1=None):
        return [
            (d["id"], d["sha1"], d["threshold"])
            for _t, d in self.events
            if (node is None or d["id"] == node) and (sha1 is None or d["sha1"] == sha1)
        ]


def rows(engine, node=None):
    with engine.connect() as conn:
        stmt = select(CertAlert.node, CertAlert.sha1, CertAlert.threshold)
        if node:
            stmt = stmt.where(CertAlert.node == node)
        return sorted(tuple(r) for r in conn.execute(stmt))


def times(start: dt.datetime, end: dt.datetime, step: dt.timedelta):
    at = start
    while at <= end:
        yield at
        at += step


def test_each_threshold_fires_once_as_time_passes(engine):
    store_grains(engine, "mac-01", mac_grains())
    bus = Bus()
    # 40 days before Jane's certificate expires: only the long-expired one is due, once
    start = JANE_NOT_AFTER - 40 * DAY
    first = certcheck.check(engine, bus, now=start)
    assert bus.fired() == [("mac-01", OLD, "expired")]
    assert first["fired"][0]["not_after"] == "2024-05-01T08:30:00Z"
    assert first["fired"][0]["days_left"] < -2000  # computed from not_after, on the master
    assert {(p["sha1"], p["threshold"]) for p in first["passed"]} == {
        (OLD, "30d"),
        (OLD, "7d"),
        (OLD, "1d"),
    }
    # checks every 6 hours (and one exactly at each threshold) until a day after expiry
    checks = list(times(start, JANE_NOT_AFTER + DAY, dt.timedelta(hours=6)))
    checks += [JANE_NOT_AFTER - 30 * DAY, JANE_NOT_AFTER - 7 * DAY, JANE_NOT_AFTER - DAY]
    checks += [JANE_NOT_AFTER]
    for at in sorted(checks):
        certcheck.check(engine, bus, now=at)
    jane = [e for e in bus.events if e[1]["sha1"] == JANE]
    assert [d["threshold"] for _t, d in jane] == ["30d", "7d", "1d", "expired"]
    assert [d["days_left"] for _t, d in jane] == [30, 7, 1, 0]
    assert {t for t, _d in bus.events} == {"fleet/alert/cert"}
    # the payload of the contract
    assert set(jane[0][1]) == {
        "id",
        "sha1",
        "name",
        "team_id",
        "not_after",
        "days_left",
        "threshold",
    }
    assert jane[0][1]["name"] == "Apple Development: Jane Doe (ABCDE12345)"
    assert jane[0][1]["team_id"] == "7XQ3K9LM2P"
    assert jane[0][1]["not_after"] == "2030-06-30T23:59:59Z"
    # the Developer ID certificate is months away: nothing
    assert bus.fired(sha1=BUILDS) == []
    assert len(bus.fired()) == 5
    # ...and it comes due in its turn
    for at in times(BUILDS_NOT_AFTER - 31 * DAY, BUILDS_NOT_AFTER + DAY, dt.timedelta(hours=12)):
        certcheck.check(engine, bus, now=at)
    assert [t for _n, _s, t in bus.fired(sha1=BUILDS)] == ["30d", "7d", "1d", "expired"]
    assert len(rows(engine)) == 12


def test_the_minions_days_left_is_not_trusted(engine):
    # the grain says 1,500 days left; the master's clock says 3
    ids = fixture_identities()
    for identity in ids:
        identity["days_left"] = 1500
    store_grains(engine, "mac-02", mac_grains(ids))
    bus = Bus()
    certcheck.check(engine, bus, now=JANE_NOT_AFTER - 3 * DAY)
    assert ("mac-02", JANE, "7d") in bus.fired()
    assert ("mac-02", JANE, "30d") not in bus.fired()  # passed, recorded: never fired later
    certcheck.check(engine, bus, now=JANE_NOT_AFTER - 2 * DAY)
    assert bus.fired(sha1=JANE) == [("mac-02", JANE, "7d")]
    assert ("mac-02", JANE, "30d") in rows(engine, "mac-02")


def test_two_checks_at_once_fire_each_threshold_once(engine):
    for n in range(6):
        store_grains(engine, f"mac-{n:02d}", mac_grains())
    bus = Bus()
    at = [JANE_NOT_AFTER - 20 * DAY]
    errors = []

    def run():
        try:
            for step in range(4):
                certcheck.check(engine, bus, now=at[0] + step * dt.timedelta(days=6))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    fired = bus.fired()
    assert len(fired) == len(set(fired))
    # each node: OLD expired, then JANE's 30d, then 7d (at -8 d... -2 d: 7d)
    for n in range(6):
        node = f"mac-{n:02d}"
        assert sorted(t for _n, s, t in fired if _n == node and s == JANE) == ["30d", "7d"]
        assert [t for _n, s, t in fired if _n == node and s == OLD] == ["expired"]


def test_another_node_claiming_a_certificate_changes_nothing_for_its_owner(engine):
    store_grains(engine, "mac-a", mac_grains())
    # B claims A's Apple Development certificate with an expiry two days away
    liar = [
        {**fixture_identities()[0], "not_after": "2030-05-03T00:00:00Z", "name": "forged"},
    ]
    store_grains(engine, "mac-b", mac_grains(liar))
    bus = Bus()
    now = dt.datetime(2030, 5, 1, tzinfo=UTC)
    certcheck.check(engine, bus, now=now)
    assert bus.fired("mac-b") == [("mac-b", JANE, "7d")]
    assert bus.fired("mac-a") == [("mac-a", OLD, "expired")]  # A's JANE: 60 days away
    assert ("mac-a", JANE, "30d") not in rows(engine)
    # A's own thresholds still fire on A's date
    certcheck.check(engine, bus, now=JANE_NOT_AFTER - 29 * DAY)
    assert ("mac-a", JANE, "30d") in bus.fired("mac-a")
    a_event = [d for _t, d in bus.events if d["id"] == "mac-a" and d["sha1"] == JANE][0]
    assert a_event["not_after"] == "2030-06-30T23:59:59Z" and a_event["name"].startswith("Apple")
    # the page: A's row is its own (A alone, its date), B's claim is a row of its own
    with engine.connect() as conn:
        page = store_certs.certs_page(conn, store_certs.CertsQuery(q=JANE), now)
    by_nodes = {tuple(r["nodes"]): r for r in page["rows"]}
    assert by_nodes[("mac-a",)]["not_after"] == "2030-06-30T23:59:59Z"
    assert by_nodes[("mac-a",)]["name"] == "Apple Development: Jane Doe (ABCDE12345)"
    assert by_nodes[("mac-b",)]["name"] == "forged"


def test_a_renewed_certificate_starts_over_and_a_later_date_rearms(engine):
    ids = fixture_identities()
    store_grains(engine, "mac-r", mac_grains(ids[:1]))
    bus = Bus()
    certcheck.check(engine, bus, now=JANE_NOT_AFTER - 5 * DAY)
    assert bus.fired() == [("mac-r", JANE, "7d")]
    # renewed: a new certificate (new SHA-1) a year later; the old one is gone from the grain
    renewed = {**ids[0], "sha1": "AB" * 20, "not_after": "2031-06-30T23:59:59Z"}
    store_grains(engine, "mac-r", mac_grains([renewed]))
    certcheck.check(engine, bus, now=JANE_NOT_AFTER - 4 * DAY)
    assert len(bus.fired()) == 1
    certcheck.check(engine, bus, now=dt.datetime(2031, 6, 20, tzinfo=UTC))
    assert bus.fired(sha1="AB" * 20) == [("mac-r", "AB" * 20, "30d")]
    # the same SHA-1 reported with a later date (cannot happen, but the grain is a claim):
    # thresholds it is no longer past are re-armed, those still past are not sent again
    store_grains(engine, "mac-r", mac_grains([{**ids[0], "not_after": "2030-07-20T00:00:00Z"}]))
    result = certcheck.check(engine, bus, now=JANE_NOT_AFTER - 3 * DAY)
    assert {r["threshold"] for r in result["rearmed"]} == {"7d"}
    assert bus.fired(sha1=JANE) == [("mac-r", JANE, "7d")]  # 30d is still past: not again
    with engine.connect() as conn:
        moved = conn.execute(
            select(CertAlert.not_after).where(
                CertAlert.node == "mac-r", CertAlert.sha1 == JANE, CertAlert.threshold == "30d"
            )
        ).scalar_one()
    assert core_certs.utc(moved) == dt.datetime(2030, 7, 20, tzinfo=UTC)
    certcheck.check(engine, bus, now=dt.datetime(2030, 7, 14, tzinfo=UTC))
    assert bus.fired(sha1=JANE) == [("mac-r", JANE, "7d"), ("mac-r", JANE, "7d")]


def test_an_event_that_cannot_be_fired_is_tried_again(engine):
    store_grains(engine, "mac-f", mac_grains(fixture_identities()[:1]))
    bus = Bus()
    bus.up = False
    result = certcheck.check(engine, bus, now=JANE_NOT_AFTER - 10 * DAY)
    assert [f["threshold"] for f in result["failed"]] == ["30d"] and bus.fired() == []
    assert rows(engine) == []  # given back
    bus.up = True
    certcheck.check(engine, bus, now=JANE_NOT_AFTER - 10 * DAY + dt.timedelta(hours=1))
    certcheck.check(engine, bus, now=JANE_NOT_AFTER - 10 * DAY + dt.timedelta(hours=2))
    assert bus.fired() == [("mac-f", JANE, "30d")]


def test_bad_grains_are_skipped_and_never_hide_other_nodes(engine):
    store_grains(engine, "mac-ok", mac_grains(fixture_identities()[:1]))
    bad = [
        "not a mapping",
        {"sha1": "XYZ", "not_after": "2030-06-25T00:00:00Z"},
        {"sha1": 12345, "not_after": "2030-06-25T00:00:00Z"},
        {"sha1": "CD" * 20, "not_after": "tomorrow"},
        {"sha1": "EF" * 20, "not_after": {"$gt": ""}, "name": ["x"]},
        {"sha1": "12" * 20, "not_after": "2030-06-25T00:00:00Z", "name": 7},
    ]
    store_grains(engine, "mac-bad", mac_grains(bad))
    store_grains(engine, "mac-str", {"fleet": {"macos": {"signing_identities": "lots"}}})
    store_grains(engine, "mac-none", {"fleet": {"macos": None}})
    store_grains(engine, "linux", {"os": "Debian", "fleet": {"os": "Debian"}})
    many = [{"sha1": f"{i:040X}", "not_after": "2030-06-25T00:00:00Z"} for i in range(400)]
    store_grains(engine, "mac-many", mac_grains(many))
    bus = Bus()
    certcheck.check(engine, bus, now=dt.datetime(2030, 6, 2, tzinfo=UTC))
    fired = bus.fired()
    assert ("mac-ok", JANE, "30d") in fired
    assert [(n, s) for n, s, _t in fired if n == "mac-bad"] == [("mac-bad", "12" * 20)]
    assert len([f for f in fired if f[0] == "mac-many"]) == store_certs.MAX_IDENTITIES
    with engine.connect() as conn:
        mine = store_certs.node_identities(conn, "mac-bad")
    assert {(i["sha1"], i["not_after"], i["name"]) for i in mine} == {
        ("CD" * 20, None, None),
        ("EF" * 20, None, None),
        ("12" * 20, "2030-06-25T00:00:00Z", None),
    }


def test_the_certificates_page_sorts_by_expiry_bands_and_filters(engine):
    ids = fixture_identities()
    store_grains(engine, "mac-1", mac_grains(ids))
    store_grains(engine, "mac-2", mac_grains(ids[:2]))
    soon = {"sha1": "AA" * 20, "name": "Apple Distribution: Soon (7XQ3K9LM2P)"}
    store_grains(
        engine,
        "mac-3",
        mac_grains(
            [
                {**soon, "team_id": "7XQ3K9LM2P", "not_after": "2030-06-05T00:00:00Z"},
                {"sha1": "BB" * 20, "name": "Unknown date", "team_id": "OTHERTEAM1"},
            ]
        ),
    )
    now = dt.datetime(2030, 6, 1, tzinfo=UTC)
    with engine.connect() as conn:
        page = store_certs.certs_page(conn, store_certs.CertsQuery(), now)
        assert [r["sha1"] for r in page["rows"]] == [OLD, "AA" * 20, JANE, BUILDS, "BB" * 20]
        assert [r["band"] for r in page["rows"]] == ["expired", "7d", "30d", None, None]
        assert [r["days_left"] for r in page["rows"]][:3] == [
            core_certs.days_left(core_certs.parse_not_after("2024-05-01T08:30:00Z"), now),
            4,
            29,
        ]
        assert page["rows"][2]["nodes"] == ["mac-1", "mac-2"]
        assert page["rows"][2]["node_count"] == 2
        assert page["bands"] == {"expired": 1, "7d": 1, "30d": 2, "pairs": 7}
        assert page["total"] == 5
        within = store_certs.certs_page(conn, store_certs.CertsQuery(days=7), now)
        assert [r["sha1"] for r in within["rows"]] == [OLD, "AA" * 20]
        team = store_certs.certs_page(conn, store_certs.CertsQuery(team="OTHERTEAM1"), now)
        assert [r["sha1"] for r in team["rows"]] == ["BB" * 20]
        node = store_certs.certs_page(conn, store_certs.CertsQuery(q="mac-2"), now)
        assert [r["sha1"] for r in node["rows"]] == [JANE, BUILDS]
        paged = [
            r["sha1"]
            for p in (1, 2, 3)
            for r in store_certs.certs_page(conn, store_certs.CertsQuery(page=p, per_page=2), now)[
                "rows"
            ]
        ]
        assert paged == [OLD, "AA" * 20, JANE, BUILDS, "BB" * 20]
        assert store_certs.teams(conn) == ["7XQ3K9LM2P", "OTHERTEAM1"]
        assert page["teams"] == ["7XQ3K9LM2P", "OTHERTEAM1"]
        beyond = store_certs.certs_page(conn, store_certs.CertsQuery(page=9, per_page=2), now)
        assert beyond["rows"] == [] and beyond["total"] == 5 and beyond["bands"]["pairs"] == 7
        nothing = store_certs.certs_page(conn, store_certs.CertsQuery(q="no-such"), now)
        assert nothing["rows"] == [] and nothing["total"] == 0 and nothing["pages"] == 1


def _assign(engine, node, baseline):
    with engine.begin() as conn:
        conn.execute(
            DriftCurrent.__table__.insert().values(minion_id=node, baseline=baseline, score=0.0)
        )


def test_the_xcode_matrix(engine):
    store_drift.save_baseline(
        engine, core_baseline.parse({"name": "xc16", "facts": {"xcode": "16.2"}}), "test"
    )
    store_drift.save_baseline(
        engine, core_baseline.parse({"name": "xc15", "facts": {"xcode": "15.4"}}), "test"
    )
    store_grains(
        engine, "mac-a", mac_grains(xcodes=[xcode("15.4"), xcode("16.2", True)], os_version="14.5")
    )
    store_grains(engine, "mac-b", mac_grains(xcodes=[xcode("15.4", True)], os_version="14.4.1"))
    store_grains(engine, "mac-c", mac_grains(xcodes=[], os_version="15.1"))
    store_grains(engine, "linux", {"os": "Debian", "osrelease": "12", "fleet": {"os": "Debian"}})
    store_grains(engine, "mac-d", mac_grains(xcodes=[xcode("9.4", True), "junk", {"version": 3}]))
    _assign(engine, "mac-a", "xc16")
    _assign(engine, "mac-b", "xc16")
    _assign(engine, "linux", "xc15")  # a baseline that requires an Xcode: listed
    with engine.connect() as conn:
        matrix = store_certs.xcode_matrix(conn, store_certs.XcodeQuery())
        assert matrix["versions"] == ["9.4", "15.4", "16.2"]
        by_id = {r["id"]: r for r in matrix["rows"]}
        assert list(by_id) == ["linux", "mac-a", "mac-b", "mac-c", "mac-d"]
        assert by_id["mac-a"]["selected"] == "16.2" and not by_id["mac-a"]["lacks"]
        assert by_id["mac-a"]["os_version"] == "14.5"
        assert by_id["mac-b"]["lacks"] and by_id["mac-b"]["required"] == "16.2"
        assert by_id["linux"]["lacks"] and by_id["linux"]["required"] == "15.4"
        assert by_id["mac-c"]["required"] is None and not by_id["mac-c"]["lacks"]
        assert list(by_id["mac-d"]["installed"]) == ["9.4"]
        assert matrix["lacking"] == 2
        lacking = store_certs.xcode_matrix(conn, store_certs.XcodeQuery(lacking=True))
        assert [r["id"] for r in lacking["rows"]] == ["linux", "mac-b"]
        # every node against one baseline (only macOS nodes then)
        against = store_certs.xcode_matrix(conn, store_certs.XcodeQuery(baseline="xc15"))
        assert [r["id"] for r in against["rows"] if r["lacks"]] == ["mac-c", "mac-d"]
        assert {r["baseline"] for r in against["rows"]} == {"xc15"}
        having = store_certs.xcode_matrix(conn, store_certs.XcodeQuery(version="15.4"))
        assert [r["id"] for r in having["rows"]] == ["mac-a", "mac-b"]
        paged = store_certs.xcode_matrix(conn, store_certs.XcodeQuery(per_page=2, page=2))
        assert [r["id"] for r in paged["rows"]] == ["mac-b", "mac-c"] and paged["pages"] == 3


def test_query_arguments_are_checked():
    with pytest.raises(store_certs.QueryError, match="days"):
        store_certs.CertsQuery.from_args({"days": "soon"})
    with pytest.raises(store_certs.QueryError, match="lacking"):
        store_certs.XcodeQuery.from_args({"lacking": "maybe"})
    assert store_certs.CertsQuery.from_args({"days": "30", "q": "x"}).args() == {
        "q": "x",
        "days": "30",
        "page": "1",
        "per_page": "50",
    }


def test_grains_with_other_identities_are_announced_once(engine):
    def announced(grains, minion="mac-g"):
        ret = {
            "id": minion,
            "jid": "20261205120000000001",
            "fun": "grains.items",
            "return": grains,
            "retcode": 0,
            "success": True,
        }
        result = write(engine, [{"kind": "return", "rid": f"r-{id(grains)}-{minion}", "ret": ret}])
        return [(t, d) for t, d in writer.announcements(result) if t == "fleet/certs/changed"]

    ids = fixture_identities()
    first = mac_grains(ids)
    assert announced(first) == [("fleet/certs/changed", {"id": "mac-g"})]
    # the same identities again (other grains changed): nothing to check
    again = mac_grains(ids, os_version="14.6")
    assert announced(again) == []
    # a renewed certificate: announced
    renewed = mac_grains([*ids[:2], {**ids[2], "sha1": "CD" * 20}])
    assert announced(renewed) == [("fleet/certs/changed", {"id": "mac-g"})]
    # a Linux node, a Mac without identities: never
    assert announced({"os": "Debian", "fleet": {"os": "Debian"}}, "linux-g") == []
    assert announced(mac_grains([]), "mac-empty") == []
    with engine.connect() as conn:
        assert {i["sha1"] for i in store_certs.node_identities(conn, "mac-g")} == {
            JANE,
            BUILDS,
            "CD" * 20,
        }


def test_the_check_of_changed_grains_is_done_once_for_the_fleet(engine):
    """fleet/certs/changed heard through two masters: one checks the node for the identities
    it reports; other identities are checked again."""
    store_grains(engine, "mac-01", mac_grains())
    bus = Bus()
    now = JANE_NOT_AFTER - 5 * DAY
    first = certcheck.check_node_once(engine, bus, "mac-01", "m1", now=now)
    second = certcheck.check_node_once(engine, bus, "mac-01", "m2", now=now)
    assert first["checked"] == 2 and second == {**second, "by": "m1"}
    assert "checked by m1" in second["skipped"]
    assert sorted(bus.fired()) == sorted([("mac-01", JANE, "7d"), ("mac-01", OLD, "expired")])
    # the node now reports only Jane's certificate: checked again (nothing new to fire)
    jane = [i for i in fixture_identities() if i["sha1"] == JANE]
    store_grains(engine, "mac-01", mac_grains(identities=jane))
    again = certcheck.check_node_once(engine, bus, "mac-01", "m2", now=now)
    assert again["checked"] == 1 and again["fired"] == []
    assert certcheck.check_node_once(engine, bus, "nobody", "m1", now=now)["checked"] == 0
