"""How severe an advisory is: the highest CVSS base score of its vectors, and its bucket.

An OSV record carries CVSS vectors in its ``severity`` list and in each ``affected[]`` entry's
(``{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/..."}``). The base score of each vector is
computed by the maintained ``cvss`` library (its ``CVSS3`` class for CVSS 3.0 and 3.1 vectors,
``CVSS4`` for 4.0), never by hand; the advisory's score is the highest of them, and its severity
the bucket that score falls in (:func:`bucket`, the CVSS v3/v4 qualitative scale):

=========  ===============
critical   9.0 - 10.0
high       7.0 - 8.9
medium     4.0 - 6.9
low        0.1 - 3.9
none       0.0
unknown    no CVSS v3/v4 vector that could be scored
=========  ===============

A vector is recognised by its own prefix (``CVSS:3.0/``, ``CVSS:3.1/``, ``CVSS:4.0/``), whatever
``type`` the record gives it. CVSS v2 vectors and the other types (``Ubuntu``'s words) are not
scored. A vector the library refuses is a note in :attr:`Assessment.notes`, never an error: the
advisory is still imported and matched, with the score of its other vectors or ``unknown``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from cvss import CVSS3, CVSS4
from cvss.exceptions import CVSSError

from saltext_fleet.core.errors import FleetError
from saltext_fleet.core.vulns import model

#: Severities from the most to the least severe; ``unknown`` last.
SEVERITIES = ("critical", "high", "medium", "low", "none", "unknown")

#: ``severity -> rank`` (0 = critical): for sorting and "at or above" filters.
RANK = {name: rank for rank, name in enumerate(SEVERITIES)}

#: Longest vector given to the library (a real CVSS 4.0 vector with every metric is ~300).
MAX_VECTOR_CHARS = 1024

_CLASSES = (("CVSS:3.0/", CVSS3), ("CVSS:3.1/", CVSS3), ("CVSS:4.0/", CVSS4))


class SeverityError(FleetError, ValueError):
    """A CVSS vector that cannot be scored; the message quotes it and says why."""


@dataclasses.dataclass(frozen=True, slots=True)
class Assessment:
    """The highest base ``score`` of an advisory's CVSS vectors (None: none could be scored),
    its ``severity`` bucket, the ``vector`` that gave it, and ``notes`` on vectors that
    could not be scored."""

    score: float | None
    severity: str
    vector: str | None = None
    notes: tuple[str, ...] = ()


UNKNOWN = Assessment(None, "unknown")


def bucket(score: float | None) -> str:
    """The severity a CVSS base score falls in (None -> ``unknown``)."""
    if score is None:
        return "unknown"
    if score >= 9.0:
        return "critical"
    if score >= 7.0:
        return "high"
    if score >= 4.0:
        return "medium"
    if score > 0.0:
        return "low"
    return "none"


def is_cvss(vector: str) -> bool:
    """Whether ``vector`` is a CVSS v3 or v4 vector this module scores (by its prefix)."""
    return isinstance(vector, str) and vector.startswith(tuple(p for p, _ in _CLASSES))


def score_vector(vector: str) -> float:
    """The base score of a CVSS 3.0/3.1/4.0 ``vector``, computed by the ``cvss`` library.
    Raises :class:`SeverityError` quoting the vector when it is not one or is malformed."""
    if not isinstance(vector, str):
        raise SeverityError(f"a CVSS vector must be text, got {type(vector).__name__}")
    shown = vector if len(vector) <= 120 else vector[:117] + "..."
    if len(vector) > MAX_VECTOR_CHARS:
        raise SeverityError(f"CVSS vector {shown!r} is longer than {MAX_VECTOR_CHARS} characters")
    cls = next((cls for prefix, cls in _CLASSES if vector.startswith(prefix)), None)
    if cls is None:
        raise SeverityError(f"{shown!r} is not a CVSS 3.0, 3.1 or 4.0 vector")
    try:
        score = cls(vector).base_score
    # CVSSError: what the library raises for a malformed vector; the others are what a parser
    # may still trip over on hostile text (a metric it splits wrongly), never a crash here
    except (CVSSError, ValueError, KeyError, IndexError, TypeError, ArithmeticError) as exc:
        raise SeverityError(f"CVSS vector {shown!r} is not valid: {exc}") from exc
    return round(float(score), 1)


def assess(entries: Iterable[model.Severity]) -> Assessment:
    """The highest-scoring CVSS v3/v4 vector among ``entries`` (OSV ``severity`` entries).
    Entries that are not CVSS v3/v4 (v2, ``Ubuntu``) are passed over; malformed vectors are
    noted."""
    best: tuple[float, str] | None = None
    notes: list[str] = []
    for entry in entries:
        vector = entry.score
        if not is_cvss(vector):
            if entry.type in ("CVSS_V3", "CVSS_V4"):
                notes.append(f"{entry.type} {str(vector)[:120]!r} is not a CVSS v3/v4 vector")
            continue
        try:
            score = score_vector(vector)
        except SeverityError as exc:
            notes.append(str(exc))
            continue
        if best is None or score > best[0]:
            best = (score, vector)
    if best is None:
        return Assessment(None, "unknown", None, tuple(notes))
    return Assessment(best[0], bucket(best[0]), best[1], tuple(notes))


def of_advisory(advisory: model.Advisory, affected: model.Affected | None = None) -> Assessment:
    """An advisory's assessment: from the record's ``severity`` and every ``affected[]``
    entry's, or (``affected`` given) the record's and that one entry's."""
    entries = list(advisory.severity)
    for item in (affected,) if affected is not None else advisory.affected:
        entries.extend(item.severity)
    return assess(entries)
