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
import email.policy
import hashlib
import hmac
import html
import json
import re
import time
import uuid
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import format_datetime
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


# -- common text -------------------------------------------------------------------------------


def headline(alert: Mapping[str, Any]) -> str:
    """``critical drift on mac-07: <summary>`` as one line."""
    summary = one_line(alert.get("summary"))
    return f"{title_of(alert)}: {summary}" if summary else title_of(alert)


def _facts(alert: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(label, value)`` of the record's fields a person reads, in order, empty ones left out."""
    state = one_line(alert.get("state") or "firing")
    condition = one_line(alert.get("condition") or "")
    facts = [
        ("Kind", one_line(alert.get("kind") or "alert")),
        ("Node", one_line(alert.get("node") or "")),
        ("Subject", one_line(alert.get("subject") or "")),
        ("State", f"{state} ({condition})" if condition else state),
        ("Severity", severity_of(alert)),
        ("Raised at", one_line(_iso(alert.get("raised_at")) or "")),
        ("Master", one_line(alert.get("master") or "")),
    ]
    return [(label, value) for label, value in facts if value]


def _detail_lines(data: Any, limit: int = 40) -> list[str]:
    """``key: value`` lines of an event's data (nested values as compact JSON)."""
    if not isinstance(data, Mapping):
        return []
    lines = []
    for key in sorted(data, key=str)[:limit]:
        value = data[key]
        if not isinstance(value, str):
            value = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
        lines.append(f"{key}: {truncate(one_line(value), 300)}")
    if len(data) > limit:
        lines.append(f"... and {len(data) - limit} more")
    return lines


def _safe_link(url: Any, limit: int) -> str | None:
    if not isinstance(url, str) or len(url) > limit:
        return None
    url = url.strip()
    return url if re.match(r"^https?://[^\s<>|]+$", url) else None


# -- Slack -------------------------------------------------------------------------------------


def slack_escape(text: str) -> str:
    """Text for Slack's ``mrkdwn``: ``&``, ``<`` and ``>`` escaped as Slack requires."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _mrkdwn(text: str, limit: int) -> dict[str, str]:
    """A ``mrkdwn`` text object cut to ``limit`` characters *after* escaping."""
    escaped = slack_escape(text)
    if len(escaped) > limit:
        cut = escaped[: limit - 1]
        amp = cut.rfind("&")
        if amp >= 0 and ";" not in cut[amp:]:
            cut = cut[:amp]  # never end inside an entity
        escaped = cut + "…"
    return {"type": "mrkdwn", "text": escaped}


def slack_message(alert: Mapping[str, Any], target: Mapping[str, Any] | None = None) -> dict:
    """A Slack incoming-webhook message (Block Kit) for ``alert``.

    A ``header`` block with the severity's emoji and the title, then (in an attachment coloured
    by severity, green when resolved) a ``section`` with the summary and the facts as fields, a
    ``context`` line (master, dedup key, flapping) and an ``actions`` block with a link button
    when the alert has a ``url``. ``text`` is the fallback for notifications. Every text is cut
    to Slack's documented limits.
    """
    target = target or {}
    resolved = is_resolved(alert)
    severity = severity_of(alert)
    emoji = RESOLVED_EMOJI if resolved else SEVERITY_EMOJI[severity]
    colour = RESOLVED_COLOUR if resolved else SEVERITY_COLOUR[severity]
    title = title_of(alert)
    header = truncate(f"{emoji} {title[:1].upper()}{title[1:]}", SLACK_HEADER_TEXT)
    summary = one_line(alert.get("summary")) or title
    fields = [
        _mrkdwn(f"*{label}*\n{value}", SLACK_FIELD_TEXT)
        for label, value in _facts(alert)[:SLACK_MAX_FIELDS]
    ]
    section: dict[str, Any] = {"type": "section", "text": _mrkdwn(summary, SLACK_SECTION_TEXT)}
    if fields:
        section["fields"] = fields
    context_bits = ["saltext-fleet"]
    if alert.get("id") is not None:
        context_bits.append(f"alert {one_line(alert['id'])}")
    context_bits.append(f"dedup {dedup_key_of(alert)}")
    if alert.get("flapping"):
        changes = (alert.get("data") or {}).get("changes")
        n = len(changes) if isinstance(changes, list) else None
        context_bits.append(f"flapping ({n} changes)" if n else "flapping")
    blocks: list[dict[str, Any]] = [
        section,
        {"type": "context", "elements": [_mrkdwn(" · ".join(context_bits), SLACK_SECTION_TEXT)]},
    ]
    link = _safe_link(alert.get("url"), SLACK_URL)
    if link:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open in fleet", "emoji": True},
                        "url": link,
                        "action_id": "fleet-open",
                    }
                ],
            }
        )
    message: dict[str, Any] = {
        "text": truncate(slack_escape(f"{emoji} [fleet] {headline(alert)}"), 3000),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}}
        ],
        "attachments": [{"color": colour, "blocks": blocks}],
    }
    if target.get("channel"):
        message["channel"] = target["channel"]
    return message


# -- PagerDuty ---------------------------------------------------------------------------------


def pagerduty_event(
    alert: Mapping[str, Any], routing_key: str, target: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A PagerDuty Events API v2 event: ``trigger`` for a firing alert, ``resolve`` (routing
    key, action and dedup key only) for a resolved one; both with the same ``dedup_key``, so
    the resolve closes the incident the trigger opened."""
    if not routing_key:
        raise AlertMessageError("pagerduty: the route has no 'routing_key' secret")
    key = dedup_key_of(alert)
    if is_resolved(alert):
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": key}
    target = target or {}
    kind = one_line(alert.get("kind") or "alert")
    condition = one_line(alert.get("condition") or "")
    payload: dict[str, Any] = {
        "summary": truncate(headline(alert), PD_SUMMARY),
        "source": target.get("source")
        or one_line(alert.get("node") or alert.get("master") or CLIENT_NAME),
        "severity": severity_of(alert),
        "timestamp": _iso(alert.get("raised_at")) or dt.datetime.now(dt.timezone.utc).isoformat(),
        "component": target.get("component") or one_line(alert.get("subject") or kind),
        "group": target.get("group") or kind,
        "class": target.get("class") or (f"{kind} {condition}" if condition else kind),
        "custom_details": {
            "alert_id": alert.get("id"),
            "kind": alert.get("kind"),
            "node": alert.get("node"),
            "subject": alert.get("subject"),
            "state": alert.get("state"),
            "condition": alert.get("condition"),
            "summary": alert.get("summary"),
            "master": alert.get("master"),
            "tag": alert.get("tag"),
            "flapping": bool(alert.get("flapping")),
            "data": alert.get("data") or {},
        },
    }
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": key,
        "payload": payload,
        "client": CLIENT_NAME,
    }
    link = _safe_link(alert.get("url"), 2048)
    if link:
        event["links"] = [{"href": link, "text": "Open in fleet"}]
        event["client_url"] = link
    return event


