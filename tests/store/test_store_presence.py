"""Node status on both backends: only minions are nodes, misses before offline, the beacon."""

import datetime as dt
import re
import secrets

import pytest
from sqlalchemy import select, text

from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.master import onboard as master_onboard
from saltext_fleet.store import engine as store_engine
from saltext_fleet.store import gate as store_gate
from saltext_fleet.store import ui as store_ui
from saltext_fleet.store import users as store_users
from saltext_fleet.store.models import Node
from saltext_fleet.webui.app import WebContext, create_app
from tests.store.test_store_batch import ret
from tests.support.store import write

#: these tests migrate an empty database themselves
pytestmark = pytest.mark.empty_db

T0 = dt.datetime(2026, 12, 5, 7, 0, tzinfo=dt.timezone.utc)


def at(minutes):
    return T0 + dt.timedelta(minutes=minutes)


def node_ids(engine):
    with engine.connect() as conn:
        return set(conn.execute(select(Node.minion_id)).scalars())


def test_runner_and_wheel_returns_make_no_node(engine):
    write(
        engine,
        [
            ret(minion="box_master", fun="runner.fleet.nodes", value=[]),
            ret(minion="box_master", fun="wheel.key.list_all", value={}),
            ret(minion="m1", fun="test.ping"),
        ],
    )
    assert node_ids(engine) == {"m1"}
    with engine.connect() as conn:
        page = store_ui.overview(conn, store_ui.OverviewQuery())
    assert [n["id"] for n in page["rows"]] == ["m1"] and page["total"] == 1


def test_the_upgrade_removes_a_master_row_an_older_release_made(db_url):
    engine = store_engine.get_engine(db_url)
    store_engine.upgrade(engine, "0005")
    # the schema of 0005: written as SQL, not through today's models
    with engine.begin() as conn:
        for minion_id in ("box_master", "m1", "m2"):
            conn.execute(
                text(
                    "INSERT INTO nodes (minion_id, first_seen, last_seen, facts)"
                    " VALUES (:m, :t, :t, '{}')"
                ),
                {"m": minion_id, "t": T0},
            )
        rows = [
            ("box_master", "runner.fleet.drift"),
            ("m1", "test.ping"),
            ("m1", "runner.fleet.drift"),  # odd, but a minion job too: kept
        ]
        for n, (minion_id, fun) in enumerate(rows):
            conn.execute(
                text(
                    "INSERT INTO returns (rid, jid, minion_id, fun, stored_at, authenticated)"
                    " VALUES (:r, :j, :m, :f, :t, TRUE)"
                ),
                {"r": f"r{n}", "j": f"2026120507000000000{n}", "m": minion_id, "f": fun, "t": T0},
            )
    store_engine.upgrade(engine)
    assert node_ids(engine) == {"m1", "m2"}  # m2: no return at all, kept


def test_a_node_goes_offline_after_two_missed_checks(engine):
    with engine.begin() as conn:
        out = store_gate.record_presence_check(conn, ["m1", "m2"], [], now=at(0))
        assert out == {"online": ["m1", "m2"], "offline": [], "missed_once": []}
        out = store_gate.record_presence_check(conn, ["m1"], ["m2", "new"], now=at(5))
        assert out["missed_once"] == ["m2", "new"] and out["offline"] == []
        page = store_ui.node(conn, "m2")
        assert page["status"] == "online" and page["presence_misses"] == 1
        assert page["status_since"] == at(0).isoformat()
        assert store_ui.node(conn, "new")["status"] == "unknown"
        out = store_gate.record_presence_check(conn, ["m1"], ["m2"], now=at(10))
        assert out["offline"] == ["m2"]
        page = store_ui.node(conn, "m2")
        assert page["status"] == "offline" and page["status_reason"] == "missed 2 presence checks"
        assert page["status_since"] == at(10).isoformat()
        store_gate.record_presence_check(conn, [], ["m2"], now=at(15))
        assert store_ui.node(conn, "m2")["status_since"] == at(10).isoformat()
        # an answer: online again, since now, misses cleared
        store_gate.record_presence_check(conn, ["m2"], [], now=at(20))
        page = store_ui.node(conn, "m2")
        assert (page["status"], page["presence_misses"]) == ("online", 0)
        assert page["status_since"] == at(20).isoformat()
        # m1 answered every time: online since the first check
        assert store_ui.node(conn, "m1")["status_since"] == at(0).isoformat()


