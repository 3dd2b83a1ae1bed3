"""The alert pages in a real headless Chromium (Debian's), served by the engine of the
package's real master, whose buttons run the real ``fleet.alert_*`` runners through Salt's
RunnerClient: the alerts page with a duplicate held back and a flapping condition's grouped
alert, the page offering a reload when a newer alert arrives (the live socket), an operator
acknowledging a condition (the page and the store say so), a node's alert
history on its page, the delivery log with its attempts and chart, and the routes page: an
admin makes a webhook route with its HMAC secret (shown back only as "set"), an operator's
Test send reaches a real receiver on loopback that checks the signature, and its outcome
(a 200, then a 503) is shown. Screenshots: test-artifacts/screenshots/ ($FLEET_ARTIFACTS)."""

from __future__ import annotations

import datetime as dt

import pytest
from saltfactories.utils import random_string
from sqlalchemy import insert, select

from saltext_fleet.store import audit as store_audit
from saltext_fleet.store import users as store_users
from saltext_fleet.store.models import Alert, AlertCondition, AlertRoute, Node
from tests.integration.test_gate import fire
from tests.support.alertreceiver import Receiver
from tests.support.alertseed import seed
from tests.support.browser import ARTIFACTS, launch_chromium, screenshot
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(300)
PASSWORD = "alerts browser password"
HMAC = "browser-test-hmac-Zq81x"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = launch_chromium(pw)
        yield chromium
        chromium.close()


def logged_in(browser, ui, role: str):
    """A tab of its own, logged in as a new user of ``role``; ``(tab, username)``."""
    name = random_string(f"alerts-{role}-").lower()
    with ui["store"].begin() as conn:
        store_users.create_user(conn, name, role, PASSWORD, rounds=4)
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    tab.goto(ui["url"] + "/login")
    tab.fill("#username", name)
    tab.fill("#password", PASSWORD)
    tab.click("#login-submit")
    tab.wait_for_selector("a.account-link")
    return tab, name


