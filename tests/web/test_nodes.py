"""A node's page and metadata, and the actions the UI publishes to nodes and node groups
(through the fake gateway: what is published, to whom, as whom, and what is audited)."""

from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import insert, select

from saltext_fleet.store.models import AuditEvent, DriftHistory, Node
from saltext_fleet.webui.salt import SaltError


def _node(engine, minion_id, **values):
    with engine.begin() as conn:
        conn.execute(
            insert(Node).values(minion_id=minion_id, comment="", **{"facts": {}, **values})
        )


def _audited(engine, target, action):
    with engine.connect() as conn:
        return conn.execute(
            select(AuditEvent.actor, AuditEvent.details)
            .where(AuditEvent.target == target, AuditEvent.action == action)
            .order_by(AuditEvent.id.desc())
        ).first()


def test_node_page_draws_the_drift_history_and_keeps_its_metadata(engine, logged_in, people):
    minion_id = "ui-node-1"
    now = dt.datetime.now(dt.timezone.utc)
    _node(engine, minion_id, facts={"os": "NixOS", "osrelease": "24.11"})
    with engine.begin() as conn:
        conn.execute(
            insert(DriftHistory),
            [
                {"minion_id": minion_id, "computed_at": now - dt.timedelta(hours=h), "score": h * 2}
                for h in range(6)
            ],
        )
    client, csrf = logged_in("operator")
    page = client.get(f"/nodes/{minion_id}").get_data(as_text=True)
    chart = re.search(r'<figure id="drift-chart">(.*?)</figure>', page, re.S).group(1)
    assert chart.count("<circle") == 6 and "<polyline" in chart
    resp = client.post(
        f"/nodes/{minion_id}/meta",
        data={
            "csrf_token": csrf,
            "criticality": "critical",
            "audited": "yes",
            "comment": "<b>x</b>",
        },
    )
    assert resp.status_code == 303
    page = client.get(f"/nodes/{minion_id}").get_data(as_text=True)
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page  # escaped
    with engine.connect() as conn:
        row = conn.execute(
            select(Node.criticality, Node.audited).where(Node.minion_id == minion_id)
        ).one()
    assert tuple(row) == ("critical", True)
    assert _audited(engine, minion_id, "node.meta")[0] == f"ui:{people['operator']}"
    # bad values name the field; nothing to change, or no such node, is said so
    for data, status, words in (
        ({"criticality": "extreme"}, 400, b"criticality: one of"),
        ({"audited": "perhaps"}, 400, b"audited: yes or no"),
        ({"comment": "x" * 2001}, 400, b"at most 2000"),
        ({}, 400, b"nothing to change"),
    ):
        resp = client.post(f"/nodes/{minion_id}/meta", data={"csrf_token": csrf, **data})
        assert resp.status_code == status and words in resp.data, data
    resp = client.post("/nodes/nobody-here/meta", data={"csrf_token": csrf, "comment": "x"})
    assert resp.status_code == 404
    assert client.get("/nodes/..%2F..%2Fetc").status_code == 404
    assert client.get("/nodes/nobody-here").status_code == 404


def test_a_node_action_is_published_as_the_user_and_audited(engine, salt, logged_in, people):
    _node(engine, "deb-1", facts={"os": "Debian"})
    client, csrf = logged_in("operator")
    page = client.get("/nodes/deb-1").get_data(as_text=True)
    assert 'data-action="test"' in page and "echo fleet-test-action" in page
    assert 'data-action="switch"' not in page  # not configured for Debian
    resp = client.post("/nodes/deb-1/action", data={"csrf_token": csrf, "action": "inventory"})
    assert resp.status_code == 303
    who = f"ui:{people['operator']}"
    assert salt.calls[-1] == ("local_async", "fleet.inventory", ["deb-1"], who, [], None)
    actor, details = _audited(engine, "deb-1", "node.action")
    assert actor == who and details == {"action": "inventory", "jid": "20261205000000000001"}
    # a named command runs as cmd.run with its options, and the audit names the command
    resp = client.post("/nodes/deb-1/action", data={"csrf_token": csrf, "action": "test"})
    assert resp.status_code == 303
    method, fun, targets, _user, arg, kwarg = salt.calls[-1]
    assert (fun, targets, arg) == ("cmd.run", ["deb-1"], ["echo fleet-test-action $(id -un)"])
    assert kwarg["python_shell"] is True
    assert _audited(engine, "deb-1", "node.action")[1]["command"] == arg[0]
    # outside the allow-list: refused, nothing published
    published = len(salt.calls)
    for name in ("cmd.run", "switch", ""):
        resp = client.post("/nodes/deb-1/action", data={"csrf_token": csrf, "action": name})
        assert resp.status_code == 400 and b"action: one of" in resp.data, name
    assert len(salt.calls) == published
    # the master refusing the job is a 502 naming it
    salt.answers["fleet.inventory"] = SaltError("fleet.inventory: the master did not take it")
    resp = client.post("/nodes/deb-1/action", data={"csrf_token": csrf, "action": "inventory"})
    assert resp.status_code == 502 and b"did not take it" in resp.data


