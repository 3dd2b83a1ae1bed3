"""Slack and PagerDuty payloads against their documented shapes (tests/fixtures/alerts/).

The schemas are first run over the vendors' documented examples (they must all pass: the
schema is no stricter than the docs) and over payloads that break each documented limit (they
must fail: it is no looser), then over what ``alertmsg`` builds, with ordinary and with
absurdly long alerts.
"""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest

from saltext_fleet.core import alertmsg
from tests.conftest import FIXTURES
from tests.support import alertsamples

ALERTS = FIXTURES / "alerts"
SLACK_SCHEMA = json.loads((ALERTS / "slack_message.schema.json").read_text())
PD_SCHEMA = json.loads((ALERTS / "pagerduty_event.schema.json").read_text())
SLACK_EXAMPLES = {
    k: v
    for k, v in json.loads((ALERTS / "slack_documented_examples.json").read_text()).items()
    if not k.startswith("_")
}
PD_EXAMPLES = json.loads((ALERTS / "pagerduty_documented_examples.json").read_text())
KEY = "R0UT1NGKEY0123456789abcdefABCDEF"


def slack_errors(message):
    validator = jsonschema.Draft202012Validator(SLACK_SCHEMA)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(message)]


def pd_errors(event):
    validator = jsonschema.Draft202012Validator(PD_SCHEMA)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(event)]


def long_alert():
    """An alert whose every text is far beyond any limit, with markup characters."""
    return alertsamples.alert(
        node="mac-" + "x" * 5000,
        subject="<s>&" * 2000,
        summary="drift <b>&amp; " + "long summary " * 2000,
        dedup_key="fleet:drift:" + "k" * 1000,
        master="m" * 3000,
        url="https://fleet.example.com/" + "p" * 5000,
        kind="drift" * 100,
        data={"changes": [{"at": i} for i in range(500)], "note": "n" * 10000},
        flapping=True,
    )


# -- the schemas against the documented examples -----------------------------------------------


@pytest.mark.parametrize("name", sorted(SLACK_EXAMPLES))
def test_the_slack_schema_accepts_every_documented_example(name):
    assert slack_errors(SLACK_EXAMPLES[name]) == []


@pytest.mark.parametrize("name", ["trigger", "acknowledge", "resolve"])
def test_the_pagerduty_schema_accepts_every_documented_event(name):
    assert pd_errors(PD_EXAMPLES[name]) == []


def _header(text):
    return {"blocks": [{"type": "header", "text": {"type": "plain_text", "text": text}}]}


