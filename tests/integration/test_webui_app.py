"""The web UI's Flask app against the package's real master and store: what crosses Salt.

The app is driven by Flask's test client; its actions go through Salt's own clients to the
real master (the ``fleet.*`` runners, jobs answered by real minions, Salt's eauth), its reads
come from the master's real store. What needs no master (the route x role x CSRF walk, logins,
forms, validation, paging) is tests/web, on SQLite with a fake gateway, in seconds. The
browser tests drive the same app served by the engine in headless Chromium.
"""

from __future__ import annotations

import re
import subprocess

import pytest
from saltfactories.utils import random_string
from sqlalchemy import insert, select, update

from saltext_fleet import config
from saltext_fleet.store import engine as store_engine
from saltext_fleet.store import users as store_users
from saltext_fleet.store.models import AuditEvent, Node, Return
from saltext_fleet.webui.eauth import make_checker
from saltext_fleet.webui.salt import SaltGateway
from tests.support.sshd import free_port
from tests.support.waiting import run, wait_for
from tests.support.web import PASSWORD, account_csrf, make_app, post_login
from tests.support.web import login as login_as

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def store(salt_master):
    engine = store_engine.get_engine(config.load(salt_master.config).db_url)
    store_engine.ensure_schema(engine)
    return engine


@pytest.fixture(scope="module")
def web(salt_master, store):
    cfg = config.load(salt_master.config)
    return make_app(
        store,
        cfg.key_file,
        salt=SaltGateway(salt_master.config.copy()),
        config=cfg,
    )


@pytest.fixture(scope="module")
def people(web, store):
    """An operator and a viewer (random names: the store is shared)."""
    names = {role: random_string(f"{role}-").lower() for role in ("operator", "viewer")}
    with store.begin() as conn:
        for role, name in names.items():
            store_users.create_user(conn, name, role, PASSWORD, rounds=4)
    return names


def login(web, username):
    """A client logged in as ``username`` and its session's CSRF token."""
    client = login_as(web, username)
    return client, account_csrf(client)


def test_an_operator_accepts_a_pending_key_through_salt(web, people, salt_master, salt_run_cli):
    """The keys page shows a pending key with its fingerprint; accepting it goes through the
    fleet.keys_accept runner, which records the UI user in the audit chain."""
    import salt.key

    minion_id = random_string("ui-pending-").lower()
    _pem, pub = salt.crypt.gen_keys(2048)
    key = salt.key.Key(salt_master.config.copy())
    key.cache.store("keys", minion_id, {"pub": pub.strip(), "state": "pending"})
    client, csrf = login(web, people["operator"])
    page = client.get("/keys").get_data(as_text=True)
    assert f'data-key="{minion_id}"' in page
    finger = re.search(
        rf'data-key="{minion_id}".*?<code class="fingerprint">([0-9a-f:]+)</code>', page, re.S
    ).group(1)
    resp = client.post(
        f"/keys/{minion_id}/accept", data={"csrf_token": csrf, "fingerprint": finger}
    )
    assert resp.status_code == 303
    listed = salt_run_cli.run("fleet.keys", "status=accepted").data
    assert listed[minion_id]["decided_by"] == f"ui:{people['operator']}"
    salt_master.salt_key_cli().run("-d", minion_id, "-y")


def test_an_action_on_a_node_runs_through_salt_and_is_audited(web, people, store, salt_minion):
    """Refresh the inventory of a real minion from its page: a job published with
    LocalClient, answered by the minion, in the job cache; the audit names the UI user."""
    client, csrf = login(web, people["operator"])
    resp = client.post(
        f"/nodes/{salt_minion.id}/action", data={"csrf_token": csrf, "action": "inventory"}
    )
    assert resp.status_code == 303
    with store.connect() as conn:
        details = conn.execute(
            select(AuditEvent.details)
            .where(AuditEvent.target == salt_minion.id, AuditEvent.action == "node.action")
            .order_by(AuditEvent.id.desc())
        ).scalar()
    jid = details["jid"]
    assert details["action"] == "inventory" and jid.isdigit()

    def returned():
        with store.connect() as conn:
            return conn.execute(
                select(Return.fun).where(Return.jid == jid, Return.minion_id == salt_minion.id)
            ).scalar()

    assert wait_for("the inventory job's return", returned, timeout=90) == "fleet.inventory"
    page = client.get(f"/jobs/{jid}").get_data(as_text=True)
    assert salt_minion.id in page


