"""What an alert looks like on the wire: payloads per destination, webhook signing and checking.

Pure: no I/O and nothing of Salt. :mod:`saltext_fleet.master.alertsend` sends what this module
builds. An *alert record* is the plain dict described in the alert worker's contract (``id``,
``kind``, ``node``, ``subject``, ``state`` ``firing``/``resolved``, ``condition``,
``severity`` ``info``/``warning``/``error``/``critical``, ``summary``, ``raised_at``, ``tag``,
``master``, ``dedup_key``, ``flapping``, ``url``, ``data``).

The generic webhook
-------------------
The body is the alert record as compact JSON with sorted keys. The request carries::

    X-Fleet-Timestamp: <unix seconds>
    X-Fleet-Signature: sha256=<hex HMAC-SHA256(secret, f"{timestamp}.".encode() + body)>
    X-Fleet-Event: <kind>
    X-Fleet-Delivery: <delivery id>

so a receiver that knows the route's secret checks both who sent the body and when
(:func:`verify_webhook`); the timestamp inside the signed bytes stops a replay of an old
request from passing as new.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

from saltext_fleet import __version__
from saltext_fleet.core.errors import FleetError

USER_AGENT = f"saltext-fleet/{__version__}"
CLIENT_NAME = "saltext-fleet"

TIMESTAMP_HEADER = "X-Fleet-Timestamp"
SIGNATURE_HEADER = "X-Fleet-Signature"
EVENT_HEADER = "X-Fleet-Event"
DELIVERY_HEADER = "X-Fleet-Delivery"
SIGNATURE_PREFIX = "sha256="
#: How far a webhook's timestamp may be from the receiver's clock (seconds), by default.
DEFAULT_TOLERANCE_S = 300

#: PagerDuty's severities, lowest first (the alert records use the same words).
SEVERITIES = ("info", "warning", "error", "critical")

# Slack's documented limits (Block Kit reference, chat.postMessage).
SLACK_MAX_BLOCKS = 50
SLACK_HEADER_TEXT = 150
SLACK_SECTION_TEXT = 3000
SLACK_FIELD_TEXT = 2000
SLACK_MAX_FIELDS = 10
SLACK_CONTEXT_ELEMENTS = 10
SLACK_BUTTON_TEXT = 75
SLACK_URL = 3000
SLACK_MESSAGE_TEXT = 40000

# PagerDuty Events API v2's documented limits.
PD_SUMMARY = 1024
PD_DEDUP_KEY = 255

SEVERITY_EMOJI = {
    "critical": ":red_circle:",
    "error": ":large_orange_circle:",
    "warning": ":large_yellow_circle:",
    "info": ":large_blue_circle:",
}
RESOLVED_EMOJI = ":white_check_mark:"
SEVERITY_COLOUR = {
    "critical": "#d0021b",
    "error": "#f5762a",
    "warning": "#f2c744",
    "info": "#439fe0",
}
RESOLVED_COLOUR = "#2eb67d"


class WebhookVerifyError(FleetError, ValueError):
    """A webhook request failed verification; the message says what was wrong."""


class AlertMessageError(FleetError, ValueError):
    """An alert record or a target cannot make a message; the message names the field."""


# -- small helpers -----------------------------------------------------------------------------


def one_line(text: Any) -> str:
    """``text`` as one line: runs of whitespace (newlines included) become one space."""
    return re.sub(r"\s+", " ", "" if text is None else str(text)).strip()


def truncate(text: str, limit: int, ellipsis: str = "…") -> str:
    """``text`` cut to at most ``limit`` characters, ending with ``ellipsis`` when cut."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(ellipsis))] + ellipsis


def severity_of(alert: Mapping[str, Any]) -> str:
    severity = str(alert.get("severity") or "warning").lower()
    return severity if severity in SEVERITIES else "warning"


def is_resolved(alert: Mapping[str, Any]) -> bool:
    return alert.get("state") == "resolved"


def dedup_key_of(alert: Mapping[str, Any]) -> str:
    """The alert's ``dedup_key``, made from kind/node/subject when missing; one longer than
    PagerDuty's 255 characters is shortened deterministically (the same key every time, so a
    resolve still matches its trigger)."""
    key = alert.get("dedup_key")
    if not key:
        key = f"fleet:{alert.get('kind') or 'alert'}:{alert.get('node') or ''}:"
        key += str(alert.get("subject") or "")
    key = str(key)
    if len(key) > PD_DEDUP_KEY:
        digest = hashlib.sha256(key.encode()).hexdigest()
        key = key[: PD_DEDUP_KEY - len(digest) - 1] + "~" + digest
    return key