def test_alerts_page_live_acknowledge_node_history_and_delivery_log(ui, browser, salt_master):
    print(f"screenshots: {ARTIFACTS}")
    store = ui["store"]
    prefix = random_string("ab").lower() + "-"
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    with store.begin() as conn:
        ids = seed(conn, now=now, prefix=prefix)
        for node in ("mac-01", "linux-01"):
            conn.execute(insert(Node).values(minion_id=f"{prefix}{node}", facts={}, comment=""))
    mac1 = f"{prefix}mac-01"
    page, name = logged_in(browser, ui, "operator")

    # the fleet's alerts: the duplicate and the flapping group show as such
    page.goto(f"{ui['url']}/alerts?node={prefix}*")
    page.wait_for_selector("table#alerts")
    listed = page.locator("table#alerts tbody tr[data-alert]")
    assert listed.count() == 10
    duplicate = page.locator(f'tr[data-alert="{ids["duplicate"]}"]')
    assert duplicate.get_attribute("data-suppressed") == "duplicate"
    assert duplicate.locator('[data-mark="suppressed-duplicate"]').inner_text() == (
        "duplicate: not sent"
    )
    flapping = page.locator(f'tr[data-alert="{ids["flapping"]}"]')
    assert flapping.get_attribute("data-flapping") == "1"
    assert flapping.locator('[data-mark="flapping"]').is_visible()
    assert "is flapping" in flapping.locator("td.summary").inner_text()
    held = page.locator(f'tr[data-alert="{ids["flap_held"]}"]')
    assert held.locator('[data-mark="suppressed-flapping"]').is_visible()
    cve = page.locator(f'tr[data-alert="{ids["cve"]}"]')
    assert cve.locator('li[data-route="config:oncall"]').get_attribute("data-status") == "failed"
    screenshot(page, "alerts")

    # live: a new alert in the store and an event on the master's bus (the UI's hub looks at
    # the store when one wakes it): the page offers a reload, it does not reload by itself
    page.wait_for_selector('body[data-live-state="open"]')
    with store.begin() as conn:
        newer = conn.execute(
            insert(Alert)
            .values(
                event_key=random_string("live-"),
                tag="fleet/alert/test",
                kind="test",
                node=f"{prefix}other",
                state="firing",
                condition="test",
                severity="info",
                summary="a newer alert",
                data={},
                raised_at=dt.datetime.now(dt.timezone.utc),
            )
            .returning(Alert.id)
        ).scalar_one()
    fire(salt_master, f"fleet/node/{prefix}other", {"id": f"{prefix}other"})
    offer = page.locator("#live-new-alerts")
    offer.wait_for()
    assert offer.get_attribute("data-latest") == str(newer)
    assert listed.count() == 10  # the page stays as it was

    # an operator acknowledges mac-01's drift: the real fleet.alert_ack runner, as the user
    form = f"ack-{ids['duplicate']}"
    duplicate.locator(f"#{form} summary").click()
    page.fill(f"#{form}-comment", "rebuilding the image tonight")
    page.click(f"#{form}-submit")
    page.wait_for_selector(".flash >> text=Acknowledged drift on")
    duplicate = page.locator(f'tr[data-alert="{ids["duplicate"]}"]')
    assert duplicate.get_attribute("data-acked") == "1"
    mark = duplicate.locator('[data-mark="acknowledged"]')
    assert mark.inner_text() == f"acknowledged by {name}"
    assert "rebuilding the image tonight" in duplicate.inner_text()
    assert duplicate.locator("details.alert-ack").count() == 0  # no second button
    with store.connect() as conn:
        cond = conn.execute(
            select(AlertCondition).where(
                AlertCondition.kind == "drift", AlertCondition.node == mac1
            )
        ).one()
    assert cond.acked_condition == "above" == cond.condition
    assert cond.acked_by == f"ui:{name}" and cond.ack_comment == "rebuilding the image tonight"
    audited = store_audit.events(store, limit=20, target=f"drift:{mac1}:")
    assert [(e["action"], e["actor"]) for e in audited] == [("alert.ack", f"ui:{name}")]
    page.select_option("#alert-acknowledged", "yes")
    page.click("#alert-filter-submit")
    page.wait_for_url("**acknowledged=yes**")
    shown = page.locator("table#alerts tbody tr[data-alert]").evaluate_all(
        "rs => rs.map(r => Number(r.dataset.alert))"
    )
    assert sorted(shown) == sorted(ids[n] for n in ("cert_held", "cert", "duplicate", "drift"))
    screenshot(page, "alerts-acknowledged")

    # the node's page: its conditions (drift now acknowledged) and its alert history
    page.goto(f"{ui['url']}/nodes/{mac1}")
    section = page.locator("section#alerts")
    section.wait_for()
    drift = section.locator('#node-conditions tr[data-condition="drift:"]')
    assert drift.get_attribute("data-acked") == "1"
    assert f"acknowledged by {name}" in drift.inner_text()
    history = section.locator("#node-alerts tbody tr[data-alert]").evaluate_all(
        "rs => rs.map(r => Number(r.dataset.alert))"
    )
    assert history == [ids[n] for n in ("cert_held", "cert", "duplicate", "drift")]
    assert section.locator(f'tr[data-alert="{ids["duplicate"]}"] [data-mark]').count() >= 1
    screenshot(page, "node-alerts", section)

    # and from a node's page: linux-01's firing CVE condition
    lin1 = f"{prefix}linux-01"
    page.goto(f"{ui['url']}/nodes/{lin1}")
    cve_row = page.locator('#node-conditions tr[data-condition="cve:"]')
    cve_row.locator("details.alert-ack summary").click()
    cve_row.locator("input[name=comment]").fill("patch window tonight")
    cve_row.locator("button[type=submit]").click()
    page.wait_for_selector(".flash >> text=Acknowledged cve on")
    assert page.url.endswith(f"/nodes/{lin1}#alerts")
    cve_row = page.locator('#node-conditions tr[data-condition="cve:"]')
    assert cve_row.get_attribute("data-acked") == "1"
    with store.connect() as conn:
        cond = conn.execute(
            select(AlertCondition).where(AlertCondition.kind == "cve", AlertCondition.node == lin1)
        ).one()
    assert cond.acked_condition == "findings" and cond.ack_comment == "patch window tonight"

    # the delivery log: the failed delivery with its three attempts, the chart
    page.goto(f"{ui['url']}/alerts/deliveries")
    page.select_option("#delivery-status", "failed")
    page.click("#delivery-filter-submit")
    page.wait_for_url("**status=failed**")
    row = page.locator(f'tr[data-delivery="{ids["cve_delivery"]}"]')
    assert row.locator('[data-field="attempts"]').inner_text() == "3"
    assert row.locator('[data-field="last-error"]').inner_text() == "connection refused"
    attempts = page.locator(f'tr[data-attempts-of="{ids["cve_delivery"]}"] tr[data-attempt]')
    assert attempts.count() == 3
    assert attempts.first.locator('[data-field="error"]').inner_text() == "connection refused"
    page.goto(f"{ui['url']}/alerts/deliveries?alert={ids['drift']}")
    codes = page.locator(
        f'tr[data-attempts-of="{ids["drift_delivery"]}"] [data-field="status-code"]'
    ).all_inner_texts()
    assert codes == ["200", "503"]  # newest first
    page.goto(f"{ui['url']}/alerts/deliveries")
    chart = page.locator("#deliveries-chart svg")
    chart.wait_for()
    assert chart.locator("rect.bar-delivered").count() >= 2  # a column and the legend
    assert chart.locator("rect.bar-failed").count() >= 2
    box = chart.bounding_box()
    assert box and box["width"] > 300 and box["height"] > 100
    screenshot(page, "alert-deliveries")
    page.context.close()


