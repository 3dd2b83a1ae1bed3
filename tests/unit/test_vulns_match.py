"""Unit tests for saltext_fleet.core.vulns.match: OSV's evaluation rules on real and
hand-written records (tests/fixtures/osv, see its README), and the Index against a literal
port of the schema's pseudo-code over every real PyPI record.
"""

import dataclasses
import datetime as dt
import functools
import re
import time

import pytest
from packaging.utils import canonicalize_version

from saltext_fleet.core import versions
from saltext_fleet.core.vulns import match, model, osv
from tests.support.osvdata import FIXTURES, SHARED_OSV

GIT_COMMIT = re.compile(r"[0-9a-f]{40}")
QUERIES_PER_PACKAGE = 12
NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def _load(path):
    return osv.parse(osv.load_document(path.read_bytes(), str(path)), str(path))


@functools.cache
def _fixture_index():
    paths = sorted((FIXTURES / "pypi").rglob("*.yaml")) + sorted(
        (FIXTURES / "debian").glob("*.json")
    )
    return match.Index(_load(path) for path in paths)


def _affected(*events, ecosystem="PyPI", kind="ECOSYSTEM", versions_=()):
    return model.Affected(
        ecosystem=ecosystem,
        name="demo",
        versions=frozenset(versions_),
        ranges=(model.Range(kind, tuple(events)),) if events else (),
    )


def _advisory(ident, *affected, withdrawn=None):
    return model.Advisory(id=ident, modified=NOW, withdrawn=withdrawn, affected=affected)


# --- hand-written Debian records (this machine's source packages, Debian 12) ------------------

DEBIAN = [
    # tildes: ~deb12u2 sorts before the plain revision
    ("openssl", "3.0.19-1~deb12u2", {"FLEET-TEST-2026-0002": "3.0.19-1~deb12u3"}),
    (
        "openssl",
        "3.0.19-1~deb12u1",
        {"FLEET-TEST-2026-0001": "3.0.19-1~deb12u2", "FLEET-TEST-2026-0002": "3.0.19-1~deb12u3"},
    ),
    ("openssl", "3.0.19-1", {}),
    (
        "openssl",
        "3.0.19~rc1-1",
        {"FLEET-TEST-2026-0001": "3.0.19-1~deb12u2", "FLEET-TEST-2026-0002": "3.0.19-1~deb12u3"},
    ),
    ("openssl", "2.9-1", {"FLEET-TEST-2026-0001": "3.0.19-1~deb12u2"}),
    # epochs: without the epoch 1 every version sorts below the fixed one
    ("git", "1:2.39.5-0+deb12u3", {"FLEET-TEST-2026-0004": "1:2.39.5-0+deb12u4"}),
    ("git", "1:2.39.5-0+deb12u2", {"FLEET-TEST-2026-0004": "1:2.39.5-0+deb12u4"}),
    (
        "git",
        "1:2.39.5-0+deb12u1",
        {
            "FLEET-TEST-2026-0003": "1:2.39.5-0+deb12u2",
            "FLEET-TEST-2026-0004": "1:2.39.5-0+deb12u4",
        },
    ),
    ("git", "2.45.0-1", {"FLEET-TEST-2026-0003": "1:2.39.5-0+deb12u2"}),
    ("git", "1:2.29.0-1", {"FLEET-TEST-2026-0003": "1:2.39.5-0+deb12u2"}),
    ("git", "1:2.39.5-0+deb12u4", {}),
    # last_affected is inclusive; no fixed version is known
    ("zlib", "1:1.2.13.dfsg-1", {"FLEET-TEST-2026-0005": None}),
    ("zlib", "1:1.2.13.dfsg-1~bpo1", {"FLEET-TEST-2026-0005": None}),
    ("zlib", "1:1.2.13.dfsg-1+b1", {}),
    ("zlib", "1:1.3.dfsg-1", {}),
    # limit events: below none of them is not affected, below one of them is
    ("bash", "5.2.15-2", {"FLEET-TEST-2026-0007": None}),
    ("bash", "5.2.15-3", {}),
    ("bash", "5.1-6", {"FLEET-TEST-2026-0006": None, "FLEET-TEST-2026-0007": None}),
    ("bash", "5.0-4", {"FLEET-TEST-2026-0006": None}),
    ("bash", "5.2~rc1-1", {"FLEET-TEST-2026-0006": None, "FLEET-TEST-2026-0007": None}),
    # an explicit versions list, exact strings
    ("coreutils", "9.1-1", {"FLEET-TEST-2026-0008": None}),
    ("coreutils", "8.32-4.1", {"FLEET-TEST-2026-0008": None}),
    ("coreutils", "9.1-1+b1", {}),
    ("coreutils", "9.0-1", {}),
    # withdrawn: never
    ("systemd", "252.38-1~deb12u1", {}),
    # two pairs given out of order
    ("glibc", "2.36-9+deb12u14", {"FLEET-TEST-2026-0010": "2.36-9+deb12u15"}),
    ("glibc", "2.36-9+deb12u10", {"FLEET-TEST-2026-0010": "2.36-9+deb12u15"}),
    ("glibc", "2.36-9+deb12u9", {}),
    ("glibc", "2.36-9+deb12u4", {}),
    ("glibc", "2.36-9+deb12u3", {"FLEET-TEST-2026-0010": "2.36-9+deb12u4"}),
    ("glibc", "2.36-1", {"FLEET-TEST-2026-0010": "2.36-9+deb12u4"}),
    ("glibc", "2.35-1", {}),
    ("glibc", "2.36-9+deb12u15", {}),
    # letters in the upstream version
    ("tzdata", "2025b-0+deb12u2", {}),
    ("tzdata", "2024a-0+deb12u1", {"FLEET-TEST-2026-0011": "2025a-0+deb12u1"}),
    # GIT ranges are ignored
    ("curl", "7.88.1-10+deb12u14", {}),
    ("libxml2", "2.9.14+dfsg-1.3~deb12u5", {"FLEET-TEST-2026-0013": "2.9.14+dfsg-1.3~deb12u6"}),
    ("libxml2", "2.9.14+dfsg-1.3", {}),
    ("libxml2", "2.9.14+dfsg-1.2", {}),
    # a binary package name is not a source package name
    ("libssl3", "3.0.19-1~deb12u1", {}),
]


