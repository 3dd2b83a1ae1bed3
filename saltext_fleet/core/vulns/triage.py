"""Triage: what an operator decided about an advisory, where it holds, and how it reads as
CycloneDX VEX.

A decision is about one advisory, for one node, a node group or the whole fleet (``scope``
``node`` | ``group`` | ``fleet``, ``target`` the minion id, the group name, or None), for one
package or any package the advisory hits there. Its ``state`` is one of:

``not_affected``
    The finding does not apply here, for a reason named by one of CycloneDX 1.6's
    justifications (:data:`JUSTIFICATIONS`): required.
``accepted``
    The risk is accepted until ``expires_at`` (required, in the future when decided): then
    the finding counts as open again.
``will_fix``
    A fix is planned; ``expires_at`` optional (a deadline after which the finding is open
    again).

A decision is *live* while it is not revoked and has not expired. Of the live decisions that
cover a finding, the most specific applies (:func:`applying`): a node's before its group's
before the fleet's, and, at the same scope, one for the finding's package before one for any
package; between equals the newest wins. A finding with an applying decision is *triaged*:
it stays visible but raises no alert and does not count in the open total.

VEX (:func:`vex_analysis`). CycloneDX 1.6's ``impactAnalysisState`` is one of
``resolved``, ``resolved_with_pedigree``, ``exploitable``, ``in_triage``,
``false_positive``, ``not_affected``; ``response`` a list of ``can_not_fix``,
``will_not_fix``, ``update``, ``rollback``, ``workaround_available``:

================  =====================  ======================  ===========================
decision          analysis ``state``     ``justification``       ``response``
================  =====================  ======================  ===========================
not_affected      ``not_affected``       the decision's          (none)
accepted          ``exploitable``        (none)                  ``["will_not_fix"]``
will_fix          ``exploitable``        (none)                  ``["update"]``
================  =====================  ======================  ===========================

``accepted`` and ``will_fix`` both say "the vulnerable code is here" (CSAF's
``known_affected``, which CycloneDX calls ``exploitable``); the response tells them apart:
the risk is accepted (no fix planned), or the component will be updated. An open, untriaged
finding is ``in_triage``.

Pure module: no Salt, no database.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterable
from typing import Any

from saltext_fleet.core import gate as core_gate
from saltext_fleet.core.errors import FleetError

STATES = ("not_affected", "accepted", "will_fix")
#: CycloneDX 1.6 ``impactAnalysisJustification``: why a component is not affected.
JUSTIFICATIONS = (
    "code_not_present",
    "code_not_reachable",
    "requires_configuration",
    "requires_dependency",
    "requires_environment",
    "protected_by_compiler",
    "protected_at_runtime",
    "protected_at_perimeter",
    "protected_by_mitigating_control",
)
#: Scopes, most specific first.
SCOPES = ("node", "group", "fleet")
#: CycloneDX 1.6 ``impactAnalysisState`` and ``impactAnalysisResponse``.
VEX_STATES = (
    "resolved",
    "resolved_with_pedigree",
    "exploitable",
    "in_triage",
    "false_positive",
    "not_affected",
)
VEX_RESPONSES = ("can_not_fix", "will_not_fix", "update", "rollback", "workaround_available")
#: decision state -> (VEX state, VEX response)
VEX_OF = {
    "not_affected": ("not_affected", ()),
    "accepted": ("exploitable", ("will_not_fix",)),
    "will_fix": ("exploitable", ("update",)),
}
#: What an untriaged open finding is in VEX.
UNTRIAGED_VEX_STATE = "in_triage"

ADVISORY_ID_MAX = 128
#: OSV ids: ``GHSA-...``, ``PYSEC-2021-1``, ``CVE-2024-1``, ``DSA-5000-1``,
#: ``RHSA-2023:1234``, ``DEBIAN-CVE-...``.
ADVISORY_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}")
PACKAGE_MAX = 512
DETAIL_MAX = 2000
#: The latest expiry a decision may have.
MAX_EXPIRY = dt.timedelta(days=3 * 366)


class TriageError(FleetError, ValueError):
    """A triage decision that cannot be made: the message names the field and why."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclasses.dataclass(frozen=True)
class Decision:
    """One decision, as checked by :func:`check` (or read back from the store)."""

    advisory_id: str
    state: str
    scope: str
    target: str | None = None
    package: str | None = None
    justification: str | None = None
    detail: str = ""
    expires_at: dt.datetime | None = None
    id: int | None = None
    decided_by: str | None = None
    decided_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None
    revoked_by: str | None = None

    def live(self, now: dt.datetime) -> bool:
        """Not revoked and not expired at ``now``."""
        return is_live(self.revoked_at, self.expires_at, now)

    def covers(self, minion_id: str, group: str | None, package: str) -> bool:
        """Whether this decision is about a finding of ``package`` on ``minion_id`` (a member
        of ``group``), live or not."""
        if self.package is not None and self.package != package:
            return False
        if self.scope == "node":
            return self.target == minion_id
        if self.scope == "group":
            return group is not None and self.target == group
        return self.scope == "fleet"

    def rank(self) -> int:
        """How specific it is: higher wins (see :func:`rank`)."""
        return rank(self.scope, self.package is not None)


