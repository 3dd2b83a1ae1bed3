"""What the test harness itself does with minion keys."""

from __future__ import annotations

#: Minion ids whose keys the test harness accepts itself. salt-factories accepts every
#: pending key by default; the key gate's tests need strangers to stay pending, so the
#: integration master accepts only these.
ACCEPTED_BY_HARNESS: set[str] = set()


def accept_known(master, payload):
    """salt-factories' auth callback: accept the harness's own minions, nobody else."""
    if payload.get("act") == "pend" and payload.get("id") in ACCEPTED_BY_HARNESS:
        ret = master.salt_key_cli().run("--yes", "--accept", payload["id"])
        assert ret.returncode == 0, ret
