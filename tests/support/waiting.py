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
    """``salt-run`` a runner with ``--out=json`` (salt-factories' default); the answer, which
    is one JSON document (salt-factories would merge several into one: not here)."""
    ret = salt_run_cli.run(*args, _timeout=timeout, merge_json_output=False)
    assert ret.returncode == 0, ret
    return ret.data


def ask(runner, fun, *args):
    """A runner's answer, called in this process through ``runner`` (Salt's RunnerClient,
    the ``runner`` fixture), ``args`` as on salt-run's command line: for reading and polling,
    without a ``salt-run``'s second or two of start-up per look."""
    ret = runner.cmd(fun, list(args), print_event=False, full_return=True)
    assert ret["success"] is True, (fun, args, ret)
    return ret["return"]
