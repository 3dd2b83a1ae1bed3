"""The web UI's Flask app against the package's real master and store.

The app is driven by Flask's test client; its actions go through Salt's own clients to the
real master (the ``fleet.*`` runners), its reads come from the master's real store. The
browser tests drive the same app served by the engine in headless Chromium.
"""

from __future__ import annotations

import re
import secrets
import time

import pyotp
import pytest
from saltfactories.utils import random_string
from sqlalchemy import insert, select

from saltext_fleet import config
from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.core import webauth
from saltext_fleet.store import drift as store_drift
from saltext_fleet.store import engine as store_engine
from saltext_fleet.store import users as store_users
from saltext_fleet.store.models import AuditEvent, DriftHistory, Node
from saltext_fleet.webui.app import PUBLIC_ENDPOINTS, STATE_CHANGING, WebContext, create_app
from saltext_fleet.webui.salt import SaltGateway

pytestmark = pytest.mark.timeout(300)
PASSWORD = "a long enough password"


@pytest.fixture(scope="module")
def store(salt_master):
    engine = store_engine.get_engine(config.load(salt_master.config).db_url)
    store_engine.ensure_schema(engine)
    return engine


@pytest.fixture(scope="module")
def web(salt_master, store):
    cfg = config.load(salt_master.config)
    ctx = WebContext(
        engine=store,
        vault=core_secrets.Vault.open(cfg.key_file),
        secret_key=secrets.token_bytes(32),
        salt=SaltGateway(salt_master.config.copy()),
        config=cfg,
        bcrypt_rounds=4,
    )
    app = create_app(ctx)
    app.testing = True
    return app


@pytest.fixture(scope="module")
def people(web, store):
    """An admin with TOTP, an operator and a viewer (random names: the store is shared)."""
    names = {role: random_string(f"{role}-").lower() for role in ("admin", "operator", "viewer")}
    ctx = web.extensions["fleet"]
    with store.begin() as conn:
        for role, name in names.items():
            store_users.create_user(conn, name, role, PASSWORD, rounds=4)
        totp = webauth.new_totp_secret()
        codes = store_users.set_totp(conn, ctx.vault, names["admin"], totp)
    return {**names, "totp": totp, "codes": codes}


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def form_csrf(client, path: str = "/login") -> str:
    """The CSRF token of a form page (the login form's is bound to the pre-login session)."""
    return csrf_of(client.get(path).get_data(as_text=True))


def post_login(client, username, password=PASSWORD):
    return client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": form_csrf(client)},
    )


def post_code(client, code):
    return client.post(
        "/login/totp", data={"code": code, "csrf_token": form_csrf(client, "/login/totp")}
    )