@pytest.mark.parametrize(
    ("why", "message"),
    [
        ("header over 150", _header("h" * 151)),
        (
            "header in mrkdwn",
            {"blocks": [{"type": "header", "text": {"type": "mrkdwn", "text": "x"}}]},
        ),
        (
            "section over 3000",
            {"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "s" * 3001}}]},
        ),
        (
            "11 fields",
            {"blocks": [{"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 11}]},
        ),
        (
            "field over 2000",
            {"blocks": [{"type": "section", "fields": [{"type": "mrkdwn", "text": "f" * 2001}]}]},
        ),
        ("51 blocks", {"blocks": [{"type": "divider"}] * 51}),
        ("unknown block", {"blocks": [{"type": "tablet"}]}),
        (
            "unknown text type",
            {"blocks": [{"type": "section", "text": {"type": "html", "text": "x"}}]},
        ),
        ("empty text", {"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": ""}}]}),
        (
            "button text over 75",
            {
                "blocks": [
                    {
                        "type": "actions",
                        "elements": [
                            {
                                "type": "button",
                                "text": {"type": "plain_text", "text": "b" * 76},
                                "url": "https://x",
                            }
                        ],
                    }
                ]
            },
        ),
        (
            "11 context elements",
            {"blocks": [{"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 11}]},
        ),
        ("bad colour", {"attachments": [{"color": "red", "blocks": [{"type": "divider"}]}]}),
    ],
)
def test_the_slack_schema_rejects_what_breaks_a_documented_limit(why, message):
    assert slack_errors(message), why


@pytest.mark.parametrize(
    ("why", "change"),
    [
        ("bad severity", lambda e: e["payload"].update(severity="fatal")),
        ("bad action", lambda e: e.update(event_action="close")),
        ("summary over 1024", lambda e: e["payload"].update(summary="s" * 1025)),
        ("no source", lambda e: e["payload"].pop("source")),
        ("no payload on trigger", lambda e: e.pop("payload")),
        ("dedup_key over 255", lambda e: e.update(dedup_key="d" * 256)),
        ("no routing key", lambda e: e.pop("routing_key")),
        ("unknown field", lambda e: e.update(severity="critical")),
    ],
)
def test_the_pagerduty_schema_rejects_what_breaks_the_documented_rules(why, change):
    event = copy.deepcopy(PD_EXAMPLES["trigger"])
    change(event)
    assert pd_errors(event), why


def test_the_pagerduty_schema_needs_a_dedup_key_to_resolve():
    assert pd_errors({"routing_key": KEY, "event_action": "resolve"})


# -- Slack messages ----------------------------------------------------------------------------


def all_blocks(message):
    blocks = list(message.get("blocks", []))
    for attachment in message.get("attachments", []):
        blocks += attachment.get("blocks", [])
    return blocks


def test_a_firing_alert_is_a_valid_slack_message_with_header_section_context_and_button():
    message = alertmsg.slack_message(alertsamples.alert())
    assert slack_errors(message) == []
    types = [b["type"] for b in all_blocks(message)]
    assert types == ["header", "section", "context", "actions"]
    header = message["blocks"][0]["text"]
    assert header == {
        "type": "plain_text",
        "text": ":red_circle: Critical drift on mac-07",
        "emoji": True,
    }
    assert message["attachments"][0]["color"] == "#d0021b"
    section = message["attachments"][0]["blocks"][0]
    assert section["text"]["text"].startswith("drift score 72 on mac-07")
    assert {"type": "mrkdwn", "text": "*Node*\nmac-07"} in section["fields"]
    [button] = message["attachments"][0]["blocks"][2]["elements"]
    assert button["url"] == "https://fleet.example.com/nodes/mac-07"
    assert message["text"].startswith(
        ":red_circle: [fleet] critical drift on mac-07: drift score 72"
    )
    assert "channel" not in message


@pytest.mark.parametrize(
    ("severity", "emoji", "colour"),
    [
        ("info", ":large_blue_circle:", "#439fe0"),
        ("warning", ":large_yellow_circle:", "#f2c744"),
        ("error", ":large_orange_circle:", "#f5762a"),
        ("critical", ":red_circle:", "#d0021b"),
    ],
)
def test_severity_sets_emoji_and_colour(severity, emoji, colour):
    message = alertmsg.slack_message(alertsamples.alert(severity=severity))
    assert (
        message["blocks"][0]["text"]["text"] == f"{emoji} {severity.capitalize()} drift on mac-07"
    )
    assert message["attachments"][0]["color"] == colour


def test_a_resolved_alert_says_so_in_green():
    message = alertmsg.slack_message(alertsamples.resolved())
    assert slack_errors(message) == []
    assert message["blocks"][0]["text"]["text"] == ":white_check_mark: Resolved drift on mac-07"
    assert message["attachments"][0]["color"] == "#2eb67d"
    assert "*State*\nresolved (below)" in json.dumps(message, ensure_ascii=False).replace(
        "\\n", "\n"
    )


def test_no_url_no_button_and_a_channel_when_the_target_names_one():
    message = alertmsg.slack_message(alertsamples.alert(url=None), {"channel": "#ops"})
    assert slack_errors(message) == []
    assert "actions" not in [b["type"] for b in all_blocks(message)]
    assert message["channel"] == "#ops"


def test_markup_in_alert_texts_is_escaped_for_mrkdwn():
    message = alertmsg.slack_message(
        alertsamples.alert(summary="<!channel> a & b <https://evil|click>", node="n<1>")
    )
    section = message["attachments"][0]["blocks"][0]
    assert section["text"]["text"] == "&lt;!channel&gt; a &amp; b &lt;https://evil|click&gt;"
    assert "<" not in json.dumps(message["attachments"]) and "<" not in message["text"]


def test_a_javascript_url_gets_no_button():
    message = alertmsg.slack_message(alertsamples.alert(url="javascript:alert(1)"))
    assert "actions" not in [b["type"] for b in all_blocks(message)]


def test_very_long_texts_keep_within_slacks_limits():
    message = alertmsg.slack_message(long_alert())
    assert slack_errors(message) == []
    header = message["blocks"][0]["text"]["text"]
    assert len(header) == 150 and header.endswith("…")
    section = message["attachments"][0]["blocks"][0]
    assert len(section["text"]["text"]) <= 3000 and section["text"]["text"].endswith("…")
    assert all(len(f["text"]) <= 2000 for f in section["fields"])
    # escaping never leaves a cut entity behind
    for field in section["fields"]:
        assert "&" not in field["text"].replace("&lt;", "").replace("&gt;", "").replace("&amp;", "")
    assert "flapping (500 changes)" in message["attachments"][0]["blocks"][1]["elements"][0]["text"]
    assert len(all_blocks(message)) <= 50
    assert "actions" not in [b["type"] for b in all_blocks(message)]  # the url was over 3000


# -- PagerDuty events --------------------------------------------------------------------------


def test_a_firing_alert_is_a_valid_trigger():
    event = alertmsg.pagerduty_event(alertsamples.alert(), KEY)
    assert pd_errors(event) == []
    assert event["event_action"] == "trigger"
    assert event["routing_key"] == KEY and event["dedup_key"] == "fleet:drift:mac-07:"
    payload = event["payload"]
    assert payload["severity"] == "critical" and payload["source"] == "mac-07"
    assert payload["summary"].startswith("critical drift on mac-07: drift score 72")
    assert payload["timestamp"] == "2026-12-05T19:00:00+00:00"
    assert payload["custom_details"]["data"]["score"] == 72
    assert event["client"] == "saltext-fleet"
    assert event["links"] == [
        {"href": "https://fleet.example.com/nodes/mac-07", "text": "Open in fleet"}
    ]


@pytest.mark.parametrize("severity", alertmsg.SEVERITIES)
def test_every_severity_is_one_pagerduty_knows(severity):
    event = alertmsg.pagerduty_event(alertsamples.alert(severity=severity), KEY)
    assert pd_errors(event) == [] and event["payload"]["severity"] == severity


def test_an_unknown_severity_becomes_warning_not_an_invalid_event():
    event = alertmsg.pagerduty_event(alertsamples.alert(severity="sev1"), KEY)
    assert pd_errors(event) == [] and event["payload"]["severity"] == "warning"


def test_a_resolved_alert_is_a_resolve_with_only_the_three_fields():
    event = alertmsg.pagerduty_event(alertsamples.resolved(), KEY)
    assert pd_errors(event) == []
    assert event == {
        "routing_key": KEY,
        "event_action": "resolve",
        "dedup_key": "fleet:drift:mac-07:",
    }


def test_firing_then_resolved_share_the_dedup_key():
    trigger = alertmsg.pagerduty_event(alertsamples.alert(), KEY)
    resolve = alertmsg.pagerduty_event(alertsamples.resolved(), KEY)
    assert (trigger["event_action"], resolve["event_action"]) == ("trigger", "resolve")
    assert trigger["dedup_key"] == resolve["dedup_key"]


def test_very_long_texts_keep_within_pagerdutys_limits_and_the_key_stays_stable():
    alert = long_alert()
    event = alertmsg.pagerduty_event(alert, KEY)
    assert pd_errors(event) == []
    assert len(event["payload"]["summary"]) == 1024
    assert len(event["dedup_key"]) == 255
    resolve = alertmsg.pagerduty_event(dict(alert, state="resolved"), KEY)
    assert resolve["dedup_key"] == event["dedup_key"]
    other = alertmsg.pagerduty_event(dict(alert, dedup_key=alert["dedup_key"] + "2"), KEY)
    assert other["dedup_key"] != event["dedup_key"]
    assert "links" not in event  # the url was too long to be a link


def test_the_target_may_name_source_component_group_and_class():
    target = {"source": "ci-fleet", "component": "xcode", "group": "macs", "class": "drift"}
    payload = alertmsg.pagerduty_event(alertsamples.alert(), KEY, target)["payload"]
    assert {k: payload[k] for k in target} == target


def test_no_routing_key_no_event():
    with pytest.raises(alertmsg.AlertMessageError, match="routing_key"):
        alertmsg.pagerduty_event(alertsamples.alert(), "")
