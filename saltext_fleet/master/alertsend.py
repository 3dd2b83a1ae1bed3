"""Sending one alert to one destination: a generic webhook, Slack, PagerDuty or email.

:func:`send` makes one attempt and says what happened in an :class:`Outcome`; the alert worker
records the attempt and decides when to try again (``Outcome.retry``). It never raises for a
delivery problem (a receiver down, a refusal, a bad target or a missing secret): those are
outcomes. :func:`check_target` checks a route's target before it is stored.

Targets hold no secrets; each destination's secrets (:data:`SECRET_NAMES`) come from the vault
(scope ``alert``, owner the route key) and are passed to :func:`send` separately. An error
string never contains a secret: the Slack webhook URL and the PagerDuty routing key are
secrets, so they are never named, and any text a receiver echoes has them blanked.

HTTP goes through ``requests`` with a connect and a read timeout, TLS verified (against the
target's ``ca_file`` when given), and redirects not followed (a POST that is redirected is
reported, not replayed somewhere else). Email goes through :mod:`smtplib` with STARTTLS.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import os
import smtplib
import socket
import ssl
import time
import urllib.parse
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from saltext_fleet.core import alertmsg
from saltext_fleet.core.errors import FleetError

log = logging.getLogger(__name__)

DESTINATIONS = ("webhook", "slack", "pagerduty", "email")
SECRET_NAMES = {
    "webhook": ("hmac",),
    "slack": ("url",),
    "pagerduty": ("routing_key",),
    "email": ("password",),
}
PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
DEFAULT_TIMEOUT = 10.0
#: The longest a connection may take to open, whatever the (read) timeout.
CONNECT_TIMEOUT = 5.0
#: HTTP statuses worth trying again: the receiver is busy or broken for now.
RETRY_STATUSES = frozenset({408, 425, 429})
ERROR_CHARS = 300
#: How much of a receiver's answer is read (the rest is dropped).
ANSWER_BYTES = 64 * 1024


class AlertSendError(FleetError, ValueError):
    """A route's target (or secret) is not usable; the message names the field."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one attempt to deliver one alert came to."""

    ok: bool
    status_code: int | None
    latency_ms: float
    #: None when ok; short, names what failed.
    error: str | None
    #: False: permanent (4xx except 408/429, bad config): do not retry.
    retry: bool
    #: Seconds the receiver asked to wait (``Retry-After`` of a 429/503), when it said.
    retry_after_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- targets -----------------------------------------------------------------------------------

_TARGET_FIELDS = {
    "webhook": {"url", "timeout", "ca_file"},
    "slack": {"channel", "timeout", "ca_file"},
    "pagerduty": {"url", "timeout", "ca_file", "source", "component", "group", "class"},
    "email": {
        "host",
        "port",
        "starttls",
        "ssl",
        "from",
        "to",
        "username",
        "timeout",
        "ca_file",
        "helo",
    },
}


