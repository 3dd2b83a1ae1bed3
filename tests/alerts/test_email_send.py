"""Email alerts through a real SMTP server on loopback (aiosmtpd, tests/support/smtpserver.py)
with STARTTLS (a self-signed certificate the test makes and trusts as the target's ca_file)
and AUTH."""

from __future__ import annotations

import re
import time

import pytest

from saltext_fleet.master import alertsend
from tests.support import alertsamples
from tests.support.smtpserver import SmtpServer
from tests.support.sshd import free_port

PASSWORD = "correct horse battery staple"


@pytest.fixture
def smtp(tmp_path):
    with SmtpServer(tmp_path, users={"fleet": PASSWORD}) as server:
        yield server


def target(server, **changes):
    base = {
        "host": "127.0.0.1",
        "port": server.port,
        "starttls": True,
        "from": "fleet@fleet.example.com",
        "to": ["oncall@example.com", "lead@example.com"],
        "username": "fleet",
        "ca_file": str(server.cert_file) if server.cert_file else None,
        "timeout": 5,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def test_an_alert_arrives_over_starttls_with_auth_headers_and_both_parts(smtp):
    outcome = alertsend.send("email", target(smtp), {"password": PASSWORD}, alertsamples.alert())
    assert (outcome.ok, outcome.status_code, outcome.error, outcome.retry) == (
        True,
        250,
        None,
        False,
    )
    assert 0 < outcome.latency_ms < 5000
    [got] = smtp.messages
    assert got.tls and got.login == "fleet" and smtp.logins == [("fleet", True)]
    assert got.mail_from == "fleet@fleet.example.com"
    assert got.rcpt_tos == ["oncall@example.com", "lead@example.com"]
    msg = got.message
    assert msg["Subject"] == (
        "[fleet] critical drift on mac-07: drift score 72 on mac-07 (was 12, alert at 50) "
        "against baseline xcode-ci"
    )
    assert msg["To"] == "oncall@example.com, lead@example.com"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["X-Fleet-Dedup-Key"] == "fleet:drift:mac-07:"
    assert re.fullmatch(
        r"<fleet\.123\.[0-9a-f]{20}@fleet\.example\.com>", msg["Message-ID"].strip()
    )
    assert re.fullmatch(r"<fleet\.[0-9a-f]{32}@fleet\.example\.com>", msg["In-Reply-To"].strip())
    assert msg["References"] == msg["In-Reply-To"]
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "drift score 72 on mac-07" in text and "Node:      mac-07" in text
    assert "Open:      https://fleet.example.com/nodes/mac-07" in text
    assert "baseline: xcode-ci" in text
    assert "<a href='https://fleet.example.com/nodes/mac-07'>" in html


def test_messages_about_one_condition_thread_together_and_others_do_not(smtp):
    for record in (
        alertsamples.alert(),
        alertsamples.resolved(),
        alertsamples.alert(id=200, node="mac-08", dedup_key="fleet:drift:mac-08:"),
    ):
        assert alertsend.send("email", target(smtp), {"password": PASSWORD}, record).ok
    first, resolved, other = (m.message for m in smtp.messages)
    assert len({first["Message-ID"], resolved["Message-ID"], other["Message-ID"]}) == 3
    assert first["References"] == resolved["References"] != other["References"]
    assert resolved["Subject"].startswith("[fleet] resolved drift on mac-07: ")
    assert resolved["X-Fleet-State"] == "resolved"


def test_a_wrong_password_is_a_permanent_failure_with_a_clear_error(smtp):
    outcome = alertsend.send(
        "email", target(smtp), {"password": "wrong-password"}, alertsamples.alert()
    )
    assert not outcome.ok and outcome.retry is False and outcome.status_code == 535
    assert outcome.error.startswith(
        f"email smtp://127.0.0.1:{smtp.port}: login refused for fleet: 535"
    )
    assert "wrong-password" not in outcome.error
    # smtplib tries each mechanism the server offers (PLAIN, LOGIN): every one is refused
    assert smtp.logins and set(smtp.logins) == {("fleet", False)} and smtp.messages == []


def test_a_server_without_starttls_is_refused_when_starttls_is_required(tmp_path):
    with SmtpServer(tmp_path, tls=False, users=None) as plain:
        outcome = alertsend.send("email", target(plain, username=None), {}, alertsamples.alert())
        assert not outcome.ok and outcome.retry is False
        assert outcome.error == (
            f"email smtp://127.0.0.1:{plain.port}: the server does not offer STARTTLS, "
            "which the target requires"
        )
        assert plain.messages == []
        # the same server is fine for a relay that is told not to use TLS and has no login
        outcome = alertsend.send(
            "email", target(plain, username=None, starttls=False), {}, alertsamples.alert()
        )
        assert outcome.ok and len(plain.messages) == 1 and not plain.messages[0].tls


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_a_password_is_never_sent_over_a_plain_connection(tmp_path):
    with pytest.raises(
        alertsend.AlertSendError, match="password would cross the network in the clear"
    ):
        alertsend.check_target(
            "email",
            {"host": "h", "from": "a@b.c", "to": ["d@e.f"], "username": "u", "starttls": False},
        )
    with SmtpServer(tmp_path, tls=False, users={"fleet": PASSWORD}) as plain:
        outcome = alertsend.send(
            "email", target(plain, starttls=False), {"password": PASSWORD}, alertsamples.alert()
        )
        assert not outcome.ok and outcome.retry is False
        assert "in the clear" in outcome.error
        assert plain.logins == [] and plain.messages == []


def test_an_untrusted_certificate_is_refused(smtp):
    outcome = alertsend.send(
        "email", target(smtp, ca_file=None), {"password": PASSWORD}, alertsamples.alert()
    )
    assert not outcome.ok and outcome.retry is True
    assert "TLS certificate not trusted" in outcome.error
    assert smtp.logins == [] and smtp.messages == []


def test_a_server_that_is_down_is_retried():
    port = free_port()
    outcome = alertsend.send(
        "email",
        {
            "host": "127.0.0.1",
            "port": port,
            "from": "a@b.example",
            "to": ["c@d.example"],
            "starttls": False,
        },
        {},
        alertsamples.alert(),
    )
    assert not outcome.ok and outcome.retry is True
    assert outcome.error == f"email smtp://127.0.0.1:{port}: connection refused"


def test_a_missing_password_is_a_permanent_failure(smtp):
    outcome = alertsend.send("email", target(smtp), {}, alertsamples.alert())
    assert not outcome.ok and outcome.retry is False and "no 'password' secret" in outcome.error
    assert smtp.logins == []


def test_a_server_that_hangs_times_out(tmp_path):
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    accepted = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        outcome = alertsend.send(
            "email",
            {
                "host": "127.0.0.1",
                "port": port,
                "from": "a@b.example",
                "to": ["c@d.example"],
                "starttls": False,
                "timeout": 1,
            },
            {},
            alertsamples.alert(),
        )
        assert time.monotonic() - started < 5
        assert not outcome.ok and outcome.retry is True
        assert outcome.error.endswith("timed out waiting for the answer")
    finally:
        for conn, _ in accepted:
            conn.close()
        listener.close()


def test_a_ca_file_that_is_not_there_is_a_permanent_failure(smtp, tmp_path):
    missing = tmp_path / "nope.pem"
    outcome = alertsend.send(
        "email", target(smtp, ca_file=str(missing)), {"password": PASSWORD}, alertsamples.alert()
    )
    assert outcome.retry is False and outcome.error == f"ca_file: {missing} is not a readable file"
    assert smtp.messages == []
