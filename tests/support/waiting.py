"""Waiting for something a daemon does, and reading a runner's JSON answer."""

from __future__ import annotations

import time


def wait_for(what, check, timeout=90, interval=0.5):
    """``check()`` until it returns something true (returned), or fail naming ``what``."""
    deadline = time.time() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(interval)


def run(salt_run_cli, *args, timeout=120):
    """``salt-run`` a runner with ``--out=json`` (salt-factories' default); the answer."""
    ret = salt_run_cli.run(*args, _timeout=timeout)
    assert ret.returncode == 0, ret
    data = ret.data
    if isinstance(data, dict) and data.get("suffix") == "progress":
        # salt-run prints the runner's progress events as they come; the JSON parser of
        # salt-factories merges them into the result.
        data = {k: v for k, v in data.items() if k not in ("suffix", "event")}
    return data
