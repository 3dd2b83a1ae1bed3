"""What the web UI reads and keeps, on SQLite and on PostgreSQL: the overview (filters, sorts
and pages in SQL) and the UI's users (hashes only, TOTP secret encrypted, single-use codes)."""

import datetime as dt

import pyotp
import pytest
from sqlalchemy import insert, text

from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.core import webauth
from saltext_fleet.store import drift as store_drift
from saltext_fleet.store import ui as store_ui
from saltext_fleet.store import users as store_users
from saltext_fleet.store.models import DriftCurrent, DriftHistory, Node

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.timezone.utc)


def _fleet(conn, n=30):
    oses = ["Debian", "MacOS", "NixOS"]
    statuses = ["online", "offline", None]
    crits = ["low", "normal", "high", "critical"]
    conn.execute(
        insert(Node),
        [
            {
                "minion_id": f"node-{i:03d}",
                "first_seen": NOW,
                "last_seen": NOW - dt.timedelta(minutes=i),
                "facts": {"os": oses[i % 3], "osrelease": str(10 + i % 3)},
                "status": statuses[i % 3],
                "node_group": "builders" if i % 2 else None,
                "criticality": crits[i % 4],
                "audited": i % 5 == 0,
                "comment": "rack 4" if i == 7 else "",
            }
            for i in range(n)
        ],
    )
    conn.execute(
        insert(DriftCurrent),
        [
            {
                "minion_id": f"node-{i:03d}",
                "baseline": "base",
                "score": float(i),
                "computed_at": NOW,
            }
            for i in range(0, n, 2)  # odd nodes were never scored
        ],
    )


def q(**args):
    return store_ui.OverviewQuery.from_args({k: str(v) for k, v in args.items()})


def test_overview_filters_sorts_and_pages_in_sql(engine):
    with engine.begin() as conn:
        _fleet(conn)
    with engine.connect() as conn:
        first = store_ui.overview(conn, q(per_page=10))
        assert first["total"] == 30 and first["pages"] == 3
        assert [r["id"] for r in first["rows"]] == [f"node-{i:03d}" for i in range(10)]
        assert first["statuses"] == {"online": 10, "offline": 10, "unknown": 10}
        # pages never overlap and cover everything
        seen = []
        for page in (1, 2, 3):
            seen += [r["id"] for r in store_ui.overview(conn, q(per_page=10, page=page))["rows"]]
        assert sorted(seen) == sorted(set(seen)) and len(seen) == 30
        # sort by drift, worst first; never-scored nodes last, ties broken by id
        worst = store_ui.overview(conn, q(sort="-drift", per_page=30))["rows"]
        assert [r["drift"] for r in worst[:3]] == [28.0, 26.0, 24.0]
        assert all(r["drift"] is None for r in worst[15:])
        assert [r["id"] for r in worst[15:17]] == ["node-001", "node-003"]
        # filters combine
        found = store_ui.overview(conn, q(status="online", os="Debian", per_page=50))
        assert {r["id"] for r in found["rows"]} == {f"node-{i:03d}" for i in range(0, 30, 3)}
        assert store_ui.overview(conn, q(status="unknown"))["total"] == 10
        assert store_ui.overview(conn, q(drift_min=20))["total"] == 5
        assert store_ui.overview(conn, q(criticality="critical"))["total"] == 7
        assert store_ui.overview(conn, q(audited="yes"))["total"] == 6
        assert store_ui.overview(conn, q(q="node-00"))["total"] == 10
        # LIKE wildcards in the search are literal
        assert store_ui.overview(conn, q(q="node_0"))["total"] == 0
        assert store_ui.overview(conn, q(q="%"))["total"] == 0
        crit = store_ui.overview(conn, q(sort="-criticality", per_page=1))["rows"][0]
        assert crit["criticality"] == "critical"
        assert store_ui.os_names(conn) == ["Debian", "MacOS", "NixOS"]
        row = next(r for r in first["rows"] if r["id"] == "node-007")
        assert row["comment"] == "rack 4" and row["os"] == "MacOS" and row["osrelease"] == "11"