def next_code(secret: str, after: float) -> str:
    """A TOTP code of a time step later than any used before (codes are single-use)."""
    step = int(after // 30) + 1
    return pyotp.TOTP(secret).at(step * 30)


def login(web, username, totp=None, totp_at=None):
    client = web.test_client()
    resp = post_login(client, username)
    assert resp.status_code == 302, resp.data[:300]
    if totp:
        assert resp.headers["Location"].endswith("/login/totp")
        code = pyotp.TOTP(totp).at(totp_at) if totp_at else pyotp.TOTP(totp).now()
        resp = post_code(client, code)
        assert resp.status_code == 302, resp.data[:300]
    page = client.get("/account")
    assert page.status_code == 200
    return client, csrf_of(page.get_data(as_text=True))


def test_password_then_totp_and_codes_are_single_use(web, people, store):
    client = web.test_client()
    admin = people["admin"]
    token = form_csrf(client, "/login?next=/keys")
    before = client.get_cookie("fleet_session").value  # the session before logging in
    form = {"username": admin, "csrf_token": token}
    assert client.post("/login", data={**form, "password": "wrong one!!"}).status_code == 401
    resp = client.post("/login", data={**form, "password": PASSWORD})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/login/totp")
    # a pending login opens nothing
    assert client.get("/").status_code == 302
    assert client.get("/api/v1/nodes").status_code == 401
    assert post_code(client, "000000").status_code == 401
    now = time.time()
    resp = post_code(client, pyotp.TOTP(people["totp"]).at(now))
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/keys")
    assert client.get("/").status_code == 200
    # the session was replaced at login: its cookie before opens nothing (no fixation)
    after = client.get_cookie("fleet_session")
    assert after.value != before and after.http_only and after.same_site == "Lax"
    stale = web.test_client()
    stale.set_cookie("fleet_session", before)
    assert stale.get("/").status_code == 302
    # the same code again (another login) is refused: replay
    other = web.test_client()
    post_login(other, admin)
    assert post_code(other, pyotp.TOTP(people["totp"]).at(now)).status_code == 401
    # a recovery code works once
    assert post_code(other, people["codes"][0]).status_code == 302
    third = web.test_client()
    post_login(third, admin)
    assert post_code(third, people["codes"][0]).status_code == 401
    with store.connect() as conn:
        actions = [
            a for (a,) in conn.execute(select(AuditEvent.action).where(AuditEvent.target == admin))
        ]
    assert actions.count("ui.login") == 2 and "ui.login_failed" in actions
    # logout is POST only, with the CSRF token
    token = csrf_of(client.get("/account").get_data(as_text=True))
    assert client.get("/logout").status_code == 405
    assert client.post("/logout").status_code == 403
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/").status_code == 302


def test_failed_passwords_lock_the_account_for_a_while(web, people):
    ctx = web.extensions["fleet"]
    name = people["viewer"]
    client = web.test_client()
    for _ in range(5):
        assert post_login(client, name, "not it at all").status_code == 401
    locked = post_login(client, name)
    assert locked.status_code == 429 and b"try again in" in locked.data
    # the lock is kept in the store too (it outlives a restart of the engine)
    with ctx.engine.connect() as conn:
        assert store_users.get_user(conn, name)["locked_until"] is not None
    ctx.throttle.reset(f"user:{name}")
    assert post_login(client, name).status_code == 429
    with ctx.engine.begin() as conn:
        store_users.lock(conn, name, None)  # what the users page's "unlock" does
    assert post_login(client, name).status_code == 302


def _sample_args(rule) -> dict:
    return {arg: "x1" if arg != "jid" else "20261129000000000000" for arg in rule.arguments}


#: Every route of the app (its rule and method) and the least role that may use it, written
#: here from what each page and endpoint does, not read from the app: a route missing from this
#: table, or an entry whose route is gone, fails the walk below. The login form, its TOTP step
#: and static files are public (``PUBLIC_ENDPOINTS``) and not listed.
ROUTE_ROLES = {
    ("/", "GET"): "viewer",
    ("/account", "GET"): "viewer",
    ("/account/password", "POST"): "viewer",
    ("/account/token", "POST"): "viewer",
    ("/account/totp", "POST"): "viewer",
    ("/logout", "POST"): "viewer",
    ("/nodes/<minion_id>", "GET"): "viewer",
    # drift across the fleet, one package's nodes, two nodes compared: reading, like the nodes
    ("/drift", "GET"): "viewer",
    ("/drift/packages/<ecosystem>/<path:name>", "GET"): "viewer",
    ("/compare", "GET"): "viewer",
    ("/nodes/<minion_id>/action", "POST"): "operator",
    ("/nodes/<minion_id>/meta", "POST"): "operator",
    ("/groups", "GET"): "viewer",
    ("/groups/<group>/action", "POST"): "operator",
    ("/keys", "GET"): "viewer",
    ("/keys/<minion_id>/<decision>", "POST"): "operator",
    ("/enrol", "GET"): "operator",
    ("/enrol", "POST"): "operator",
    ("/bootstrap", "GET"): "operator",
    ("/bootstrap", "POST"): "operator",
    ("/bootstrap/<minion_id>", "GET"): "viewer",
    ("/baselines", "GET"): "viewer",
    ("/baselines/<name>", "GET"): "viewer",
    ("/baselines/<op>", "POST"): "operator",
    ("/jobs", "GET"): "viewer",
    # The job page shows the load and every return (pillar.items, cmd.run output): auditor
    # and up (issue 11). Until that change is merged the viewer still holds it.
    ("/jobs/<jid>", "GET"): "auditor",  # returns and loads: pillar.items, cmd.run output
    ("/audit", "GET"): "auditor",
    ("/users", "GET"): "admin",
    ("/users", "POST"): "admin",
    ("/users/<username>/<change>", "POST"): "admin",
    ("/api/v1/me", "GET"): "viewer",
    ("/api/v1/openapi.json", "GET"): "viewer",
    ("/api/v1/nodes", "GET"): "viewer",
    ("/api/v1/nodes/<minion_id>", "GET"): "viewer",
    ("/api/v1/nodes/<minion_id>", "PATCH"): "operator",
    ("/api/v1/nodes/<minion_id>/drift", "GET"): "viewer",
    ("/api/v1/nodes/<minion_id>/drift/findings", "GET"): "viewer",
    ("/api/v1/drift/packages", "GET"): "viewer",
    ("/api/v1/drift/packages/<ecosystem>/<path:name>", "GET"): "viewer",
    ("/api/v1/compare", "GET"): "viewer",
    ("/api/v1/nodes/<minion_id>/actions", "POST"): "operator",
    ("/api/v1/groups/<group>/actions", "POST"): "operator",
    ("/api/v1/keys", "GET"): "viewer",
    ("/api/v1/keys/<minion_id>/<decision>", "POST"): "operator",
    ("/api/v1/enrolments", "POST"): "operator",
    ("/api/v1/bootstraps", "GET"): "viewer",
    ("/api/v1/bootstraps", "POST"): "operator",
    ("/api/v1/baselines", "GET"): "viewer",
    ("/api/v1/baselines/<op>", "POST"): "operator",
    # Salt's jobs through the API: the list for everyone, a job's returns for auditors and up.
    ("/api/v1/jobs", "GET"): "viewer",
    ("/api/v1/jobs/<jid>", "GET"): "auditor",
    ("/api/v1/audit", "GET"): "auditor",
    ("/api/v1/audit/verify", "GET"): "auditor",
}


def test_every_route_needs_a_session_csrf_and_the_right_role(web, people, store):
    """Walk the app's whole URL map against ``ROUTE_ROLES``."""
    routes = {
        (rule.rule, method): rule
        for rule in web.url_map.iter_rules()
        if rule.endpoint not in PUBLIC_ENDPOINTS
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    unlisted = sorted(set(routes) - set(ROUTE_ROLES))
    gone = sorted(set(ROUTE_ROLES) - set(routes))
    assert not unlisted, f"routes missing from ROUTE_ROLES (add them with their role): {unlisted}"
    assert not gone, f"ROUTE_ROLES entries with no route in the app: {gone}"
    assert set(ROUTE_ROLES.values()) <= set(webauth.ROLES)
    # one user of each role (no TOTP: the walk is about roles, not the second factor)
    names = dict(people)
    with store.begin() as conn:
        for role in ("auditor", "admin"):
            names[role] = random_string(f"walk-{role}-").lower()
            store_users.create_user(conn, names[role], role, PASSWORD, rounds=4)
    clients = {role: login(web, names[role]) for role in webauth.ROLES}
    anonymous = web.test_client()
    refused = {role: 0 for role in webauth.ROLES}
    allowed = {role: 0 for role in webauth.ROLES}
    for (path, method), rule in sorted(routes.items()):
        least = ROUTE_ROLES[(path, method)]
        url = rule.build(_sample_args(rule), append_unknown=False)[1]
        what = (path, method)
        # 1. no session: refused (API: 401; pages: a redirect to the login form)
        resp = anonymous.open(url, method=method)
        assert resp.status_code in (401, 302), (*what, resp.status_code)
        if resp.status_code == 302:
            assert "/login" in resp.headers["Location"], what
        if method in STATE_CHANGING:
            # 2. a session of the least role that may use it, without the CSRF token: refused
            client, _ = clients[least]
            resp = client.open(url, method=method)
            assert resp.status_code == 403, (*what, resp.status_code)
            assert b"CSRF" in resp.data, what
        # 3. every role below the least one: 403; the least one and above: let in (whatever
        #    the sample arguments then make of it: 200, a redirect, 400, 404 ...)
        for role in webauth.ROLES:
            client, csrf = clients[role]
            if what == ("/logout", "POST"):
                client, csrf = login(web, names[role])  # keep the walk's sessions alive
            headers = {"X-CSRF-Token": csrf} if method in STATE_CHANGING else {}
            resp = client.open(url, method=method, headers=headers)
            if webauth.ROLES.index(role) < webauth.ROLES.index(least):
                assert resp.status_code == 403, (*what, role, resp.status_code)
                refused[role] += 1
            else:
                assert resp.status_code not in (401, 403), (
                    *what,
                    role,
                    resp.status_code,
                    resp.get_data(as_text=True)[:300],
                )
                allowed[role] += 1
    # (the walk reached both sides of every role boundary)
    assert refused["viewer"] > refused["auditor"] > refused["operator"] > refused["admin"] == 0
    assert allowed["admin"] == len(routes)
    # API errors share one envelope
    resp = anonymous.get("/api/v1/nodes")
    assert resp.status_code == 401
    body = resp.get_json()
    assert set(body) == {"error"} and body["error"]["code"] == 401 and body["error"]["message"]


def test_api_tokens_openapi_and_the_error_envelope(web, people, store):
    client, csrf = login(web, people["operator"])
    page = client.post("/account/token", data={"csrf_token": csrf})
    token = re.search(r'id="api-token"[^>]*>([^<]+)<', page.get_data(as_text=True)).group(1)
    api = web.test_client()
    auth = {"Authorization": f"Bearer {token}"}
    me = api.get("/api/v1/me", headers=auth).get_json()
    assert me["username"] == people["operator"] and "keys.decide" in me["permissions"]
    assert api.get("/api/v1/nodes?per_page=5", headers=auth).status_code == 200
    bad = api.get("/api/v1/nodes?sort=nonsense", headers=auth)
    assert bad.status_code == 400 and "sort" in bad.get_json()["error"]["message"]
    assert (
        api.get("/api/v1/nodes", headers={"Authorization": "Bearer fleet_" + "x" * 43}).status_code
        == 401
    )
    # a token is for the API only
    assert api.get("/", headers=auth).status_code == 401
    spec = api.get("/api/v1/openapi.json", headers=auth).get_json()
    assert spec["openapi"].startswith("3.") and "/nodes/{minion_id}" in spec["paths"]
    assert spec["paths"]["/keys/{minion_id}/{decision}"]["post"]["x-permission"] == "keys.decide"
    # token requests need no CSRF token (no cookie rides along), but the role still applies
    with store.begin() as conn:
        conn.execute(
            insert(Node).values(minion_id="api-node-1", facts={"os": "Debian"}, comment="")
        )
    resp = api.patch("/api/v1/nodes/api-node-1", headers=auth, json={"criticality": "high"})
    assert resp.status_code == 200 and resp.get_json()["criticality"] == "high"
    resp = api.patch("/api/v1/nodes/api-node-1", headers=auth, json={"criticality": "extreme"})
    assert resp.status_code == 400 and "criticality" in resp.get_json()["error"]["message"]
    client.post("/account/token", data={"csrf_token": csrf, "revoke": "1"})
    assert api.get("/api/v1/me", headers=auth).status_code == 401


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


def test_node_page_draws_the_drift_history(web, people, store):
    minion_id = random_string("ui-node-").lower()
    import datetime as dt

    now = dt.datetime.now(dt.timezone.utc)
    with store.begin() as conn:
        conn.execute(
            insert(Node).values(
                minion_id=minion_id, facts={"os": "NixOS", "osrelease": "24.11"}, comment=""
            )
        )
        for hours in (0, 6):  # PostgreSQL: the month's partition (created on demand)
            store_drift.ensure_partition(conn, now - dt.timedelta(hours=hours))
        conn.execute(
            insert(DriftHistory),
            [
                {"minion_id": minion_id, "computed_at": now - dt.timedelta(hours=h), "score": h * 2}
                for h in range(6)
            ],
        )
    client, csrf = login(web, people["operator"])
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
    with store.connect() as conn:
        row = conn.execute(
            select(Node.criticality, Node.audited).where(Node.minion_id == minion_id)
        ).one()
        assert tuple(row) == ("critical", True)
        audited = conn.execute(
            select(AuditEvent.actor).where(
                AuditEvent.target == minion_id, AuditEvent.action == "node.meta"
            )
        ).scalar()
    assert audited == f"ui:{people['operator']}"
    assert client.get("/nodes/..%2F..%2Fetc").status_code == 404


def test_an_action_on_a_node_runs_through_salt_and_is_audited(web, people, store, salt_minion):
    """Refresh the inventory of a real minion from its page: a job published with
    LocalClient, answered by the minion, in the job cache; the audit names the UI user."""
    from saltext_fleet.store.models import Return

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

    from tests.support.waiting import wait_for

    assert wait_for("the inventory job's return", returned, timeout=90) == "fleet.inventory"
    page = client.get(f"/jobs/{jid}").get_data(as_text=True)
    assert salt_minion.id in page
    # an action outside the allow-list is refused
    resp = client.post(
        f"/nodes/{salt_minion.id}/action", data={"csrf_token": csrf, "action": "cmd.run"}
    )
    assert resp.status_code == 400


def test_a_named_command_runs_on_a_group_per_system(web, people, store, salt_minion, salt_minion_2):
    """``fleet:actions`` holds a ``test`` command for Debian (this machine): run on a group,
    it reaches both real minions in one job; a node of another system is skipped, by name."""
    from sqlalchemy import update

    from saltext_fleet.store.models import Return
    from tests.support.waiting import wait_for

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
    node_page = client.get(f"/nodes/{salt_minion.id}").get_data(as_text=True)
    assert 'data-action="test"' in node_page and "echo fleet-test-action" in node_page
    assert 'data-action="switch"' not in node_page  # not configured for Debian
    groups_page = client.get("/groups").get_data(as_text=True)
    assert f'data-group="{group}"' in groups_page
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
    # a name outside the allow-list, and through the API a node whose system has no command
    assert (
        client.post(
            f"/groups/{group}/action", data={"csrf_token": csrf, "action": "rm -rf /"}
        ).status_code
        == 400
    )
    token_page = client.post("/account/token", data={"csrf_token": csrf}).get_data(as_text=True)
    token = re.search(r'id="api-token"[^>]*>([^<]+)<', token_page).group(1)
    resp = web.test_client().post(
        f"/api/v1/nodes/{other}/actions",
        headers={"Authorization": f"Bearer {token}"},
        json={"action": "test"},
    )
    assert resp.status_code == 400 and "for this node" in resp.get_json()["error"]["message"]


@pytest.fixture
def unix_users():
    """Real Unix users with passwords on this machine, for Salt's PAM eauth (removed after)."""
    import subprocess

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
    from saltext_fleet.webui.eauth import make_checker

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
    way to an accepted minion over a real sshd is tests/integration/test_bootstrap.py. A
    node still bootstrapping is refused."""
    from saltext_fleet.store.models import Bootstrap
    from tests.support.sshd import free_port
    from tests.support.waiting import run, wait_for

    group = random_string("uiboot-").lower()
    run(salt_run_cli, "fleet.group_set", group, "user=root", "password=not-used-here-at-all")
    minion_id = random_string("uiboot-node-").lower()
    admin_free = web.test_client()
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
    # a node still bootstrapping is refused
    with store.begin() as conn:
        conn.execute(
            insert(Bootstrap).values(
                minion_id=minion_id,
                host="127.0.0.1",
                port=22,
                ssh_user="root",
                state="running",
                running_id=minion_id,
                steps=[],
            )
        )
    try:
        again = client.post("/bootstrap", data=form)
        assert again.status_code == 409 and b"still bootstrapping" in again.data
    finally:
        with store.begin() as conn:
            conn.execute(Bootstrap.__table__.delete().where(Bootstrap.running_id == minion_id))
    # viewers may watch but not start
    viewer, viewer_csrf = login(web, people["viewer"])
    assert viewer.get(f"/bootstrap/{minion_id}").status_code == 200
    assert viewer.post("/bootstrap", data={**form, "csrf_token": viewer_csrf}).status_code == 403
    assert admin_free.get("/bootstrap").status_code == 302


def test_baselines_are_pinned_edited_assigned_and_deleted_from_the_ui(
    web, people, store, salt_master, salt_minion
):
    """Through the fleet.baseline_* runners (Salt's RunnerClient), audited as the UI user."""
    from tests.support.waiting import wait_for

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
    # a viewer reads but does not edit
    viewer, viewer_csrf = login(web, people["viewer"])
    assert viewer.get("/baselines").status_code == 200
    assert (
        viewer.post(
            "/baselines/pin", data={"csrf_token": viewer_csrf, "minion": "x", "name": "y"}
        ).status_code
        == 403
    )