def test_set_status_keeps_since_and_says_why(engine):
    with engine.begin() as conn:
        store_gate.set_status(conn, ["m1"], "online", now=at(0), reason="onboarded")
        store_gate.set_status(conn, ["m1"], "online", now=at(3), reason="answered")
        page = store_ui.node(conn, "m1")
        assert page["status_since"] == at(0).isoformat() and page["status_reason"] == "answered"
        store_gate.set_status(
            conn, ["m1"], "offline", now=at(4), reason="the master saw the minion disconnect"
        )
        page = store_ui.node(conn, "m1")
        assert page["status_since"] == at(4).isoformat()
        assert page["status_reason"] == "the master saw the minion disconnect"


def test_the_beacon_state_is_on_the_node_page(engine):
    with engine.begin() as conn:
        store_gate.set_status(conn, ["m1"], "online", now=at(0))
        assert store_ui.node(conn, "m1")["beacon_interval"] is None
        store_gate.set_beacon(conn, "m1", 60, now=at(1))
        page = store_ui.node(conn, "m1")
        assert (page["beacon_interval"], page["beacon_at"]) == (60, at(1).isoformat())


def test_a_lost_node_that_answers_a_ping_stays_online(engine, monkeypatch):
    asked = []

    def ping(opts, minion_ids, timeout):
        asked.append(sorted(minion_ids))
        return {"up"} & set(minion_ids)

    monkeypatch.setattr(master_onboard, "ping", ping)
    with engine.begin() as conn:
        store_gate.set_status(conn, ["up", "down"], "online", now=at(0))
    out = master_onboard.presence(engine, lost=["up", "down"], connected=set(), opts={})
    assert asked == [["down", "up"]]
    assert (out["online"], out["offline"]) == (1, 1)
    with engine.connect() as conn:
        up, down = store_ui.node(conn, "up"), store_ui.node(conn, "down")
    assert (up["status"], up["status_reason"]) == ("online", "answered a presence check")
    assert up["status_since"] == at(0).isoformat()
    assert (down["status"], down["status_reason"]) == (
        "offline",
        "the master saw the minion disconnect",
    )


def test_the_node_page_says_why_offline_and_whether_the_beacon_runs(engine, tmp_path):
    ctx = WebContext(
        engine=engine,
        vault=core_secrets.Vault.open(str(tmp_path / "fleet.fernet")),
        secret_key=secrets.token_bytes(32),
        bcrypt_rounds=4,
    )
    app = create_app(ctx)
    app.testing = True
    with engine.begin() as conn:
        store_users.create_user(conn, "victor", "viewer", "a long enough password", rounds=4)
        store_gate.record_presence_check(conn, ["m1", "m2"], [], now=at(0))
        store_gate.record_presence_check(conn, ["m1"], ["m2"], now=at(5))
        store_gate.record_presence_check(conn, ["m1"], ["m2"], now=at(10))
        store_gate.set_beacon(conn, "m1", 60, now=at(1))
        store_gate.set_beacon(conn, "m2", 0, now=at(1))
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]*)"', page).group(1)
    resp = client.post(
        "/login",
        data={"username": "victor", "password": "a long enough password", "csrf_token": token},
    )
    assert resp.status_code == 302

    def summary(minion_id):
        page = client.get(f"/nodes/{minion_id}").get_data(as_text=True)
        block = re.search(r'<dl class="facts-list" id="node-summary">(.*?)</dl>', page, re.S)
        return re.sub(r"<[^>]+>", "", block.group(1))

    m1, m2 = summary("m1"), summary("m2")
    assert "2026-12-05 07:00:00 (answered a presence check)" in m1
    assert "running, every 60 s" in m1
    assert "2026-12-05 07:10:00 (missed 2 presence checks)" in m2
    assert "not running" in m2
