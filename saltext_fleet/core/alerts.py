"""Alerts: what a ``fleet/alert/*`` event means, where it goes and when it is sent (pure).

The master fires ``fleet/alert/drift``, ``fleet/alert/cve``, ``fleet/alert/kvm`` and
``fleet/alert/cert`` signed (:mod:`saltext_fleet.master.eventsig`); the alert worker of the
``fleet`` engine checks the signature, turns the event into an alert with :func:`normalise`
(kind, node, subject, state, condition, severity, summary), records it
(:mod:`saltext_fleet.store.alerts`) and delivers it to the routes that match
(:meth:`Route.matches`). The decisions the store applies are made here, without a database:

- **duplicate window**: the same condition of the same (kind, node, subject) already sent to
  a route within ``dedup_minutes`` is not sent to that route again (:func:`is_duplicate`); a
  change of condition (``above`` -> ``below``) is never a duplicate;
- **flapping**: a condition that changed more than ``changes`` times within ``minutes`` gets
  one grouped alert (condition ``flapping``) instead, then nothing until it settles: until a
  later alert finds at most ``changes`` changes within the window, or nothing changed for
  ``minutes`` (:func:`flap_decision`);
- **acknowledgement**: an operator's ack holds while the condition is the one acknowledged
  (:func:`ack_decision`);
- **retries**: exponential back-off with jitter, capped, given up after some hours
  (:func:`retry_delay`, :func:`gives_up`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fnmatch
import hashlib
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from saltext_fleet.core.errors import FleetError

#: PagerDuty's severity scale, lowest first.
SEVERITIES = ("info", "warning", "error", "critical")
SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
#: The kinds of alert (``test``: a test send from the runner or the UI).
KINDS = ("drift", "cve", "kvm", "cert", "test")
STATES = ("firing", "resolved")
TAG_PREFIX = "fleet/alert/"
#: Where a route sends (the sender, :mod:`saltext_fleet.master.alertsend`, knows each).
DESTINATIONS = ("webhook", "slack", "pagerduty", "email")
#: The condition of a grouped flapping alert.
FLAPPING = "flapping"
#: Why an alert (or one route's delivery of it) was not sent.
SUPPRESSIONS = ("duplicate", "flapping", "acknowledged")
#: Vulnerability severities (OSV/CVSS) as alert severities.
CVE_SEVERITY = {
    "critical": "critical",
    "high": "error",
    "medium": "warning",
    "low": "info",
    "none": "info",
    "unknown": "warning",
}
CERT_THRESHOLDS = {"30d": "warning", "7d": "error", "1d": "critical", "expired": "critical"}
KVM_ALERTS = {
    # alert: (subject suffix, state, severity)
    "offline": ("reach", "firing", "error"),
    "online": ("reach", "resolved", "info"),
    "over_temperature": ("temp", "firing", "warning"),
    "temperature_ok": ("temp", "resolved", "info"),
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SHA1 = re.compile(r"^[0-9A-Fa-f]{40}$")


class AlertError(FleetError, ValueError):
    """An alert event or a route that cannot be used; the message names the field."""


# -- events -> alerts ------------------------------------------------------------------------


def severity_rank(severity: str) -> int:
    try:
        return SEVERITY_RANK[severity]
    except KeyError:
        raise AlertError(f"severity: {severity!r} is not one of {', '.join(SEVERITIES)}") from None


def _field(data: Mapping, name: str, kind: str, types: type | tuple, optional: bool = False):
    value = data.get(name)
    if value is None and optional:
        return None
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise AlertError(f"fleet/alert/{kind}: field {name!r} is {value!r}, not the expected kind")
    if not isinstance(value, types):
        what = "missing" if value is None else f"{type(value).__name__} {value!r:.60}"
        raise AlertError(f"fleet/alert/{kind}: field {name!r} is {what}")
    return value


def _id(data: Mapping, name: str, kind: str) -> str:
    value = _field(data, name, kind, str)
    if not value or len(value) > 255 or any(c in value for c in "\0\n\r"):
        raise AlertError(f"fleet/alert/{kind}: field {name!r} is not a node or device name")
    return value


def _number(data: Mapping, name: str, kind: str, optional: bool = False) -> float | None:
    value = _field(data, name, kind, (int, float), optional)
    return None if value is None else float(value)


def _time(value: Any, what: str) -> dt.datetime:
    if isinstance(value, dt.datetime):
        at = value
    elif isinstance(value, str):
        try:
            at = dt.datetime.fromisoformat(value)
        except ValueError:
            raise AlertError(f"{what}: {value!r:.60} is not an ISO 8601 time") from None
    else:
        raise AlertError(f"{what}: {value!r:.60} is not an ISO 8601 time")
    return at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)


def _fmt(score: float) -> str:
    return f"{score:g}"


def _drift(data: Mapping) -> dict:
    node = _id(data, "id", "drift")
    state = _field(data, "state", "drift", str)
    if state not in ("above", "below"):
        raise AlertError(f"fleet/alert/drift: field 'state' is {state!r}, not above or below")
    score = _number(data, "score", "drift")
    threshold = _number(data, "alert_score", "drift")
    baseline = data.get("baseline")
    on = f" from baseline {baseline}" if isinstance(baseline, str) and baseline else ""
    if state == "below":
        return {
            "kind": "drift",
            "node": node,
            "subject": "",
            "state": "resolved",
            "condition": "below",
            "severity": "info",
            "summary": f"{node}: drift{on} back to {_fmt(score)}, below {_fmt(threshold)}",
        }
    return {
        "kind": "drift",
        "node": node,
        "subject": "",
        "state": "firing",
        "condition": "above",
        "severity": drift_severity(score, threshold),
        "summary": f"{node}: drift{on} is {_fmt(score)}, at or above {_fmt(threshold)}",
    }


def drift_severity(score: float, threshold: float) -> str:
    """How far over the threshold: under 1.5 times ``warning``, under 3 times ``error``,
    else ``critical`` (a threshold of 0: ``warning``)."""
    if threshold <= 0:
        return "warning"
    ratio = score / threshold
    if ratio < 1.5:
        return "warning"
    if ratio < 3:
        return "error"
    return "critical"


def _cve(data: Mapping) -> dict:
    node = _id(data, "id", "cve")
    state = data.get("state", "firing")
    if state == "resolved":
        return {
            "kind": "cve",
            "node": node,
            "subject": "",
            "state": "resolved",
            "condition": "resolved",
            "severity": "info",
            "summary": f"{node}: every alerted vulnerability finding is resolved",
        }
    if state != "firing":
        raise AlertError(f"fleet/alert/cve: field 'state' is {state!r}, not firing or resolved")
    findings = _field(data, "findings", "cve", list)
    count = data.get("count", len(findings))
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise AlertError(f"fleet/alert/cve: field 'count' is {count!r}, not a count")
    worst, first = "info", None
    for n, finding in enumerate(findings):
        if not isinstance(finding, Mapping):
            raise AlertError(f"fleet/alert/cve: findings[{n}] is not a mapping")
        sev = str(finding.get("severity") or "unknown").lower()
        if sev not in CVE_SEVERITY:
            raise AlertError(f"fleet/alert/cve: findings[{n}].severity is {sev!r:.40}")
        mapped = CVE_SEVERITY[sev]
        if first is None or SEVERITY_RANK[mapped] > SEVERITY_RANK[worst]:
            worst, first = mapped, finding
    if first is None:
        raise AlertError("fleet/alert/cve: field 'findings' is empty")
    example = f"{first.get('advisory_id')} in {first.get('package')} {first.get('version')}"
    noun = "finding" if count == 1 else "findings"
    return {
        "kind": "cve",
        "node": node,
        "subject": "",
        "state": "firing",
        "condition": "open",
        "severity": worst,
        "summary": f"{node}: {count} new vulnerability {noun} (worst: {example})",
    }


def _kvm(data: Mapping) -> dict:
    device = _id(data, "id", "kvm")
    alert = _field(data, "alert", "kvm", str)
    if alert not in KVM_ALERTS:
        raise AlertError(
            f"fleet/alert/kvm: field 'alert' is {alert!r:.40}, not one of {', '.join(KVM_ALERTS)}"
        )
    suffix, state, severity = KVM_ALERTS[alert]
    node = data.get("node")
    if node is not None:
        node = _id(data, "node", "kvm")
    what = {
        "offline": "is offline",
        "online": "is back online",
        "over_temperature": "is over temperature",
        "temperature_ok": "is back to a normal temperature",
    }[alert]
    poll = data.get("poll") if isinstance(data.get("poll"), Mapping) else {}
    temp = poll.get("temperature")
    if alert in ("over_temperature", "temperature_ok") and isinstance(temp, (int, float)):
        what += f" ({temp:g} °C)"
    on = f" (KVM of {node})" if node and node != device else ""
    return {
        "kind": "kvm",
        "node": node or device,
        "subject": f"{device}:{suffix}",
        "state": state,
        "condition": alert,
        "severity": severity,
        "summary": f"PiKVM {device}{on} {what}",
    }


def _cert(data: Mapping) -> dict:
    node = _id(data, "id", "cert")
    sha1 = _field(data, "sha1", "cert", str)
    if not _SHA1.match(sha1):
        raise AlertError(f"fleet/alert/cert: field 'sha1' is {sha1!r:.60}, not a SHA-1 in hex")
    threshold = _field(data, "threshold", "cert", str)
    if threshold not in CERT_THRESHOLDS:
        raise AlertError(
            f"fleet/alert/cert: field 'threshold' is {threshold!r:.20}, "
            f"not one of {', '.join(CERT_THRESHOLDS)}"
        )
    name = data.get("name") if isinstance(data.get("name"), str) else sha1
    days = data.get("days_left")
    if threshold == "expired":
        what = "has expired"
    elif isinstance(days, (int, float)) and not isinstance(days, bool):
        what = f"expires in {days:g} day{'s' if days != 1 else ''}"
    else:
        what = f"expires within {threshold[:-1]} day{'s' if threshold != '1d' else ''}"
    return {
        "kind": "cert",
        "node": node,
        "subject": sha1.upper(),  # as the certificates page and cert_alerts keep it
        "state": "firing",
        "condition": threshold,
        "severity": CERT_THRESHOLDS[threshold],
        "summary": f"{node}: signing certificate {name} {what}",
    }


def _test(data: Mapping) -> dict:
    route = data.get("route") if isinstance(data.get("route"), str) else "?"
    return {
        "kind": "test",
        "node": None,
        "subject": route,
        "state": "firing",
        "condition": "test",
        "severity": "info",
        "summary": f"test alert from saltext-fleet to route {route}",
    }


_KINDS = {"drift": _drift, "cve": _cve, "kvm": _kvm, "cert": _cert, "test": _test}


def normalise(tag: Any, data: Any, now: dt.datetime | None = None) -> dict[str, Any]:
    """The alert an event stands for: ``{"kind", "node", "subject", "state", "condition",
    "severity", "summary", "raised_at", "tag", "data"}`` (``data`` without its signature and
    Salt's ``_stamp``; ``raised_at`` the event's own ``raised_at`` when it has one, else
    ``now``). Raises :class:`AlertError` naming the field that is wrong."""
    if not isinstance(tag, str) or not tag.startswith(TAG_PREFIX):
        raise AlertError(f"tag: {str(tag)[:80]!r} is not a {TAG_PREFIX}<kind> tag")
    kind = tag[len(TAG_PREFIX) :]
    if kind not in _KINDS:
        raise AlertError(f"tag: {tag[:80]!r} is not one of {TAG_PREFIX}{{{','.join(_KINDS)}}}")
    if not isinstance(data, Mapping):
        raise AlertError(f"{tag}: the event's data is not a mapping")
    out = _KINDS[kind](data)
    raised = data.get("raised_at")
    if raised is not None:
        out["raised_at"] = _time(raised, f"{tag}: field 'raised_at'")
    else:
        out["raised_at"] = now or dt.datetime.now(dt.timezone.utc)
    out["tag"] = tag
    out["data"] = {k: v for k, v in data.items() if k not in ("sig", "_stamp")}
    return out


def dedup_key(kind: str, node: str | None, subject: str) -> str:
    """Stable per condition (PagerDuty's ``dedup_key``): a resolve closes the trigger."""
    return f"fleet:{kind}:{node or ''}:{subject or ''}"


def event_key(tag: str, data: Mapping) -> str:
    """The key that makes one event one alert: from the master's signature of it (a replayed
    event has the same one), 64 hex characters."""
    sig = data.get("sig")
    if not isinstance(sig, str) or not sig:
        raise AlertError(f"{tag}: the event carries no signature (field 'sig')")
    return hashlib.sha256(f"{tag}\n{sig}".encode()).hexdigest()


def record(row: Mapping[str, Any], ui_url: str | None = None) -> dict[str, Any]:
    """The alert record senders and pages get (the contract's shape) from a stored alert's
    fields (``id``, ``kind``, ``node``, ``subject``, ``state``, ``condition``, ``severity``,
    ``summary``, ``raised_at``, ``tag``, ``master``, ``data``)."""
    raised = row.get("raised_at")
    if isinstance(raised, dt.datetime):
        raised = (raised if raised.tzinfo else raised.replace(tzinfo=dt.timezone.utc)).isoformat()
    node = row.get("node")
    url = None
    if ui_url:
        base = ui_url.rstrip("/")
        url = f"{base}/nodes/{node}" if node else f"{base}/alerts"
    return {
        "id": row.get("id"),
        "kind": row["kind"],
        "node": node,
        "subject": row.get("subject") or "",
        "state": row["state"],
        "condition": row["condition"],
        "severity": row["severity"],
        "summary": row["summary"],
        "raised_at": raised,
        "tag": row.get("tag") or f"{TAG_PREFIX}{row['kind']}",
        "master": row.get("master"),
        "dedup_key": dedup_key(row["kind"], node, row.get("subject") or ""),
        "flapping": row["condition"] == FLAPPING,
        "url": url,
        "data": dict(row.get("data") or {}),
    }


# -- routes ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Route:
    """Where alerts go: ``key`` is ``config:<name>`` or ``ui:<name>``; ``target`` never
    holds a secret (those are in the vault, scope ``alert``, owner ``key``)."""

    name: str
    source: str  # "config" | "ui"
    destination: str
    target: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    kinds: tuple[str, ...] = ()  # empty: every kind
    min_severity: str = "info"
    group: str | None = None
    node: str | None = None  # a glob
    enabled: bool = True

    @property
    def key(self) -> str:
        return f"{self.source}:{self.name}"

    def match_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"min_severity": self.min_severity}
        if self.kinds:
            out["kinds"] = list(self.kinds)
        if self.group:
            out["group"] = self.group
        if self.node:
            out["node"] = self.node
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "source": self.source,
            "destination": self.destination,
            "match": self.match_dict(),
            "target": dict(self.target),
            "enabled": self.enabled,
        }

    def matches(self, alert: Mapping[str, Any], group: str | None = None) -> bool:
        """Whether this route takes ``alert`` (a record or :func:`normalise`'s result) of a
        node in node group ``group``. A test alert goes only where it is sent by name."""
        if not self.enabled or alert["kind"] == "test":
            return False
        if self.kinds and alert["kind"] not in self.kinds:
            return False
        if SEVERITY_RANK.get(alert["severity"], 0) < SEVERITY_RANK[self.min_severity]:
            # a resolve goes wherever its trigger went: it is sent at any severity
            if alert["state"] != "resolved":
                return False
        node = alert.get("node")
        if self.group is not None and (node is None or group != self.group):
            return False
        return not (
            self.node is not None and (node is None or not fnmatch.fnmatchcase(node, self.node))
        )


