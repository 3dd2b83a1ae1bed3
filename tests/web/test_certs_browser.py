"""The certificates and Xcode pages in a real headless Chromium (Debian's), served by the
engine's web server, logged in as a viewer, over nodes seeded with the macOS fixtures'
identities (tests/fixtures/macos) as the job cache stores their grains: rows sorted by expiry,
the expired / 7-day / 30-day highlights on the right rows (their computed colours differ),
the filter, the nav link; the Xcode matrix's missing and selected cells.
Screenshots: test-artifacts/screenshots/."""

from __future__ import annotations

import datetime as dt

import pytest

from saltext_fleet import config
from saltext_fleet.core import baseline as core_baseline
from saltext_fleet.store import drift as store_drift
from saltext_fleet.store import engine as store_engine
from saltext_fleet.store.models import DriftCurrent
from tests.support.browser import launch_chromium, screenshot
from tests.support.certs import BUILDS, JANE, OLD, fixture_identities, mac_grains, store_grains
from tests.support.certs import xcode as xc
from tests.support.uiserver import serving

pytestmark = pytest.mark.timeout(180)
PASSWORD = "certs browser password"


def _in(days: float) -> str:
    at = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=days)
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def seed(engine) -> None:
    ids = fixture_identities()
    store_grains(
        engine,
        "mini-01",
        mac_grains(ids, [xc("15.4"), xc("16.2", True, "16C5032a")], os_version="14.5"),
    )
    store_grains(engine, "mini-02", mac_grains(ids[:2], [xc("15.4", True)], os_version="14.4.1"))
    store_grains(
        engine,
        "mini-03",
        mac_grains(
            [
                {"sha1": "AA" * 20, "name": "Apple Distribution: Soon", "not_after": _in(3.5)},
                {"sha1": "BB" * 20, "name": "Apple Development: Month", "not_after": _in(20.5)},
            ],
            [xc("16.2", True, "16C5032a")],
            os_version="15.1",
        ),
    )
    # a liar claiming mini-01's certificate with another expiry: a row of its own
    store_grains(
        engine,
        "mini-04",
        mac_grains([{**ids[0], "not_after": _in(1.5)}], [xc("9.4", True)], os_version="13.6"),
    )
    store_drift.save_baseline(
        engine, core_baseline.parse({"name": "xcode-16", "facts": {"xcode": "16.2"}}), "test"
    )
    with engine.begin() as conn:
        for node in ("mini-01", "mini-02", "mini-04"):
            conn.execute(
                DriftCurrent.__table__.insert().values(
                    minion_id=node, baseline="xcode-16", score=0.0
                )
            )