def test_drift_sort_pages_cross_from_scored_to_unscored_nodes(engine):
    """The drift sort reads scored nodes in score order and then the unscored ones by id: every
    page, in either direction, with and without filters, is the slice of the whole order."""
    with engine.begin() as conn:
        _fleet(conn, n=41)
        # ties: equal scores must come in id order
        conn.execute(
            text("UPDATE drift_current SET score = 6 WHERE minion_id IN ('node-010', 'node-004')")
        )
    with engine.connect() as conn:
        rows = store_ui.overview(conn, q(per_page=500))["rows"]
        for desc in (False, True):
            for filters in ({}, {"status": "online"}, {"q": "node-01"}, {"drift_min": 5}):
                keep = [
                    r
                    for r in rows
                    if r["status"] == filters.get("status", r["status"])
                    and filters.get("q", "") in r["id"]
                    and ("drift_min" not in filters or (r["drift"] or -1) >= filters["drift_min"])
                ]
                scored = sorted(
                    (r for r in keep if r["drift"] is not None),
                    key=lambda r: (-r["drift"] if desc else r["drift"], r["id"]),
                )
                expected = [r["id"] for r in scored] + sorted(
                    r["id"] for r in keep if r["drift"] is None
                )
                for per_page in (4, 7, 50):
                    got = []
                    pages = -(-len(expected) // per_page) or 1
                    for page in range(1, pages + 2):  # one page past the end: empty
                        answer = store_ui.overview(
                            conn,
                            q(
                                sort=("-" if desc else "") + "drift",
                                page=page,
                                per_page=per_page,
                                **filters,
                            ),
                        )
                        assert answer["total"] == len(expected), (desc, filters)
                        got += [r["id"] for r in answer["rows"]]
                    assert got == expected, (desc, filters, per_page)


def test_os_name_follows_the_facts_and_is_bounded(engine):
    """``nodes.os_name`` is generated by the database from ``facts``: an update of the facts
    moves the node to its new OS in the filter and the list; a minion's absurdly long ``os``
    is cut to the column's length instead of failing its write; the list stops at ``limit``."""
    with engine.begin() as conn:
        _fleet(conn, n=6)
        conn.execute(
            Node.__table__.update()
            .where(Node.minion_id == "node-001")
            .values(facts={"os": "FreeBSD", "osrelease": "14"})
        )
        conn.execute(
            insert(Node),
            [
                {
                    "minion_id": "liar",
                    "first_seen": NOW,
                    "last_seen": NOW,
                    "facts": {"os": "A" * 5000},
                }
            ],
        )
    with engine.connect() as conn:
        assert store_ui.os_names(conn) == ["A" * 128, "Debian", "FreeBSD", "MacOS", "NixOS"]
        assert store_ui.os_names(conn, limit=2) == ["A" * 128, "Debian"]
        assert [r["id"] for r in store_ui.overview(conn, q(os="FreeBSD"))["rows"]] == ["node-001"]
        assert [r["id"] for r in store_ui.overview(conn, q(os="MacOS"))["rows"]] == ["node-004"]
        assert [r["id"] for r in store_ui.overview(conn, q(sort="os", per_page=2))["rows"]] == [
            "liar",
            "node-000",
        ]
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM nodes"))
    with engine.connect() as conn:
        assert store_ui.os_names(conn) == []


@pytest.mark.parametrize(
    "args, parameter",
    [
        ({"status": "dead"}, "status"),
        ({"sort": "password"}, "sort"),
        ({"sort": "id; DROP TABLE nodes"}, "sort"),
        ({"page": "0"}, "page"),
        ({"per_page": "100000"}, "per_page"),
        ({"page": "two"}, "page"),
        ({"drift_min": "lots"}, "drift_min"),
        ({"audited": "maybe"}, "audited"),
        ({"criticality": "meh"}, "criticality"),
        ({"q": "x" * 300}, "q"),
    ],
)
def test_bad_overview_arguments_name_the_parameter(args, parameter):
    with pytest.raises(store_ui.QueryError) as exc:
        store_ui.OverviewQuery.from_args(args)
    assert exc.value.parameter == parameter and parameter in str(exc.value)


def test_query_args_round_trip():
    query = q(status="online", sort="-drift", page=3, audited="no")
    again = store_ui.OverviewQuery.from_args(query.args())
    assert again == query
    assert query.args(page=1)["page"] == "1" and query.args()["sort"] == "-drift"


def test_node_page_history_and_timeline(engine):
    with engine.begin() as conn:
        _fleet(conn, 3)
        for hours in (0, 6):  # PostgreSQL: the month's partition (created on demand)
            store_drift.ensure_partition(conn, NOW - dt.timedelta(hours=hours))
        conn.execute(
            insert(DriftHistory),
            [
                {"minion_id": "node-000", "computed_at": NOW - dt.timedelta(hours=h), "score": h}
                for h in range(5)
            ],
        )
    with engine.connect() as conn:
        node = store_ui.node(conn, "node-000")
        assert node["facts"]["os"] == "Debian" and node["drift"]["score"] == 0.0
        assert store_ui.node(conn, "node-001")["drift"] is None
        assert store_ui.node(conn, "nope") is None
        history = store_ui.drift_history(conn, "node-000")
        assert [p["score"] for p in history] == [4, 3, 2, 1, 0]  # oldest first
        assert [p["score"] for p in store_ui.drift_history(conn, "node-000", limit=2)] == [1, 0]


def test_users_keep_only_hashes_and_an_encrypted_totp_secret(engine, tmp_path):
    vault = core_secrets.Vault.open(str(tmp_path / "fleet.fernet"))
    password = "correct horse battery"
    with engine.begin() as conn:
        made = store_users.create_user(conn, "alice", "operator", password, rounds=4)
        assert made["role"] == "operator" and made["totp"] is False
        with pytest.raises(store_users.UserError, match="exists"):
            store_users.create_user(conn, "alice", "viewer", password, rounds=4)
        with pytest.raises(webauth.WebAuthError):
            store_users.create_user(conn, "bob", "viewer", "short", rounds=4)
        with pytest.raises(webauth.WebAuthError):
            store_users.create_user(conn, "carol", "root", password, rounds=4)
        secret = webauth.new_totp_secret()
        codes = store_users.set_totp(conn, vault, "alice", secret)
        token = store_users.new_api_token(conn, "alice")
    with engine.connect() as conn:
        user = store_users.get_user(conn, "alice")
        assert user["totp"] and user["recovery_codes_left"] == 10 and user["api_token"]
        assert user["session_version"] == 2  # enrolling the second factor ended old sessions
        assert webauth.verify_password(password, store_users.password_hash(conn, "alice"))
        assert store_users.totp_secret(conn, vault, "alice") == secret
        assert store_users.user_by_api_token(conn, token)["username"] == "alice"
        assert store_users.user_by_api_token(conn, token[:-1] + "x") is None
        dump = "\n".join(
            str(row)
            for table in ("ui_users", "secrets")
            for row in conn.execute(text(f"SELECT * FROM {table}"))
        )
    for plain in (password, secret, token, *codes):
        assert plain not in dump
    with engine.begin() as conn:
        counter = webauth.verify_totp(secret, pyotp.TOTP(secret).now(), None)
        assert store_users.use_totp_counter(conn, "alice", counter) is True
        assert store_users.use_totp_counter(conn, "alice", counter) is False  # replay
        assert store_users.use_recovery_code(conn, "alice", codes[0]) is True
        assert store_users.use_recovery_code(conn, "alice", codes[0]) is False  # once
        assert store_users.use_recovery_code(conn, "alice", "nope-nope-nope") is False
        store_users.set_password(conn, "alice", "another long password", rounds=4)
        store_users.reset_totp(conn, "alice")
    with engine.connect() as conn:
        user = store_users.get_user(conn, "alice")
        assert not user["totp"] and user["recovery_codes_left"] == 0
        assert user["session_version"] == 4
        assert store_users.totp_secret(conn, vault, "alice") is None
    with engine.begin() as conn:
        assert store_users.delete_user(conn, "alice") is True
        assert store_users.get_user(conn, "alice") is None
