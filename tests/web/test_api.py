"""The JSON API: per-user tokens, the OpenAPI description, one error envelope."""

from __future__ import annotations

import re

from sqlalchemy import insert

from saltext_fleet.store.models import Node


def test_api_tokens_openapi_and_the_error_envelope(app, engine, logged_in, people):
    client, csrf = logged_in("operator")
    page = client.post("/account/token", data={"csrf_token": csrf})
    token = re.search(r'id="api-token"[^>]*>([^<]+)<', page.get_data(as_text=True)).group(1)
    api = app.test_client()
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
    with engine.begin() as conn:
        conn.execute(
            insert(Node).values(minion_id="api-node-1", facts={"os": "Debian"}, comment="")
        )
    resp = api.patch("/api/v1/nodes/api-node-1", headers=auth, json={"criticality": "high"})
    assert resp.status_code == 200 and resp.get_json()["criticality"] == "high"
    resp = api.patch("/api/v1/nodes/api-node-1", headers=auth, json={"criticality": "extreme"})
    assert resp.status_code == 400 and "criticality" in resp.get_json()["error"]["message"]
    resp = api.patch("/api/v1/nodes/api-node-1", headers=auth, json={"owner": "me"})
    assert (
        resp.status_code == 400 and "unknown fields: owner" in resp.get_json()["error"]["message"]
    )
    resp = api.patch("/api/v1/nodes/api-node-1", headers=auth, json=["criticality"])
    assert resp.status_code == 400 and "JSON object" in resp.get_json()["error"]["message"]
    resp = api.patch("/api/v1/nodes/no-such-node", headers=auth, json={"audited": True})
    assert resp.status_code == 404
    client.post("/account/token", data={"csrf_token": csrf, "revoke": "1"})
    assert api.get("/api/v1/me", headers=auth).status_code == 401


def test_every_api_operation_is_described_with_its_permission(app, logged_in):
    client, _csrf = logged_in("viewer")
    spec = client.get("/api/v1/openapi.json").get_json()
    rules = {
        rule.rule[len("/api/v1") :]
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/v1/") and rule.endpoint != "api.openapi"
    }
    described = {re.sub(r"\{(\w+)\}", r"<\1>", path) for path in spec["paths"]}
    assert described == rules
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            assert op["x-permission"], (path, method)
            assert op["summary"] and not op["summary"].startswith("api."), (path, method)