@pytest.mark.parametrize(("source", "version", "expected"), DEBIAN)
def test_debian_records(source, version, expected):
    hits = _fixture_index().match("Debian:12", source, version)
    assert {hit.advisory_id: hit.fixed for hit in hits} == expected


def test_debian_records_are_per_release():
    assert _fixture_index().match("Debian:11", "openssl", "1.1.1n-0+deb11u5") == []
    assert _fixture_index().match("Ubuntu:22.04", "openssl", "3.0.2-0ubuntu1") == []


# --- real PyPI records -------------------------------------------------------------------------

PYPI = [
    # PYSEC-2021-76: introduced 0, fixed 3.7.4, plus a GIT range and a versions list
    ("aiohttp", "3.7.3", {"PYSEC-2021-76": "3.7.4"}),
    ("aiohttp", "3.7.4", {}),
    ("aiohttp", "3.7.4rc1", {"PYSEC-2021-76": "3.7.4"}),  # a pre-release of the fix
    ("aiohttp", "3.7.4.dev0", {"PYSEC-2021-76": "3.7.4"}),
    ("aiohttp", "3.7.4.post1", {}),
    ("aiohttp", "0.1", {"PYSEC-2021-76": "3.7.4"}),
    (
        "aiohttp",
        "0.dev1",
        {"PYSEC-2021-76": "3.7.4"},
    ),  # below "0" in PEP 440; introduced "0" is everything
    ("AIOHTTP", "3.8.0", {}),
    # PYSEC-2022-42969: last_affected 1.11.0, inclusive, no fix known
    ("py", "1.11.0", {"PYSEC-2022-42969": None}),
    ("py", "1.11", {"PYSEC-2022-42969": None}),
    ("py", "1.11.0.post1", {}),
    ("py", "1.11.1rc1", {}),
    # PYSEC-2023-73 is withdrawn, although 1.34 is in its versions
    ("redis", "1.34", {}),
    # post-releases as fixed versions
    ("beaker", "1.6.5", {"PYSEC-2012-1": "1.6.5.post1"}),
    ("Beaker", "1.6.5.post0", {"PYSEC-2012-1": "1.6.5.post1"}),
    ("beaker", "1.6.5.post1", {}),
    ("beaker", "1.6.5.post1.dev0", {"PYSEC-2012-1": "1.6.5.post1"}),
    ("label_studio", "1.5.0", {"PYSEC-2022-300": "1.5.0.post0"}),
    ("label-studio", "1.5.0.post0", {}),
    ("label-studio", "1.5.0-post0", {}),
    # pre-releases as fixed versions, three pairs
    ("ansible", "2.7.18", {"PYSEC-2020-208": "2.8.0a1"}),
    ("ansible", "2.8.0a1", {}),
    ("ansible", "2.8.0rc3", {}),
    ("ansible", "2.8.0", {"PYSEC-2020-208": "2.8.13"}),
    ("ansible", "2.8.13", {}),
    ("ansible", "2.9.9", {"PYSEC-2020-208": "2.9.10"}),
    ("ansible", "2.9.10", {}),
    ("ansible", "2.6.0", {}),
    # PYSEC-2017-4: pairs not in version order; 2.4.0.0 == 2.4 in PEP 440
    ("ansible", "2.3.2", {"PYSEC-2017-4": "2.3.3.0"}),
    ("ansible", "2.4", {"PYSEC-2017-4": "2.4.1.0"}),
    ("ansible", "2.3.3", {}),
    ("apache-airflow", "1.10.6b2", {"PYSEC-2019-216": "1.10.6rc1"}),
    ("apache-airflow", "1.10.6rc1", {}),
    ("Apache.Airflow", "1.10.5", {"PYSEC-2019-216": "1.10.6rc1"}),
    ("oic", "1.2.0", {"PYSEC-2020-69": "1.2.1"}),
    ("oic", "1.2.1", {}),
    ("accesscontrol", "3.9", {}),
    ("AccessControl", "4.2.1", {"PYSEC-2021-335": "4.3"}),
    ("accesscontrol", "4.3", {}),
    ("accesscontrol", "5.1", {"PYSEC-2021-335": "5.2"}),
    ("accesscontrol", "5.2", {}),
]