def _url(destination: str, field: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise AlertSendError(f"{destination} target: {field} must be a URL")
    value = value.strip()
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise AlertSendError(
            f"{destination} target: {field} must be an http(s) URL with a host, "
            f"not {_safe_url(value)!r}"
        )
    try:
        parts.port  # noqa: B018 - a bad port raises here
    except ValueError as exc:
        raise AlertSendError(f"{destination} target: {field}: {exc}") from exc
    return value


def _timeout(destination: str, value: Any) -> float:
    try:
        timeout = float(value)
    except (TypeError, ValueError):
        raise AlertSendError(f"{destination} target: timeout must be seconds") from None
    if not 0 < timeout <= 300:
        raise AlertSendError(f"{destination} target: timeout must be between 0 and 300 s")
    return timeout


def _text(destination: str, field: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or "\n" in value or "\r" in value:
        raise AlertSendError(f"{destination} target: {field} must be a one-line string")
    return value.strip()


def check_target(destination: str, target: Mapping[str, Any] | None) -> dict[str, Any]:
    """The normalised ``target`` of a route to ``destination`` (defaults filled in), or
    :class:`AlertSendError` naming the field that is wrong. A secret put in the target (say a
    ``routing_key``) is refused: secrets belong in the vault."""
    if destination not in DESTINATIONS:
        raise AlertSendError(
            f"destination: {destination!r} is not one of {', '.join(DESTINATIONS)}"
        )
    if target is None:
        target = {}
    if not isinstance(target, Mapping):
        raise AlertSendError(f"{destination} target: must be a mapping")
    for name in target:
        if name in SECRET_NAMES[destination] or name in ("password", "secret", "routing_key"):
            raise AlertSendError(
                f"{destination} target: {name} is a secret; set it with "
                f"salt-run fleet.alert_secret, not in the target"
            )
        if name not in _TARGET_FIELDS[destination]:
            raise AlertSendError(
                f"{destination} target: unknown field {name!r} "
                f"(known: {', '.join(sorted(_TARGET_FIELDS[destination]))})"
            )
    out: dict[str, Any] = {"timeout": _timeout(destination, target.get("timeout", DEFAULT_TIMEOUT))}
    if target.get("ca_file") is not None:
        out["ca_file"] = _text(destination, "ca_file", target["ca_file"])
    if destination == "webhook":
        if "url" not in target:
            raise AlertSendError("webhook target: url is required")
        out["url"] = _url(destination, "url", target["url"])
    elif destination == "slack":
        if target.get("channel") is not None:
            out["channel"] = _text(destination, "channel", target["channel"])
    elif destination == "pagerduty":
        out["url"] = _url(destination, "url", target.get("url") or PAGERDUTY_URL)
        for field in ("source", "component", "group", "class"):
            if target.get(field) is not None:
                out[field] = _text(destination, field, target[field])
    else:
        out.update(_check_email(target))
    return out


def _check_email(target: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "host" not in target:
        raise AlertSendError("email target: host is required")
    out["host"] = _text("email", "host", target["host"])
    ssl_on = target.get("ssl", False)
    starttls = target.get("starttls", not ssl_on)
    for field, value in (("ssl", ssl_on), ("starttls", starttls)):
        if not isinstance(value, bool):
            raise AlertSendError(f"email target: {field} must be true or false")
    if ssl_on and starttls:
        raise AlertSendError("email target: ssl (implicit TLS) and starttls exclude each other")
    out["ssl"], out["starttls"] = ssl_on, starttls
    port = target.get("port", 465 if ssl_on else 587)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise AlertSendError("email target: port must be a number from 1 to 65535")
    out["port"] = port
    if "from" not in target:
        raise AlertSendError("email target: from is required")
    out["from"] = _address("from", target["from"])
    to = target.get("to")
    if isinstance(to, str):
        to = [to]
    if not to or not isinstance(to, list):
        raise AlertSendError("email target: to must be a list of addresses")
    out["to"] = [_address("to", item) for item in to]
    if target.get("username") is not None:
        out["username"] = _text("email", "username", target["username"])
        if not (ssl_on or starttls):
            raise AlertSendError(
                "email target: username given with starttls and ssl off: "
                "the password would cross the network in the clear"
            )
    if target.get("helo") is not None:
        out["helo"] = _text("email", "helo", target["helo"])
    return out


def _address(field: str, value: Any) -> str:
    value = _text("email", field, value)
    if value.count("@") != 1 or value.startswith("@") or value.endswith("@") or " " in value:
        raise AlertSendError(f"email target: {field}: {value!r} is not an address")
    return value


# -- errors without secrets --------------------------------------------------------------------


def _safe_url(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: no path, query or credentials."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<bad url>"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}"


def _scrub(text: str, secrets: Mapping[str, str]) -> str:
    """``text`` as one short line with every secret value (and URL-quoted forms) blanked."""
    text = alertmsg.one_line(text)
    for value in secrets.values():
        if not value or len(str(value)) < 4:
            continue
        value = str(value)
        for form in {value, urllib.parse.quote(value, safe=""), urllib.parse.quote(value)}:
            text = text.replace(form, "***")
    return alertmsg.truncate(text, ERROR_CHARS)


def _exception_chain(exc: BaseException):
    """``exc`` and every exception it wraps (``__cause__``, ``__context__``, urllib3's
    ``reason``, exceptions among ``args``), each once."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        item = todo.pop(0)
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        todo.append(getattr(item, "reason", None))
        todo.extend(a for a in getattr(item, "args", ()) if isinstance(a, BaseException))
        todo.append(item.__cause__)
        todo.append(item.__context__)


def _network_cause(exc: BaseException) -> str:
    """A short cause for a failed connection, from the exception types (never their text,
    which can carry the URL)."""
    chain = list(_exception_chain(exc))

    def has(*types) -> bool:
        return any(isinstance(item, types) for item in chain)

    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connect timed out"
    if isinstance(exc, requests.exceptions.ReadTimeout) or has(socket.timeout, TimeoutError):
        return "timed out waiting for the answer"
    for item in chain:
        if isinstance(item, ssl.SSLCertVerificationError):
            reason = getattr(item, "verify_message", None) or getattr(item, "reason", None)
            return f"TLS certificate not trusted ({reason or 'verify failed'})"
    if has(ssl.SSLError) or isinstance(exc, requests.exceptions.SSLError):
        return "TLS handshake failed"
    if has(ConnectionRefusedError):
        return "connection refused"
    if has(socket.gaierror) or any(type(i).__name__ == "NameResolutionError" for i in chain):
        return "host name not resolved"
    if has(http.client.RemoteDisconnected, ConnectionResetError, ConnectionAbortedError):
        return "connection closed by the receiver before it answered"
    if has(http.client.IncompleteRead) or isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "connection closed in the middle of the answer"
    if has(OSError):
        for item in chain:
            if isinstance(item, OSError) and item.strerror:
                return alertmsg.one_line(item.strerror).lower()
    if isinstance(exc, requests.exceptions.TooManyRedirects):
        return "too many redirects"
    return type(exc).__name__


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _answer_text(content: bytes) -> str:
    """A short piece of the receiver's answer (its ``message``/``errors`` when JSON)."""
    text = content[:4000].decode("utf-8", "replace")
    try:
        data = json.loads(content)
    except ValueError:
        return text
    if isinstance(data, dict):
        parts = [str(data[k]) for k in ("status", "message", "error") if data.get(k)]
        errors = data.get("errors")
        if isinstance(errors, list):
            parts.extend(str(e) for e in errors[:3])
        if parts:
            return "; ".join(parts)
    return text


def _classify(
    response: requests.Response,
    content: bytes,
    latency_ms: float,
    label: str,
    secrets: Mapping[str, str],
) -> Outcome:
    status = response.status_code
    if 200 <= status < 300:
        return Outcome(True, status, latency_ms, None, False)
    detail = _scrub(_answer_text(content), secrets)
    if 300 <= status < 400:
        where = response.headers.get("Location", "")
        where = _safe_url(where) if "://" in where else ""
        error = f"{label}: HTTP {status} redirect{' to ' + where if where else ''} not followed"
        return Outcome(False, status, latency_ms, error, False)
    retry = status in RETRY_STATUSES or status >= 500
    error = f"{label}: HTTP {status}" + (f": {detail}" if detail else "")
    return Outcome(
        False,
        status,
        latency_ms,
        alertmsg.truncate(error, ERROR_CHARS),
        retry,
        _retry_after(response) if retry else None,
    )


def _post(
    label: str,
    url: str,
    *,
    body: bytes,
    headers: Mapping[str, str],
    target: Mapping[str, Any],
    secrets: Mapping[str, str],
    timeout: float,
) -> Outcome:
    verify: bool | str = _ca_file(target) or True
    started = time.monotonic()
    try:
        # the master's HTTPS_PROXY / NO_PROXY are honoured (Slack and PagerDuty are often
        # reached through a proxy)
        with requests.Session() as session:
            response = session.post(
                url,
                data=body,
                headers=dict(headers),
                timeout=(min(CONNECT_TIMEOUT, timeout), timeout),
                allow_redirects=False,
                verify=verify,
                stream=True,
            )
            with response:
                content = b""
                for chunk in response.iter_content(8192):
                    content += chunk
                    if len(content) >= ANSWER_BYTES:
                        break  # enough to say what went wrong
    except requests.exceptions.RequestException as exc:
        latency = (time.monotonic() - started) * 1000
        return Outcome(False, None, latency, f"{label}: {_network_cause(exc)}", True)
    latency = (time.monotonic() - started) * 1000
    return _classify(response, content, latency, label, secrets)


# -- sending -----------------------------------------------------------------------------------


def _ca_file(target: Mapping[str, Any]) -> str | None:
    path = target.get("ca_file")
    if path and not (os.path.isfile(path) and os.access(path, os.R_OK)):
        raise AlertSendError(f"ca_file: {path} is not a readable file")
    return path or None


def _secret(destination: str, secrets: Mapping[str, str], name: str) -> str:
    value = (secrets or {}).get(name)
    if not value:
        raise AlertSendError(
            f"{destination}: the route has no {name!r} secret "
            f"(set it with salt-run fleet.alert_secret)"
        )
    return str(value)


def _timeout_of(target: Mapping[str, Any], timeout: float | None) -> float:
    """The route's timeout, bounded by the caller's (the worker's budget for one attempt)."""
    return float(min(target["timeout"], timeout) if timeout else target["timeout"])


def _send_webhook(target, secrets, alert, timeout) -> Outcome:
    secret = _secret("webhook", secrets, "hmac")
    headers, body = alertmsg.webhook_request(secret, alert)
    label = f"webhook {_safe_url(target['url'])}"
    return _post(
        label,
        target["url"],
        body=body,
        headers=headers,
        target=target,
        secrets=secrets,
        timeout=timeout,
    )


def _loopback(url: str) -> bool:
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


def _send_slack(target, secrets, alert, timeout) -> Outcome:
    url = _secret("slack", secrets, "url").strip()
    try:
        _url("slack", "url", url)
    except AlertSendError:
        raise AlertSendError("slack: the 'url' secret is not an http(s) URL") from None
    if url.startswith("http:") and not _loopback(url):
        raise AlertSendError("slack: the 'url' secret must be an https URL")
    body = json.dumps(alertmsg.slack_message(alert, target), ensure_ascii=False).encode()
    headers = {"Content-Type": "application/json", "User-Agent": alertmsg.USER_AGENT}
    # the URL is the secret: the label names the destination only
    return _post(
        "slack", url, body=body, headers=headers, target=target, secrets=secrets, timeout=timeout
    )


def _send_pagerduty(target, secrets, alert, timeout) -> Outcome:
    routing_key = _secret("pagerduty", secrets, "routing_key").strip()
    url = target["url"]
    if url.startswith("http:") and not _loopback(url):
        raise AlertSendError("pagerduty target: url must be https (the routing key is a secret)")
    body = json.dumps(alertmsg.pagerduty_event(alert, routing_key, target)).encode()
    headers = {"Content-Type": "application/json", "User-Agent": alertmsg.USER_AGENT}
    return _post(
        f"pagerduty {_safe_url(url)}",
        url,
        body=body,
        headers=headers,
        target=target,
        secrets={**secrets, "routing_key": routing_key},
        timeout=timeout,
    )


def _smtp_reply(code: int | None, message: Any) -> str:
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    return alertmsg.one_line(f"{code or ''} {message or ''}")


def _send_email(target, secrets, alert, timeout) -> Outcome:
    username = target.get("username")
    password = _secret("email", secrets, "password") if username else None
    label = f"email smtp://{target['host']}:{target['port']}"
    msg = alertmsg.email_message(alert, target)
    try:
        context = ssl.create_default_context(cafile=_ca_file(target))
    except ssl.SSLError as exc:
        raise AlertSendError(f"ca_file: {target['ca_file']} holds no certificate ({exc})") from None
    started = time.monotonic()

    def outcome(ok, code, error=None, retry=False) -> Outcome:
        latency = (time.monotonic() - started) * 1000
        if error is not None:
            error = _scrub(f"{label}: {error}", secrets)
        return Outcome(ok, code, latency, error, retry)

    try:
        if target["ssl"]:
            smtp = smtplib.SMTP_SSL(
                target["host"],
                target["port"],
                local_hostname=target.get("helo"),
                timeout=timeout,
                context=context,
            )
        else:
            smtp = smtplib.SMTP(
                target["host"], target["port"], local_hostname=target.get("helo"), timeout=timeout
            )
        with smtp:
            smtp.ehlo()
            if target["starttls"]:
                if not smtp.has_extn("starttls"):
                    return outcome(
                        False, None, "the server does not offer STARTTLS, which the target requires"
                    )
                smtp.starttls(context=context)
                smtp.ehlo()
            if username:
                if not smtp.has_extn("auth"):
                    return outcome(False, None, "the server does not offer AUTH (login)")
                smtp.login(username, password)
            # Some recipients refused while others took it is still a delivery: trying again
            # would send the others a second copy. (All refused raises, below.)
            smtp.send_message(msg, from_addr=target["from"], to_addrs=target["to"])
    except smtplib.SMTPAuthenticationError as exc:
        reply = _smtp_reply(exc.smtp_code, exc.smtp_error)
        temporary = 400 <= exc.smtp_code < 500
        return outcome(False, exc.smtp_code, f"login refused for {username}: {reply}", temporary)
    except smtplib.SMTPRecipientsRefused as exc:
        replies = list(exc.recipients.values())
        first = replies[0] if replies else (None, "")
        temporary = bool(replies) and all(400 <= code < 500 for code, _ in replies)
        return outcome(
            False,
            first[0],
            f"every recipient refused ({', '.join(exc.recipients)}): {_smtp_reply(*first)}",
            temporary,
        )
    except smtplib.SMTPResponseException as exc:
        what = {
            smtplib.SMTPSenderRefused: "sender refused",
            smtplib.SMTPDataError: "message refused",
            smtplib.SMTPHeloError: "HELO refused",
            smtplib.SMTPConnectError: "connection refused by the server",
        }.get(type(exc), "server answered")
        temporary = exc.smtp_code < 500 or isinstance(exc, smtplib.SMTPConnectError)
        reply = _smtp_reply(exc.smtp_code, exc.smtp_error)
        return outcome(False, exc.smtp_code, f"{what}: {reply}", temporary)
    except smtplib.SMTPNotSupportedError as exc:
        return outcome(False, None, f"not supported by the server: {exc}", False)
    except smtplib.SMTPServerDisconnected as exc:
        # smtplib turns a read that timed out into "Connection unexpectedly closed"
        timed_out = any(isinstance(e, TimeoutError) for e in _exception_chain(exc))
        cause = (
            "timed out waiting for the answer" if timed_out else "connection closed by the server"
        )
        return outcome(False, None, cause, True)
    except smtplib.SMTPException as exc:
        return outcome(False, None, f"{type(exc).__name__}: {exc}", True)
    except (OSError, ssl.SSLError) as exc:
        return outcome(False, None, _network_cause(exc), True)
    return outcome(True, 250)


_SENDERS = {
    "webhook": _send_webhook,
    "slack": _send_slack,
    "pagerduty": _send_pagerduty,
    "email": _send_email,
}


def send(
    destination: str,
    target: Mapping[str, Any],
    secrets: Mapping[str, str],
    alert: Mapping[str, Any],
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> Outcome:
    """Make one attempt to deliver ``alert`` to ``destination`` at ``target`` with the route's
    ``secrets``; the :class:`Outcome` says how it went and whether to try again."""
    started = time.monotonic()
    try:
        checked = check_target(destination, target)
        sender = _SENDERS.get(destination)
        if sender is None:
            raise AlertSendError(f"{destination}: sending is not implemented")
        return sender(checked, secrets or {}, dict(alert), _timeout_of(checked, timeout))
    except (AlertSendError, alertmsg.AlertMessageError) as exc:
        latency = (time.monotonic() - started) * 1000
        return Outcome(False, None, latency, _scrub(str(exc), secrets or {}), False)
    except Exception as exc:
        log.exception("sending an alert to %s failed unexpectedly", destination)
        latency = (time.monotonic() - started) * 1000
        return Outcome(
            False, None, latency, f"{destination}: internal error {type(exc).__name__}", True
        )
