"""Unit tests for saltext_fleet.core.versions: per-ecosystem orders, change kinds, hostile input.

The deb tables are also checked against the real ``dpkg --compare-versions`` when the test host
has dpkg (the Debian 12 test host does). The rpm tables are rpm's own ``tests/rpmvercmp.at``
vectors plus the ``^`` cases rpm 4.15 added.
"""

import itertools
import random
import shutil
import subprocess

import pytest

from saltext_fleet.core import versions as v

GENERIC_ECOSYSTEMS = ["apk", "pacman", "brew", "brew-cask", "nix", "pkg", "unknown", "gentoo"]
ALL_ECOSYSTEMS = ["deb", "rpm", "pypi", "npm", *GENERIC_ECOSYSTEMS]

HAVE_DPKG = shutil.which("dpkg") is not None

# --- tables -----------------------------------------------------------------------------------

# (a, b, compare(a, b)); every one of these is valid for dpkg and checked against it below.
DEB_PAIRS = [
    ("1.0~rc1", "1.0", -1),
    ("1:0.1", "2.0", 1),
    ("1.0-1", "1.0-1ubuntu1", -1),
    ("2.30-0ubuntu2", "2.30-0ubuntu10", -1),
    ("1.0+b1", "1.0", 1),
    ("1.0", "1.0", 0),
    ("1.0", "1.0.0", -1),
    ("1.0~", "1.0", -1),
    ("1.0~~", "1.0~", -1),
    ("1.0~~a", "1.0~~", 1),
    ("1.0~rc1", "1.0~rc2", -1),
    ("1.0~rc1~git1", "1.0~rc1", -1),
    ("0:1.0", "1.0", 0),
    ("00:1.0", "1.0", 0),
    ("1.0-0", "1.0", 0),
    ("1.10", "1.9", 1),
    ("1.0a", "1.0", 1),
    ("1.0a", "1.0+", -1),
    ("1.0a", "1.0.", -1),
    ("1.0+", "1.0.", -1),
    ("1.0-1", "1.0-1.1", -1),
    ("2.36-9+deb12u10", "2.36-9+deb12u9", 1),
    ("2.36-9", "2.36-9+deb12u1", -1),
    ("1:2.9.4+dfsg1-2", "2.9.4", 1),
    ("1.2.3-4-5", "1.2.3-4-4", 1),
    ("1.2.3-4-5", "1.2.3-5", 1),  # upstream "1.2.3-4" > "1.2.3"
    ("0001.0", "1.0", 0),
    ("1.0-1~bpo11+1", "1.0-1", -1),
    ("1.0-1+deb11u1", "1.0-1~deb11u1", 1),
    ("9.2p1-2", "9.2p1-10", -1),
    ("1:9.2p1-2", "9.2p1-3", 1),
    ("5.2.15-2+b7", "5.2.15-2", 1),
    ("3.134", "3.99", 1),
    ("0.11.0-1+deb12u3", "0.11.0-1+deb12u2", 1),
    ("1.0.0~alpha", "1.0.0~beta", -1),
    ("1.0A", "1.0a", -1),
    ("1.2a", "1.2a1", -1),
    ("2:1.0", "10:0.1", -1),
    ("1.0", "1.00000000000000000000000000000000000000000001", -1),
    ("1.99999999999999999999999999", "1.100000000000000000000000000", -1),
]

# (a, b, compare(a, b)) for values dpkg itself refuses: read as documented, never an error.
DEB_DEGRADED_PAIRS = [
    ("", "1", -1),
    ("", "~", 1),
    ("abc", "abd", -1),
    ("a:1.0", "a:0.9", 1),  # epoch not a number: the whole value is the version
    ("1.0-", "1.0", 0),  # empty revision: same as none
    ("1:", "0", 1),
    ("1.0 ", " 1.0", 0),
    ("4294967296:1.0", "4294967295:9.0", 1),  # epoch too big for dpkg
]

