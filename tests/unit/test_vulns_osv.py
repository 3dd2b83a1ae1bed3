"""Unit tests for saltext_fleet.core.vulns.osv: reading OSV JSON/YAML, checking fields,
writing records back.

The real PyPI advisories in ../shared/data/osv-pypi (CC-BY 4.0, see its LICENSE) are all
parsed and round-tripped through to_record when that folder is there; a copy of a few of
them lives in tests/fixtures/osv/pypi so the rest of the tests do not depend on it.
"""

import datetime as dt
import json

import pytest

from saltext_fleet.core.errors import FleetError
from saltext_fleet.core.vulns import model, osv
from tests.support.osvdata import FIXTURES, SHARED_OSV


def _record(**changes):
    record = {
        "id": "TEST-2024-1",
        "modified": "2024-05-01T10:00:00Z",
        "summary": "A test advisory",
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": "Demo_Pkg", "purl": "pkg:pypi/demo-pkg"},
                "ranges": [
                    {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.10"}]}
                ],
                "versions": ["1.9", "1.10rc1"],
            }
        ],
    }
    record.update(changes)
    return record


# --- load_document ------------------------------------------------------------------------------


def test_yaml_keeps_every_scalar_a_string():
    text = (
        b"id: X-1\nmodified: '2024-01-01T00:00:00Z'\naffected:\n- versions: [1.10, 2.0, no, 0o7]\n"
    )
    doc = osv.load_document(text, "x.yaml")
    assert doc["affected"][0]["versions"] == ["1.10", "2.0", "no", "0o7"]


def test_json_and_sniffing():
    data = json.dumps(_record()).encode()
    assert osv.load_document(data, "a.json")["id"] == "TEST-2024-1"
    assert osv.load_document(data, "member-without-suffix")["id"] == "TEST-2024-1"
    assert osv.load_document(b"\xef\xbb\xbf" + data, "bom.json")["id"] == "TEST-2024-1"


@pytest.mark.parametrize(
    ("data", "origin", "words"),
    [
        (b"\xff\xfe{}", "bad.json", "not UTF-8"),
        (b"[1, 2]", "list.json", "expected an object, got a list"),
        (b"- a\n- b\n", "list.yaml", "expected an object, got a list"),
        (b"just text", "scalar.yaml", "expected an object, got a string"),
        (b"{", "broken.json", "not valid JSON"),
        (b"a: [\n", "broken.yaml", "not valid YAML"),
        (b"a: 1\n---\nb: 2\n", "two.yaml", "not valid YAML"),
        (b"[" * 100000 + b"]" * 100000, "deep.json", "nested too deeply"),
        (b'{"a": 1' + b"0" * 5000 + b"}", "bigint.json", "not valid JSON"),
        (b"a: &x [1, 2]\nb: [*x, *x, *x]\n", "bomb.yaml", "YAML aliases are not allowed"),
    ],
)
def test_load_document_errors_name_the_origin(data, origin, words):
    with pytest.raises(osv.OsvError) as info:
        osv.load_document(data, origin)
    assert str(info.value).startswith(f"{origin}: $: ")
    assert words in str(info.value)
    assert isinstance(info.value, FleetError)
    assert isinstance(info.value, ValueError)


def test_load_document_refuses_too_big():
    data = b" " * (osv.MAX_DOCUMENT_BYTES + 1)
    with pytest.raises(osv.OsvError, match=r"^huge\.json: \$: document is \d+ bytes"):
        osv.load_document(data, "huge.json")


# --- parse ---------------------------------------------------------------------------------------