def test_a_named_command_runs_on_a_group_per_system(engine, salt, logged_in, app):
    """One job per distinct command; a node of a system with no such command is skipped."""
    for minion_id in ("deb-1", "deb-2"):
        _node(engine, minion_id, facts={"os": "Debian"}, node_group="builders")
    _node(engine, "plan9-1", facts={"os": "Plan9"}, node_group="builders")
    client, csrf = logged_in("operator")
    assert 'data-group="builders"' in client.get("/groups").get_data(as_text=True)
    resp = client.post("/groups/builders/action", data={"csrf_token": csrf, "action": "test"})
    assert resp.status_code == 303
    flashed = client.get("/groups").get_data(as_text=True)
    assert "Skipped (no such command for their system): plan9-1" in flashed
    assert [c[1:3] for c in salt.calls] == [("cmd.run", ["deb-1", "deb-2"])]
    details = _audited(engine, "builders", "group.action")[1]
    assert details["skipped"] == ["plan9-1"] and details["jobs"][0]["count"] == 2
    # a fixed action reaches every node of the group in one job
    client.post("/groups/builders/action", data={"csrf_token": csrf, "action": "inventory"})
    assert salt.calls[-1][1:3] == ("fleet.inventory", ["deb-1", "deb-2", "plan9-1"])
    # a name outside the allow-list, a group with no node, a bad group name
    bad = client.post("/groups/builders/action", data={"csrf_token": csrf, "action": "rm -rf /"})
    assert bad.status_code == 400
    empty = client.post("/groups/nobody/action", data={"csrf_token": csrf, "action": "test"})
    assert empty.status_code == 404
    assert client.post("/groups/..%2Fx/action", data={"csrf_token": csrf}).status_code == 404
    # through the API: a node whose system has no such command is refused, by name
    resp = client.post(
        "/api/v1/nodes/plan9-1/actions", json={"action": "test"}, headers={"X-CSRF-Token": csrf}
    )
    assert resp.status_code == 400 and "for this node" in resp.get_json()["error"]["message"]
    resp = client.post(
        "/api/v1/groups/builders/actions", json={"action": "test"}, headers={"X-CSRF-Token": csrf}
    )
    assert resp.status_code == 202 and resp.get_json()["skipped"] == ["plan9-1"]


def test_the_fleet_and_a_node_page_show_which_syndic_or_master_serves_it(engine, logged_in):
    from saltext_fleet.store.carriers import record_carriers

    _node(engine, "below-syndic", heard_by="mom")
    _node(engine, "direct", heard_by="mom")
    _node(engine, "claimed-twice", heard_by="mom")
    with engine.begin() as conn:
        record_carriers(conn, "20261205220000000001", ["below-syndic"], "syndic-a", "mom")
        record_carriers(conn, "20261205220000000001", ["claimed-twice"], "syndic-a", "mom")
        record_carriers(conn, "20261205220000000001", ["claimed-twice"], "liar", "mom")
    client, _csrf = logged_in("viewer")
    fleet = client.get("/?per_page=100").get_data(as_text=True)

    def served_cell(node):
        row = re.search(rf'<tr data-node="{node}">(.*?)</tr>', fleet, re.S).group(1)
        return re.search(r'<td data-field="served">(.*?)</td>', row, re.S).group(1)

    assert "syndic syndic-a → mom" in served_cell("below-syndic")
    assert re.search(r">mom</span>", served_cell("direct"))
    assert "disputed: liar, syndic-a" in served_cell("claimed-twice")
    page = client.get("/nodes/below-syndic").get_data(as_text=True)
    assert re.search(r'data-field="served">.*syndic syndic-a → mom', page)
    api = client.get("/api/v1/nodes/claimed-twice").get_json()
    assert api["served"]["syndic"] is None and api["served"]["claimants"] == ["liar", "syndic-a"]