# rpm's tests/rpmvercmp.at (all of them) plus the caret cases rpm 4.15 added.
RPM_VERCMP_PAIRS = [
    ("1.0", "1.0", 0),
    ("1.0", "2.0", -1),
    ("2.0.1", "2.0.1", 0),
    ("2.0", "2.0.1", -1),
    ("2.0.1a", "2.0.1a", 0),
    ("2.0.1a", "2.0.1", 1),
    ("5.5p1", "5.5p2", -1),
    ("5.5p10", "5.5p10", 0),
    ("5.5p1", "5.5p10", -1),
    ("10xyz", "10.1xyz", -1),
    ("xyz10", "xyz10", 0),
    ("xyz10", "xyz10.1", -1),
    ("xyz.4", "xyz.4", 0),
    ("xyz.4", "8", -1),
    ("xyz.4", "2", -1),
    ("5.5p2", "5.6p1", -1),
    ("5.6p1", "6.5p1", -1),
    ("6.0.rc1", "6.0", 1),
    ("10b2", "10a1", 1),
    ("10a2", "10b2", -1),
    ("1.0aa", "1.0aa", 0),
    ("1.0a", "1.0aa", -1),
    ("10.0001", "10.0001", 0),
    ("10.0001", "10.1", 0),
    ("10.0001", "10.0039", -1),
    ("4.999.9", "5.0", -1),
    ("20101121", "20101122", -1),
    ("2_0", "2_0", 0),
    ("2.0", "2_0", 0),
    ("a", "a", 0),
    ("a+", "a+", 0),
    ("a+", "a_", 0),
    ("+a", "+a", 0),
    ("+a", "_a", 0),
    ("+_", "+_", 0),
    ("_+", "+_", 0),
    ("_+", "_+", 0),
    ("+", "_", 0),
    ("1.0~rc1", "1.0~rc1", 0),
    ("1.0~rc1", "1.0", -1),
    ("1.0~rc1", "1.0~rc2", -1),
    ("1.0~rc1~git123", "1.0~rc1~git123", 0),
    ("1.0~rc1~git123", "1.0~rc1", -1),
    ("1.0^", "1.0^", 0),
    ("1.0^", "1.0", 1),
    ("1.0^git1", "1.0^git1", 0),
    ("1.0^git1", "1.0", 1),
    ("1.0^git1", "1.0^git2", -1),
    ("1.0^git1", "1.01", -1),
    ("1.0^20160101", "1.0^20160101", 0),
    ("1.0^20160101", "1.0.1", -1),
    ("1.0^20160101^git1", "1.0^20160101^git1", 0),
    ("1.0^20160102", "1.0^20160101^git1", 1),
    ("1.0~rc1^git1", "1.0~rc1^git1", 0),
    ("1.0~rc1^git1", "1.0~rc1", 1),
    ("1.0^git1~pre", "1.0^git1~pre", 0),
    ("1.0^git1", "1.0^git1~pre", 1),
    # rpm's documented oddities (RhBug:811992): kept as rpm has them.
    ("1b.fc17", "1.fc17", -1),
    ("1g.fc17", "1.fc17", 1),
]

# Epoch:version-release and the cases named in the design.
RPM_EVR_PAIRS = [
    ("1.0~rc1", "1.0", -1),
    ("1.0^post1", "1.0", 1),
    ("1.0^post1", "1.0.1", -1),
    ("2:1.0", "1:9.9", 1),
    ("1:1.0", "9.9", 1),
    ("0:1.0-1", "1.0-1", 0),
    (":1.0-1", "1.0-1", 0),
    ("1.0-1.el9", "1.0-2.el9", -1),
    ("1.10", "1.9", 1),
    ("1.0a", "1.0.1", -1),  # a numeric segment beats an alphabetic one
    ("1.0a", "1.0", 1),
    ("1.0", "1.0-1", -1),  # missing release sorts first (total order; see module docstring)
    ("1.0-1.el9", "1.0-1.el9_1", -1),
    ("2.34-100.el9", "2.34-83.el9", 1),
    ("5.14.0-362.8.1.el9_3", "5.14.0-362.18.1.el9_3", -1),
    ("5.14.0-427.13.1.el9_4", "5.14.0-362.24.1.el9_3", 1),
    ("1.0-2", "1.0.1-1", -1),  # the version decides before the release
    ("1.2.3-4-5", "1.2.3-4-4", 1),  # release after the last "-"
]

PYPI_PAIRS = [
    ("1.0rc1", "1.0", -1),
    ("1.0.post1", "1.0", 1),
    ("1!0.1", "2.0", 1),
    ("1.0", "1.0.0", 0),
    ("1.0.dev1", "1.0a1", -1),
    ("1.0a1", "1.0b1", -1),
    ("1.0b1", "1.0rc1", -1),
    ("1.0c1", "1.0rc1", 0),
    ("1.0+local", "1.0", 1),
    ("1.0+local", "1.0.post1", -1),
    ("1.0+local.2", "1.0+local.10", -1),
    ("v1.0", "1.0", 0),
    ("1.0-1", "1.0", 1),  # PEP 440 post-release spelling
    ("2.0.0", "10.0.0", -1),
    ("1.0", "not a version", -1),  # valid before invalid
    ("999", "abc", -1),
    ("abc-2", "abc-10", -1),  # both invalid: generic order
    ("", "0", -1),  # empty sorts first
    ("", "abc", -1),
    ("1.0", "1" * 300, -1),  # too long for PEP 440: invalid, after every valid one
]