def test_parse_a_record():
    advisory = osv.parse(
        _record(
            aliases=["CVE-2024-0001"],
            published="2024-04-30T08:00:00.123456789+02:00",
            severity=[{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
            references=[{"type": "WEB", "url": "https://example.invalid"}],
            database_specific={"anything": [1, 2]},
            unknown_future_field=True,
        ),
        "t.json",
    )
    assert advisory.id == "TEST-2024-1"
    assert advisory.modified == dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC)
    assert advisory.published == dt.datetime(2024, 4, 30, 6, 0, 0, 123456, tzinfo=dt.UTC)
    assert advisory.withdrawn is None
    assert advisory.aliases == ("CVE-2024-0001",)
    assert advisory.severity[0].type == "CVSS_V3"
    (affected,) = advisory.affected
    assert affected == model.Affected(
        ecosystem="PyPI",
        name="Demo_Pkg",
        purl="pkg:pypi/demo-pkg",
        versions=frozenset({"1.9", "1.10rc1"}),
        ranges=(model.Range("ECOSYSTEM", (("introduced", "0"), ("fixed", "1.10"))),),
    )


def test_summary_falls_back_to_the_first_line_of_details_and_is_cut():
    record = _record(details="\n  First line here.  \nSecond line.")
    del record["summary"]
    assert osv.parse(record, "t").summary == "First line here."
    long = osv.parse(_record(summary="x" * 2000), "t").summary
    assert len(long) == osv.MAX_SUMMARY_CHARS
    assert long.endswith("\u2026")
    assert osv.parse(_record(summary=long), "t").summary == long


def test_affected_without_package_is_skipped_and_nulls_are_absent():
    record = _record(withdrawn=None, aliases=None, summary=None)
    record["affected"].append({"ranges": [{"type": "GIT", "events": [{"introduced": "abc"}]}]})
    advisory = osv.parse(record, "t")
    assert len(advisory.affected) == 1
    assert advisory.aliases == ()
    assert advisory.summary == ""


def _set(record, path, value):
    """Set (or with value=KeyError delete) the field at a dotted path like affected.0.ranges."""
    *parents, last = path.split(".")
    target = record
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    if value is KeyError:
        del target[int(last) if last.isdigit() else last]
    elif last.isdigit():
        target[int(last)] = value
    else:
        target[last] = value


R0 = "affected.0.ranges.0"
MALFORMED = [
    ("id", KeyError, "$.id", "expected a string, got null"),
    ("id", 17, "$.id", "expected a string, got a number"),
    ("id", "bad id with spaces", "$.id", "not an advisory id"),
    ("id", "A" * 200, "$.id", "not an advisory id"),
    ("modified", KeyError, "$.modified", "missing (required)"),
    ("modified", "2024-05-01", "$.modified", "not an RFC 3339 timestamp"),
    ("modified", "2024-02-30T00:00:00Z", "$.modified", "not an RFC 3339 timestamp"),
    ("published", "yesterday", "$.published", "not an RFC 3339 timestamp"),
    ("withdrawn", 5, "$.withdrawn", "expected a string, got a number"),
    ("schema_version", "2.0.0", "$.schema_version", "unsupported schema version"),
    ("aliases", "CVE-1", "$.aliases", "expected a list, got a string"),
    ("aliases", ["CVE-1", 2], "$.aliases[1]", "expected a string, got a number"),
    ("summary", ["x"], "$.summary", "expected a string, got a list"),
    ("summary", "a\x00b", "$.summary", "contains a NUL character"),
    ("severity", [{"type": "CVSS_V3"}], "$.severity[0].score", "expected a string, got null"),
    ("affected", {"a": 1}, "$.affected", "expected a list, got an object"),
    ("affected.0", "x", "$.affected[0]", "expected an object, got a string"),
    ("affected.0.package", [], "$.affected[0].package", "expected an object, got a list"),
    ("affected.0.package.ecosystem", "", "$.affected[0].package.ecosystem", "must not be empty"),
    ("affected.0.package.name", KeyError, "$.affected[0].package.name", "got null"),
    ("affected.0.package.purl", 3, "$.affected[0].package.purl", "got a number"),
    ("affected.0.versions", [1.1], "$.affected[0].versions[0]", "got a number"),
    ("affected.0.ranges", {}, "$.affected[0].ranges", "expected a list, got an object"),
    (f"{R0}.type", "SEMVER2", "$.affected[0].ranges[0].type", "unknown range type"),
    (f"{R0}.type", KeyError, "$.affected[0].ranges[0].type", "got null"),
    (f"{R0}.events", [], "$.affected[0].ranges[0].events", "missing or empty"),
    (f"{R0}.events", KeyError, "$.affected[0].ranges[0].events", "missing or empty"),
    (f"{R0}.events.0", {"introduced": "0", "fixed": "1"}, "events[0]", "holds introduced, fixed"),
    (f"{R0}.events.0", {"fixd": "1"}, "$.affected[0].ranges[0].events[0]", "holds none"),
    (f"{R0}.events.1", {"fixed": 2}, "events[1].fixed", "expected a string, got a number"),
    (f"{R0}.events.1", {"fixed": ""}, "events[1].fixed", "must not be empty"),
    (f"{R0}.events.0", {"fixed": "0.5"}, "ranges[0].events", "no 'introduced' event"),
    ("affected.0.severity", [{"score": "x"}], "$.affected[0].severity[0].type", "got null"),
]


@pytest.mark.parametrize(("path", "value", "field", "words"), MALFORMED)
def test_malformed_fields_are_named(path, value, field, words):
    record = _record()
    _set(record, path, value)
    with pytest.raises(osv.OsvError) as info:
        osv.parse(record, "vulns/demo/TEST-2024-1.json")
    message = str(info.value)
    assert message.startswith("vulns/demo/TEST-2024-1.json: $")
    assert field in message
    assert words in message
    assert info.value.origin == "vulns/demo/TEST-2024-1.json"


def test_parse_refuses_a_non_mapping():
    with pytest.raises(osv.OsvError, match=r"^o: \$: expected an object, got a list"):
        osv.parse([], "o")


# --- names and records ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ecosystem", "name", "expected"),
    [
        ("PyPI", "Demo_Pkg", "demo-pkg"),
        ("PyPI", "zope.interface", "zope-interface"),
        ("PyPI", "A-_.-b", "a-b"),
        ("npm", "@Scope/Pkg_x", "@Scope/Pkg_x"),
        ("Debian:12", "Foo_Bar", "Foo_Bar"),
    ],
)
def test_package_name(ecosystem, name, expected):
    assert osv.package_name(ecosystem, name) == expected


