"""The web UI in a real headless Chromium (Debian's), served by the engine of the package's
real master: log in with a password and a TOTP code, see the fleet, accept a pending key,
see a node's drift history chart. Screenshots: test-artifacts/screenshots/."""

from __future__ import annotations

import datetime as dt

import pyotp
import pytest
import salt.crypt
import salt.key
from saltfactories.utils import random_string
from sqlalchemy import insert

from saltext_fleet import config
from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.core import webauth
from saltext_fleet.store import drift as store_drift
from saltext_fleet.store import engine as store_engine
from saltext_fleet.store import users as store_users
from saltext_fleet.store.models import DriftCurrent, DriftHistory, Node
from tests.support.browser import require_chromium, screenshot
from tests.support.waiting import run, wait_for

pytestmark = pytest.mark.timeout(300)
PASSWORD = "browser test password"


@pytest.fixture(scope="module")
def ui(salt_master):
    cfg = config.load(salt_master.config)
    engine = store_engine.get_engine(cfg.db_url)
    store_engine.ensure_schema(engine)
    return {"url": f"http://{cfg.ui.host}:{cfg.ui.port}", "store": engine, "cfg": cfg}


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    executable = require_chromium()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        tab = context.new_page()
        tab.set_default_timeout(30_000)
        yield tab
        context.close()
        browser.close()


def test_log_in_see_the_fleet_accept_a_key_and_see_the_drift_chart(
    ui, page, salt_master, salt_run_cli
):
    store = ui["store"]
    name = random_string("browser-").lower()
    node_id = random_string("web-node-").lower()
    key_id = random_string("new-mini-").lower()
    now = dt.datetime.now(dt.timezone.utc)
    with store.begin() as conn:
        store_users.create_user(conn, name, "operator", PASSWORD, rounds=4)
        totp = webauth.new_totp_secret()
        store_users.set_totp(conn, core_secrets.Vault.open(ui["cfg"].key_file), name, totp)
        conn.execute(
            insert(Node).values(
                minion_id=node_id,
                facts={"os": "MacOS", "osrelease": "15.1"},
                status="online",
                status_at=now,
                comment="",
            )
        )
        conn.execute(
            insert(DriftCurrent).values(
                minion_id=node_id, baseline="xcode-16", score=14.0, computed_at=now
            )
        )
        for hours in (0, 30):
            store_drift.ensure_partition(conn, now - dt.timedelta(hours=hours))
        conn.execute(
            insert(DriftHistory),
            [
                {
                    "minion_id": node_id,
                    "computed_at": now - dt.timedelta(hours=6 * h),
                    "score": s,
                    "baseline": "xcode-16",
                }
                for h, s in enumerate([14, 9, 22, 3, 0])
            ],
        )
    # a machine asking to be let in: its key is pending in Salt's key store
    _pem, pub = salt.crypt.gen_keys(2048)
    salt.key.Key(salt_master.config.copy()).cache.store(
        "keys", key_id, {"pub": pub.strip(), "state": "pending"}
    )

    # log in: password, then the TOTP code
    page.goto(ui["url"] + "/")
    assert "/login" in page.url
    page.fill("#username", name)
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url("**/login/totp")
    page.fill("#code", pyotp.TOTP(totp).now())
    page.click("#totp-submit")
    page.wait_for_selector("table#fleet")
    # the fleet, live
    row = page.locator(f'tr[data-node="{node_id}"]')
    assert row.count() == 1
    assert "online" in row.locator('[data-field="status"]').inner_text()
    assert "14" in row.locator('[data-field="drift"]').inner_text()
    page.wait_for_selector('body[data-live-state="open"]')
    screenshot(page, "overview")

    # accept the pending key, comparing its fingerprint first
    page.click("a[href='/keys']")
    pending = page.locator(f'tr[data-key="{key_id}"]')
    finger = pending.locator("code.fingerprint").inner_text()
    assert finger == run(salt_run_cli, "fleet.keys", "status=pending")[key_id]["fingerprint"]
    screenshot(page, "keys-pending")
    pending.locator("button.accept").click()
    page.wait_for_selector(f'#accepted-keys tr[data-key="{key_id}"]')
    screenshot(page, "keys-accepted")
    accepted = run(salt_run_cli, "fleet.keys", "status=accepted")[key_id]
    assert accepted["decided_by"] == f"ui:{name}"

    # the node's drift history chart: one point per result
    page.goto(f"{ui['url']}/nodes/{node_id}")
    chart = page.locator("#drift-chart svg")
    chart.wait_for()
    assert chart.locator("circle").count() == 5
    box = chart.bounding_box()
    assert box and box["width"] > 300 and box["height"] > 100  # drawn, not collapsed
    shot = screenshot(page, "node-drift-chart")
    assert shot.stat().st_size > 10_000
    salt_master.salt_key_cli().run("-d", key_id, "-y")
    wait_for(
        "the key to be gone", lambda: key_id not in run(salt_run_cli, "fleet.keys"), timeout=30
    )
