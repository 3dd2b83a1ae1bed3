"""The forms whose work Salt's runners do: what the UI checks itself and what it hands the
runner (through the fake gateway), and how a runner's refusal comes back. That the runners
then really act is tests/integration/test_webui_app.py."""

from __future__ import annotations

import time

from sqlalchemy import insert

from saltext_fleet.store.models import Bootstrap
from saltext_fleet.webui.salt import SaltError

FORM = {"host": "127.0.0.1", "port": "2222", "id": "boot-1", "group": "macs", "service": "daemon"}


def _runner_calls(salt, fun):
    return [c for c in salt.calls if c[0] == "runner" and c[1] == fun]


def test_a_bootstrap_is_handed_to_its_runner_and_a_running_one_is_refused(
    app, engine, salt, logged_in, people
):
    client, csrf = logged_in("operator")
    resp = client.post("/bootstrap", data={**FORM, "csrf_token": csrf, "python": ""})
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/bootstrap/boot-1")
    deadline = time.monotonic() + 10
    while not _runner_calls(salt, "fleet.bootstrap") and time.monotonic() < deadline:
        time.sleep(0.01)  # the runner is started in a thread of its own
    (call,) = _runner_calls(salt, "fleet.bootstrap")
    assert call[2] == FORM and call[3] == f"ui:{people['operator']}"  # empty fields left out
    # the fields it needs, and a well-formed id
    for missing in ("host", "id", "group"):
        resp = client.post("/bootstrap", data={**FORM, missing: "", "csrf_token": csrf})
        assert resp.status_code == 400 and f"{missing}: needed".encode() in resp.data
    resp = client.post("/bootstrap", data={**FORM, "id": "../etc", "csrf_token": csrf})
    assert resp.status_code == 404
    # a failure before the store had a row is shown on the progress page
    salt.answers["fleet.bootstrap"] = SaltError("the group macs has no credentials")
    client.post("/bootstrap", data={**FORM, "id": "boot-2", "csrf_token": csrf})
    deadline = time.monotonic() + 10
    while "boot-2" not in app.extensions["fleet"].bootstrap_failures:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    page = client.get("/bootstrap/boot-2").get_data(as_text=True)
    assert "the group macs has no credentials" in page
    api = client.get("/api/v1/bootstraps?id=boot-2").get_json()
    assert api == {"attempts": [], "failure": "the group macs has no credentials"}
    # a node still bootstrapping is refused
    with engine.begin() as conn:
        conn.execute(
            insert(Bootstrap).values(
                minion_id="boot-1",
                host="127.0.0.1",
                port=22,
                ssh_user="root",
                state="running",
                running_id="boot-1",
                steps=[],
            )
        )
    started = len(salt.calls)
    again = client.post("/bootstrap", data={**FORM, "csrf_token": csrf})
    assert again.status_code == 409 and b"still bootstrapping" in again.data
    resp = client.post("/api/v1/bootstraps", json=FORM, headers={"X-CSRF-Token": csrf})
    assert resp.status_code == 409
    assert len(salt.calls) == started
    # viewers may watch but not start
    viewer, viewer_csrf = logged_in("viewer")
    assert viewer.get("/bootstrap/boot-1").status_code == 200
    assert viewer.post("/bootstrap", data={**FORM, "csrf_token": viewer_csrf}).status_code == 403