# Semantic Versioning 2.0.0, section 11, plus build metadata and prefixes.
NPM_PAIRS = [
    ("1.0.0-alpha", "1.0.0", -1),
    ("1.0.0-alpha", "1.0.0-alpha.1", -1),
    ("1.0.0-alpha.1", "1.0.0-alpha.beta", -1),
    ("1.0.0-alpha.beta", "1.0.0-beta", -1),
    ("1.0.0-beta.2", "1.0.0-beta.11", -1),
    ("1.0.0-rc.1", "1.0.0", -1),
    ("1.0.0-1", "1.0.0-alpha", -1),
    ("1.0.0+build.1", "1.0.0", 0),
    ("1.0.0+build.1", "1.0.0+build.2", 0),
    ("1.0.0-rc.1+b", "1.0.0-rc.1", 0),
    ("v1.2.3", "1.2.3", 0),
    ("1.2.3", "1.10.0", -1),
    ("2.0.0-0", "1.99.99", 1),
    ("1.0.0-beta", "1.0.0-Beta", 1),  # ASCII order
]

# The generic order, checked for every ecosystem without its own.
GENERIC_PAIRS = [
    ("1.10", "1.9", 1),
    ("1.0", "1.0.0", -1),
    ("1.0rc1", "1.0", -1),
    ("1.0-rc1", "1.0", -1),
    ("1.0beta", "1.0", -1),
    ("1.0.dev1", "1.0alpha1", -1),
    ("1.0alpha1", "1.0beta1", -1),
    ("1.0a1", "1.0b1", -1),
    ("1.0b1", "1.0pre1", -1),
    ("1.0pre1", "1.0rc1", -1),
    ("1.0RC1", "1.0rc1", 0),
    ("1.0rc1", "1.0rc2", -1),
    ("1.0rc", "1.0rc1", -1),
    ("1.0-beta-2", "1.0-beta-10", -1),
    ("1.0.2a", "1.0.2", 1),  # OpenSSL-style letter suffix: after the release
    ("1.0.2a", "1.0.3", -1),
    ("1.0a", "1.0", 1),
    ("1.0a1", "1.0", -1),
    ("1.0x", "1.0.1", -1),
    ("1:0.1", "2.0", 1),
    ("0:2.0", "2.0", 0),
    ("v2.0", "2.0", 0),
    ("1.2.3_1", "1.2.3", 1),  # Homebrew revision
    ("1.2.3_2", "1.2.3_10", -1),
    ("1.0-r1", "1.0-r2", -1),  # Alpine revision
    ("1.0-r1", "1.0", 1),
    ("2.0", "latest", 1),
    ("beta", "1.0", -1),  # a marker only counts after a number
    ("unstable-2023-01-01", "unstable-2023-02-01", -1),
    ("0010", "10", 0),
    ("1.0", "1_0", 0),
    ("abc", "abd", -1),
    ("1" + "0" * 5000, "9" * 4000, 1),
]

# Strictly increasing chains: sorted() with sort_key must restore them.
CHAINS = {
    "deb": [
        "1.0~~",
        "1.0~~a",
        "1.0~",
        "1.0~rc1",
        "1.0",
        "1.0-1",
        "1.0-1ubuntu1",
        "1.0a",
        "1.0+b1",
        "1.0.1",
        "1.1",
        "1.9",
        "1.10",
        "2.0",
        "1:0.1",
        "2:0.0",
    ],
    "rpm": [
        "1.0~rc1",
        "1.0",
        "1.0-1.el9",
        "1.0-2.el9",
        "1.0^post1",
        "1.0a",
        "1.0.1",
        "1.9",
        "1.10",
        "2.0",
        "1:0.1",
        "2:0.1",
    ],
    "pypi": [
        "",
        "1.0.dev1",
        "1.0a1",
        "1.0b1",
        "1.0rc1",
        "1.0",
        "1.0+local",
        "1.0.post1",
        "1.1",
        "2.0",
        "10.0",
        "1!0.1",
        "abc",
        "abd",
    ],
    "npm": [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1",
        "1.10.0",
        "2.0.0",
    ],
    "apk": [
        "beta",
        "latest",
        "1.0.dev1",
        "1.0alpha1",
        "1.0beta2",
        "1.0pre1",
        "1.0rc1",
        "1.0",
        "1.0a",
        "1.0-r1",
        "1.0.0",
        "1.0.1",
        "1.2.3_1",
        "1.9",
        "1.10",
        "2.0",
        "1:0.1",
    ],
}

