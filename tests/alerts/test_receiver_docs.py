"""The receiver examples of docs/alerts-receivers.rst, run against real signed requests.

docs/receivers/verify_webhook.py (included in the page with literalinclude) is loaded as it is
and used as a real receiver's check; docs/receivers/verify_webhook.sh is run with ``sh`` and
``openssl`` over a body that really arrived.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import time

import pytest

from saltext_fleet.core import alertmsg
from saltext_fleet.master import alertsend
from tests.conftest import CODE_DIR
from tests.support import alertsamples
from tests.support.alertreceiver import Receiver

SECRET = "docs-example-secret"
EXAMPLES = CODE_DIR / "docs" / "receivers"


@pytest.fixture(scope="module")
def doc():
    spec = importlib.util.spec_from_file_location(
        "verify_webhook_doc", EXAMPLES / "verify_webhook.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def receiver(doc):
    """A receiver whose only check is the documentation's ``verify``."""
    checked = []

    def respond(request):
        try:
            checked.append(doc.verify(SECRET.encode(), request.headers, request.body))
        except ValueError as exc:
            return 401, str(exc).encode()
        return 204, b""

    with Receiver() as rx:
        rx.respond_with(respond)
        rx.checked = checked
        yield rx


def test_the_page_includes_the_examples_the_tests_run():
    page = (CODE_DIR / "docs" / "alerts-receivers.rst").read_text()
    assert ".. literalinclude:: receivers/verify_webhook.py" in page
    assert ".. literalinclude:: receivers/verify_webhook.sh" in page


def test_the_python_example_accepts_a_real_delivery(receiver):
    outcome = alertsend.send(
        "webhook", {"url": receiver.url}, {"hmac": SECRET}, alertsamples.alert()
    )
    assert outcome.ok and outcome.status_code == 204
    assert receiver.checked == [alertsamples.alert()]


def test_the_python_example_refuses_another_secret(receiver):
    outcome = alertsend.send(
        "webhook", {"url": receiver.url}, {"hmac": "wrong"}, alertsamples.alert()
    )
    assert outcome.status_code == 401 and outcome.retry is False
    assert outcome.error.endswith("HTTP 401: bad signature")
    assert receiver.checked == []


def test_the_python_example_refuses_a_changed_body_an_old_request_and_no_headers(doc, receiver):
    alertsend.send("webhook", {"url": receiver.url}, {"hmac": SECRET}, alertsamples.alert())
    [got] = receiver.requests
    with pytest.raises(ValueError, match="bad signature"):
        doc.verify(SECRET.encode(), got.headers, got.body.replace(b"mac-07", b"mac-08"))
    headers, body = alertmsg.webhook_request(SECRET, alertsamples.alert(), now=time.time() - 301)
    with pytest.raises(ValueError, match="stale timestamp"):
        doc.verify(SECRET.encode(), headers, body)
    with pytest.raises(ValueError, match="not a signed fleet webhook"):
        doc.verify(SECRET.encode(), {}, body)


def run_sh(got, body_file, secret=SECRET):
    env = dict(
        os.environ,
        SECRET=secret,
        TIMESTAMP=got.headers["X-Fleet-Timestamp"],
        SIGNATURE=got.headers["X-Fleet-Signature"],
    )
    return subprocess.run(
        ["sh", str(EXAMPLES / "verify_webhook.sh"), str(body_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_openssl_example_checks_a_real_delivery(tmp_path):
    assert shutil.which("openssl"), "openssl is needed to run the documented shell check"
    with Receiver() as rx:
        assert alertsend.send("webhook", {"url": rx.url}, {"hmac": SECRET}, alertsamples.alert()).ok
        [got] = rx.requests
    body = tmp_path / "body.json"
    body.write_bytes(got.body)
    ok = run_sh(got, body)
    assert (ok.returncode, ok.stdout.strip()) == (0, "signature ok"), ok.stderr
    wrong = run_sh(got, body, secret="not-it")
    assert wrong.returncode == 1 and "bad signature" in wrong.stderr
    body.write_bytes(got.body.replace(b"72", b"73"))
    changed = run_sh(got, body)
    assert changed.returncode == 1 and "bad signature" in changed.stderr


def test_the_openssl_example_refuses_an_old_request(tmp_path):
    headers, raw = alertmsg.webhook_request(SECRET, alertsamples.alert(), now=time.time() - 400)

    class Got:
        pass

    got = Got()
    got.headers = headers
    body = tmp_path / "body.json"
    body.write_bytes(raw)
    old = run_sh(got, body)
    assert old.returncode == 1 and "stale timestamp" in old.stderr
