"""Debian packages the tests need and a fresh machine may lack (an SSH server, Chromium).

As root with apt-get, a missing package is installed (``apt-get update`` first when the
package lists are stale), one installation at a time across test processes. Anything else:
the caller fails the test, naming what to install.
"""

from __future__ import annotations

import fcntl
import os
import subprocess


def apt_install(package: str, provides: str) -> str:
    """Install ``package`` unless ``provides`` (a path) exists; returns what failed ("" when
    ``provides`` is there now)."""
    if os.path.exists(provides):
        return ""
    if os.geteuid() != 0 or not os.path.exists("/usr/bin/apt-get"):
        return "not root, or no apt-get"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
    with open("/tmp/saltext-fleet-apt.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(provides):
            return ""
        done = subprocess.run(install, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            done = subprocess.run(install, env=env, capture_output=True, text=True)
        return "" if done.returncode == 0 else (done.stderr or done.stdout)[-2000:]