def title_of(alert: Mapping[str, Any]) -> str:
    """``critical drift on mac-07`` / ``resolved drift on mac-07`` / ``flapping ...``."""
    kind = one_line(alert.get("kind") or "alert")
    node = one_line(alert.get("node") or "")
    word = "resolved" if is_resolved(alert) else severity_of(alert)
    if alert.get("flapping"):
        word += " flapping"
    return f"{word} {kind} on {node}" if node else f"{word} {kind}"


def _iso(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.isoformat()
    return str(value)


# -- the generic webhook -----------------------------------------------------------------------


def webhook_body(alert: Mapping[str, Any]) -> bytes:
    """The alert record as the webhook's body: compact JSON, sorted keys, UTF-8."""
    return json.dumps(
        dict(alert), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    ).encode("utf-8")


def sign_webhook(secret: str | bytes, timestamp: int | str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 with ``secret`` over ``f"{timestamp}."`` and ``body``."""
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    mac = hmac.new(key, f"{timestamp}.".encode("ascii") + body, hashlib.sha256)
    return SIGNATURE_PREFIX + mac.hexdigest()


def webhook_request(
    secret: str | bytes,
    alert: Mapping[str, Any],
    *,
    now: float | None = None,
    delivery_id: str | None = None,
) -> tuple[dict[str, str], bytes]:
    """``(headers, body)`` of the signed webhook request for ``alert``."""
    if not secret:
        raise AlertMessageError("webhook: the route has no 'hmac' secret to sign with")
    body = webhook_body(alert)
    timestamp = int(time.time() if now is None else now)
    delivery = delivery_id or alert.get("delivery_id") or uuid.uuid4().hex
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign_webhook(secret, timestamp, body),
        EVENT_HEADER: one_line(alert.get("kind") or "alert"),
        DELIVERY_HEADER: one_line(delivery),
    }
    return headers, body


def _header(headers: Any, name: str) -> str | None:
    """A header of ``headers`` (a mapping, or an object with ``.get`` such as
    ``http.client.HTTPMessage``), by name in any case."""
    if hasattr(headers, "items"):
        wanted = name.lower()
        for key, value in headers.items():
            if str(key).lower() == wanted:
                return value
        return None
    return headers.get(name)


def verify_webhook(
    secret: str | bytes,
    headers: Any,
    body: bytes,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> dict[str, Any]:
    """Check a received webhook request and return its alert record (the decoded body).

    Raises :class:`WebhookVerifyError` naming what was wrong: a missing header, a timestamp
    that is not a number or is more than ``tolerance_s`` seconds from ``now``, a signature that
    does not match (compared in constant time), or a body that is not a JSON object.
    """
    if not secret:
        raise WebhookVerifyError("no secret to verify with")
    if isinstance(body, str):
        body = body.encode("utf-8")
    timestamp = _header(headers, TIMESTAMP_HEADER)
    if timestamp is None:
        raise WebhookVerifyError(f"missing header {TIMESTAMP_HEADER}")
    signature = _header(headers, SIGNATURE_HEADER)
    if signature is None:
        raise WebhookVerifyError(f"missing header {SIGNATURE_HEADER}")
    timestamp = str(timestamp).strip()
    if not timestamp.isdigit():
        raise WebhookVerifyError(f"{TIMESTAMP_HEADER}: {timestamp[:40]!r} is not unix seconds")
    now = time.time() if now is None else now
    skew = now - int(timestamp)
    if abs(skew) > tolerance_s:
        when = "old" if skew > 0 else "in the future"
        raise WebhookVerifyError(
            f"{TIMESTAMP_HEADER}: stale timestamp, {abs(skew):.0f} s {when} "
            f"(tolerance {tolerance_s:g} s)"
        )
    signature = str(signature).strip()
    if not signature.startswith(SIGNATURE_PREFIX):
        raise WebhookVerifyError(f"{SIGNATURE_HEADER}: does not start with {SIGNATURE_PREFIX!r}")
    expected = sign_webhook(secret, timestamp, body)
    if not hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8", "replace")):
        raise WebhookVerifyError(f"{SIGNATURE_HEADER}: bad signature")
    try:
        record = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise WebhookVerifyError(f"body: not JSON ({exc})") from exc
    if not isinstance(record, dict):
        raise WebhookVerifyError("body: not a JSON object")
    return record
