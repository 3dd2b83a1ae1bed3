"""Slack and PagerDuty deliveries to fake services on loopback that check what they get.

The fake Slack answers like an incoming webhook (``200 ok``, ``404 no_service``, ...). The fake
PagerDuty validates every event against the documented Events API v2 shape
(tests/fixtures/alerts/pagerduty_event.schema.json) and answers as PagerDuty documents:
``202 {"status": "success", ...}`` or ``400 {"status": "invalid event", ...}``.
"""

from __future__ import annotations

import json

import jsonschema
import pytest

from saltext_fleet.master import alertsend
from tests.conftest import FIXTURES
from tests.support import alertsamples
from tests.support.alertreceiver import Receiver

PD_SCHEMA = json.loads((FIXTURES / "alerts" / "pagerduty_event.schema.json").read_text())
SLACK_SCHEMA = json.loads((FIXTURES / "alerts" / "slack_message.schema.json").read_text())
KEY = "R0UT1NGKEY0123456789abcdefABCDEF"


@pytest.fixture
def slack():
    with Receiver() as rx:
        rx.url = f"http://127.0.0.1:{rx.port}/services/T0000/B0000/XXXXSECRETXXXX"
        yield rx


class FakePagerDuty:
    """Validates each event, keeps the open incidents by dedup_key, answers as documented."""

    def __init__(self, receiver):
        self.rx = receiver
        self.url = f"http://127.0.0.1:{receiver.port}/v2/enqueue"
        self.open: dict[str, str] = {}
        self.actions: list[tuple[str, str]] = []
        receiver.respond_with(self.answer)

    def answer(self, request):
        event = request.json()
        errors = [e.message for e in jsonschema.Draft202012Validator(PD_SCHEMA).iter_errors(event)]
        if errors:
            return 400, {
                "status": "invalid event",
                "message": "Event object is invalid",
                "errors": errors,
            }
        key = event["dedup_key"]
        self.actions.append((event["event_action"], key))
        if event["event_action"] == "trigger":
            self.open[key] = event["payload"]["summary"]
        elif event["event_action"] == "resolve":
            self.open.pop(key, None)
        return 202, {"status": "success", "message": "Event processed", "dedup_key": key}


@pytest.fixture
def pagerduty():
    with Receiver() as rx:
        yield FakePagerDuty(rx)


# -- Slack -------------------------------------------------------------------------------------


def test_a_slack_message_arrives_in_the_documented_shape(slack):
    outcome = alertsend.send("slack", {"channel": "#ops"}, {"url": slack.url}, alertsamples.alert())
    assert (outcome.ok, outcome.status_code, outcome.error, outcome.retry) == (
        True,
        200,
        None,
        False,
    )
    [got] = slack.requests
    assert got.path == "/services/T0000/B0000/XXXXSECRETXXXX"
    assert got.headers["Content-Type"] == "application/json"
    message = got.json()
    assert list(jsonschema.Draft202012Validator(SLACK_SCHEMA).iter_errors(message)) == []
    assert message["channel"] == "#ops"
    assert message["blocks"][0]["type"] == "header"


@pytest.mark.parametrize(
    ("status", "answer", "retry"),
    [
        (400, b"invalid_payload", False),
        (403, b"invalid_token", False),
        (404, b"no_service", False),
        (410, b"channel_is_archived", False),
        (429, b"rate_limited", True),
        (500, b"rollup_error", True),
    ],
)
def test_slack_errors_are_named_without_the_secret_url(slack, status, answer, retry):
    slack.answer(status, answer)
    outcome = alertsend.send("slack", {}, {"url": slack.url}, alertsamples.alert())
    assert not outcome.ok and outcome.retry is retry and outcome.status_code == status
    assert outcome.error == f"slack: HTTP {status}: {answer.decode()}"


def test_a_slack_error_echoing_the_url_has_it_blanked(slack):
    slack.answer(404, f"no such hook {slack.url}".encode())
    outcome = alertsend.send("slack", {}, {"url": slack.url}, alertsamples.alert())
    assert "XXXXSECRETXXXX" not in outcome.error and "***" in outcome.error


