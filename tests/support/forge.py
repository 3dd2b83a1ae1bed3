"""What a compromised minion can send: events over Salt's own request channel, with its key.

``send_batch`` sends one ``_minion_event`` load with an ``events`` list, as a minion's
beacons do (``send_load``: any request load, e.g. a syndic's ``_syndic_return``), from a
separate process that loads the minion's own configuration (its id, its
key pair under its pki dir). The master authenticates the request (the id must be the one of
the session) and then fires each event's data exactly as written, without the sender's id.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import salt.utils.event
from saltfactories.utils import random_string

from tests.support.waiting import wait_for

_SCRIPT = r"""
import json, sys
import salt.channel.client, salt.config, salt.minion

opts = salt.config.minion_config(sys.argv[1])
if isinstance(opts["master"], list):  # a multi-master minion: speak to its first master
    host, _, port = opts["master"][0].rpartition(":")
    opts["master"], opts["master_port"] = (host, int(port)) if host else (port, 4506)
opts.update(salt.minion.resolve_dns(opts))
load = {**json.load(sys.stdin), "id": opts["id"]}
with salt.channel.client.ReqChannel.factory(opts) as channel:
    answer = channel.send(load, timeout=60)
print(json.dumps({"id": opts["id"], "answer": answer}, default=str))
"""


def send_batch(minion_factory, events: list[dict]) -> dict:
    """Send ``events`` (``[{"tag", "data"}]``) as one ``events`` batch of the minion whose
    salt-factories ``minion_factory`` is given; the master's answer."""
    return send_load(minion_factory, {"cmd": "_minion_event", "events": events})


def send_load(minion_factory, load: dict) -> dict:
    """Send one request ``load`` (its ``cmd`` and body; the ``id`` is the minion's own) over
    the request channel, authenticated with the key of the minion whose salt-factories
    ``minion_factory`` is given; the master's answer."""
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(minion_factory.config_file)],
        input=json.dumps(load),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    sent = json.loads(done.stdout.strip().splitlines()[-1])
    assert sent["id"] == minion_factory.id
    return sent


def reactor_caught_up(salt_master, event_listener) -> None:
    """Fire ``fleet/test/echo`` on the master's bus and wait for the reactor's answer
    (``fleet/test/echoed``): once it answered, the reactor has rendered every event fired
    before it (so a forgery it ignored is known to be ignored, not merely not yet seen)."""
    n = random_string("echo-")
    start = time.time()
    opts = salt_master.config
    with salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=False) as bus:
        assert bus.fire_event({"n": n}, "fleet/test/echo")
    wait_for(
        "the reactor's answer to fleet/test/echo",
        lambda: any(
            e.data.get("n") == n
            for e in event_listener.get_events(
                [(salt_master.id, "fleet/test/echoed")], after_time=start - 1
            )
        ),
        timeout=120,
        interval=0.25,
    )