PAIRS_BY_ECOSYSTEM = {
    "deb": DEB_PAIRS + DEB_DEGRADED_PAIRS,
    "rpm": RPM_VERCMP_PAIRS + RPM_EVR_PAIRS,
    "pypi": PYPI_PAIRS,
    "npm": NPM_PAIRS,
    "apk": GENERIC_PAIRS,
}


def table_ids(pairs):
    return [f"{a[:20]!r}-{b[:20]!r}" for a, b, _ in pairs]


def dpkg_compare(a, b):
    """-1/0/1 from the real dpkg."""
    for op, result in (("lt", -1), ("gt", 1)):
        proc = subprocess.run(
            ["dpkg", "--compare-versions", a, op, b], capture_output=True, check=False
        )
        assert proc.returncode in (0, 1), proc.stderr
        if proc.returncode == 0:
            return result
    return 0


# --- compare, per ecosystem -------------------------------------------------------------------


@pytest.mark.parametrize(
    "a,b,expected", DEB_PAIRS + DEB_DEGRADED_PAIRS, ids=table_ids(DEB_PAIRS + DEB_DEGRADED_PAIRS)
)
def test_compare_deb(a, b, expected):
    assert v.compare("deb", a, b) == expected
    assert v.compare("deb", b, a) == -expected


def test_deb_table_matches_dpkg():
    # This project's machines are Debian: dpkg is the reference, and its absence is a failure.
    assert HAVE_DPKG, "dpkg is not installed: the dpkg order cannot be checked against it"
    pairs = [(a, b) for a, b, _ in DEB_PAIRS]
    pairs += list(itertools.combinations(CHAINS["deb"], 2))
    mismatches = [
        (a, b, dpkg_compare(a, b), v.compare("deb", a, b))
        for a, b in pairs
        if dpkg_compare(a, b) != v.compare("deb", a, b)
    ]
    assert mismatches == []


def test_deb_random_pairs_match_dpkg():
    assert HAVE_DPKG, "dpkg is not installed: the dpkg order cannot be checked against it"
    rnd = random.Random(20240611)
    alphabet = "0123456789.~+-:abzAZ"

    def random_version():
        head = rnd.choice("0123456789")
        return head + "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 7)))

    checked = 0
    mismatches = []
    while checked < 120:
        a = random_version()
        b = a + random_version()[1:] if rnd.random() < 0.5 else random_version()
        check = subprocess.run(
            ["dpkg", "--compare-versions", a, "eq", b], capture_output=True, check=False
        )
        if check.returncode not in (0, 1) or check.stderr:
            continue  # dpkg refuses or warns about this one: not a fair comparison
        checked += 1
        expected = 0 if check.returncode == 0 else dpkg_compare(a, b)
        if v.compare("deb", a, b) != expected:
            mismatches.append((a, b, expected))
    assert mismatches == []


@pytest.mark.parametrize("a,b,expected", RPM_VERCMP_PAIRS, ids=table_ids(RPM_VERCMP_PAIRS))
def test_compare_rpm_vercmp_vectors(a, b, expected):
    assert v.compare("rpm", a, b) == expected
    assert v.compare("rpm", b, a) == -expected


@pytest.mark.parametrize("a,b,expected", RPM_EVR_PAIRS)
def test_compare_rpm_evr(a, b, expected):
    assert v.compare("rpm", a, b) == expected
    assert v.compare("rpm", b, a) == -expected


@pytest.mark.parametrize("a,b,expected", PYPI_PAIRS, ids=table_ids(PYPI_PAIRS))
def test_compare_pypi(a, b, expected):
    assert v.compare("pypi", a, b) == expected
    assert v.compare("pypi", b, a) == -expected


@pytest.mark.parametrize("a,b,expected", NPM_PAIRS)
def test_compare_npm(a, b, expected):
    assert v.compare("npm", a, b) == expected
    assert v.compare("npm", b, a) == -expected


@pytest.mark.parametrize("a,b,expected", GENERIC_PAIRS, ids=table_ids(GENERIC_PAIRS))
def test_compare_generic(a, b, expected):
    for ecosystem in GENERIC_ECOSYSTEMS + ["", None, 42]:
        assert v.compare(ecosystem, a, b) == expected, ecosystem
        assert v.compare(ecosystem, b, a) == -expected, ecosystem