def test_the_certificates_and_xcode_pages_in_a_browser(tmp_path):
    from playwright.sync_api import sync_playwright

    with (
        serving(tmp_path, users=[("watcher", "viewer", PASSWORD)]) as served,
        sync_playwright() as pw,
    ):
        seed(store_engine.get_engine(config.load(served["opts"]).db_url))
        url = f"http://127.0.0.1:{served['port']}"
        browser = launch_chromium(pw)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.set_default_timeout(15_000)
            page.goto(url + "/login")
            page.fill("#username", "watcher")
            page.fill("#password", PASSWORD)
            page.click("#login-submit")
            page.wait_for_selector("a.account-link")

            # the nav leads to the certificates page
            page.click("nav.site-nav a[href='/certs']")
            page.wait_for_selector("table#certs")
            assert page.locator("nav.site-nav a[href='/certs']").get_attribute("aria-current") == (
                "page"
            )
            rows = page.locator("table#certs tbody tr")
            got = [
                (
                    rows.nth(i).get_attribute("data-sha1"),
                    rows.nth(i).get_attribute("data-nodes"),
                    rows.nth(i).get_attribute("class"),
                )
                for i in range(rows.count())
            ]
            # soonest expiry first; highlights on the right rows
            assert got == [
                (OLD, "mini-01", "cert-expired"),
                (JANE, "mini-04", "cert-7d"),  # the liar's claim: 1 day left, its own row
                ("AA" * 20, "mini-03", "cert-7d"),
                ("BB" * 20, "mini-03", "cert-30d"),
                (JANE, "mini-01 mini-02", None),  # the owners' row: their date, untouched
                (BUILDS, "mini-01 mini-02", None),
            ]
            days = page.locator("table#certs tbody td[data-field='days_left']").all_inner_texts()
            assert days[0] == "expired" and days[1:4] == ["1", "3", "20"]
            assert int(days[4]) > 1000
            # the highlights are drawn: three distinct backgrounds, none on the plain rows
            colour = "(el) => getComputedStyle(el).backgroundColor"
            cells = page.locator("table#certs tbody tr td:first-child")
            backgrounds = [cells.nth(i).evaluate(colour) for i in range(6)]
            assert len({backgrounds[0], backgrounds[1], backgrounds[3]}) == 3
            assert backgrounds[1] == backgrounds[2]
            assert backgrounds[4] not in backgrounds[:4]
            assert page.inner_text("[data-band-count='expired']") == "1"
            assert page.inner_text("[data-band-count='7d']") == "2"
            assert page.inner_text("[data-band-count='30d']") == "1"
            screenshot(page, "certs")

            # the filter: within 7 days
            page.select_option("#cert-days", "7")
            page.click("#cert-filter-submit")
            page.wait_for_url("**/certs?*days=7*")
            shown = page.locator("table#certs tbody tr").evaluate_all(
                "(rows) => rows.map((r) => r.dataset.sha1)"
            )
            assert shown == [OLD, JANE, "AA" * 20]
            page.fill("#cert-q", "mini-02")
            page.select_option("#cert-days", "")
            page.click("#cert-filter-submit")
            page.wait_for_url("**/certs?*q=mini-02*")
            shown = page.locator("table#certs tbody tr").evaluate_all(
                "(rows) => rows.map((r) => r.dataset.sha1)"
            )
            assert shown == [JANE, BUILDS]

            # the Xcode matrix
            page.click("nav.site-nav a[href='/xcode']")
            page.wait_for_selector("table#xcode-matrix")
            columns = page.locator("th.xcode-version").evaluate_all(
                "(th) => th.map((c) => c.dataset.version)"
            )
            assert columns == ["9.4", "15.4", "16.2"]
            matrix = page.locator("table#xcode-matrix tbody tr")
            assert matrix.evaluate_all("(rows) => rows.map((r) => r.dataset.node)") == [
                "mini-01",
                "mini-02",
                "mini-03",
                "mini-04",
            ]
            macos = page.locator("td[data-field='macos']").all_inner_texts()
            assert macos == ["14.5", "14.4.1", "15.1", "13.6"]
            lacking = page.locator("tr.xcode-lacks").evaluate_all(
                "(rows) => rows.map((r) => r.dataset.node)"
            )
            assert lacking == ["mini-02", "mini-04"]
            missing = page.locator("td.xcode-missing")
            assert missing.count() == 2
            for node in ("mini-02", "mini-04"):
                cell = page.locator(f"tr[data-node='{node}'] td[data-version='16.2']")
                assert cell.get_attribute("class") == "xcode-missing"
                assert cell.inner_text().strip() == "missing"
            selected = page.locator("td.xcode-selected").evaluate_all(
                "(cells) => cells.map((c) => c.closest('tr').dataset.node + ':' + c.dataset.version)"
            )
            assert selected == ["mini-01:16.2", "mini-02:15.4", "mini-03:16.2", "mini-04:9.4"]
            miss_bg = missing.first.evaluate(colour)
            sel_bg = page.locator("td.xcode-selected").first.evaluate(colour)
            plain_bg = page.locator("tr[data-node='mini-03'] td[data-version='9.4']").evaluate(
                colour
            )
            assert len({miss_bg, sel_bg, plain_bg}) == 3
            assert page.inner_text("[data-xcode-count='lacking']") == "2"
            screenshot(page, "xcode")
            # only the nodes lacking it
            page.check("#xcode-lacking")
            page.click("#xcode-filter-submit")
            page.wait_for_url("**/xcode?*lacking=yes*")
            assert page.locator("table#xcode-matrix tbody tr").evaluate_all(
                "(rows) => rows.map((r) => r.dataset.node)"
            ) == ["mini-02", "mini-04"]
        finally:
            browser.close()