@pytest.mark.parametrize(("name", "version", "expected"), PYPI)
def test_pypi_records(name, version, expected):
    hits = _fixture_index().match("PyPI", name, version)
    assert {hit.advisory_id: hit.fixed for hit in hits} == expected


def test_versions_list_uses_pep440_equality():
    affected = _affected(versions_=["1.0.0", "2.0rc1"])
    assert match.affects(affected, "1.0")
    assert match.affects(affected, "1.0.0.0")
    assert match.affects(affected, "2.0RC1")
    assert match.affects(affected, "2.0-rc.1")
    assert not match.affects(affected, "1.0.1")
    deb = _affected(ecosystem="Debian:12", versions_=["1.0-1"])
    assert match.affects(deb, "1.0-1")
    assert not match.affects(deb, "1.0-01")  # equal for dpkg, but versions are exact strings


# --- SEMVER, GIT, limits, ties ------------------------------------------------------------------


def test_semver_ranges_use_semver_order():
    affected = _affected(
        ("introduced", "1.0.0-alpha.2"),
        ("fixed", "1.0.0-beta"),
        ("introduced", "2.0.0"),
        ("fixed", "2.10.0"),
        ecosystem="Go",
        kind="SEMVER",
    )
    verdicts = {
        "1.0.0-alpha.1": False,
        "1.0.0-alpha.2": True,
        "1.0.0-alpha.10": True,  # numeric identifiers compare as numbers
        "1.0.0-alpha.beta": True,  # alphanumeric after numeric
        "1.0.0-beta": False,
        "1.0.0": False,
        "2.0.0-rc.1": False,
        "2.0.0": True,
        "2.9.99": True,
        "2.10.0-rc.1": True,
        "2.10.0+build.5": False,  # build metadata is ignored
        "2.10.0": False,
        "10.0.0": False,
    }
    assert {version: match.affects(affected, version) for version in verdicts} == verdicts


def test_npm_ecosystem_ranges_use_semver_order():
    affected = _affected(("introduced", "0"), ("fixed", "4.17.21"), ecosystem="npm")
    assert match.affects(affected, "4.17.20")
    assert match.affects(affected, "4.17.21-rc.0")
    assert not match.affects(affected, "4.17.21")
    assert not match.affects(affected, "4.100.0")


def test_git_ranges_are_ignored_but_versions_are_not():
    git = model.Range("GIT", (("introduced", "0"), ("fixed", "a" * 40)))
    only_git = model.Affected(ecosystem="PyPI", name="demo", ranges=(git,))
    assert not match.affects(only_git, "1.0")
    assert not match.affects(only_git, "a" * 40)
    listed = model.Affected(
        ecosystem="PyPI", name="demo", ranges=(git,), versions=frozenset({"1.0"})
    )
    assert match.affects(listed, "1.0")
    assert not match.affects(listed, "1.1")


def test_unknown_ecosystem_ranges_never_match():
    affected = _affected(("introduced", "0"), ecosystem="Maven", versions_=["1.0"])
    assert not match.affects(affected, "0.5")
    assert match.affects(affected, "1.0")