def _aware(at: dt.datetime) -> dt.datetime:
    return at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)


def is_live(
    revoked_at: dt.datetime | None, expires_at: dt.datetime | None, now: dt.datetime
) -> bool:
    """A decision holds at ``now``: not revoked, and not expired (``expires_at`` is the
    first moment it no longer holds)."""
    if revoked_at is not None:
        return False
    return expires_at is None or _aware(expires_at) > _aware(now)


def rank(scope: str, has_package: bool) -> int:
    """Specificity: node 6, group 4, fleet 2, plus 1 for a decision on one package (so a
    node's decision for any package beats its group's for that package)."""
    base = {"node": 6, "group": 4, "fleet": 2}[scope]
    return base + (1 if has_package else 0)


def applying(
    decisions: Iterable[Decision],
    minion_id: str,
    group: str | None,
    package: str,
    now: dt.datetime,
    advisory_id: str | None = None,
) -> Decision | None:
    """The decision that applies to a finding of ``package`` on ``minion_id`` (member of
    ``group``): the most specific live one that covers it, the newest of equals; None when
    none does (the finding is open). ``advisory_id``: only decisions about it."""
    best: Decision | None = None
    best_key: tuple = ()
    for decision in decisions:
        if advisory_id is not None and decision.advisory_id != advisory_id:
            continue
        if not decision.live(now) or not decision.covers(minion_id, group, package):
            continue
        decided = (
            _aware(decision.decided_at)
            if decision.decided_at
            else dt.datetime.min.replace(tzinfo=dt.timezone.utc)
        )
        key = (decision.rank(), decided, decision.id or 0)
        if best is None or key > best_key:
            best, best_key = decision, key
    return best


# -- checking a decision -----------------------------------------------------------------------


def check_advisory_id(value: Any, field: str = "advisory") -> str:
    """``value`` when it looks like an OSV id; :class:`TriageError` otherwise."""
    if not isinstance(value, str) or not value:
        raise TriageError(field, "an advisory id (such as GHSA-..., PYSEC-..., CVE-...) is needed")
    if len(value) > ADVISORY_ID_MAX or not ADVISORY_ID_RE.fullmatch(value):
        raise TriageError(
            field,
            f"{value[:60]!r} is not an advisory id (letters, digits and . _ : + -, "
            f"at most {ADVISORY_ID_MAX})",
        )
    return value


def check_state(value: Any) -> str:
    if value not in STATES:
        raise TriageError("state", f"{str(value)[:40]!r} is not one of {', '.join(STATES)}")
    return value


def check_package(value: Any) -> str | None:
    """A package name, or None (any package)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise TriageError("package", f"a package name is text, not {type(value).__name__}")
    if len(value) > PACKAGE_MAX or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise TriageError("package", f"{value[:60]!r} is not a package name")
    return value


def scope_of(node: Any = None, group: Any = None, fleet: Any = False) -> tuple[str, str | None]:
    """``(scope, target)`` from exactly one of ``node=<minion id>``, ``group=<name>`` or
    ``fleet=True``; the id checked with the gate's rule, the group with the node groups'."""
    given = [name for name, value in (("node", node), ("group", group), ("fleet", fleet)) if value]
    if len(given) != 1:
        raise TriageError(
            "scope",
            "say where the decision holds: exactly one of node=<minion id>, group=<group>, "
            f"fleet=True (given: {', '.join(given) or 'none'})",
        )
    if node:
        try:
            return "node", core_gate.check_minion_id(node, "node")
        except core_gate.GateError as exc:
            raise TriageError("node", str(exc).split(": ", 1)[-1]) from exc
    if group:
        try:
            return "group", core_gate.check_group(group, "group")
        except core_gate.GateError as exc:
            raise TriageError("group", str(exc).split(": ", 1)[-1]) from exc
    if fleet is not True and str(fleet).lower() not in ("true", "yes", "1", "on"):
        raise TriageError("fleet", f"fleet=True for the whole fleet, not {str(fleet)[:20]!r}")
    return "fleet", None


def check_target(scope: Any, target: Any) -> tuple[str, str | None]:
    """``(scope, target)`` as stored: a node's minion id, a group's name, None for the fleet."""
    if scope == "node":
        return scope_of(node=target or None)
    if scope == "group":
        return scope_of(group=target or None)
    if scope == "fleet":
        if target not in (None, ""):
            raise TriageError("target", "a decision for the whole fleet has no target")
        return "fleet", None
    raise TriageError("scope", f"{str(scope)[:40]!r} is not one of {', '.join(SCOPES)}")


def parse_expiry(value: Any, now: dt.datetime, field: str = "expires") -> dt.datetime | None:
    """An expiry: ``YYYY-MM-DD`` (the decision holds until that day begins, 00:00 UTC), an
    ISO time with its zone, or a datetime; None for none. It must be after ``now`` and at
    most :data:`MAX_EXPIRY` ahead."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        at = _aware(value)
    elif isinstance(value, dt.date):
        at = dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc)
    elif isinstance(value, str):
        text = value.strip()
        try:
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
                day = dt.date.fromisoformat(text)
                at = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
            else:
                at = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise TriageError(
                field, f"{text[:40]!r} is not a date (YYYY-MM-DD) or an ISO time"
            ) from exc
        if at.tzinfo is None:
            raise TriageError(field, f"{text[:40]!r} has no time zone (add Z or +00:00)")
    else:
        raise TriageError(field, f"a date (YYYY-MM-DD), not {type(value).__name__}")
    at = at.astimezone(dt.timezone.utc)
    now = _aware(now)
    if at <= now:
        raise TriageError(
            field, f"{at.date().isoformat()} is not in the future (a decision expires later)"
        )
    if at - now > MAX_EXPIRY:
        raise TriageError(field, f"at most {MAX_EXPIRY.days} days ahead")
    return at