def test_routes_made_in_the_ui_and_test_send_to_a_real_receiver(ui, browser):
    route = random_string("hook-").lower()
    key = f"ui:{route}"
    with Receiver(secret=HMAC) as receiver:
        admin, _admin_name = logged_in(browser, ui, "admin")
        admin.goto(f"{ui['url']}/alerts/routes")
        admin.fill("#route-name", route)
        admin.select_option("#route-destination", "webhook")
        # only the chosen destination's fields show (static/alerts.js)
        assert admin.locator("#route-target-webhook").is_visible()
        assert not admin.locator("#route-target-email").is_visible()
        admin.check("#route-kind-drift")
        admin.select_option("#route-min-severity", "warning")
        admin.fill("#route-webhook-url", receiver.url)
        admin.fill("#route-webhook-secret-hmac", HMAC)
        admin.click("#route-submit")
        admin.wait_for_selector(f".flash >> text=Route {key} saved (secret set: hmac).")
        row = admin.locator(f'#ui-routes-table tr[data-route="{key}"]')
        assert row.locator('[data-secret="hmac"]').inner_text() == "HMAC secret: set"
        assert HMAC not in admin.content()
        # editing shows the target again, never the secret
        row.locator(f'[data-edit-route="{route}"]').click()
        admin.wait_for_selector("#route-form")
        assert admin.input_value("#route-webhook-url") == receiver.url
        assert admin.input_value("#route-webhook-secret-hmac") == ""
        assert "set: leave empty to keep it" in admin.inner_text("#route-target-webhook")
        assert HMAC not in admin.content()
        with ui["store"].connect() as conn:
            stored = conn.execute(select(AlertRoute).where(AlertRoute.name == route)).one()
        assert stored.target["url"] == receiver.url and stored.match["kinds"] == ["drift"]
        assert stored.created_by and stored.created_by.startswith("ui:alerts-admin-")
        screenshot(admin, "alert-routes-admin")

        # an operator's Test send: through the real fleet.alert_test, to the receiver
        oper, _oper_name = logged_in(browser, ui, "operator")
        oper.goto(f"{ui['url']}/alerts/routes")
        assert oper.locator("#route-form").count() == 0  # not an admin's
        oper.click(f'button[data-test-route="{key}"]')
        outcome = oper.locator("#test-outcome")
        outcome.wait_for()
        assert outcome.get_attribute("data-route") == key
        assert outcome.get_attribute("data-ok") == "1", outcome.inner_text()
        assert outcome.locator('[data-field="status-code"]').inner_text() == "200"
        latency = outcome.locator('[data-field="latency"]').inner_text()
        assert latency.endswith(" ms") and float(latency[:-3]) > 0
        wait_for("the test alert at the receiver", lambda: len(receiver.requests) == 1)
        (got,) = receiver.requests
        assert isinstance(got.verified, dict), got.verified  # the HMAC signature checked out
        assert got.verified["kind"] == "test" and got.headers["X-Fleet-Event"] == "test"
        screenshot(oper, "alert-test-send-ok")

        # the receiver fails: the outcome says so
        receiver.answer(503, b"down for maintenance")
        oper.click(f'button[data-test-route="{key}"]')
        oper.wait_for_selector('#test-outcome[data-ok="0"]')
        outcome = oper.locator("#test-outcome")
        assert outcome.locator('[data-field="status-code"]').inner_text() == "503"
        assert outcome.locator('[data-field="error"]').inner_text() not in ("", "—")
        screenshot(oper, "alert-test-send-503")
        assert len(receiver.requests) == 2

        # both test sends are in the delivery log, each with its attempt
        oper.goto(f"{ui['url']}/alerts/deliveries?route={key}")
        statuses = oper.locator("table#deliveries tr[data-delivery]").evaluate_all(
            "rs => rs.map(r => r.dataset.status)"
        )
        assert statuses == ["failed", "delivered"]
        codes = oper.locator('#deliveries tr[data-attempt] [data-field="status-code"]')
        assert codes.all_inner_texts() == ["503", "200"]
        oper.context.close()

        # the admin deletes the route (fleet.alert_route_delete)
        admin.goto(f"{ui['url']}/alerts/routes")
        asked = []
        admin.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
        admin.click(f'button[data-delete-route="{route}"]')  # asked, and said no
        assert asked == [f"Delete route {key} and its secrets? Its pending deliveries fail."]
        # (the audit below has one route_delete: the refused click sent nothing)
        admin.once("dialog", lambda dialog: dialog.accept())
        admin.click(f'button[data-delete-route="{route}"]')
        admin.wait_for_selector(f".flash >> text=Route {key} deleted.")
        assert admin.locator(f'tr[data-route="{key}"]').count() == 0
        actions = [e["action"] for e in store_audit.events(ui["store"], limit=50, target=key)]
        assert actions[:4] == ["alert.route_delete", "alert.test", "alert.test", "alert.route_set"]
        admin.context.close()
