"""Debian's Chromium for the browser tests, driven by Playwright for Python.

Playwright's own browser downloads are not used (nothing may download at run time):
``executable_path`` points at Debian's ``/usr/bin/chromium``, which is installed from
Debian's packages when this machine lacks it (:mod:`tests.support.debian`, as for the SSH
server of the bootstrap tests). Screenshots go to ``test-artifacts/screenshots/`` at the
top of the checkout (``$FLEET_ARTIFACTS/screenshots/`` when that is set) and stay there
after the run.
"""

from __future__ import annotations

import os
import pathlib

import pytest

from tests.support.debian import apt_install

CHROMIUM = "/usr/bin/chromium"
#: Where screenshots go: ``$FLEET_ARTIFACTS/screenshots`` when set, else ``test-artifacts/
#: screenshots`` at the top of the checkout.
ARTIFACTS = (
    pathlib.Path(
        os.environ.get("FLEET_ARTIFACTS")
        or pathlib.Path(__file__).resolve().parents[2] / "test-artifacts"
    )
    / "screenshots"
)


def require_chromium() -> str:
    failed = apt_install("chromium", CHROMIUM)
    if not os.path.exists(CHROMIUM):
        pytest.fail(
            f"{CHROMIUM} is missing and installing Debian's chromium failed ({failed}): "
            "the browser tests need it (apt-get install chromium)"
        )
    return CHROMIUM


def launch_chromium(pw):
    """Debian's Chromium, headless, through Playwright's ``pw`` (installed first if missing)."""
    return pw.chromium.launch(
        executable_path=require_chromium(), headless=True, args=["--no-sandbox"]
    )


def screenshot(page, name: str, element=None) -> pathlib.Path:
    """The whole page as ``<name>.png``, or only ``element`` (a locator) when given."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    if element is not None:
        element.screenshot(path=str(path))
    else:
        page.screenshot(path=str(path), full_page=True)
    return path
