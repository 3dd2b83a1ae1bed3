"""The web UI in a real headless Chromium (Debian's), served by the engine of the package's
real master: log in with a password and a TOTP code, see the fleet, accept a pending key,
see a node's drift history chart; on the package's two real minions, whose virtualenvs
really differ, walk a node's drift findings, the drift across the fleet and the two nodes
compared. Screenshots: test-artifacts/screenshots/ ($FLEET_ARTIFACTS/screenshots/ when set;
each test prints the folder)."""

from __future__ import annotations

import datetime as dt

import pyotp
import pytest
import salt.crypt
import salt.key
from saltfactories.utils import random_string
from sqlalchemy import insert

from saltext_fleet.core import secrets as core_secrets
from saltext_fleet.core import webauth
from saltext_fleet.store import drift as store_drift
from saltext_fleet.store import users as store_users
from saltext_fleet.store.models import DriftCurrent, DriftHistory, Node
from tests.support.browser import ARTIFACTS, launch_chromium, screenshot
from tests.support.waiting import run, wait_for

pytestmark = pytest.mark.timeout(300)
PASSWORD = "browser test password"


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = launch_chromium(pw)
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


def log_in_as_viewer(page, ui):
    """Log the module's tab in as a new viewer (no second factor), whoever it was before."""
    name = random_string("drift-viewer-").lower()
    with ui["store"].begin() as conn:
        store_users.create_user(conn, name, "viewer", PASSWORD, rounds=4)
    page.context.clear_cookies()
    page.goto(ui["url"] + "/login")
    page.fill("#username", name)
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_selector("table#fleet")
    return name


def inventory_stored(salt_run_cli, minion, digest):
    return any(
        row["minion_id"] == minion and row["digest"] == digest
        for row in run(salt_run_cli, "fleet.nodes", f"tgt={minion}")
    )


def test_drift_findings_fleet_drift_and_two_nodes_compared_on_real_minions(
    ui, page, salt_minion, salt_minion_2, salt_cli, salt_run_cli
):
    """Minion 1's virtualenv has fleet-alpha 1.0.0; minion 2's fleet-alpha 2.1.0 and
    fleet-beta 0.3 (tests/integration/conftest.py). A baseline pinned from minion 1's Python
    packages makes minion 2 drift on both, for real."""
    print(f"screenshots: {ARTIFACTS}")
    one, two = salt_minion.id, salt_minion_2.id
    for minion in (one, two):
        ret = salt_cli.run("fleet.inventory", minion_tgt=minion, _timeout=120)
        assert ret.returncode == 0, ret
        wait_for(
            f"the inventory of {minion}",
            lambda m=minion, d=ret.data["digest"]: inventory_stored(salt_run_cli, m, d),
        )
    name = random_string("browser-golden-").lower()
    run(salt_run_cli, "fleet.baseline_pin", one, f"name={name}", "ecosystems=pypi")
    run(
        salt_run_cli, "fleet.baseline_assign", name, f"{one},{two}", "tgt_type=list", "priority=100"
    )
    drift = run(salt_run_cli, "fleet.drift", f"{one},{two}", "tgt_type=list")
    assert drift[one]["score"] == 0 and drift[two]["score"] > 0
    log_in_as_viewer(page, ui)

    # the node page: every finding, expected against found, with its rule
    page.goto(f"{ui['url']}/nodes/{two}")
    findings = page.locator("#drift-findings")
    findings.wait_for()
    assert findings.get_attribute("data-state") == "ok"
    assert page.locator("#findings-baseline").inner_text() == name
    changed = page.locator('tr[data-finding="changed:pypi:fleet-alpha"]')
    cells = [changed.locator(f"td.{c}").inner_text() for c in ("expected", "found", "rule")]
    assert cells[0] == "1.0.0" and cells[1].startswith("2.1.0") and "major" in cells[1]
    assert "packages:pypi:fleet-alpha" in cells[2] and "exactly 1.0.0" in cells[2]
    extra = page.locator('tr[data-finding="extra:pypi:fleet-beta"]')
    assert extra.locator("td.found").inner_text() == "0.3"
    assert "extras: true" in extra.locator("td.rule").inner_text()
    screenshot(page, "node-drift-findings", page.locator("section#drift"))

    # drift across the fleet: the packages, and the nodes they drift on
    page.click("nav.site-nav >> text=Drift")
    page.wait_for_selector("table#drift-packages")
    page.select_option("#drift-baseline", name)
    page.click("#drift-filter-submit")
    page.wait_for_url(f"**/drift?*baseline={name}*")
    rows = page.locator("table#drift-packages tbody tr[data-package]")
    assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.package)")) == [
        "pypi:fleet-alpha",
        "pypi:fleet-beta",
    ]
    alpha = page.locator('tr[data-package="pypi:fleet-alpha"]')
    assert alpha.locator('[data-field="nodes"]').inner_text() == "1"
    assert alpha.locator(f'td.sample a[data-node="{two}"]').count() == 1
    assert page.locator("#drift-packages-chart svg rect.bar-changed").count() >= 1
    screenshot(page, "drift-fleet")

    # the two nodes compared, from the node page's link to the node the baseline came from
    page.goto(f"{ui['url']}/nodes/{two}")
    page.click("#compare-with-pin")
    page.wait_for_selector("table#compare-rows")
    kinds = dict(
        page.locator("table#compare-rows tbody tr[data-package]").evaluate_all(
            "rs => rs.map(r => [r.dataset.package, r.dataset.kind])"
        )
    )
    assert kinds["pypi:fleet-alpha"] == "different" and kinds["pypi:fleet-beta"] == "only_b"
    alpha_row = page.locator('table#compare-rows tr[data-package="pypi:fleet-alpha"]')
    assert "1.0.0" in alpha_row.inner_text() and "2.1.0" in alpha_row.inner_text()
    assert int(page.locator('#compare-summary [data-field="same"]').inner_text()) > 10
    shot = screenshot(page, "compare-nodes")
    assert shot.stat().st_size > 10_000

    # or ticked in the overview: the same comparison
    page.goto(f"{ui['url']}/?q=fleet-minion-")
    for minion in (one, two):
        page.check(f'tr[data-node="{minion}"] input[name="node"]')
    page.click("#compare-picked")
    page.wait_for_selector("table#compare-rows")
    assert page.locator("#compare-a").input_value() == one
    assert page.locator('table#compare-rows tr[data-package="pypi:fleet-beta"]').count() == 1
    print(f"screenshots: {shot.parent}")