def test_npm_prerelease_differs_from_generic():
    # "-alpha" is a semver pre-release; in the generic order "alpha" after a number is too,
    # but "-x" is only a word there.
    assert v.compare("npm", "1.0.0-x", "1.0.0") == -1
    assert v.compare("apk", "1.0.0-x", "1.0.0") == 1


@pytest.mark.parametrize(
    "ecosystem,expected",
    [
        ("deb", -1),  # letters sort before other characters
        (" DEB ", -1),  # ecosystem names are trimmed and case-insensitive
        ("rpm", 1),  # "+" only separates; the leftover "a" wins
        ("Rpm", 1),
        ("apk", 1),
    ],
)
def test_ecosystem_name_is_normalised(ecosystem, expected):
    assert v.compare(ecosystem, "1.0a", "1.0+") == expected


# --- several installed versions ---------------------------------------------------------------


@pytest.mark.parametrize(
    "ecosystem,a,b,expected",
    [
        ("deb", "1.0,2.0", "1.5", 1),
        ("deb", "2.0,1.0", "2.0", 0),
        ("deb", "1.0,1.0~rc1", "1.0", 0),
        ("deb", "0.9,1.0", "1.0,0.5", 0),
        ("deb", "1.0,", "1.0", 0),
        ("deb", ",,", "", 0),
        ("deb", " 1.0 , 2.0 ", "2.0", 0),
        ("rpm", "1.0-1,1.0-2", "1.0-2", 0),
        ("rpm", "1.0-1,1.0-2", "1.0-3", -1),
        ("pypi", "1.0,1.0rc1", "1.0", 0),
        ("pypi", "1.0,garbage", "garbage", 0),  # the invalid one is the highest
        ("npm", "1.0.0-rc.1,0.9.0", "1.0.0-rc.1", 0),
        ("apk", "1.0-r1,1.0-r2", "1.0-r2", 0),
    ],
)
def test_compare_joined_versions(ecosystem, a, b, expected):
    assert v.compare(ecosystem, a, b) == expected
    assert v.compare(ecosystem, b, a) == -expected


# --- sort_key ---------------------------------------------------------------------------------


@pytest.mark.parametrize("ecosystem", sorted(CHAINS))
def test_sort_key_restores_chain(ecosystem):
    chain = CHAINS[ecosystem]
    shuffled = list(chain)
    random.Random(7).shuffle(shuffled)
    assert sorted(shuffled, key=lambda ver: v.sort_key(ecosystem, ver)) == chain
    assert sorted(reversed(chain), key=lambda ver: v.sort_key(ecosystem, ver)) == chain


@pytest.mark.parametrize("ecosystem", sorted(CHAINS))
def test_chain_is_strictly_increasing(ecosystem):
    # Every pair, not only neighbours: also checks the order is transitive on the chain.
    for low, high in itertools.combinations(CHAINS[ecosystem], 2):
        assert v.compare(ecosystem, low, high) == -1, (low, high)


def test_sort_key_comparisons():
    key = v.sort_key
    assert key("deb", "1.0~rc1") < key("deb", "1.0")
    assert key("deb", "1.0") <= key("deb", "1.0")
    assert key("deb", "1.0+b1") > key("deb", "1.0")
    assert key("deb", "1.0") >= key("deb", "1.0-0")
    assert key("pypi", "1.0") == key("pypi", "1.0.0")
    assert key("pypi", "1.0") != key("pypi", "1.0.1")
    assert key("deb", "1.0,2.0") == key("deb", "2.0")
    assert key("deb", "1.0") != "1.0"
    assert "1.0" in repr(key("deb", "1.0"))
    with pytest.raises(TypeError):
        hash(key("deb", "1.0"))
    with pytest.raises(TypeError):
        assert key("deb", "1.0") < "2.0"


def test_sort_key_with_partial():
    import functools

    versions = ["2.0", "1.0~rc1", "1.0", "1:0.1"]
    assert sorted(versions, key=functools.partial(v.sort_key, "deb")) == [
        "1.0~rc1",
        "1.0",
        "2.0",
        "1:0.1",
    ]


# --- antisymmetry -----------------------------------------------------------------------------