def test_introduced_zero_only_is_every_version():
    affected = _affected(("introduced", "0"), ecosystem="Debian:12")
    for version in ("0", "~~", "0~", "1:0", "99999"):
        assert match.affects(affected, version)


def test_limits():
    star = _affected(("introduced", "1.0"), ("limit", "*"))
    assert match.affects(star, "99")
    assert not match.affects(star, "0.9")
    bounded = _affected(("introduced", "1.0"), ("limit", "2.0"), ("limit", "1.5"))
    assert match.affects(bounded, "1.9")
    assert not match.affects(bounded, "2.0")
    # a limit bounds every pair of the range, even one above it
    above = _affected(
        ("introduced", "1.0"), ("fixed", "1.2"), ("introduced", "3.0"), ("limit", "2.0")
    )
    assert match.affects(above, "1.1")
    assert not match.affects(above, "3.5")


def test_last_affected_and_fixed_in_one_range():
    affected = _affected(
        ("introduced", "1.0"), ("last_affected", "1.4"), ("introduced", "2.0"), ("fixed", "2.2")
    )
    verdicts = {"0.9": False, "1.0": True, "1.4": True, "1.4.1": False, "2.1": True, "2.2": False}
    assert {version: match.affects(affected, version) for version in verdicts} == verdicts


def test_events_of_equal_version_apply_in_record_order():
    # The pseudo-code walks events sorted by version; events of equal version keep the record
    # order (a stable sort), so the later one decides.
    assert not match.affects(_affected(("introduced", "1.0"), ("fixed", "1.0")), "1.0")
    assert match.affects(_affected(("fixed", "1.0"), ("introduced", "1.0")), "1.0")
    # last_affected at the version itself does not apply (v > last_affected is false)
    assert match.affects(_affected(("introduced", "1.0"), ("last_affected", "1.0")), "1.0")


# --- Index ----------------------------------------------------------------------------------


def test_index_withdrawn_names_and_fixed():
    advisories = [
        _advisory("A-1", _affected(("introduced", "0"), ("fixed", "1.5"))),
        _advisory("A-2", _affected(("introduced", "0"), ("fixed", "9")), withdrawn=NOW),
        # two entries for one package: 1.5 and 1.7 are affected by one of them, 1.8 is the fix
        _advisory(
            "A-3",
            _affected(("introduced", "1.0"), ("fixed", "1.6")),
            _affected(("introduced", "1.5"), ("fixed", "1.8"), versions_=["1.9"]),
        ),
        _advisory(
            "A-4", model.Affected(ecosystem="PyPI", name="Other.Pkg", versions=frozenset({"1"}))
        ),
    ]
    index = match.Index(advisories)
    assert index.advisories == 3
    assert len(index) == 2
    assert ("PyPI", "DEMO") in index
    assert ("PyPI", "other_pkg") in index
    assert ("npm", "demo") not in index
    assert index.match("PyPI", "demo", "1.2") == [match.Hit("A-1", "1.5"), match.Hit("A-3", "1.8")]
    assert index.match("PyPI", "demo", "1.5") == [match.Hit("A-3", "1.8")]
    assert index.match("PyPI", "demo", "1.9") == [match.Hit("A-3", None)]
    assert index.match("PyPI", "demo", "2.0") == []
    assert index.match("PyPI", "other-pkg", "1.0") == [match.Hit("A-4", None)]
    assert index.match("PyPI", "missing", "1.0") == []
    with pytest.raises(dataclasses.FrozenInstanceError):
        index.match("PyPI", "demo", "1.2")[0].fixed = "x"


def test_ubuntu_lts_suffix():
    lts = model.Affected(
        ecosystem="Ubuntu:22.04:LTS", name="openssl", versions=frozenset({"3.0.2-0ubuntu1"})
    )
    pro = model.Affected(
        ecosystem="Ubuntu:Pro:22.04:LTS", name="openssl", versions=frozenset({"3.0.2-0ubuntu1"})
    )
    index = match.Index([_advisory("U-1", lts), _advisory("U-2", pro)])
    assert index.match("Ubuntu:22.04", "openssl", "3.0.2-0ubuntu1") == [match.Hit("U-1", None)]
    assert index.match("Ubuntu:22.04:LTS", "openssl", "3.0.2-0ubuntu1") == [match.Hit("U-1", None)]
    assert ("Ubuntu:Pro:22.04", "openssl") in index


# --- malformed files -------------------------------------------------------------------------

