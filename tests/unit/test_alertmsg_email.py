"""The email an alert becomes (saltext_fleet.core.alertmsg.email_message), without a server."""

from __future__ import annotations

import email
import email.policy

from saltext_fleet.core import alertmsg
from tests.support import alertsamples

TARGET = {"from": "Fleet <fleet@ci.example.org>", "to": ["a@example.com"]}


def parsed(alert):
    raw = alertmsg.email_message(alert, TARGET).as_bytes()
    return email.message_from_bytes(raw, policy=email.policy.default)


def test_a_summary_with_line_breaks_cannot_add_headers():
    msg = parsed(
        alertsamples.alert(summary="bad\r\nBcc: evil@example.net\r\n\r\nbody", node="n\nX-Evil: 1")
    )
    assert msg["Bcc"] is None and msg["X-Evil"] is None
    assert "\n" not in msg["Subject"] and "Bcc: evil@example.net" in msg["Subject"]


def test_a_long_summary_makes_a_subject_of_at_most_200_characters():
    msg = parsed(alertsamples.alert(summary="word " * 500))
    assert len(msg["Subject"]) <= 200 and msg["Subject"].endswith("…")
    assert msg.get_body(("plain",)).get_content().count("word") == 500


def test_the_thread_id_depends_on_the_dedup_key_and_the_senders_domain_only():
    one = parsed(alertsamples.alert())
    two = parsed(alertsamples.resolved(id=999, summary="other"))
    other = parsed(alertsamples.alert(dedup_key="fleet:cve:mac-07:"))
    assert one["References"] == two["References"] != other["References"]
    assert one["References"].strip().endswith("@ci.example.org>")
    assert one["Message-ID"] != two["Message-ID"]


def test_html_in_the_alert_is_escaped_in_the_html_part():
    msg = parsed(alertsamples.alert(summary="<script>alert(1)</script>", url="javascript:x"))
    html = msg.get_body(("html",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "javascript:" not in html


def test_a_flapping_alert_says_so_in_the_subject():
    msg = parsed(alertsamples.alert(flapping=True, summary="changed 4 times in 30 minutes"))
    assert (
        msg["Subject"] == "[fleet] critical flapping drift on mac-07: changed 4 times in 30 minutes"
    )


def test_the_message_id_is_stable_across_retries_of_one_delivery_only():
    first = parsed(alertsamples.alert(delivery_id=41))
    retry = parsed(alertsamples.alert(delivery_id=41))
    other_route = parsed(alertsamples.alert(delivery_id=42))
    assert first["Message-ID"] == retry["Message-ID"] != other_route["Message-ID"]
    assert first["Message-ID"].startswith("<fleet.123.41.")
    # without a delivery id every message gets its own
    assert parsed(alertsamples.alert())["Message-ID"] != parsed(alertsamples.alert())["Message-ID"]
