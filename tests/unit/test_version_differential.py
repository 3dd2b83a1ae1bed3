"""Differential tests: saltext_fleet.core.versions against maintained libraries.

Each ecosystem's order (both :func:`versions.compare` and :func:`versions.order_key`, which
vulnerability matching uses) is checked against a reference implementation over every pair
of versions in a set of groups:

``pypi`` (PEP 440) against ``packaging.version.Version``
    One group per package of the real PyPI advisories in ../shared/data/osv-pypi: every
    version its records name (``versions`` lists and range events) that is valid PEP 440.
    Not valid PEP 440 (GIT commits in ranges, ``2.0.0-SNAPSHOT``-style strings) are left out
    and counted.
``deb`` (dpkg) against python-debian's ``debian.debian_support.Version``
    From this machine's ``dpkg-query -W``: one group per source package (every binary
    version built from it, the source version, and the versions the hand-written Debian
    fixtures name for it); all the distinct versions installed here as one more group; and a
    generated group of tricky versions (epochs, tildes, ``+``, letters, empty revisions).
    Where python-debian and ``versions`` disagree, the real ``dpkg --compare-versions``
    decides (python-debian is not dpkg: it pads a missing part with ``"0"`` and splits
    runs differently, see :data:`DPKG_DECIDES`).
``rpm`` against univers' ``RpmVersion``
    There is no rpm data on this machine: the group is the versions above that are valid
    rpm EVRs, plus a generated set (tildes, carets, epochs, pre-release words, separators).
    univers departs from rpm's documented ``rpmvercmp``/``parseEVR`` in two places, and
    those inputs are left out of the rpm groups: it splits the release at the FIRST ``-``
    (rpm: the last one; rpmbuild forbids ``-`` inside version and release, so only EVRs
    with at most one ``-`` are used), and it reads the epoch with ``int()`` (``+1:``,
    ``-1:`` and `` 1:`` become epochs; rpm only takes ASCII digits), so an epoch must be
    digits.
``npm`` (SemVer 2.0) against univers' ``SemverVersion``
    The advisory versions that are strict SemVer 2.0 (the semver.org grammar: univers
    coerces ``1.0`` to ``1.0.0``, which is not SemVer), plus a generated set of pre-release
    and build-metadata cases. Build metadata has no precedence (SemVer 11), so the reference
    verdict is taken from ``<`` alone (univers' ``==`` also compares build metadata).

How every pair is compared cheaply: the references and the keys are total preorders, so
sorting a group by each and cutting the result into groups of equal versions gives one
sequence of tie-groups per order; the two orders agree on all n(n-1)/2 pairs exactly when
the two sequences are the same. ``versions.comparator`` (what ``versions.compare`` uses) is
checked on every adjacent pair of the reference order and within every tie-group, which
covers all pairs for a transitive comparator (and sorting by it would assume the same). The
number of pairs per ecosystem is printed and must not fall below a floor.
"""

import functools
import itertools
import random
import re
import shutil
import subprocess
import time

import pytest
from debian.debian_support import Version as DebianVersion
from packaging.version import InvalidVersion, Version
from univers.versions import RpmVersion, SemverVersion

from saltext_fleet.core import versions
from saltext_fleet.core.vulns import osv
from tests.support.osvdata import FIXTURES, SHARED_OSV

HAVE_DPKG = shutil.which("dpkg-query") is not None

#: Floors for the number of pairs compared (the real figures are far higher; a test must fail
#: when the data silently shrinks).
MIN_PAIRS = {"pypi": 10_000, "deb": 10_000, "rpm": 10_000, "npm": 5_000}

#: Pairs where python-debian and dpkg disagree; ``versions`` follows dpkg (checked with the
#: real ``dpkg --compare-versions`` when the pair shows up). Empty: none found on this data.
DPKG_DECIDES: set[tuple[str, str]] = set()

SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?"
)
RPM_EVR = re.compile(r"(?:\d+:)?[A-Za-z0-9._+~^]+(?:-[A-Za-z0-9._+~^]+)?")

# --- data ---------------------------------------------------------------------------------------


@functools.cache
def _advisory_versions():
    """{package: set of versions named in its records} over the real PyPI advisories."""
    named = {}
    for path in sorted(SHARED_OSV.rglob("*.yaml")):
        advisory = osv.parse(osv.load_document(path.read_bytes(), str(path)), str(path))
        for affected in advisory.affected:
            found = named.setdefault(osv.package_name("PyPI", affected.name), set())
            found.update(affected.versions)
            found.update(value for item in affected.ranges for _kind, value in item.events)
    return named


@functools.cache
def _dpkg_rows():
    output = subprocess.run(
        [
            "dpkg-query",
            "-W",
            "-f",
            "${Package}\\t${Version}\\t${source:Package}\\t${source:Version}\\n",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.split("\t") for line in output.splitlines() if line.count("\t") == 3]


@functools.cache
def _debian_fixture_versions():
    """{source package: versions the hand-written Debian fixtures name for it}."""
    named = {}
    for path in sorted((FIXTURES / "debian").glob("*.json")):
        advisory = osv.parse(osv.load_document(path.read_bytes(), str(path)), str(path))
        for affected in advisory.affected:
            found = named.setdefault(affected.name, set())
            found.update(affected.versions)
            found.update(value for item in affected.ranges for _kind, value in item.events)
    return named


def _tricky_deb():
    """Epochs, tildes, plus signs, letters, dots, empty and odd revisions."""
    upstreams = ["0", "1", "1.0", "1.0.0", "1.00", "1.0a", "1.0+b1", "1.0~rc1", "1.0~~", "1.0~"]
    upstreams += ["1.0.", "1.0+dfsg", "1.0+dfsg~1", "10", "2.0~beta.1", "1a", "1.0-1.1", "a1"]
    revisions = ["", "-0", "-1", "-1~bpo1", "-1+b1", "-1ubuntu2", "-1.1", "-10", "-1~"]
    epochs = ["", "1:", "2:", "0:", "10:"]
    return {
        epoch + upstream + revision
        for epoch in epochs
        for upstream in upstreams
        for revision in revisions
        if not (epoch == "" and ":" in upstream)
    }


def _tricky_rpm():
    """Tildes, carets, epochs, pre-release words, separators, leading zeros."""
    cores = ["1", "1.0", "1.0.0", "1.01", "1.0a", "1.0.1", "1_0", "1+0", "2", "10", "1.a", "a"]
    suffixes = ["", "~rc1", "~rc2", "~~", "~", "^", "^post1", "^1", "^git1.abc", "rc1", ".rc1"]
    suffixes += ["a", "b", "~beta", "^~", "~^"]
    releases = ["", "-1", "-1.el9", "-2.el9", "-1.fc38", "-0.1.rc1", "-1~pre", "-1^p"]
    epochs = ["", "1:", "0:"]
    return {
        epoch + core + suffix + release
        for epoch in epochs
        for core in cores
        for suffix in suffixes
        for release in releases
    }


def _tricky_semver():
    cores = ["0.0.0", "0.0.1", "0.1.0", "1.0.0", "1.0.1", "1.1.0", "1.10.0", "1.2.0", "2.0.0"]
    cores += ["10.0.0", "1.0.10"]
    pre = ["", "-alpha", "-alpha.1", "-alpha.beta", "-beta", "-beta.2", "-beta.11", "-rc.1"]
    pre += ["-0", "-1", "-10", "-2", "-a-b", "-x.7.z.92", "-1a", "-alpha.0", "-alpha.1.1", "-A"]
    build = ["", "+build.1", "+001", "+exp.sha.5114f85"]
    return {core + p + b for core in cores for p in pre for b in build}


# --- the check ----------------------------------------------------------------------------------


def _tie_groups(items, key):
    """``items`` sorted by ``key`` and cut where two neighbours differ (``<`` only)."""
    keyed = sorted(((key(item), item) for item in items), key=lambda pair: pair[0])
    groups = []
    previous = None
    for index, (item_key, item) in enumerate(keyed):
        if index and not previous < item_key:
            groups[-1].add(item)
        else:
            groups.append({item})
        previous = item_key
    return groups


def _first_disagreement(items, reference, ours):
    for a, b in itertools.combinations(sorted(items), 2):
        ref = (reference(b) < reference(a)) - (reference(a) < reference(b))
        mine = versions.comparator(ours)(a, b)
        if ref != (mine > 0) - (mine < 0):
            return a, b, ref, mine
    return None


def _check(ecosystem, groups, reference, decide=None):
    """Compare ``versions`` with ``reference`` on every pair of every group; returns the
    number of pairs. ``decide(a, b)`` settles a disagreement (the real tool), if given."""
    key = versions.order_key(ecosystem)
    pairs = 0
    for name, items in groups.items():
        items = sorted(set(items))
        if len(items) < 2:
            continue
        expected = _tie_groups(items, reference)
        if _tie_groups(items, key) != expected:
            found = _first_disagreement(items, reference, ecosystem)
            assert found, f"{ecosystem} {name}: the orders differ, but no single pair does"
            a, b, ref, mine = found
            if decide is None or decide(a, b) != (mine > 0) - (mine < 0):
                pytest.fail(f"{ecosystem} {name}: {a!r} vs {b!r}: reference {ref}, ours {mine}")
            pytest.fail(
                f"{ecosystem} {name}: {a!r} vs {b!r}: the real tool agrees with us; list it"
            )
        compare = versions.comparator(ecosystem)
        for group, following in itertools.pairwise(expected):
            first = next(iter(group))
            assert all(compare(first, other) == 0 for other in group), (name, group)
            assert compare(first, next(iter(following))) < 0, (name, first, following)
        pairs += len(items) * (len(items) - 1) // 2
    return pairs


def _valid(builder, version):
    try:
        builder(version)
    except (ValueError, InvalidVersion, TypeError):
        return False
    return True


@functools.cache
def _reference_key(builder):
    @functools.cache
    def key(version):
        return builder(version)

    return key


def _dpkg_verdict(a, b):
    def holds(op):
        return subprocess.run(["dpkg", "--compare-versions", a, op, b], check=False).returncode == 0

    return -1 if holds("lt") else (1 if holds("gt") else 0)


# --- tests --------------------------------------------------------------------------------------


@pytest.mark.skipif(not SHARED_OSV.is_dir(), reason="../shared/data/osv-pypi is not here")
def test_pep440_against_packaging():
    started = time.perf_counter()
    groups = {}
    invalid = 0
    for name, named in _advisory_versions().items():
        valid = {version for version in named if _valid(Version, version)}
        invalid += len(named) - len(valid)
        groups[name] = valid
    pairs = _check("pypi", groups, _reference_key(Version))
    print(
        f"\npypi: {pairs} pairs over {len(groups)} packages "
        f"({invalid} non-PEP 440 strings left out) in {time.perf_counter() - started:.2f} s"
    )
    assert pairs >= MIN_PAIRS["pypi"]


@pytest.mark.skipif(not HAVE_DPKG, reason="dpkg-query is not installed")
def test_dpkg_against_python_debian():
    started = time.perf_counter()
    rows = _dpkg_rows()
    fixtures = _debian_fixture_versions()
    families = {}
    for _package, version, source, source_version in rows:
        families.setdefault(source, set()).update({version, source_version})
    for source, named in fixtures.items():
        families.setdefault(source, set()).update(named)
    everything = {version for row in rows for version in (row[1], row[3])}
    groups = {f"source {source}": named for source, named in families.items()}
    groups["every version installed here"] = everything
    groups["fixtures and tricky versions"] = _tricky_deb() | set().union(*fixtures.values())
    groups = {
        name: {version for version in named if _valid(DebianVersion, version)}
        for name, named in groups.items()
    }
    pairs = _check("deb", groups, _reference_key(DebianVersion), decide=_dpkg_verdict)
    print(
        f"\ndeb: {pairs} pairs over {len(rows)} installed packages in {len(families)} source"
        f" families, {len(everything)} distinct versions, in {time.perf_counter() - started:.2f} s"
    )
    assert len(rows) > 50
    assert pairs >= MIN_PAIRS["deb"]


def _rpm_valid(version):
    return bool(RPM_EVR.fullmatch(version)) and _valid(RpmVersion, version)


def test_rpm_against_univers():
    started = time.perf_counter()
    found = set()
    if HAVE_DPKG:
        found |= {version for row in _dpkg_rows() for version in (row[1], row[3])}
    found |= set().union(*_debian_fixture_versions().values())
    if SHARED_OSV.is_dir():
        found |= set().union(*_advisory_versions().values())
    # a deterministic sample keeps the found versions' group near the generated one's size
    found = sorted(version for version in found if _rpm_valid(version))
    sample = random.Random(13).sample(found, min(len(found), 800))
    groups = {
        "versions found in data": sample,
        "generated tricky versions": {v for v in _tricky_rpm() if _rpm_valid(v)},
    }
    pairs = _check("rpm", groups, _reference_key(RpmVersion))
    print(f"\nrpm: {pairs} pairs in {time.perf_counter() - started:.2f} s")
    assert pairs >= MIN_PAIRS["rpm"]


def test_semver_against_univers():
    started = time.perf_counter()
    found = set()
    if SHARED_OSV.is_dir():
        found = {
            version
            for named in _advisory_versions().values()
            for version in named
            if SEMVER.fullmatch(version)
        }
    generated = _tricky_semver()
    assert all(SEMVER.fullmatch(version) for version in generated)
    found = random.Random(17).sample(sorted(found), min(len(found), 1500))
    groups = {"advisory versions that are SemVer (a sample)": found, "generated": generated}
    pairs = _check("npm", groups, _reference_key(SemverVersion))
    print(f"\nnpm (SemVer): {pairs} pairs in {time.perf_counter() - started:.2f} s")
    assert pairs >= MIN_PAIRS["npm"]


def test_univers_departures_from_rpm_are_real():
    """The inputs left out of the rpm groups: univers and rpm's documented parseEVR differ."""
    # rpm splits the release at the last "-": version "1.0-2", release "3"
    assert versions.compare("rpm", "1.0-2-3", "1.0-2-4") < 0
    assert RpmVersion("1.0-2-3").value.release == "2-3"
    # rpm takes only digits as an epoch; univers int()s whatever precedes ":"
    assert RpmVersion("+1:1.0").value.epoch == 1
    assert versions.compare("rpm", "+1:1.0", "0.5") > 0  # no epoch: "+1:1.0" vs "0.5"


@pytest.mark.parametrize("ecosystem", ["deb", "rpm", "pypi", "npm", "apk", "nix"])
def test_order_key_is_the_comparator_on_hostile_strings(ecosystem):
    """order_key must give the comparator's verdict on anything, valid or not (matching
    compares record values nobody validated): every pair of 180 random strings."""
    rng = random.Random(ecosystem)
    alphabet = "0123456789.~^+-:_abzAZ é\x00!"
    pool = {"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 9))) for _ in range(180)}
    pool |= {"", "0", "00", "0~1", "~", "1.0", "1.0.", "1..0", "v1.0", "1:", ":1", "1.0-", "-"}
    compare = versions.comparator(ecosystem)
    key = versions.order_key(ecosystem)
    keys = {item: key(item) for item in pool}
    for a, b in itertools.combinations(sorted(pool), 2):
        mine = compare(a, b)
        assert (keys[a] > keys[b]) - (keys[a] < keys[b]) == (mine > 0) - (mine < 0), (a, b)