def test_a_slack_receiver_that_is_down_is_named_without_the_url(slack):
    url = slack.url
    slack.stop()
    outcome = alertsend.send("slack", {}, {"url": url}, alertsamples.alert())
    assert outcome.retry and outcome.error == "slack: connection refused"


def test_slack_refuses_a_plain_http_url_off_loopback_and_a_missing_url():
    outcome = alertsend.send(
        "slack", {}, {"url": "http://hooks.example.com/services/SECRETPATH"}, alertsamples.alert()
    )
    assert not outcome.ok and outcome.retry is False
    assert outcome.error == "slack: the 'url' secret must be an https URL"
    outcome = alertsend.send("slack", {}, {}, alertsamples.alert())
    assert outcome.error.startswith("slack: the route has no 'url' secret")
    outcome = alertsend.send("slack", {}, {"url": "not a url SECRETPATH"}, alertsamples.alert())
    assert outcome.error == "slack: the 'url' secret is not an http(s) URL"


# -- PagerDuty ---------------------------------------------------------------------------------


def pd_send(pagerduty, alert):
    return alertsend.send("pagerduty", {"url": pagerduty.url}, {"routing_key": KEY}, alert)


def test_a_firing_then_resolved_drift_triggers_then_resolves_the_same_incident(pagerduty):
    first = pd_send(pagerduty, alertsamples.alert())
    assert (first.ok, first.status_code) == (True, 202)
    assert pagerduty.open == {
        "fleet:drift:mac-07:": pagerduty.rx.requests[0].json()["payload"]["summary"]
    }
    second = pd_send(pagerduty, alertsamples.resolved())
    assert (second.ok, second.status_code) == (True, 202)
    assert pagerduty.actions == [
        ("trigger", "fleet:drift:mac-07:"),
        ("resolve", "fleet:drift:mac-07:"),
    ]
    assert pagerduty.open == {}
    resolve = pagerduty.rx.requests[1].json()
    assert resolve == {
        "routing_key": KEY,
        "event_action": "resolve",
        "dedup_key": "fleet:drift:mac-07:",
    }


def test_an_invalid_event_is_not_retried(pagerduty):
    outcome = alertsend.send(
        "pagerduty", {"url": pagerduty.url}, {"routing_key": KEY}, alertsamples.alert()
    )
    assert outcome.ok  # ours are valid; now make the fake answer as for an invalid one
    pagerduty.rx.answer(
        400,
        {
            "status": "invalid event",
            "message": "Event object is invalid",
            "errors": ["'summary' is missing"],
        },
    )
    outcome = pd_send(pagerduty, alertsamples.alert())
    assert not outcome.ok and outcome.retry is False and outcome.status_code == 400
    assert outcome.error == (
        f"pagerduty http://127.0.0.1:{pagerduty.rx.port}: HTTP 400: "
        "invalid event; Event object is invalid; 'summary' is missing"
    )


def test_a_rate_limited_event_is_retried(pagerduty):
    pagerduty.rx.answer(429, b"")
    outcome = pd_send(pagerduty, alertsamples.alert())
    assert not outcome.ok and outcome.retry is True and outcome.status_code == 429


def test_the_routing_key_never_appears_in_an_error(pagerduty):
    pagerduty.rx.answer(400, {"status": "invalid event", "errors": [f"routing key {KEY} unknown"]})
    outcome = pd_send(pagerduty, alertsamples.alert())
    assert KEY not in outcome.error and "routing key *** unknown" in outcome.error


def test_pagerduty_refuses_plain_http_off_loopback():
    outcome = alertsend.send(
        "pagerduty",
        {"url": "http://events.example.com/v2/enqueue"},
        {"routing_key": KEY},
        alertsamples.alert(),
    )
    assert outcome.retry is False and "must be https" in outcome.error and KEY not in outcome.error


def test_the_default_pagerduty_url_is_the_events_api():
    assert (
        alertsend.check_target("pagerduty", {})["url"] == "https://events.pagerduty.com/v2/enqueue"
    )