def _values_for(ecosystem):
    values = {x for a, b, _ in PAIRS_BY_ECOSYSTEM.get(ecosystem, GENERIC_PAIRS) for x in (a, b)}
    values |= set(CHAINS.get(ecosystem, CHAINS["apk"]))
    values |= {"", "~", "^", "-", ":", "1.0,2.0", "1.0~rc1", "1.0^post1", "1!2.0", "v1"}
    return sorted(x for x in values if len(x) < 100)


@pytest.mark.parametrize("ecosystem", ALL_ECOSYSTEMS)
def test_compare_is_antisymmetric(ecosystem):
    values = _values_for(ecosystem)
    for a in values:
        assert v.compare(ecosystem, a, a) == 0
    for a, b in itertools.combinations(values, 2):
        forward = v.compare(ecosystem, a, b)
        assert forward in (-1, 0, 1)
        assert forward == -v.compare(ecosystem, b, a), (a, b)


@pytest.mark.parametrize("ecosystem", ["deb", "pypi", "npm", "apk"])
def test_compare_is_transitive_on_table_values(ecosystem):
    values = _values_for(ecosystem)[:45]
    for a, b, c in itertools.combinations(values, 3):
        ab, bc, ac = (v.compare(ecosystem, x, y) for x, y in ((a, b), (b, c), (a, c)))
        if ab <= 0 and bc <= 0:
            assert ac <= 0, (a, b, c)
        if ab >= 0 and bc >= 0:
            assert ac >= 0, (a, b, c)


# --- change_kind ------------------------------------------------------------------------------

CHANGE_KIND_CASES = [
    # deb
    ("deb", "1.0", "1.0", "same"),
    ("deb", "1.0-0", "1.0", "same"),
    ("deb", "1.0", "2.0", "major"),
    ("deb", "2.0", "1.0", "major"),
    ("deb", "1.0", "1.1", "minor"),
    ("deb", "1.9", "1.10", "minor"),
    ("deb", "1.0.1", "1.0.2", "patch"),
    ("deb", "1.0.0.1", "1.0.0.2", "patch"),
    ("deb", "1.0", "1.0.0", "patch"),
    ("deb", "1.0-1", "1.0-2", "patch"),
    ("deb", "2.30-0ubuntu2", "2.30-0ubuntu10", "patch"),
    ("deb", "1.0~rc1", "1.0", "patch"),
    ("deb", "1.0", "1.0+b1", "patch"),
    ("deb", "1:9.2p1-2", "1:9.3p1-1", "minor"),
    ("deb", "1:1.0", "2:1.0", "major"),
    ("deb", "1.0", "1:1.0", "major"),
    ("deb", "1:0.1", "2.0", "major"),
    ("deb", "1.0", "latest", "other"),
    ("deb", "abc", "abd", "other"),
    # rpm
    ("rpm", "1.0-1.el9", "1.0-2.el9", "patch"),
    ("rpm", "2:1.0", "1:9.9", "major"),
    ("rpm", "1.0", "1.0^post1", "patch"),
    ("rpm", "1.0~rc1", "1.0", "patch"),
    ("rpm", "5.14.0-362.8.1.el9_3", "5.14.0-427.13.1.el9_4", "patch"),
    ("rpm", "5.14.0-1", "6.0.0-1", "major"),
    ("rpm", "1.2-3", "1.3-1", "minor"),
    ("rpm", "1.2.3-1", "1.2.4-1", "patch"),
    ("rpm", "2.0", "2_0", "same"),
    ("rpm", "1.0", "git1234", "other"),
    # pypi
    ("pypi", "1.0", "1.0.0", "same"),
    ("pypi", "1.0", "2.0", "major"),
    ("pypi", "1.4.2", "1.5.0", "minor"),
    ("pypi", "1.2.3", "1.2.4", "patch"),
    ("pypi", "1.0rc1", "1.0", "patch"),
    ("pypi", "1.0", "1.0.post1", "patch"),
    ("pypi", "1.0", "1.0+local", "patch"),
    ("pypi", "1!1.0", "1.0", "major"),
    ("pypi", "1!1.0", "1!1.1", "minor"),
    ("pypi", "1.0", "not a version", "other"),
    ("pypi", "0.9", "1.0-foo-bar", "major"),  # invalid side read the generic way
    # npm
    ("npm", "1.2.3", "1.2.4", "patch"),
    ("npm", "1.2.3", "1.3.0", "minor"),
    ("npm", "1.2.3", "2.0.0", "major"),
    ("npm", "1.0.0-alpha", "1.0.0", "patch"),
    ("npm", "1.0.0-rc.1", "2.0.0-rc.1", "major"),
    ("npm", "1.0.0+1", "1.0.0+2", "same"),
    ("npm", "v1.0.0", "1.0.0", "same"),
    ("npm", "1.0.0", "latest", "other"),
    # generic
    ("apk", "1.2.3-r0", "1.2.3-r1", "patch"),
    ("brew", "1.2.3", "1.2.3_1", "patch"),
    ("brew", "1.2.3", "1.3", "minor"),
    ("brew-cask", "120.0.1", "121.0", "major"),
    ("nix", "2.18.1", "2.18.2", "patch"),
    ("nix", "unstable-2023-01-01", "unstable-2024-01-01", "other"),
    ("pacman", "1:1.0-1", "1.0-1", "major"),
    ("pkg", "2023.01.01", "2023.02.01", "minor"),
    ("pkg", "v1.0", "1.1", "minor"),
    ("pkg", "deadbeef", "cafebabe", "other"),
    ("pkg", "1.0", "", "other"),
    ("pkg", "", "", "same"),
    ("unknown", "1.0", "1.0.0.0.0.1", "patch"),
    ("unknown", "1" + "0" * 5000, "1" + "0" * 4999 + "1", "major"),
    # several installed versions: the highest of each side
    ("deb", "1.0,2.0", "2.1", "minor"),
    ("deb", "1.0,2.0", "2.0", "same"),
    ("deb", "2.0", "1.0,3.0", "major"),
]


