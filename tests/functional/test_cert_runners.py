"""The certificate and Xcode runners through Salt's real runner loader (master opts, no
daemon), on SQLite and on real PostgreSQL: fleet.cert_check fires signed events once, acts on
a reactor's event only when this master signed it and it is about the node; fleet.certs and
fleet.xcode read the fixtures' nodes; bad arguments are refused by name. The reactor chain on
a real master is tests/integration/test_certs.py."""

from __future__ import annotations

import datetime as dt

import pytest
import salt.loader
import salt.utils.event
from salt.exceptions import SaltRunnerError

from saltext_fleet.core import baseline as core_baseline
from saltext_fleet.master import eventsig
from saltext_fleet.store import drift as store_drift
from saltext_fleet.store import engine as store_engine
from saltext_fleet.store.models import DriftCurrent
from tests.support.certs import JANE, OLD, fixture_identities, mac_grains, store_grains, xcode
from tests.support.runners import master_bus, master_opts


@pytest.fixture
def fired(monkeypatch):
    """The events the runners fire on the master's bus."""
    return master_bus(monkeypatch)


@pytest.fixture
def runners(db_url, tmp_path):
    opts = master_opts(tmp_path / "master", db_url)
    engine = store_engine.get_engine(db_url)
    store_engine.ensure_schema(engine)
    soon = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=6, hours=1)
    ids = fixture_identities()
    ids[0] = {**ids[0], "not_after": soon.strftime("%Y-%m-%dT%H:%M:%SZ")}
    store_grains(engine, "mac-1", mac_grains(ids, [xcode("15.4", True)]))
    store_grains(engine, "mac-2", mac_grains(ids[1:], [xcode("16.2", True)]))
    store_drift.save_baseline(
        engine, core_baseline.parse({"name": "xc16", "facts": {"xcode": "16.2"}}), "test"
    )
    with engine.begin() as conn:
        conn.execute(
            DriftCurrent.__table__.insert().values(minion_id="mac-1", baseline="xc16", score=0.0)
        )
    loaded = salt.loader.runner(opts)
    loaded.opts = opts
    return loaded


def test_cert_check_fires_signed_events_once(runners, fired):
    done = runners["fleet.cert_check"](node="mac-1")
    assert sorted((f["sha1"], f["threshold"]) for f in done["fired"]) == [
        (OLD, "expired"),
        (JANE, "7d"),
    ]
    assert [tag for tag, _data in fired] == ["fleet/alert/cert"] * 2
    for tag, data in fired:
        eventsig.check(runners.opts, tag, data)  # raises unless the master signed it
    assert runners["fleet.cert_check"]()["fired"] == [
        {**f, "id": "mac-2"} for f in done["fired"] if f["sha1"] == OLD
    ]
    assert runners["fleet.cert_check"]()["fired"] == []
    assert len(fired) == 3


def test_cert_check_acts_on_a_reactor_event_only_when_signed_and_about_the_node(runners, fired):
    forged = {"tag": "fleet/certs/changed", "data": {"id": "mac-1"}}
    refused = runners["fleet.cert_check"](node="mac-1", event=forged)
    assert "refused" in refused and fired == []
    other = {
        "tag": "fleet/certs/changed",
        "data": eventsig.sign(runners.opts, "fleet/certs/changed", {"id": "mac-2"}),
    }
    refused = runners["fleet.cert_check"](node="mac-1", event=other)
    assert "not 'mac-1'" in refused["refused"] and fired == []
    signed = {
        "tag": "fleet/certs/changed",
        "data": eventsig.sign(runners.opts, "fleet/certs/changed", {"id": "mac-1"}),
    }
    done = runners["fleet.cert_check"](node="mac-1", event=signed)
    assert {f["id"] for f in done["fired"]} == {"mac-1"} and len(fired) == 2
    with pytest.raises(SaltRunnerError, match="needs the node"):
        runners["fleet.cert_check"](event=signed)


def test_certs_and_xcode(runners):
    listed = runners["fleet.certs"]()
    assert [c["sha1"] for c in listed][:2] == [OLD, JANE]
    assert listed[0]["nodes"] == ["mac-1", "mac-2"] and listed[1]["days_left"] == 6
    assert [c["sha1"] for c in runners["fleet.certs"](days=7)] == [OLD, JANE]
    assert runners["fleet.certs"](limit=1) == listed[:1]
    assert len(runners["fleet.certs"](team="7XQ3K9LM2P")) == len(listed)
    assert runners["fleet.certs"](team=1234567890) == []  # (a number from the CLI's YAML)
    matrix = runners["fleet.xcode"]()
    assert matrix["versions"] == ["15.4", "16.2"] and matrix["lacking"] == ["mac-1"]
    assert matrix["nodes"]["mac-1"]["required"] == "16.2"
    assert matrix["nodes"]["mac-2"]["selected"] == "16.2"
    against = runners["fleet.xcode"](baseline="xc16", lacking=True)
    assert list(against["nodes"]) == ["mac-1"]
    for call, message in (
        (lambda: runners["fleet.certs"](days="soon"), "days"),
        (lambda: runners["fleet.certs"](limit=0), "limit"),
        (lambda: runners["fleet.xcode"](baseline="nope"), "no baseline 'nope'"),
        (lambda: runners["fleet.xcode"](baseline="../x"), "baseline"),
        (lambda: runners["fleet.xcode"](lacking="maybe"), "lacking"),
        (lambda: runners["fleet.cert_check"](node="../x"), "minion id|not a"),
    ):
        with pytest.raises(SaltRunnerError, match=message):
            call()