def test_to_record_round_trips_and_is_json():
    advisory = osv.parse(
        _record(
            withdrawn="2024-06-01T00:00:00.5Z",
            published="0001-01-01T00:00:00Z",
            aliases=["CVE-2024-0001", "GHSA-xxxx-yyyy-zzzz"],
            severity=[{"type": "CVSS_V4", "score": "CVSS:4.0/AV:N"}],
        ),
        "t",
    )
    record = json.loads(json.dumps(osv.to_record(advisory)))
    assert record["published"] == "0001-01-01T00:00:00Z"
    assert record["withdrawn"] == "2024-06-01T00:00:00.500000Z"
    assert osv.parse(record, "back") == advisory


def test_every_fixture_record_parses_and_round_trips():
    paths = sorted(p for p in FIXTURES.rglob("*") if p.suffix in (".json", ".yaml"))
    good = [p for p in paths if "malformed" not in p.parts]
    assert len(good) >= 10
    for path in good:
        advisory = osv.parse(osv.load_document(path.read_bytes(), str(path)), str(path))
        assert osv.parse(osv.to_record(advisory), "back") == advisory, path


@pytest.mark.skipif(not SHARED_OSV.is_dir(), reason="../shared/data/osv-pypi is not here")
def test_every_real_pypi_record_parses_and_round_trips():
    paths = sorted(SHARED_OSV.rglob("*.yaml"))
    assert len(paths) >= 2600  # 2661 records (the non-record .id-allocator has no suffix)
    withdrawn = 0
    for path in paths:
        advisory = osv.parse(osv.load_document(path.read_bytes(), str(path)), str(path))
        assert advisory.affected, path
        assert all(item.ecosystem == "PyPI" for item in advisory.affected)
        assert osv.parse(osv.to_record(advisory), "back") == advisory, path
        withdrawn += advisory.withdrawn is not None
    assert withdrawn >= 1
