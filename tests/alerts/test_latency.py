"""How long one delivery takes to each destination's real loopback server (the figure the
alert worker adds to the event-to-receiver latency)."""

from __future__ import annotations

import statistics

from saltext_fleet.master import alertsend
from tests.support import alertsamples
from tests.support.alertreceiver import Receiver
from tests.support.smtpserver import SmtpServer

ROUNDS = 15


def median_ms(destination, target, secrets, record_property):
    outcomes = [
        alertsend.send(destination, target, secrets, alertsamples.alert(id=i))
        for i in range(ROUNDS)
    ]
    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
    median = statistics.median(o.latency_ms for o in outcomes)
    record_property(f"{destination}_median_ms", round(median, 2))
    print(f"{destination}: median {median:.1f} ms over {ROUNDS} sends")
    return median


def test_latency_per_destination(tmp_path, record_property):
    medians = {}
    with Receiver(secret="k" * 16) as rx:
        medians["webhook"] = median_ms(
            "webhook", {"url": rx.url}, {"hmac": "k" * 16}, record_property
        )
        rx.answer(200, b"ok")
        medians["slack"] = median_ms("slack", {}, {"url": rx.url}, record_property)
        rx.answer(202, {"status": "success", "message": "Event processed"})
        medians["pagerduty"] = median_ms(
            "pagerduty", {"url": rx.url}, {"routing_key": "R" * 32}, record_property
        )
        assert len(rx.requests) == 3 * ROUNDS
    with SmtpServer(tmp_path, users={"fleet": "pw-123456"}) as smtp:
        target = {
            "host": "127.0.0.1",
            "port": smtp.port,
            "from": "fleet@example.com",
            "to": ["oncall@example.com"],
            "username": "fleet",
            "ca_file": str(smtp.cert_file),
        }
        medians["email"] = median_ms("email", target, {"password": "pw-123456"}, record_property)
        assert len(smtp.messages) == ROUNDS
    # loopback: far under the 2 s from event to receiver, leaving room for the worker
    assert all(m < 500 for m in medians.values()), medians
