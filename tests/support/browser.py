"""Debian's Chromium for the browser tests, driven by Playwright for Python.

Playwright's own browser downloads are not used (nothing may download at run time):
``executable_path`` points at Debian's ``/usr/bin/chromium``, which is installed from
Debian's packages when this machine lacks it (as root, like the SSH server of the bootstrap
tests). Screenshots go to ``test-artifacts/screenshots/`` at the top of the checkout and stay
there after the run.
"""

from __future__ import annotations

import fcntl
import os
import pathlib
import subprocess

import pytest

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = pathlib.Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"


def require_chromium() -> str:
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    failed = "not root, or no apt-get"
    if os.geteuid() == 0 and os.path.exists("/usr/bin/apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
        with open("/tmp/saltext-fleet-apt.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not os.path.exists(CHROMIUM):
                done = subprocess.run(install, env=env, capture_output=True, text=True)
                if done.returncode != 0:
                    subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
                    done = subprocess.run(install, env=env, capture_output=True, text=True)
                failed = (done.stderr or done.stdout)[-2000:]
    if not os.path.exists(CHROMIUM):
        pytest.fail(
            f"{CHROMIUM} is missing and installing Debian's chromium failed ({failed}): "
            "the browser tests need it (apt-get install chromium)"
        )
    return CHROMIUM


def screenshot(page, name: str) -> pathlib.Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