def test_a_named_command_runs_on_a_group_per_system(web, people, store, salt_minion, salt_minion_2):
    """``fleet:actions`` holds a ``test`` command for Debian (this machine): run on a group,
    it reaches both real minions in one job; a node of another system is skipped, by name.
    (The choice of jobs and the refusals are tests/web/test_nodes.py, with a fake gateway.)"""
    group = random_string("ui-group-").lower()
    other = random_string("plan9-").lower()
    with store.begin() as conn:
        for minion in (salt_minion, salt_minion_2):
            if not conn.execute(
                update(Node)
                .where(Node.minion_id == minion.id)
                .values(node_group=group, facts={"os": "Debian"})
            ).rowcount:
                conn.execute(
                    insert(Node).values(
                        minion_id=minion.id, facts={"os": "Debian"}, node_group=group, comment=""
                    )
                )
        conn.execute(
            insert(Node).values(
                minion_id=other, facts={"os": "Plan9"}, node_group=group, comment=""
            )
        )
    client, csrf = login(web, people["operator"])
    resp = client.post(f"/groups/{group}/action", data={"csrf_token": csrf, "action": "test"})
    assert resp.status_code == 303
    flashed = client.get("/groups").get_data(as_text=True)
    assert f"Skipped (no such command for their system): {other}" in flashed
    with store.connect() as conn:
        details = conn.execute(
            select(AuditEvent.details)
            .where(AuditEvent.target == group, AuditEvent.action == "group.action")
            .order_by(AuditEvent.id.desc())
        ).scalar()
    assert details["skipped"] == [other] and len(details["jobs"]) == 1
    jid = details["jobs"][0]["jid"]

    def answers():
        with store.connect() as conn:
            rows = conn.execute(select(Return.minion_id, Return.ret).where(Return.jid == jid)).all()
        return len(rows) == 2 and {m: r for m, r in rows}

    answered = wait_for("both minions' answers", answers, timeout=90)
    assert answered == {
        salt_minion.id: "fleet-test-action root",
        salt_minion_2.id: "fleet-test-action root",
    }


@pytest.fixture
def unix_users():
    """Real Unix users with passwords on this machine, for Salt's PAM eauth (removed after)."""
    group = random_string("fops").lower()[:16]
    made = []
    subprocess.run(["groupadd", group], check=True)

    def make(name, password, in_group):
        cmd = ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin"]
        if in_group:
            cmd += ["--groups", group]
        subprocess.run([*cmd, name], check=True)
        made.append(name)
        subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True)
        return name

    yield group, make
    for name in made:
        subprocess.run(["userdel", name], check=False)
    subprocess.run(["groupdel", group], check=False)


def test_salt_eauth_pam_logins_get_the_role_of_their_group(web, salt_master, store, unix_users):
    """A user who is not kept here logs in through Salt's PAM eauth; the role comes from
    fleet:ui:eauth:roles (their Unix group); a user of no mapped group, or a wrong password,
    is refused."""
    group, make = unix_users
    ops = make(random_string("fops-").lower()[:20], "pam password one", True)
    outsider = make(random_string("fout-").lower()[:20], "pam password two", False)
    ctx = web.extensions["fleet"]
    ctx.eauth = make_checker(salt_master.config.copy(), "pam", {f"{group}%": "operator"})
    try:
        client = web.test_client()
        bad = post_login(client, ops, "not the password")
        assert bad.status_code == 401
        resp = post_login(client, ops, "pam password one")
        assert resp.status_code == 302, resp.data[:300]
        me = client.get("/api/v1/me").get_json()
        assert me["username"] == ops and me["role"] == "operator"
        with store.connect() as conn:
            kept = store_users.get_user(conn, ops)
            assert kept["source"] == "eauth" and store_users.password_hash(conn, ops) is None
        refused = post_login(web.test_client(), outsider, "pam password two")
        assert refused.status_code == 401
        with store.connect() as conn:
            assert store_users.get_user(conn, outsider) is None
    finally:
        ctx.eauth = None


