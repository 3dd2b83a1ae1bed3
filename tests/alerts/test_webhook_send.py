"""The generic webhook sent to a real HTTP receiver on loopback (saltext_fleet.master.alertsend).

Each test owns its receiver (tests/support/alertreceiver.py): it verifies the signature and
timestamp of what arrives with ``alertmsg.verify_webhook``, and answers 2xx, 4xx, 5xx, nothing
(hangs) or closes the connection, so every ``Outcome`` field and the retry flag is checked
against a real exchange.
"""

from __future__ import annotations

import socket
import statistics
import time

import pytest

from saltext_fleet import __version__
from saltext_fleet.master import alertsend
from tests.support import alertsamples
from tests.support.alertreceiver import Receiver
from tests.support.tlscert import self_signed

SECRET = "route-hmac-secret-0123456789"


@pytest.fixture
def receiver():
    with Receiver(secret=SECRET) as rx:
        yield rx


def send(url, alert=None, secret=SECRET, **kw):
    return alertsend.send(
        "webhook", {"url": url}, {"hmac": secret}, alert or alertsamples.alert(), **kw
    )


def test_a_signed_alert_arrives_verified_and_the_outcome_is_ok(receiver):
    record = alertsamples.alert(delivery_id="42-1")
    outcome = send(receiver.url, record)
    assert outcome == alertsend.Outcome(True, 200, outcome.latency_ms, None, False)
    assert 0 < outcome.latency_ms < 5000
    [got] = receiver.requests
    assert got.path == "/hook" and got.method == "POST"
    assert got.verified == record  # signature and timestamp checked on arrival
    assert got.headers["X-Fleet-Event"] == "drift"
    assert got.headers["X-Fleet-Delivery"] == "42-1"
    assert got.headers["User-Agent"] == f"saltext-fleet/{__version__}"
    assert abs(int(got.headers["X-Fleet-Timestamp"]) - time.time()) < 5


def test_a_receiver_with_another_secret_refuses_the_signature(receiver):
    send(receiver.url, secret="not-the-receivers-secret")
    [got] = receiver.requests
    assert got.verified == "X-Fleet-Signature: bad signature"


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_every_2xx_is_ok(receiver, status):
    receiver.answer(status, b"" if status == 204 else b"accepted")
    outcome = send(receiver.url)
    assert (outcome.ok, outcome.status_code, outcome.error, outcome.retry) == (
        True,
        status,
        None,
        False,
    )


@pytest.mark.parametrize(
    ("status", "retry"),
    [
        (500, True),
        (502, True),
        (503, True),
        (408, True),
        (429, True),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (410, False),
        (422, False),
    ],
)
def test_an_error_status_fails_and_says_whether_to_retry(receiver, status, retry):
    receiver.answer(status, b"receiver says no")
    outcome = send(receiver.url)
    assert not outcome.ok and outcome.status_code == status and outcome.retry is retry
    assert (
        outcome.error
        == f"webhook http://127.0.0.1:{receiver.port}: HTTP {status}: receiver says no"
    )
    assert len(receiver.requests) == 1  # one attempt: the worker does the retrying


def test_a_429_passes_the_receivers_retry_after_on(receiver):
    receiver.answer(429, b"slow down", Retry_After="30")
    outcome = send(receiver.url)
    assert outcome.retry and outcome.retry_after_s == 30.0


def test_a_json_error_answer_is_summarised(receiver):
    receiver.answer(400, {"status": "invalid event", "errors": ["summary is missing"]})
    outcome = send(receiver.url)
    assert outcome.error.endswith("HTTP 400: invalid event; summary is missing")
    assert outcome.retry is False


def test_a_redirect_is_not_followed(receiver):
    receiver.answer(307, b"", Location="http://elsewhere.invalid/x?token=abc")
    outcome = send(receiver.url)
    assert not outcome.ok and outcome.status_code == 307 and outcome.retry is False
    assert "redirect to http://elsewhere.invalid not followed" in outcome.error
    assert "token" not in outcome.error
    assert len(receiver.requests) == 1


def test_a_receiver_that_hangs_times_out_and_is_retried(receiver):
    receiver.hang()
    started = time.monotonic()
    outcome = send(receiver.url, timeout=1.0)
    took = time.monotonic() - started
    assert not outcome.ok and outcome.status_code is None and outcome.retry is True
    assert outcome.error.endswith("timed out waiting for the answer")
    assert 0.9 < took < 5 and 900 <= outcome.latency_ms < 5000