# -- email -------------------------------------------------------------------------------------

EMAIL_SUBJECT_CHARS = 200


def _domain_of(address: str) -> str:
    domain = address.rpartition("@")[2].strip().strip(">").lower()
    return domain if re.match(r"^[a-z0-9.-]+$", domain) else "fleet.invalid"


def thread_id(alert: Mapping[str, Any], domain: str) -> str:
    """A stable ``<...@domain>`` message id per condition (from the dedup key): every message
    about the same condition refers to it, so mail clients thread them."""
    digest = hashlib.sha256(dedup_key_of(alert).encode()).hexdigest()[:32]
    return f"<fleet.{digest}@{domain}>"


def message_id(alert: Mapping[str, Any], domain: str) -> str:
    """The message's ``Message-ID``: one per alert and delivery, the same on every retry of
    that delivery (``delivery_id``), so a copy that went through before a connection broke
    and is sent again can be recognised; random when the record has no ``delivery_id``."""
    alert_id = re.sub(r"[^A-Za-z0-9-]", "", str(alert.get("id", "")))[:20]
    delivery = re.sub(r"[^A-Za-z0-9-]", "", str(alert.get("delivery_id") or ""))[:20]
    if delivery:
        salt = f"{alert.get('master')}|{dedup_key_of(alert)}".encode()
        unique = f"{delivery}.{hashlib.sha256(salt).hexdigest()[:8]}"
    else:
        unique = uuid.uuid4().hex[:20]
    return f"<fleet.{alert_id + '.' if alert_id else ''}{unique}@{domain}>"


def email_message(
    alert: Mapping[str, Any], target: Mapping[str, Any], *, now: dt.datetime | None = None
) -> EmailMessage:
    """The alert as an email: a plain text part and a short HTML part, a subject such as
    ``[fleet] critical drift on mac-07: ...``, a ``Message-ID`` per alert and delivery, and
    ``In-Reply-To``/``References`` pointing at the condition's stable thread id."""
    sender = target["from"]
    recipients = target["to"]
    domain = _domain_of(sender)
    # headers up to RFC 5322's hard limit on one line: Python's folding at 78 would move a
    # whole subject to a continuation line, which some clients show with a leading space
    msg = EmailMessage(policy=email.policy.default.clone(max_line_length=998))
    msg["Subject"] = truncate(f"[fleet] {headline(alert)}", EMAIL_SUBJECT_CHARS)
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = format_datetime(now or dt.datetime.now(dt.timezone.utc))
    msg["Message-ID"] = message_id(alert, domain)
    thread = thread_id(alert, domain)
    msg["In-Reply-To"] = thread
    msg["References"] = thread
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Fleet-Event"] = one_line(alert.get("kind") or "alert")
    msg["X-Fleet-Dedup-Key"] = truncate(dedup_key_of(alert), 200)
    msg["X-Fleet-State"] = "resolved" if is_resolved(alert) else "firing"

    facts = _facts(alert)
    details = _detail_lines(alert.get("data"))
    link = _safe_link(alert.get("url"), 2048)
    width = max((len(label) for label, _ in facts), default=0) + 1
    text = [title_of(alert), "", one_line(alert.get("summary")) or title_of(alert), ""]
    text += [f"{label + ':':<{width}} {value}" for label, value in facts]
    if link:
        text += [f"{'Open:':<{width}} {link}"]
    if details:
        text += ["", "Details:"] + [f"  {line}" for line in details]
    text += ["", "-- ", f"saltext-fleet alert {alert.get('id', '')} · {dedup_key_of(alert)}"]
    msg.set_content("\n".join(text) + "\n", cte="quoted-printable")

    esc = html.escape
    colour = RESOLVED_COLOUR if is_resolved(alert) else SEVERITY_COLOUR[severity_of(alert)]
    rows = "".join(
        f"<tr><th align='left'>{esc(label)}</th><td>{esc(value)}</td></tr>"
        for label, value in facts
    )
    link_html = f"<p><a href='{esc(link, quote=True)}'>Open in fleet</a></p>" if link else ""
    msg.add_alternative(
        "<!doctype html><html><body>"
        f"<h2 style='border-left:6px solid {colour};padding-left:8px'>{esc(title_of(alert))}</h2>"
        f"<p>{esc(one_line(alert.get('summary')))}</p><table>{rows}</table>{link_html}"
        "</body></html>\n",
        subtype="html",
        cte="quoted-printable",
    )
    return msg
