"""Job returns and loads are for auditors and up: ``pillar.items`` and ``cmd.run`` output land
there. A viewer sees the list of jobs (function, target, user, time) and nothing inside them,
on the pages and in the API. The app against a real store on both backends (no Salt needed:
these views only read the store)."""

import re
import uuid

import pytest

from saltext_fleet.core.redact import MASK
from saltext_fleet.store import users as store_users
from tests.support.store import write
from tests.support.web import PASSWORD, account_csrf, login, make_app

JID = "20261205120000000009"


@pytest.fixture
def app(engine, tmp_path):
    return make_app(engine, tmp_path / "fleet.fernet")


@pytest.fixture
def job(engine):
    """A published job and one minion's return carrying a secret (masked by the store) and
    text that only auditors may read."""
    load = {"fun": "cmd.run", "arg": ["echo hello", "api_token=t0k3n"], "tgt": "*", "user": "root"}
    ret = {
        "id": "mini-07",
        "jid": JID,
        "fun": "cmd.run",
        "return": "hello from mini-07",
        "retcode": 0,
        "success": True,
    }
    result = write(
        engine,
        [
            {"kind": "load", "rid": uuid.uuid4().hex, "jid": JID, "load": load, "publish": True},
            {"kind": "return", "rid": uuid.uuid4().hex, "ret": ret},
        ],
    )
    assert result.stored == 2
    return JID


def _people(engine) -> dict[str, str]:
    with engine.begin() as conn:
        for role in ("viewer", "auditor", "operator"):
            store_users.create_user(conn, role + "-1", role, PASSWORD, rounds=4)
        return {
            role: store_users.new_api_token(conn, role + "-1") for role in ("viewer", "auditor")
        }


def _login(app, username):
    client = login(app, username)
    account_csrf(client)  # the session is alive
    return client


def test_a_viewer_lists_jobs_but_never_sees_returns_or_loads(app, engine, job):
    tokens = _people(engine)
    viewer = _login(app, "viewer-1")
    listing = viewer.get("/jobs")
    assert listing.status_code == 200
    text = listing.get_data(as_text=True)
    assert job in text and f"/jobs/{job}" not in text  # listed, not linked
    resp = viewer.get(f"/jobs/{job}")
    assert resp.status_code == 403
    assert "hello from mini-07" not in resp.get_data(as_text=True)
    api = app.test_client()
    bearer = {"Authorization": f"Bearer {tokens['viewer']}"}
    assert api.get("/api/v1/jobs", headers=bearer).status_code == 200
    resp = api.get(f"/api/v1/jobs/{job}", headers=bearer)
    assert resp.status_code == 403
    assert resp.get_json()["error"]["code"] == 403
    assert "hello" not in resp.get_data(as_text=True)


@pytest.mark.parametrize("role", ["auditor", "operator"])
def test_auditors_and_up_see_returns_and_loads(app, engine, job, role):
    tokens = _people(engine)
    client = _login(app, f"{role}-1")
    assert f"/jobs/{job}" in client.get("/jobs").get_data(as_text=True)
    page = client.get(f"/jobs/{job}")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "hello from mini-07" in text and "mini-07" in text
    assert "t0k3n" not in text and f"api_token={MASK}" in text  # the store kept it masked
    if role == "auditor":
        bearer = {"Authorization": f"Bearer {tokens['auditor']}"}
        resp = app.test_client().get(f"/api/v1/jobs/{job}", headers=bearer)
        assert resp.status_code == 200
        body = resp.get_json()
        assert body["jid"] == job and body["load"]["fun"] == "cmd.run"
        assert body["load"]["arg"] == ["echo hello", f"api_token={MASK}"]
        assert [(r["minion"], r["return"]) for r in body["returns"]] == [
            ("mini-07", "hello from mini-07")
        ]
        missing = app.test_client().get("/api/v1/jobs/20261205120000000999", headers=bearer)
        assert missing.status_code == 404
        assert (
            app.test_client().get(f"/api/v1/jobs/{job}?limit=x", headers=bearer).status_code == 400
        )


def test_a_return_a_minion_wrote_itself_is_shown_as_its_claim(app, engine, job):
    """A minion role (``--return fleet``) may write a return naming any minion: the job page
    marks it, the API says so, it does not count as that minion's answer and it is not in
    that node's jobs."""
    import datetime as dt

    from sqlalchemy import insert, update

    from saltext_fleet.store.models import Job, Return

    with engine.begin() as conn:
        conn.execute(update(Job).where(Job.jid == job).values(minions=["mini-07", "mini-08"]))
        conn.execute(
            insert(Return).values(
                rid=uuid.uuid4().hex,
                jid=job,
                minion_id="mini-08",
                fun="cmd.run",
                success=True,
                ret="claimed by somebody",
                full_ret={"id": "mini-08", "return": "claimed by somebody"},
                stored_at=dt.datetime.now(dt.timezone.utc),
            )
        )
    tokens = _people(engine)
    client = _login(app, "auditor-1")
    text = client.get(f"/jobs/{job}").get_data(as_text=True)
    row = re.search(r'<tr data-minion="mini-08">.*?</tr>', text, re.S).group(0)
    assert "self-reported" in row and "claimed by somebody" in row
    own = re.search(r'<tr data-minion="mini-07">.*?</tr>', text, re.S).group(0)
    assert "self-reported" not in own
    # mini-08 has not answered (its "return" is somebody's claim)
    waiting = re.search(r'<p class="warning" id="no-return">(.*?)</p>', text, re.S).group(1)
    assert "mini-08" in waiting and "mini-07" not in waiting
    bearer = {"Authorization": f"Bearer {tokens['auditor']}"}
    body = app.test_client().get(f"/api/v1/jobs/{job}", headers=bearer).get_json()
    assert {r["minion"]: r["authenticated"] for r in body["returns"]} == {
        "mini-07": True,
        "mini-08": False,
    }
    node = client.get("/nodes/mini-08").get_data(as_text=True)
    assert job not in node
    assert job in client.get("/nodes/mini-07").get_data(as_text=True)