def test_a_bootstrap_started_from_the_ui_shows_its_steps(web, people, store, salt_run_cli):
    """The bootstrap page starts fleet.bootstrap through Salt's RunnerClient; its progress
    page follows the steps the store records. Here the host refuses SSH (a closed loopback
    port): the steps up to the connection show, then the failure and its reason. The whole
    way to an accepted minion over a real sshd is tests/integration/test_bootstrap.py. (The
    form's checks, a node still bootstrapping and who may start one are tests/web.)"""
    group = random_string("uiboot-").lower()
    run(salt_run_cli, "fleet.group_set", group, "user=root", "password=not-used-here-at-all")
    minion_id = random_string("uiboot-node-").lower()
    client, csrf = login(web, people["operator"])
    form = {
        "csrf_token": csrf,
        "host": "127.0.0.1",
        "port": str(free_port()),
        "id": minion_id,
        "group": group,
        "service": "daemon",
    }
    resp = client.post("/bootstrap", data=form)
    assert resp.status_code == 303 and resp.headers["Location"].endswith(f"/bootstrap/{minion_id}")

    def ended():
        page = client.get(f"/bootstrap/{minion_id}").get_data(as_text=True)
        state = re.search(r'id="bootstrap-state"[^>]*data-state="(\w+)"', page).group(1)
        return state in ("failed", "done") and page

    page = wait_for("the bootstrap to end", ended, timeout=180, interval=1)
    assert 'data-state="failed"' in page and 'id="bootstrap-error"' in page
    steps = re.findall(r'<li data-step="([^"]+)"', page)
    # every step up to the SSH connection, in order; none after it
    assert steps == ["keys", "enrol", "wheelhouse", "ssh"], steps
    assert 'http-equiv="refresh"' not in page  # it stops following once it ended
    api = client.get(f"/api/v1/bootstraps?id={minion_id}").get_json()
    assert api["attempts"][0]["state"] == "failed" and api["attempts"][0]["steps"]


def test_baselines_are_pinned_edited_assigned_and_deleted_from_the_ui(
    web, people, store, salt_master, salt_minion
):
    """Through the fleet.baseline_* runners (Salt's RunnerClient), audited as the UI user."""
    ret = salt_master.salt_cli().run("fleet.inventory", minion_tgt=salt_minion.id, _timeout=120)
    assert isinstance(ret.data, dict), ret

    def inventoried():
        with store.connect() as conn:
            return conn.execute(
                select(Node.inventory_digest).where(Node.minion_id == salt_minion.id)
            ).scalar()

    wait_for("the minion's inventory in the store", inventoried, timeout=60)
    name = random_string("ui-base-").lower()
    client, csrf = login(web, people["operator"])
    resp = client.post(
        "/baselines/pin", data={"csrf_token": csrf, "minion": salt_minion.id, "name": name}
    )
    assert resp.status_code == 303 and resp.headers["Location"].endswith(f"/baselines/{name}")
    page = client.get(f"/baselines/{name}").get_data(as_text=True)
    assert 'data-package="pypi:fleet-alpha"' in page  # the minion's own virtualenv
    resp = client.post(
        "/baselines/set",
        data={
            "csrf_token": csrf,
            "name": name,
            "package": "pypi:fleet-alpha",
            "rule": "min",
            "version": "0.9",
        },
    )
    assert resp.status_code == 303
    page = client.get(f"/baselines/{name}").get_data(as_text=True)
    row = re.search(
        r'data-package="pypi:fleet-alpha"><td>[^<]*</td><td>(\w+)</td><td>([^<]*)</td>', page
    )
    assert row.groups() == ("min", "0.9")
    # a bad rule is refused with the runner's words, nothing changed
    resp = client.post(
        "/baselines/set",
        data={"csrf_token": csrf, "name": name, "package": "pypi:fleet-alpha", "rule": "newest"},
    )
    flashed = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "rule" in flashed and "newest" in flashed
    assert (
        client.post(
            "/baselines/assign",
            data={"csrf_token": csrf, "name": name, "target": salt_minion.id, "tgt_type": "list"},
        ).status_code
        == 303
    )
    listing = client.get("/baselines").get_data(as_text=True)
    assert f'data-baseline="{name}"' in listing and f"<code>{salt_minion.id}</code>" in listing
    assert (
        client.post("/baselines/unassign", data={"csrf_token": csrf, "name": name}).status_code
        == 303
    )
    assert (
        client.post("/baselines/delete", data={"csrf_token": csrf, "name": name}).status_code == 303
    )
    assert f'data-baseline="{name}"' not in client.get("/baselines").get_data(as_text=True)
    with store.connect() as conn:
        actors = {
            a for (a,) in conn.execute(select(AuditEvent.actor).where(AuditEvent.target == name))
        }
    assert actors == {f"ui:{people['operator']}"}
