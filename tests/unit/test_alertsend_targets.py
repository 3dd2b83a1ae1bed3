"""Route targets checked before they are stored (saltext_fleet.master.alertsend.check_target)."""

from __future__ import annotations

import pytest

from saltext_fleet.core.errors import FleetError
from saltext_fleet.master import alertsend
from tests.support import alertsamples

MAIL = {"host": "smtp.example.com", "from": "fleet@example.com", "to": ["a@example.com"]}


def test_the_contract_constants():
    assert alertsend.DESTINATIONS == ("webhook", "slack", "pagerduty", "email")
    assert alertsend.SECRET_NAMES == {
        "webhook": ("hmac",),
        "slack": ("url",),
        "pagerduty": ("routing_key",),
        "email": ("password",),
    }
    assert issubclass(alertsend.AlertSendError, FleetError)
    assert issubclass(alertsend.AlertSendError, ValueError)


def test_defaults_are_filled_in():
    assert alertsend.check_target("webhook", {"url": " https://h.example/x "}) == {
        "url": "https://h.example/x",
        "timeout": 10.0,
    }
    assert alertsend.check_target("slack", None) == {"timeout": 10.0}
    assert alertsend.check_target("pagerduty", {"timeout": 3}) == {
        "url": "https://events.pagerduty.com/v2/enqueue",
        "timeout": 3.0,
    }
    assert alertsend.check_target("email", MAIL) == {
        **MAIL,
        "port": 587,
        "starttls": True,
        "ssl": False,
        "timeout": 10.0,
    }
    implicit = alertsend.check_target("email", {**MAIL, "ssl": True, "to": "b@example.com"})
    assert (implicit["port"], implicit["starttls"], implicit["to"]) == (
        465,
        False,
        ["b@example.com"],
    )


@pytest.mark.parametrize(
    ("destination", "target", "message"),
    [
        ("sms", {}, "destination: 'sms' is not one of webhook, slack, pagerduty, email"),
        ("webhook", {}, "webhook target: url is required"),
        ("webhook", {"url": "ftp://h/x"}, "webhook target: url must be an http(s) URL"),
        ("webhook", {"url": "https://"}, "webhook target: url must be an http(s) URL"),
        ("webhook", {"url": "https://h:99999/"}, "webhook target: url: Port out of range"),
        (
            "webhook",
            {"url": "https://h/", "timeout": "soon"},
            "webhook target: timeout must be seconds",
        ),
        ("webhook", {"url": "https://h/", "timeout": 0}, "timeout must be between 0 and 300 s"),
        ("webhook", {"url": "https://h/", "hmac": "x"}, "webhook target: hmac is a secret"),
        ("webhook", {"url": "https://h/", "urll": "x"}, "webhook target: unknown field 'urll'"),
        ("slack", {"url": "https://hooks.slack.com/x"}, "slack target: url is a secret"),
        ("slack", {"channel": "a\nb"}, "slack target: channel must be a one-line string"),
        ("pagerduty", {"routing_key": "k"}, "pagerduty target: routing_key is a secret"),
        ("pagerduty", [], "pagerduty target: must be a mapping"),
        ("email", {**MAIL, "password": "p"}, "email target: password is a secret"),
        ("email", {k: v for k, v in MAIL.items() if k != "host"}, "email target: host is required"),
        ("email", {**MAIL, "port": "25"}, "email target: port must be a number"),
        ("email", {**MAIL, "starttls": "yes"}, "email target: starttls must be true or false"),
        ("email", {**MAIL, "ssl": True, "starttls": True}, "exclude each other"),
        ("email", {**MAIL, "to": []}, "email target: to must be a list of addresses"),
        ("email", {**MAIL, "to": ["nobody"]}, "email target: to: 'nobody' is not an address"),
        ("email", {**MAIL, "from": "a@b@c"}, "email target: from: 'a@b@c' is not an address"),
        ("email", {**MAIL, "username": "u", "starttls": False}, "in the clear"),
    ],
)
def test_a_bad_target_names_what_is_wrong(destination, target, message):
    with pytest.raises(
        alertsend.AlertSendError, match=message.replace("(", r"\(").replace(")", r"\)")
    ):
        alertsend.check_target(destination, target)


def test_send_turns_a_bad_target_into_a_permanent_outcome_without_raising():
    outcome = alertsend.send("sms", {}, {}, alertsamples.alert())
    assert outcome.ok is False and outcome.retry is False and outcome.status_code is None
    assert outcome.error.startswith("destination: 'sms' is not one of")
    assert outcome.as_dict()["error"] == outcome.error


def test_a_url_in_an_error_loses_its_path_and_query():
    with pytest.raises(alertsend.AlertSendError) as info:
        alertsend.check_target("webhook", {"url": "gopher://user:pw@h.example/secret?token=1"})
    assert "secret" not in str(info.value) and "token" not in str(info.value)
    assert "pw" not in str(info.value)