def test_key_decisions_go_to_their_runners(salt, logged_in, people):
    client, csrf = logged_in("operator")
    who = f"ui:{people['operator']}"
    form = {"csrf_token": csrf, "fingerprint": "ab:cd", "include_rejected": "1"}
    assert client.post("/keys/m-1/accept", data=form).status_code == 303
    assert client.post("/keys/m-1/delete", data=form).status_code == 303
    assert salt.calls == [
        (
            "runner",
            "fleet.keys_accept",
            {"minion": "m-1", "fingerprint": "ab:cd", "include_rejected": True},
            who,
        ),
        ("runner", "fleet.keys_delete", {"minion": "m-1"}, who),
    ]
    assert client.post("/keys/m-1/promote", data=form).status_code == 404
    # the runner's refusal is flashed on the keys page; through the API it is a 409
    salt.answers["fleet.keys_reject"] = SaltError("m-1: the fingerprint does not match")
    resp = client.post("/keys/m-1/reject", data=form)
    assert resp.status_code == 303
    assert "the fingerprint does not match" in client.get("/keys").get_data(as_text=True)
    resp = client.post(
        "/api/v1/keys/m-1/reject", json={"fingerprint": "ab:cd"}, headers={"X-CSRF-Token": csrf}
    )
    assert resp.status_code == 409 and "does not match" in resp.get_json()["error"]["message"]
    assert salt.calls[-1][2] == {"minion": "m-1", "fingerprint": "ab:cd"}
    # the keys page groups the runner's answer by state
    salt.answers["fleet.keys"] = {
        "m-2": {"state": "pending", "fingerprint": "12:34"},
        "m-3": {"state": "accepted", "fingerprint": "56:78"},
    }
    page = client.get("/keys").get_data(as_text=True)
    assert 'data-key="m-2"' in page and 'data-key="m-3"' in page


def test_baseline_operations_check_their_fields_and_show_refusals(salt, logged_in, people):
    client, csrf = logged_in("operator")
    resp = client.post(
        "/baselines/set",
        data={"csrf_token": csrf, "name": "b1", "package": "pypi:x", "remove": "yes"},
    )
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/baselines/b1")
    assert salt.calls[-1] == (
        "runner",
        "fleet.baseline_set",
        {"name": "b1", "package": "pypi:x", "remove": True},
        f"ui:{people['operator']}",
    )
    called = len(salt.calls)
    resp = client.post("/baselines/pin", data={"csrf_token": csrf, "name": "b1"})
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/baselines")
    listing = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "pin b1: minion: needed" in listing
    assert client.post("/baselines/rename", data={"csrf_token": csrf}).status_code == 303
    assert len(salt.calls) == called + 1  # only the listing asked Salt
    salt.answers["fleet.baseline_set"] = SaltError("rule: one of exact, min, max, not 'newest'")
    resp = client.post(
        "/baselines/set",
        data={"csrf_token": csrf, "name": "b1", "package": "pypi:x", "rule": "newest"},
    )
    assert resp.headers["Location"].endswith("/baselines/b1")
    resp = client.post(
        "/api/v1/baselines/set",
        json={"name": "b1", "rule": "newest"},
        headers={"X-CSRF-Token": csrf},
    )
    assert resp.status_code == 400 and "newest" in resp.get_json()["error"]["message"]
    assert client.get("/baselines/none-such").status_code == 404


def test_enrolment_hands_its_fields_to_the_runner(salt, logged_in):
    client, csrf = logged_in("operator")
    salt.answers["fleet.enrol"] = {"minion": "new-1", "token": "t0k3n", "expires": "soon"}
    resp = client.post(
        "/enrol", data={"csrf_token": csrf, "minion": "new-1", "ttl": "3600", "group": ""}
    )
    assert resp.status_code == 200 and "t0k3n" in resp.get_data(as_text=True)
    assert ("runner", "fleet.enrol", {"minion": "new-1", "ttl": "3600"}) == salt.calls[-2][:3]
    salt.answers["fleet.enrol"] = SaltError("minion: not a valid minion id")
    resp = client.post("/enrol", data={"csrf_token": csrf, "minion": "../x"})
    assert resp.status_code == 200 and "not a valid minion id" in resp.get_data(as_text=True)
    resp = client.post(
        "/api/v1/enrolments", json={"minion": "../x"}, headers={"X-CSRF-Token": csrf}
    )
    assert resp.status_code == 400
    salt.answers["fleet.enrolments"] = SaltError("the store is away")
    assert client.get("/enrol").status_code == 502