MALFORMED = {
    "no-introduced.json": "$.affected[0].ranges[0].events: no 'introduced' event",
    "bad-modified.yaml": "$.modified: not an RFC 3339 timestamp",
    "two-kinds-in-one-event.json": "$.affected[0].ranges[0].events[0]: an event holds exactly one",
    "version-not-a-string.json": "$.affected[0].versions[1]: expected a string, got a number",
    "not-utf8.json": "$: not UTF-8",
    "truncated.json": "$: not valid JSON",
    "list-not-mapping.yaml": "$: expected an object, got a list",
}


def test_malformed_fixtures_name_file_and_field():
    paths = sorted((FIXTURES / "malformed").iterdir())
    assert sorted(path.name for path in paths) == sorted(MALFORMED)
    for path in paths:
        with pytest.raises(osv.OsvError) as info:
            _load(path)
        assert str(info.value).startswith(f"{path}: {MALFORMED[path.name]}"), str(info.value)


def test_a_malformed_file_among_good_ones_loses_nothing_else():
    paths = sorted(FIXTURES.rglob("*.json")) + sorted(FIXTURES.rglob("*.yaml"))
    good, bad = [], {}
    for path in paths:
        try:
            good.append(_load(path))
        except osv.OsvError as exc:
            bad[path.name] = str(exc)
    assert sorted(bad) == sorted(MALFORMED)
    assert len(good) == len(paths) - len(MALFORMED)
    assert match.Index(good).match("Debian:12", "openssl", "3.0.19-1~deb12u2")


# --- against the schema's pseudo-code, over every real PyPI record ----------------------------


@functools.cache
def _canonical_versions(affected):
    return frozenset(affected.versions) | {canonicalize_version(item) for item in affected.versions}


@functools.cache
def _sorted_events(order, events):
    """A range's events sorted by version, introduced "0" first (sorted() is stable)."""

    def event_cmp(one, two):
        if one == ("introduced", "0") or two == ("introduced", "0"):
            return (two == ("introduced", "0")) - (one == ("introduced", "0"))
        return versions.compare(order, one[1], two[1])

    return sorted(events, key=functools.cmp_to_key(event_cmp))


def _reference_affected(affected, version):
    """The OSV schema's IsVulnerable for one entry, line by line (slow and obvious)."""
    if _canonical_versions(affected) & {version, canonicalize_version(version)}:
        return True
    for item in affected.ranges:
        order = match.range_order(affected.ecosystem, item.type)
        if order is None:
            continue
        limits = [value for kind, value in item.events if kind == "limit"]
        if limits and not any(
            "*" in limit or versions.compare(order, version, limit) < 0 for limit in limits
        ):
            continue
        vulnerable = False
        for kind, value in _sorted_events(order, item.events):
            if kind == "introduced" and (
                value == "0" or versions.compare(order, version, value) >= 0
            ):
                vulnerable = True
            elif kind == "fixed" and versions.compare(order, version, value) >= 0:
                vulnerable = False
            elif kind == "last_affected" and versions.compare(order, version, value) > 0:
                vulnerable = False
        if vulnerable:
            return True
    return False


@pytest.mark.skipif(not SHARED_OSV.is_dir(), reason="../shared/data/osv-pypi is not here")
def test_index_agrees_with_the_pseudo_code_on_every_real_record():
    advisories = [_load(path) for path in sorted(SHARED_OSV.rglob("*.yaml"))]
    started = time.perf_counter()
    index = match.Index(advisories)
    build_s = time.perf_counter() - started
    by_package = {}
    for advisory in advisories:
        for affected in advisory.affected:
            entry = by_package.setdefault(osv.package_name("PyPI", affected.name), ([], set()))
            entry[0].append((advisory, affected))
            entry[1].update(affected.versions)
            entry[1].update(value for item in affected.ranges for _kind, value in item.events)
    queries = hits = 0
    started = time.perf_counter()
    for name, (pairs, named) in by_package.items():
        named = sorted(version for version in named if not GIT_COMMIT.fullmatch(version))
        # at most QUERIES_PER_PACKAGE versions named in the package's records, evenly spread
        step = max(1, len(named) // QUERIES_PER_PACKAGE)
        for version in named[::step]:
            queries += 1
            got = {hit.advisory_id for hit in index.match("PyPI", name, version)}
            expected = {
                advisory.id
                for advisory, affected in pairs
                if advisory.withdrawn is None and _reference_affected(affected, version)
            }
            assert got == expected, (name, version)
            hits += len(got)
    match_s = time.perf_counter() - started
    print(f"index built in {build_s:.3f} s; {queries} queries, {hits} hits, {match_s:.3f} s")
    assert queries > 3000
    assert hits > 3000