@pytest.mark.parametrize("ecosystem,old,new,expected", CHANGE_KIND_CASES)
def test_change_kind(ecosystem, old, new, expected):
    assert v.change_kind(ecosystem, old, new) == expected
    assert v.change_kind(ecosystem, new, old) == expected  # the kind has no direction


@pytest.mark.parametrize("ecosystem", ALL_ECOSYSTEMS)
def test_change_kind_same_iff_compare_equal(ecosystem):
    values = _values_for(ecosystem)[:40]
    for a, b in itertools.product(values, repeat=2):
        kind = v.change_kind(ecosystem, a, b)
        assert kind in v.CHANGE_KINDS
        assert (kind == "same") == (v.compare(ecosystem, a, b) == 0), (a, b)


# --- direction and satisfies_min --------------------------------------------------------------


@pytest.mark.parametrize(
    "ecosystem,expected_version,actual,result",
    [
        ("deb", "1.0", "1.1", "newer"),
        ("deb", "1.1", "1.0", "older"),
        ("deb", "1.0", "1.0", "same"),
        ("deb", "1.0", "1.0~rc1", "older"),
        ("deb", "2.0", "1.0,2.0", "same"),
        ("rpm", "1.0-1", "1.0-2", "newer"),
        ("rpm", "1:1.0", "2.0", "older"),
        ("pypi", "1.0", "1.0.0", "same"),
        ("pypi", "1.0", "1.0.post1", "newer"),
        ("npm", "1.0.0", "1.0.0-rc.1", "older"),
        ("apk", "1.0-r1", "1.0-r0", "older"),
        ("brew", "1.2.3", "1.2.3_1", "newer"),
        (None, None, None, "same"),
    ],
)
def test_direction(ecosystem, expected_version, actual, result):
    assert v.direction(ecosystem, expected_version, actual) == result


@pytest.mark.parametrize(
    "ecosystem,version,minimum,result",
    [
        ("deb", "1.0", "1.0", True),
        ("deb", "1.0~rc1", "1.0", False),
        ("deb", "1.0+b1", "1.0", True),
        ("deb", "1:0.1", "9.9", True),
        ("deb", "2.36-9+deb12u10", "2.36-9+deb12u9", True),
        ("rpm", "1.0-1.el9", "1.0-2.el9", False),
        ("rpm", "1.0^post1", "1.0", True),
        ("pypi", "2.0", "1.0rc1", True),
        ("pypi", "1.0rc1", "1.0", False),
        ("pypi", "1.0.0", "1.0", True),
        ("npm", "1.0.0-rc.1", "1.0.0", False),
        ("npm", "1.0.0+build", "1.0.0", True),
        ("apk", "0.9,1.1", "1.0", True),  # any installed version
        ("apk", "0.8,0.9", "1.0", False),
        ("deb", None, "1.0", False),  # nothing installed satisfies nothing
        ("deb", "", "", False),
        ("deb", ",", "0", False),
        ("deb", "1.0", None, True),  # no minimum
        ("deb", "1.0", "", True),
        ("deb", "~~", "", True),
    ],
)
def test_satisfies_min(ecosystem, version, minimum, result):
    assert v.satisfies_min(ecosystem, version, minimum) is result