def check(
    advisory_id: Any,
    state: Any,
    scope: Any,
    target: Any = None,
    *,
    now: dt.datetime,
    package: Any = None,
    justification: Any = None,
    detail: Any = "",
    expires: Any = None,
) -> Decision:
    """A new decision, every rule checked (:class:`TriageError` names the first broken one):

    - ``not_affected`` needs one of :data:`JUSTIFICATIONS`; the others take none;
    - ``accepted`` needs ``expires`` (in the future); ``will_fix`` may have one;
      ``not_affected`` may have one too (to look at it again);
    - ``scope``/``target``: :func:`check_target`; ``package``: :func:`check_package`;
    - ``detail``: text, at most :data:`DETAIL_MAX` characters.
    """
    advisory_id = check_advisory_id(advisory_id)
    state = check_state(state)
    scope, target = check_target(scope, target)
    package = check_package(package)
    if justification in ("", None):
        justification = None
    if state == "not_affected":
        if justification is None:
            raise TriageError(
                "justification",
                f"not_affected needs a justification: one of {', '.join(JUSTIFICATIONS)}",
            )
        if justification not in JUSTIFICATIONS:
            raise TriageError(
                "justification",
                f"{str(justification)[:40]!r} is not one of {', '.join(JUSTIFICATIONS)}",
            )
    elif justification is not None:
        raise TriageError("justification", f"only not_affected takes a justification ({state})")
    if detail is None:
        detail = ""
    if not isinstance(detail, str):
        raise TriageError("detail", f"text, not {type(detail).__name__}")
    if len(detail) > DETAIL_MAX:
        raise TriageError("detail", f"at most {DETAIL_MAX} characters ({len(detail)})")
    if "\0" in detail:
        raise TriageError("detail", "no NUL characters")
    expires_at = parse_expiry(expires, now)
    if state == "accepted" and expires_at is None:
        raise TriageError(
            "expires", "accepted needs an expiry date (YYYY-MM-DD): a risk is accepted until then"
        )
    return Decision(
        advisory_id=advisory_id,
        state=state,
        scope=scope,
        target=target,
        package=package,
        justification=justification,
        detail=detail,
        expires_at=expires_at,
    )


# -- VEX ---------------------------------------------------------------------------------------


def vex_analysis(decision: Decision | None) -> dict[str, Any]:
    """The CycloneDX analysis of a finding under ``decision`` (None: untriaged):
    ``{"state", "justification", "responses", "detail"}``."""
    if decision is None:
        return {
            "state": UNTRIAGED_VEX_STATE,
            "justification": None,
            "responses": [],
            "detail": "",
        }
    state, response = VEX_OF[decision.state]
    return {
        "state": state,
        "justification": decision.justification if decision.state == "not_affected" else None,
        "responses": list(response),
        "detail": decision.detail or "",
    }


def describe(decision: Decision) -> str:
    """One line for people: ``not_affected (code_not_present) for group builders, package
    requests, until 2027-01-01``."""
    where = {"node": "node", "group": "group", "fleet": "the fleet"}[decision.scope]
    text = decision.state
    if decision.justification:
        text += f" ({decision.justification})"
    text += f" for {where}" + (f" {decision.target}" if decision.target else "")
    if decision.package:
        text += f", package {decision.package}"
    if decision.expires_at is not None:
        text += f", until {_aware(decision.expires_at).date().isoformat()}"
    return text