def check_route_name(name: Any, what: str = "name") -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise AlertError(
            f"{what}: {str(name)[:80]!r} is not a route name (letters, digits, '_', '.', '-'; "
            "up to 64, starting with a letter or digit)"
        )
    return name


def check_glob(pattern: Any, what: str) -> str:
    """A node glob (``*``, ``?``, ``[...]``): a bracket left open is refused."""
    if not isinstance(pattern, str) or not pattern or len(pattern) > 255:
        raise AlertError(f"{what}: {pattern!r:.80} is not a node glob")
    at = pattern.find("[")
    while at >= 0:
        close = pattern.find("]", at + 2)
        if close < 0:
            raise AlertError(f"{what}: {pattern!r:.80} has a '[' that is never closed")
        at = pattern.find("[", close + 1)
    try:
        re.compile(fnmatch.translate(pattern))
    except re.error as exc:
        raise AlertError(f"{what}: {pattern!r:.80} is not a glob ({exc})") from None
    return pattern


def parse_match(raw: Any, what: str = "match") -> dict[str, Any]:
    """Check a route's ``match``: ``{kinds, min_severity, group, node}``; the checked values
    as :class:`Route` fields. Raises :class:`AlertError` naming the option."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise AlertError(f"{what}: expected a mapping, got {type(raw).__name__}")
    for key in raw:
        if key not in ("kinds", "min_severity", "group", "node"):
            raise AlertError(
                f"{what}:{key}: unknown option (known: kinds, min_severity, group, node)"
            )
    kinds = raw.get("kinds") or ()
    if isinstance(kinds, str):
        kinds = [k.strip() for k in kinds.split(",") if k.strip()]
    if not isinstance(kinds, (list, tuple)):
        raise AlertError(f"{what}:kinds: expected a list of kinds, got {kinds!r:.80}")
    for kind in kinds:
        if kind not in KINDS or kind == "test":
            known = ", ".join(k for k in KINDS if k != "test")
            raise AlertError(f"{what}:kinds: {kind!r:.40} is not one of {known}")
    severity = raw.get("min_severity") or "info"
    if severity not in SEVERITIES:
        raise AlertError(
            f"{what}:min_severity: {severity!r:.40} is not one of {', '.join(SEVERITIES)}"
        )
    group = raw.get("group")
    if group is not None and (not isinstance(group, str) or not _NAME.match(group)):
        raise AlertError(f"{what}:group: {group!r:.80} is not a node group name")
    node = raw.get("node")
    if node is not None:
        node = check_glob(node, f"{what}:node")
    return {
        "kinds": tuple(dict.fromkeys(kinds)),
        "min_severity": severity,
        "group": group or None,
        "node": node,
    }


#: Target keys that look like secrets: a route's target must not hold one (the vault does).
SECRET_LIKE = re.compile(
    r"(secret|password|passwd|token|routing_key|api_key|apikey|hmac|private)", re.I
)


def check_no_inline_secret(target: Mapping[str, Any], what: str) -> None:
    """Refuse a target that carries a secret: a key named like one, credentials in a URL."""
    for key, value in target.items():
        if SECRET_LIKE.search(str(key)):
            raise AlertError(
                f"{what}:{key}: a secret does not go into a route's target; store it in the "
                "vault (salt-run fleet.alert_secret route=... name=... value=...)"
            )
        if isinstance(value, str) and re.match(r"^[a-z][a-z0-9+.-]*://[^/@\s]*:[^/@\s]*@", value):
            raise AlertError(
                f"{what}:{key}: the URL carries a password; store secrets in the vault "
                "(salt-run fleet.alert_secret)"
            )
        if key == "url" and isinstance(value, str) and "hooks.slack.com/services/" in value:
            raise AlertError(
                f"{what}:{key}: a Slack incoming-webhook URL is a secret; store it as the "
                "route's secret 'url' (salt-run fleet.alert_secret)"
            )


def route_of(
    name: Any,
    source: str,
    destination: Any,
    match: Any,
    target: Any,
    enabled: Any = True,
    destinations: Sequence[str] = DESTINATIONS,
    what: str = "route",
) -> Route:
    """A checked :class:`Route`; :class:`AlertError` names the option that is wrong."""
    name = check_route_name(name, f"{what}:name")
    if source not in ("config", "ui"):
        raise AlertError(f"{what}: source {source!r} is not config or ui")
    if not isinstance(destination, str) or destination not in destinations:
        raise AlertError(
            f"{what}:destination: {destination!r:.40} is not one of {', '.join(destinations)}"
        )
    fields = parse_match(match, f"{what}:match")
    if target is None:
        target = {}
    if not isinstance(target, Mapping):
        raise AlertError(f"{what}:target: expected a mapping, got {type(target).__name__}")
    check_no_inline_secret(target, f"{what}:target")
    if not isinstance(enabled, bool):
        raise AlertError(f"{what}:enabled: {enabled!r:.20} is not true or false")
    return Route(
        name=name,
        source=source,
        destination=destination,
        target=dict(target),
        enabled=enabled,
        **fields,
    )


# -- policy and decisions --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Policy:
    """The ``fleet:alerts`` timings (see the configuration page)."""

    dedup_minutes: float = 15.0
    flap_changes: int = 3
    flap_minutes: float = 30.0
    retry_first_s: float = 2.0
    retry_max_s: float = 300.0
    give_up_after_h: float = 24.0


def _aware(at: dt.datetime) -> dt.datetime:
    return at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)


def is_duplicate(
    last: Mapping[str, Any] | None, condition: str, now: dt.datetime, minutes: float
) -> bool:
    """Whether a route already got ``condition`` within ``minutes`` of ``now``: ``last`` is
    the route's entry of a condition's ``last_sent``, ``{"at": ISO time, "condition"}``."""
    if not last or minutes <= 0 or last.get("condition") != condition:
        return False
    try:
        at = _time(last.get("at"), "last_sent")
    except AlertError:
        return False
    return now - at < dt.timedelta(minutes=minutes)


@dataclasses.dataclass(frozen=True)
class Flap:
    """What :func:`flap_decision` decided. ``verdict``: ``None`` (deliver as usual),
    ``"start"`` (send one grouped flapping alert instead), ``"quiet"`` (flapping: record,
    do not send), ``"settled"`` (it was flapping and has calmed down: deliver as usual).
    ``changes``: the change times to keep; ``flapping``: whether it is flapping afterwards."""

    verdict: str | None
    changes: tuple[str, ...]
    flapping: bool


def flap_decision(
    changes: Iterable[str],
    changed: bool,
    flapping: bool,
    now: dt.datetime,
    limit: int,
    minutes: float,
) -> Flap:
    """Flapping: more than ``limit`` condition changes within ``minutes``. ``changes`` are
    the ISO times of earlier changes; ``changed`` whether this alert changes the condition;
    ``flapping`` whether it was flapping. A ``limit`` of 0 turns it off."""
    window = dt.timedelta(minutes=minutes)
    kept = []
    for text in changes:
        try:
            at = _time(text, "changes")
        except AlertError:
            continue
        if now - at < window:
            kept.append(at)
    if changed:
        kept.append(now)
    kept.sort()
    times = tuple(at.isoformat() for at in kept[-(max(limit, 0) + 1) * 4 :])
    if limit <= 0:
        return Flap(None, times, False)
    if len(kept) > limit:
        return Flap("quiet" if flapping else "start", times, True)
    if flapping:
        return Flap("settled", times, False)
    return Flap(None, times, False)


def settled(changes: Iterable[str], now: dt.datetime, minutes: float) -> bool:
    """A flapping condition whose last change is ``minutes`` old or older has settled."""
    last = None
    for text in changes:
        try:
            at = _time(text, "changes")
        except AlertError:
            continue
        last = at if last is None or at > last else last
    return last is None or now - last >= dt.timedelta(minutes=minutes)


def ack_decision(acked_condition: str | None, condition: str) -> str | None:
    """``"suppress"`` while the acknowledged condition holds, ``"clear"`` when the
    condition changed since the ack, None with no ack."""
    if acked_condition is None:
        return None
    return "suppress" if acked_condition == condition else "clear"


def retry_delay(
    attempts: int,
    first_s: float,
    max_s: float,
    rand: random.Random | None = None,
    jitter: float = 0.2,
) -> float:
    """Seconds before attempt ``attempts + 1``: ``first_s * 2 ** (attempts - 1)``, capped at
    ``max_s``, times a random factor within ``1 ± jitter`` (so several masters and routes
    do not retry in step), never above ``max_s``."""
    attempts = max(1, int(attempts))
    base = min(max_s, first_s * (2.0 ** min(attempts - 1, 60)))
    rand = rand or random
    return max(0.0, min(max_s, base * (1 + rand.uniform(-jitter, jitter))))


def gives_up(created_at: dt.datetime, now: dt.datetime, hours: float) -> bool:
    """Whether a delivery made at ``created_at`` has been retried long enough."""
    return now - _aware(created_at) >= dt.timedelta(hours=hours)


def flapping_alert(alert: Mapping[str, Any], changes: Sequence[str], minutes: float) -> dict:
    """The one grouped alert sent instead of the change that made a condition flap."""
    what = f"{alert['kind']} {alert['subject']}".strip() if alert.get("subject") else alert["kind"]
    sev = alert["severity"]
    if SEVERITY_RANK.get(sev, 0) < SEVERITY_RANK["warning"]:
        sev = "warning"
    return {
        **alert,
        "state": "firing",
        "condition": FLAPPING,
        "severity": sev,
        "summary": (
            f"{alert.get('node') or '-'}: {what} is flapping: {len(changes)} changes in "
            f"{minutes:g} minutes (now {alert['condition']}); quiet until it settles"
        ),
        "data": {
            **dict(alert.get("data") or {}),
            "flapping": {"changes": list(changes), "minutes": minutes, "now": alert["condition"]},
        },
    }