# --- hostile input ----------------------------------------------------------------------------


class BadStr:
    def __str__(self):
        raise RuntimeError("no")


class NotAStr:
    def __str__(self):
        return 12  # __str__ returning a non-str makes str() raise TypeError


HOSTILE = [
    None,
    123,
    1.5,
    True,
    "",
    " ",
    "\x00",
    "\x00:1",
    "1.0\x00",
    "~",
    "^",
    ":",
    "-",
    ",",
    "+",
    "é",
    "1.0é",
    "\udc80",
    "\ufffd",
    "١٢٣",  # Arabic-Indic digits: not ASCII digits
    "１.０",  # fullwidth
    b"1.0",
    b"\xff\xfe",
    bytearray(b"2.0"),
    ["1.0"],
    {"a": 1},
    object(),
    BadStr(),
    NotAStr(),
    10**5000,  # str() refuses ints this long
    "x" * 10_000,
    "1" * 10_000,
    "~" * 10_000,
    "^" * 10_000,
    "1." * 5_000,
    "-" * 10_000,
    ":" * 10_000,
    "1," * 5_000,
    "a1" * 5_000,
    "1.0-" + "1" * 9_996,
    "9" * 10_000 + ":1.0",
    "1.0-" + "alpha." * 1_600,
]

HOSTILE_ECOSYSTEMS = ["deb", "rpm", "pypi", "npm", "apk", None, "x" * 10_000]
REFERENCES = ["1.0", "1:2.0-1", "", "1.0~rc1"]


@pytest.mark.parametrize("ecosystem", HOSTILE_ECOSYSTEMS, ids=lambda e: repr(e)[:12])
def test_hostile_input_never_raises(ecosystem):
    for value in HOSTILE:
        for other in [*REFERENCES, value]:
            result = v.compare(ecosystem, value, other)
            assert result in (-1, 0, 1)
            assert v.compare(ecosystem, other, value) == -result
            assert v.change_kind(ecosystem, value, other) in v.CHANGE_KINDS
            assert v.change_kind(ecosystem, other, value) in v.CHANGE_KINDS
            assert v.direction(ecosystem, value, other) in v.DIRECTIONS
            assert v.satisfies_min(ecosystem, value, other) in (True, False)
            assert v.satisfies_min(ecosystem, other, value) in (True, False)
        assert v.compare(ecosystem, value, value) == 0
        assert v.change_kind(ecosystem, value, value) == "same"
        repr(v.sort_key(ecosystem, value))


@pytest.mark.parametrize("ecosystem", ["deb", "rpm", "pypi", "npm", "apk"])
def test_hostile_values_sort(ecosystem):
    keyed = sorted(HOSTILE, key=lambda value: v.sort_key(ecosystem, value))
    assert len(keyed) == len(HOSTILE)


@pytest.mark.parametrize(
    "value,same_as",
    [
        (None, ""),
        (123, "123"),
        (1.5, "1.5"),
        (b"1.0", "1.0"),
        (bytearray(b"2.0"), "2.0"),
        (b"\xff", "\ufffd"),
        (BadStr(), ""),
        (NotAStr(), ""),
        (10**5000, ""),
        ("  1.0\t", "1.0"),
    ],
    ids=[
        "none",
        "int",
        "float",
        "bytes",
        "bytearray",
        "bad-utf8",
        "bad-str",
        "str-not-str",
        "huge-int",
        "whitespace",
    ],
)
def test_non_str_is_read_as_documented(value, same_as):
    for ecosystem in ["deb", "rpm", "pypi", "npm", "apk"]:
        assert v.compare(ecosystem, value, same_as) == 0
        assert v.change_kind(ecosystem, value, same_as) == "same"


def test_str_subclass_is_read_as_plain_str():
    class Shouty(str):
        def __str__(self):
            return "9.9"

        def strip(self, *args):
            return "9.9"

    assert v.compare("deb", Shouty("1.0"), "1.0") == 0


def test_huge_numbers_compare_without_int():
    big = "1" + "0" * 9_999
    assert v.compare("deb", big, big[:-1]) == 1
    assert v.compare("rpm", big, big[:-1]) == 1
    assert v.compare("npm", big, big[:-1]) == 1
    assert v.compare("apk", big, big[:-1]) == 1
    assert v.compare("pypi", big, big[:-1]) == 1  # both too long for PEP 440: generic order
    assert v.change_kind("apk", big, big[:-1]) == "major"
    assert v.compare("deb", big + ":1.0", "1:1.0") == 1
