"""CVSS base scores and severity buckets (``core/vulns/severity.py``), computed by the ``cvss``
library: vectors quoted from real advisories, CVSS 4.0 vectors, and bad vectors (a note,
never a crash)."""

from __future__ import annotations

import datetime as dt

import pytest

from saltext_fleet.core.vulns import model, severity

V3 = "CVSS_V3"
V4 = "CVSS_V4"


@pytest.mark.parametrize(
    ("record", "vector", "score", "bucket"),
    [
        # the real PyPI records of ../shared/data/osv-pypi (scores as NVD publishes them)
        ("PYSEC-2024-24 (aiohttp, CVE-2024-23334)", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N", 7.5, "high"),
        ("PYSEC-2023-246 (aiohttp, CVE-2023-47627)", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:H/A:N", 7.5, "high"),
        ("PYSEC-2017-108 (apache-atlas, CVE-2017-3152)", "CVSS:3.0/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1, "medium"),
        ("PYSEC-2024-6 (cdo-local-uuid, CVE-2024-22194)", "CVSS:3.1/AV:L/AC:L/PR:L/UI:R/S:U/C:L/I:N/A:N", 2.8, "low"),
        ("31 records of the data set", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8, "critical"),
        # CVSS 4.0 (the PyPI data set has no v4 vector; GitHub's advisories carry them): the
        # specification's calculator gives these
        ("CVSS 4.0", "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N", 9.3, "critical"),
        ("CVSS 4.0", "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:H/SI:H/SA:H", 10.0, "critical"),
        ("CVSS 4.0", "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:N/VI:N/VA:N/SC:N/SI:N/SA:N", 0.0, "none"),
    ],
)  # fmt: skip
def test_real_vectors_score_as_published(record, vector, score, bucket):
    assert severity.score_vector(vector) == score, record
    kind = V4 if vector.startswith("CVSS:4") else V3
    assessed = severity.assess([model.Severity(kind, vector)])
    assert assessed == severity.Assessment(score, bucket, vector, ())


@pytest.mark.parametrize(
    ("score", "bucket"),
    [(None, "unknown"), (0.0, "none"), (0.1, "low"), (3.9, "low"), (4.0, "medium"),
     (6.9, "medium"), (7.0, "high"), (8.9, "high"), (9.0, "critical"), (10.0, "critical")],
)  # fmt: skip
def test_buckets(score, bucket):
    assert severity.bucket(score) == bucket


def test_the_highest_score_of_record_and_affected_vectors_wins():
    low = model.Severity(V3, "CVSS:3.1/AV:L/AC:L/PR:L/UI:R/S:U/C:L/I:N/A:N")
    high = model.Severity(V4, "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N")
    advisory = model.Advisory(
        id="T-1",
        modified=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
        severity=(low,),
        affected=(
            model.Affected("PyPI", "a"),
            model.Affected("PyPI", "b", severity=(high,)),
        ),
    )
    assert severity.of_advisory(advisory).score == 9.3
    assert severity.of_advisory(advisory, advisory.affected[0]).score == 2.8


@pytest.mark.parametrize(
    ("entry", "note"),
    [
        (model.Severity(V3, "CVSS:3.1/AV:X/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"), 'Unknown value "X"'),
        (model.Severity(V3, "CVSS:3.1/AV:N"), "Missing mandatory metrics"),
        (model.Severity(V4, "CVSS:4.0/AV:N/AC:L"), "Missing mandatory metrics"),
        (model.Severity(V3, "CVSS:3.1/" + "AV:N/" * 1000), "longer than 1024"),
        (model.Severity(V3, "7.5"), "is not a CVSS v3/v4 vector"),
        (model.Severity(V4, "\x1b[2Jhigh"), "is not a CVSS v3/v4 vector"),
    ],
)
def test_a_bad_vector_is_a_note_never_a_crash(entry, note):
    assessed = severity.assess([entry])
    assert (assessed.score, assessed.severity, assessed.vector) == (None, "unknown", None)
    assert len(assessed.notes) == 1 and note in assessed.notes[0], assessed.notes
    # next to a good vector, the good one counts
    good = model.Severity(V3, "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H")
    assert severity.assess([entry, good]).score == 9.8


def test_v2_and_words_are_not_scored():
    entries = [
        model.Severity("CVSS_V2", "AV:N/AC:L/Au:N/C:P/I:P/A:P"),
        model.Severity("Ubuntu", "medium"),
    ]
    assert severity.assess(entries) == severity.UNKNOWN
    with pytest.raises(severity.SeverityError, match="not a CVSS 3.0, 3.1 or 4.0 vector"):
        severity.score_vector("AV:N/AC:L/Au:N/C:P/I:P/A:P")
    with pytest.raises(severity.SeverityError, match="must be text"):
        severity.score_vector(None)