def test_a_target_timeout_bounds_the_wait(receiver):
    receiver.hang()
    outcome = alertsend.send(
        "webhook", {"url": receiver.url, "timeout": 0.5}, {"hmac": SECRET}, alertsamples.alert()
    )
    assert outcome.retry and 400 <= outcome.latency_ms < 3000


def test_a_receiver_that_closes_the_connection_is_retried(receiver):
    receiver.close()
    outcome = send(receiver.url)
    assert not outcome.ok and outcome.status_code is None and outcome.retry is True
    assert outcome.error.endswith("connection closed by the receiver before it answered")


def test_a_receiver_that_is_down_is_retried():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    outcome = send(f"http://127.0.0.1:{port}/hook")
    assert not outcome.ok and outcome.retry is True
    assert outcome.error == f"webhook http://127.0.0.1:{port}: connection refused"


def test_the_receiver_down_then_up_on_the_same_port():
    rx = Receiver(secret=SECRET).start()
    port = rx.port
    rx.stop()
    assert send(f"http://127.0.0.1:{port}/hook").retry is True
    with Receiver(secret=SECRET, port=port) as again:
        outcome = send(again.url)
        assert outcome.ok and [r.verified["id"] for r in again.requests] == [123]


def test_no_secret_is_a_permanent_failure_without_a_request(receiver):
    outcome = alertsend.send("webhook", {"url": receiver.url}, {}, alertsamples.alert())
    assert not outcome.ok and outcome.retry is False and outcome.status_code is None
    assert "no 'hmac' secret" in outcome.error
    assert receiver.requests == []


def test_a_bad_target_is_a_permanent_failure_naming_the_field(receiver):
    outcome = alertsend.send("webhook", {"url": "ftp://x"}, {"hmac": SECRET}, alertsamples.alert())
    assert outcome.retry is False and "url must be an http(s) URL" in outcome.error


def test_latency_to_a_loopback_receiver(receiver, record_property):
    latencies = [send(receiver.url, alertsamples.alert(id=i)).latency_ms for i in range(20)]
    assert len(receiver.requests) == 20
    assert all(isinstance(r.verified, dict) for r in receiver.requests)
    median = statistics.median(latencies)
    record_property("webhook_median_latency_ms", round(median, 2))
    print(f"webhook send to loopback: median {median:.1f} ms, max {max(latencies):.1f} ms")
    assert median < 500


# -- TLS -----------------------------------------------------------------------------------------


@pytest.fixture
def tls_receiver(tmp_path):
    cert, key = self_signed(tmp_path)
    with Receiver(secret=SECRET, tls=(cert, key)) as rx:
        rx.cert_file = cert
        yield rx


def test_https_with_the_targets_ca_file_is_verified_and_delivered(tls_receiver):
    target = {"url": tls_receiver.url, "ca_file": str(tls_receiver.cert_file)}
    outcome = alertsend.send("webhook", target, {"hmac": SECRET}, alertsamples.alert())
    assert outcome.ok and tls_receiver.url.startswith("https://")
    assert tls_receiver.requests[0].verified["id"] == 123


def test_https_to_an_untrusted_certificate_is_refused_before_anything_is_sent(tls_receiver):
    outcome = send(tls_receiver.url)
    assert not outcome.ok and outcome.retry is True and outcome.status_code is None
    assert "TLS certificate not trusted (self-signed certificate)" in outcome.error
    assert tls_receiver.requests == []


def test_a_ca_file_that_is_not_there_is_a_permanent_failure(tmp_path, receiver):
    missing = tmp_path / "nope.pem"
    target = {"url": receiver.url, "ca_file": str(missing)}
    outcome = alertsend.send("webhook", target, {"hmac": SECRET}, alertsamples.alert())
    assert outcome.retry is False and outcome.error == f"ca_file: {missing} is not a readable file"
    assert receiver.requests == []


def test_a_huge_answer_is_not_read_whole(receiver):
    receiver.answer(500, b"x" * (8 * 1024 * 1024))
    outcome = send(receiver.url)
    assert outcome.status_code == 500 and outcome.retry is True
    assert len(outcome.error) <= 300
