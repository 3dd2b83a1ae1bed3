"""The webhook's body, signature and the receiver's check (saltext_fleet.core.alertmsg)."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from saltext_fleet import __version__
from saltext_fleet.core import alertmsg
from saltext_fleet.core.errors import FleetError
from tests.support import alertsamples

SECRET = "s3cret-hmac-key"
NOW = 1_796_497_200  # 2026-12-05T19:00:00Z


def signed(alert=None, *, now=NOW, secret=SECRET, delivery_id="d-1"):
    return alertmsg.webhook_request(
        secret, alert or alertsamples.alert(), now=now, delivery_id=delivery_id
    )


def test_the_body_is_the_record_as_compact_json_with_sorted_keys():
    record = alertsamples.alert(summary="naïve → ünïcode")
    headers, body = signed(record)
    assert json.loads(body) == record
    assert (
        body
        == json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )
    assert b'":' in body and b'": ' not in body and b'", "' not in body
    keys = list(json.loads(body))
    assert keys == sorted(keys)


def test_the_headers_carry_timestamp_signature_event_delivery_and_agent():
    headers, body = signed()
    assert headers["X-Fleet-Timestamp"] == str(NOW)
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + body, hashlib.sha256).hexdigest()
    assert headers["X-Fleet-Signature"] == f"sha256={expected}"
    assert headers["X-Fleet-Event"] == "drift"
    assert headers["X-Fleet-Delivery"] == "d-1"
    assert headers["User-Agent"] == f"saltext-fleet/{__version__}"
    assert headers["Content-Type"] == "application/json"


def test_the_delivery_id_comes_from_the_record_or_is_made_fresh():
    headers, _ = alertmsg.webhook_request(SECRET, alertsamples.alert(delivery_id="77"), now=NOW)
    assert headers["X-Fleet-Delivery"] == "77"
    one, _ = alertmsg.webhook_request(SECRET, alertsamples.alert(), now=NOW)
    two, _ = alertmsg.webhook_request(SECRET, alertsamples.alert(), now=NOW)
    assert one["X-Fleet-Delivery"] != two["X-Fleet-Delivery"]


def test_a_good_request_verifies_and_gives_the_record_back():
    headers, body = signed()
    assert alertmsg.verify_webhook(SECRET, headers, body, now=NOW + 10) == alertsamples.alert()


def test_header_names_are_matched_in_any_case():
    headers, body = signed()
    lower = {k.lower(): v for k, v in headers.items()}
    assert alertmsg.verify_webhook(SECRET, lower, body, now=NOW)["id"] == 123


@pytest.mark.parametrize("missing", ["X-Fleet-Timestamp", "X-Fleet-Signature"])
def test_a_missing_header_is_named(missing):
    headers, body = signed()
    del headers[missing]
    with pytest.raises(alertmsg.WebhookVerifyError, match=f"missing header {missing}"):
        alertmsg.verify_webhook(SECRET, headers, body, now=NOW)


@pytest.mark.parametrize(("skew", "word"), [(301, "old"), (-301, "in the future")])
def test_a_stale_timestamp_is_refused(skew, word):
    headers, body = signed()
    with pytest.raises(alertmsg.WebhookVerifyError, match=f"stale timestamp, 301 s {word}"):
        alertmsg.verify_webhook(SECRET, headers, body, now=NOW + skew)
    # inside the tolerance it passes, and the tolerance is the caller's
    alertmsg.verify_webhook(SECRET, headers, body, now=NOW + skew, tolerance_s=301)


def test_a_timestamp_that_is_not_a_number_is_named():
    headers, body = signed()
    headers["X-Fleet-Timestamp"] = "yesterday"
    with pytest.raises(alertmsg.WebhookVerifyError, match="is not unix seconds"):
        alertmsg.verify_webhook(SECRET, headers, body, now=NOW)


def test_a_changed_body_a_wrong_secret_or_a_moved_timestamp_is_a_bad_signature():
    headers, body = signed()
    with pytest.raises(alertmsg.WebhookVerifyError, match="bad signature"):
        alertmsg.verify_webhook(SECRET, headers, body.replace(b"72", b"73"), now=NOW)
    with pytest.raises(alertmsg.WebhookVerifyError, match="bad signature"):
        alertmsg.verify_webhook("another-secret", headers, body, now=NOW)
    # a replay with a fresh timestamp and the old signature
    replay = dict(headers, **{"X-Fleet-Timestamp": str(NOW + 1000)})
    with pytest.raises(alertmsg.WebhookVerifyError, match="bad signature"):
        alertmsg.verify_webhook(SECRET, replay, body, now=NOW + 1000)
    wrong_scheme = dict(headers, **{"X-Fleet-Signature": "sha1=abc"})
    with pytest.raises(alertmsg.WebhookVerifyError, match="does not start with 'sha256='"):
        alertmsg.verify_webhook(SECRET, wrong_scheme, body, now=NOW)


def test_the_signature_is_compared_in_constant_time(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(alertmsg.hmac, "compare_digest", spy)
    headers, body = signed()
    alertmsg.verify_webhook(SECRET, headers, body, now=NOW)
    assert calls and calls[0][1] == headers["X-Fleet-Signature"].encode()


def test_the_error_is_a_fleet_error_and_a_value_error():
    assert issubclass(alertmsg.WebhookVerifyError, FleetError)
    assert issubclass(alertmsg.WebhookVerifyError, ValueError)


def test_a_body_that_is_not_a_json_object_is_refused_after_the_signature():
    body = b"[1, 2]"
    ts = str(NOW)
    headers = {
        "X-Fleet-Timestamp": ts,
        "X-Fleet-Signature": alertmsg.sign_webhook(SECRET, ts, body),
    }
    with pytest.raises(alertmsg.WebhookVerifyError, match="not a JSON object"):
        alertmsg.verify_webhook(SECRET, headers, body, now=NOW)


def test_no_secret_no_request():
    with pytest.raises(alertmsg.AlertMessageError, match="no 'hmac' secret"):
        alertmsg.webhook_request("", alertsamples.alert())
