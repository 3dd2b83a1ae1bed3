"""Certificate expiry on the package's real master: the shipped reactor (``certs.sls`` on
``fleet/certs/changed``) runs ``fleet.cert_check`` for the node the master's signed event is
about, and ``fleet/alert/cert`` reaches the bus, signed; the same tag fired by a minion about
another node does nothing."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
import salt.utils.event
from saltfactories.utils import random_string
from sqlalchemy import select

from saltext_fleet import config
from saltext_fleet.master import eventsig
from saltext_fleet.store import engine as store_engine
from saltext_fleet.store.models import CertAlert
from tests.support.certs import JANE, fixture_identities, mac_grains, store_grains
from tests.support.forge import reactor_caught_up
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
TAG = "fleet/certs/changed"


def _alerts(event_listener, salt_master, node, since):
    return [
        e
        for e in event_listener.get_events([(salt_master.id, "fleet/alert/cert")], after_time=since)
        if e.data.get("id") == node
    ]


def test_the_reactor_checks_a_node_on_the_masters_event_only(
    salt_master, salt_minion, salt_cli, event_listener
):
    engine = store_engine.get_engine(config.load(salt_master.config).db_url)
    store_engine.ensure_schema(engine)
    mac = random_string("cert-mac-")
    soon = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2, hours=1)
    identity = {**fixture_identities()[0], "not_after": soon.strftime("%Y-%m-%dT%H:%M:%SZ")}
    store_grains(engine, mac, mac_grains([identity]))
    start = time.time()

    # a minion fires the tag about the Mac: the reactor renders nothing for it
    ret = salt_cli.run(
        "event.fire_master", json.dumps({"id": mac}), TAG, minion_tgt=salt_minion.id, _timeout=60
    )
    assert ret.returncode == 0 and ret.data is True, ret
    reactor_caught_up(salt_master, event_listener)
    assert _alerts(event_listener, salt_master, mac, start) == []
    with engine.connect() as conn:
        assert conn.execute(select(CertAlert).where(CertAlert.node == mac)).first() is None

    # the master's own, signed event (what the returner announces): checked at once
    opts = salt_master.config
    with salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=False) as bus:
        assert bus.fire_event(eventsig.sign(opts, TAG, {"id": mac}), TAG)
    found = wait_for(
        "fleet/alert/cert for the Mac",
        lambda: _alerts(event_listener, salt_master, mac, start),
        timeout=120,
    )
    alert = found[0].data
    assert (alert["sha1"], alert["threshold"], alert["days_left"]) == (JANE, "7d", 2)
    eventsig.check(opts, "fleet/alert/cert", dict(alert))
    with engine.connect() as conn:
        rows = conn.execute(
            select(CertAlert.threshold).where(CertAlert.node == mac, CertAlert.sha1 == JANE)
        )
        assert sorted(t for (t,) in rows) == ["30d", "7d"]
