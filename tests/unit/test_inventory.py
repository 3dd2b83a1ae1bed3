"""Unit tests for saltext_fleet.core.inventory: parsers, ecosystems, digest, hostile input."""

import json
import subprocess
import sys

import pytest

from saltext_fleet.core import inventory as inv

BIG = "x" * (10 * 1024 * 1024)

# Recorded on the Debian 12 test host with inventory.DEB_SOURCES_CMD, plus a multiarch pair.
DEB_OUTPUT = (
    "adduser\tall\tadduser\t3.134\n"
    "amqp-tools\tamd64\tlibrabbitmq\t0.11.0-1+deb12u3\n"
    "libc6\tamd64\tglibc\t2.36-9+deb12u10\n"
    "libc6\ti386\tglibc\t2.36-9+deb12u10\n"
    "libpython3.11-minimal\tamd64\tpython3.11\t3.11.2-6+deb12u6\n"
)

# Reconstructed from the documented --qf tags (no RPM host here): a noarch package, a
# multilib pair, gpg-pubkey (no source rpm) and a nosrc package.
RPM_OUTPUT = (
    "bash\tx86_64\tbash-5.1.8-9.el9.src.rpm\n"
    "glibc\tx86_64\tglibc-2.34-100.el9.src.rpm\n"
    "glibc\ti686\tglibc-2.34-100.el9.src.rpm\n"
    "python3-pip-wheel\tnoarch\tpython-pip-21.2.3-8.el9.src.rpm\n"
    "gpg-pubkey\t(none)\t(none)\n"
    "some-firmware\tnoarch\tsome-firmware-20240101-1.el9.nosrc.rpm\n"
)


def problems_mention(problems, *words):
    return any(all(w in p for w in words) for p in problems)


# --- ecosystems -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "family,expected",
    [
        ("Debian", "deb"),
        ("RedHat", "rpm"),
        ("Suse", "rpm"),
        ("MacOS", "brew"),
        ("Arch", "pacman"),
        ("Alpine", "apk"),
        ("FreeBSD", "pkg"),
        ("Gentoo", "gentoo"),
        ("NILinuxRT", "nilinuxrt"),
        ("Some Family", "some-family"),
    ],
)
def test_ecosystem_for(family, expected):
    problems = []
    assert inv.ecosystem_for(family, problems) == expected
    assert problems == []


@pytest.mark.parametrize("family", [None, "", {"a": 1}, ["Debian"], True])
def test_ecosystem_for_hostile(family):
    problems = []
    assert inv.ecosystem_for(family, problems) == "unknown"
    assert problems


def test_normalise_pkg_list_deb_keeps_salt_names():
    problems = []
    result = inv.normalise_pkg_list(
        "deb", {"bash": "5.2.15-2+b7", "libc6:i386": "2.36-9", "multi": ["2", "1"]}, problems
    )
    assert result == {"deb": {"bash": "5.2.15-2+b7", "libc6:i386": "2.36-9", "multi": "1,2"}}
    assert problems == []


def test_normalise_pkg_list_brew_casks():
    # What mac_brew_pkg.list_pkgs reports: formulae under name/full_name/aliases, casks under
    # token, full_token and "<tap>/<token>" with tap "homebrew/cask" for official casks.
    salt_return = {
        "wget": "1.24.5",
        "python@3.12": "3.12.4",
        "python3": "3.12.4",
        "firefox": "128.0",
        "homebrew/cask/firefox": "128.0",
        "docker": "27.0.3,4.32.0",  # formula 27.0.3 and cask 4.32.0 share the name
        "homebrew/cask/docker": "4.32.0",
        "some-cask": "",
        "homebrew/cask/some-cask": "",
        "user/tap/thing": "1.0",
    }
    problems = []
    result = inv.normalise_pkg_list("brew", salt_return, problems)
    assert result["brew-cask"] == {"firefox": "128.0", "docker": "4.32.0", "some-cask": ""}
    assert result["brew"] == {
        "wget": "1.24.5",
        "python@3.12": "3.12.4",
        "python3": "3.12.4",
        "docker": "27.0.3",
        "user/tap/thing": "1.0",
    }
    assert problems == []


def test_normalise_pkg_list_hostile():
    problems = []
    raw = {
        "good": "1.0",
        "list": ["2.0", "1.0", "2.0"],
        "int": 3,
        "dict": {"nested": "x"},
        5: "five",
        "huge": BIG,
        "bytes": b"1.0\xff",
        "none": None,
        "emptylist": [],
    }
    result = inv.normalise_pkg_list("deb", raw, problems)["deb"]
    assert result["good"] == "1.0"
    assert result["list"] == "1.0,2.0"
    assert result["int"] == "3"
    assert result["bytes"].startswith("1.0")
    assert len(result["huge"]) == 512
    for bad in ("dict", "none", "emptylist"):
        assert bad not in result
    assert 5 not in result
    assert problems_mention(problems, "dict")
    assert problems_mention(problems, "int")  # the key of type int
    assert problems_mention(problems, "truncated")
    assert problems_mention(problems, "UTF-8")


@pytest.mark.parametrize("raw", [None, "bash 1.0", 42, ["bash"]])
def test_normalise_pkg_list_not_a_mapping(raw):
    problems = []
    assert inv.normalise_pkg_list("deb", raw, problems) == {}
    assert problems


def test_many_bad_entries_are_counted_not_listed():
    problems = []
    raw = {f"p{i}": {"bad": i} for i in range(1000)}
    raw["ok"] = "1"
    result = inv.normalise_pkg_list("deb", raw, problems)
    assert result == {"deb": {"ok": "1"}}
    assert len(problems) <= inv.MAX_LINE_PROBLEMS + 2
    assert problems_mention(problems, "more problems")


# --- deb / rpm sources ------------------------------------------------------------------------


def test_parse_deb_sources():
    problems = []
    result = inv.parse_deb_sources(DEB_OUTPUT, problems)
    assert problems == []
    assert result["adduser"] == {"name": "adduser", "version": "3.134", "arch": "all"}
    assert result["amqp-tools"] == {
        "name": "librabbitmq",
        "version": "0.11.0-1+deb12u3",
        "arch": "amd64",
    }
    assert result["libpython3.11-minimal"]["name"] == "python3.11"
    # multiarch: the plain name and Salt's "name:arch" names
    assert result["libc6"]["name"] == "glibc"
    assert result["libc6:i386"]["arch"] == "i386" and result["libc6:amd64"]["arch"] == "amd64"
    assert {result["libc6:i386"]["name"], result["libc6"]["name"]} == {"glibc"}


def test_parse_deb_sources_from_this_host():
    """The parser reads the real dpkg-query output of the command it documents."""
    # The project's machines are Debian: a missing dpkg-query is a broken machine, not a skip.
    assert __import__("shutil").which("dpkg-query"), "dpkg-query is not installed"
    out = subprocess.run(inv.DEB_SOURCES_CMD, capture_output=True, check=True).stdout
    problems = []
    result = inv.parse_deb_sources(out, problems)
    assert problems == []
    assert len(result) > 10
    assert all(entry["name"] and entry["version"] for entry in result.values())


def test_parse_deb_sources_hostile():
    problems = []
    text = (
        b"good\tamd64\tgoodsrc\t1.0-1\n"
        b"missing\tamd64\n"  # missing columns
        b"\n"
        b"nover\tamd64\tsrc\t\n"  # empty source version
        b"emptysrc\tall\t\t2.0\n"  # dpkg fills the source with the binary name
        b"latin1\xe9\tall\tsrc\t1\n"  # not UTF-8
        b"old\tall\told (1.2-3)\t1.2-3\n" + b"long\tall\t" + b"y" * 5000 + b"\t1\n"
    )
    result = inv.parse_deb_sources(text, problems)
    assert result["good"] == {"name": "goodsrc", "version": "1.0-1", "arch": "amd64"}
    assert result["emptysrc"] == {"name": "emptysrc", "version": "2.0", "arch": "all"}
    assert result["old"] == {"name": "old", "version": "1.2-3", "arch": "all"}
    assert "latin1\ufffd" in result
    assert "missing" not in result and "nover" not in result and "long" not in result
    assert problems_mention(problems, "line 2", "columns")
    assert problems_mention(problems, "line 4", "empty")
    assert problems_mention(problems, "UTF-8")
    assert problems_mention(problems, "characters long")


@pytest.mark.parametrize("raw", [None, "", {"a": "b"}, 12, ["x\ty\tz\tw"]])
def test_parse_deb_sources_wrong_types(raw):
    problems = []
    assert inv.parse_deb_sources(raw, problems) == {}
    if raw not in (None, ""):
        assert problems


def test_parse_deb_sources_huge_output():
    problems = []
    text = "ok\tall\tok\t1\n" + BIG
    result = inv.parse_deb_sources(text, problems)
    assert result == {"ok": {"name": "ok", "version": "1", "arch": "all"}}
    assert problems_mention(problems, "truncated")


def test_parse_rpm_sources():
    problems = []
    result = inv.parse_rpm_sources(RPM_OUTPUT, problems)
    assert problems == []
    assert result["bash"] == {"name": "bash", "version": "5.1.8-9.el9", "arch": "x86_64"}
    assert result["python3-pip-wheel"] == {
        "name": "python-pip",
        "version": "21.2.3-8.el9",
        "arch": "noarch",
    }
    assert result["glibc.i686"]["arch"] == "i686" and result["glibc.x86_64"]["arch"] == "x86_64"
    assert result["glibc"]["name"] == result["glibc.i686"]["name"] == "glibc"
    assert result["some-firmware"]["version"] == "20240101-1.el9"
    assert "gpg-pubkey" not in result


def test_parse_rpm_sources_hostile():
    problems = []
    text = (
        "ok\tx86_64\tok-1.0-1.src.rpm\n"
        "short\tx86_64\n"
        "weird\tx86_64\tnot-a-source-file\n"
        "\tx86_64\tnoname-1-1.src.rpm\n"
    )
    result = inv.parse_rpm_sources(text, problems)
    assert result == {"ok": {"name": "ok", "version": "1.0-1", "arch": "x86_64"}}
    assert problems_mention(problems, "line 2", "columns")
    assert problems_mention(problems, "line 3", "not-a-source-file")
    assert problems_mention(problems, "line 4", "empty")
    assert inv.parse_rpm_sources({"x": 1}, problems) == {}


# --- pip --------------------------------------------------------------------------------------


def test_normalise_pypi_name():
    assert inv.normalise_pypi_name("Foo.Bar__baz-Qux") == "foo-bar-baz-qux"
    assert inv.normalise_pypi_name("zope.interface") == "zope-interface"


def test_pip_script_runs_and_parses():
    """The script the module runs, under this interpreter, isolated, parses back."""
    out = subprocess.run(
        [sys.executable, "-I", "-c", inv.PIP_SCRIPT], capture_output=True, check=True, cwd="/"
    ).stdout
    problems = []
    result = inv.parse_pip_listing(out, problems, interpreter=sys.executable)
    assert problems == []
    assert result["python"] == ".".join(str(n) for n in sys.version_info[:3])
    assert result["purelib"] and result["site_dirs"]
    assert "pytest" in result["packages"]
    assert "salt" in result["packages"]
    assert all(name == inv.normalise_pypi_name(name) for name in result["packages"])


def test_pip_script_paths_only():
    out = subprocess.run(
        [sys.executable, "-I", "-c", inv.PIP_SCRIPT, "--paths-only"],
        capture_output=True,
        check=True,
        cwd="/",
    ).stdout
    result = inv.parse_pip_listing(out, [], interpreter=sys.executable)
    assert result["site_dirs"] and result["packages"] == {}


def test_parse_pip_listing():
    listing = {
        "python": "3.12.4",
        "purelib": "/opt/venv/lib/python3.12/site-packages",
        "platlib": "/opt/venv/lib/python3.12/site-packages",
        "site_dirs": ["/opt/venv/lib/python3.12/site-packages"],
        "packages": {"Django": "5.0", "zope.interface": "6.4", "django": "4.2"},
        "errors": [],
    }
    problems = []
    result = inv.parse_pip_listing("sitecustomize says hi\n" + json.dumps(listing), problems)
    assert problems == []
    assert result["python"] == "3.12.4"
    assert result["packages"] == {"django": "4.2,5.0", "zope-interface": "6.4"}


def test_parse_pip_listing_hostile():
    problems = []
    listing = {
        "python": {"not": "a version"},
        "site_dirs": ["relative/dir", "/abs/site-packages", 7],
        "packages": {"good": "1.0", "bad": ["x", {"y": 1}], "worse": {"a": 1}, "x" * 600: "1"},
        "errors": ["unreadable distribution at /abs/site-packages/broken.dist-info: boom"],
    }
    result = inv.parse_pip_listing(json.dumps(listing), problems, interpreter="/opt/py")
    assert result["packages"]["good"] == "1.0"
    assert result["packages"]["bad"] == "x"
    assert "worse" not in result["packages"]
    assert result["site_dirs"] == ["/abs/site-packages"]
    assert result["python"] is None
    assert problems_mention(problems, "/opt/py", "broken.dist-info")
    assert problems_mention(problems, "/opt/py", "worse")


@pytest.mark.parametrize("raw", [None, "", "not json", "[1, 2]", b"\xff\xfe", 42, BIG])
def test_parse_pip_listing_garbage(raw):
    problems = []
    result = inv.parse_pip_listing(raw, problems, interpreter="/opt/py")
    assert result["packages"] == {}
    assert problems


def test_pip_interpreters():
    problems = []
    assert inv.pip_interpreters("/usr/bin/python3", problems) == ["/usr/bin/python3"]
    assert inv.pip_interpreters(["/a/python", "/a/python", "/b/python"], problems) == [
        "/a/python",
        "/b/python",
    ]
    assert inv.pip_interpreters(None, problems) == [] and inv.pip_interpreters([], problems) == []
    assert problems == []


@pytest.mark.parametrize(
    "value,kept",
    [
        ({"a": 1}, []),
        (5, []),
        (["python3", "/ok/python", 5, None, {"x": 1}, "/bad\x00path"], ["/ok/python"]),
        ("relative/python", []),
    ],
)
def test_pip_interpreters_hostile(value, kept):
    problems = []
    assert inv.pip_interpreters(value, problems) == kept
    assert problems


# --- nix --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,expected",
    [
        ("hello-2.12.1", ("hello", "2.12.1")),
        ("apache-httpd-2.0.48", ("apache-httpd", "2.0.48")),
        ("util-linux-2.39.4-bin", ("util-linux", "2.39.4")),
        ("bash-interactive-5.2p37", ("bash-interactive", "5.2p37")),
        ("glibc-locales-2.40-36", ("glibc-locales", "2.40-36")),
        ("nixos-rebuild", ("nixos-rebuild", "")),
        ("perl-5.40.0-env", ("perl", "5.40.0-env")),
    ],
)
def test_split_drv_name(name, expected):
    assert inv.split_drv_name(name) == expected


def test_split_store_path_rejects():
    assert inv.split_store_path("/nix/store/short-hello-1.0") is None
    assert inv.split_store_path("/usr/bin/hello") is None
    assert inv.split_store_path(None) is None
    assert inv.split_store_path("/nix/store/" + "a" * 32 + "-hello-1.0.drv") is None


def test_parse_nix_system_profile(fixtures_dir):
    problems = []
    text = (fixtures_dir / "nix" / "system-sw-references.txt").read_text()
    result = inv.parse_nix_store_paths(text, problems)
    assert problems == []
    assert result["util-linux"] == "2.39.4"  # -bin and the out output collapse
    assert result["bash-interactive"] == "5.2p37"
    assert result["nixos-rebuild"] == ""
    assert result["openssh"] == "9.9p1"
    assert len(result) == 20


def test_parse_nix_store_paths_hostile():
    problems = []
    good = "/nix/store/" + "a" * 32 + "-hello-2.12.1"
    text = "\n".join([good, "garbage", "/nix/store/" + "b" * 32 + "-x.drv", "y" * 5000, ""])
    assert inv.parse_nix_store_paths(text, problems) == {"hello": "2.12.1"}
    assert problems_mention(problems, "garbage")
    assert problems_mention(problems, "characters long")
    assert inv.parse_nix_store_paths({"a": 1}, problems) == {}


def test_parse_nix_env_json(fixtures_dir):
    problems = []
    text = (fixtures_dir / "nix" / "nix-env-query.json").read_text()
    result = inv.parse_nix_env_json(text, problems)
    assert problems == []
    assert result == {"hello": "2.12.1", "ripgrep": "14.1.1", "jq": "1.7.1"}


def test_parse_nix_env_json_hostile():
    problems = []
    data = {
        "0": {"name": "old-nix-2.3"},  # no pname/version: split the name
        "1": {"outputs": {"out": "/nix/store/" + "c" * 32 + "-tree-2.1.1"}},
        "2": "not an object",
        "3": {"pname": {"x": 1}},
    }
    result = inv.parse_nix_env_json(json.dumps(data), problems)
    assert result == {"old-nix": "2.3", "tree": "2.1.1"}
    assert problems_mention(problems, "entry '2'")
    assert problems_mention(problems, "entry '3'")
    assert inv.parse_nix_env_json("[]", problems) == {}
    assert inv.parse_nix_env_json(None, problems) == {}


def test_parse_nix_profile_v2(fixtures_dir):
    problems = []
    text = (fixtures_dir / "nix" / "nix-profile-list-v2.json").read_text()
    result = inv.parse_nix_profile_json(text, problems)
    assert problems == []
    assert result == {"gdb": "11.1", "blender-bin": "3.1.2"}  # cowsay is inactive


def test_parse_nix_profile_v3(fixtures_dir):
    problems = []
    text = (fixtures_dir / "nix" / "nix-profile-list-v3.json").read_text()
    result = inv.parse_nix_profile_json(text, problems)
    assert problems == []
    assert result == {"hello": "2.12.1", "git": "2.47.1"}


def test_parse_nix_profile_hostile():
    problems = []
    data = {
        "version": 3,
        "elements": {
            "ok": {"storePaths": ["/nix/store/" + "d" * 32 + "-ok-1.0"]},
            "nopaths": {"active": True},
            "badpath": {"storePaths": ["/tmp/x", 5]},
            "notobj": [1, 2],
        },
    }
    assert inv.parse_nix_profile_json(json.dumps(data), problems) == {"ok": "1.0"}
    assert problems_mention(problems, "no storePaths")
    assert problems_mention(problems, "/tmp/x")
    problems = []
    assert inv.parse_nix_profile_json('{"version": 3}', problems) == {}
    assert problems_mention(problems, "elements")


# --- the document and its digest --------------------------------------------------------------


def sample_parts():
    packages = {"deb": {"bash": "5.2", "libc6": "2.36"}, "pypi": {"six": "1.16.0"}}
    sources = {"deb": {"bash": {"name": "bash", "version": "5.2"}}}
    facts = {"os": "Debian", "osrelease": "12", "pip_python": {"/usr/bin/python3": "3.11.2"}}
    return packages, sources, facts


def test_build_inventory_shape():
    doc = inv.build_inventory(*sample_parts())
    assert set(doc) == {"packages", "sources", "facts", "digest", "errors"}
    assert doc["packages"]["deb"] == {"bash": "5.2", "libc6": "2.36"}
    assert doc["sources"] == {"deb": {"bash": {"name": "bash", "version": "5.2"}}}
    assert doc["facts"]["pip_python"] == {"/usr/bin/python3": "3.11.2"}
    assert doc["errors"] == []
    assert len(doc["digest"]) == 64
    assert doc["digest"] == inv.inventory_digest(doc["packages"], doc["sources"], doc["facts"])
    json.dumps(doc)  # serialisable as it is


def test_digest_is_sha256_of_canonical_json():
    import hashlib

    packages, sources, facts = sample_parts()
    body = {"packages": packages, "sources": sources, "facts": facts}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    expected = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    assert inv.build_inventory(packages, sources, facts)["digest"] == expected


def test_digest_ignores_key_order():
    packages, sources, facts = sample_parts()
    reordered = {
        "pypi": dict(packages["pypi"]),
        "deb": dict(reversed(list(packages["deb"].items()))),
    }
    facts_reordered = dict(reversed(list(facts.items())))
    first = inv.build_inventory(packages, sources, facts)["digest"]
    assert inv.build_inventory(reordered, sources, facts_reordered)["digest"] == first


def test_digest_ignores_errors():
    parts = sample_parts()
    clean = inv.build_inventory(*parts)
    noisy = inv.build_inventory(*parts, errors=["dpkg-query: exited with 2"])
    assert noisy["errors"] == ["dpkg-query: exited with 2"]
    assert noisy["digest"] == clean["digest"]


def test_digest_changes_with_a_version():
    packages, sources, facts = sample_parts()
    before = inv.build_inventory(packages, sources, facts)["digest"]
    packages["pypi"]["six"] = "1.17.0"
    assert inv.build_inventory(packages, sources, facts)["digest"] != before


def test_digest_changes_with_a_fact():
    packages, sources, facts = sample_parts()
    before = inv.build_inventory(packages, sources, facts)["digest"]
    facts["osrelease"] = "13"
    assert inv.build_inventory(packages, sources, facts)["digest"] != before


def test_digest_handles_non_ascii():
    doc = inv.build_inventory({"deb": {"paquet-é": "1"}}, {}, {"os": "Débian"})
    assert doc["packages"]["deb"] == {"paquet-é": "1"}
    assert len(doc["digest"]) == 64


def test_build_inventory_keeps_sources_of_installed_packages_only():
    packages = {"deb": {"bash": "5.2"}}
    sources = {
        "deb": {
            "bash": {"name": "bash", "version": "5.2"},
            "removed-but-configured": {"name": "x", "version": "1"},
        },
        "rpm": {"glibc": {"name": "glibc", "version": "2.34-1"}},  # no rpm packages: kept
    }
    doc = inv.build_inventory(packages, sources, {})
    assert doc["sources"]["deb"] == {"bash": {"name": "bash", "version": "5.2"}}
    assert doc["sources"]["rpm"] == {"glibc": {"name": "glibc", "version": "2.34-1"}}


def test_build_inventory_keeps_each_binarys_architecture():
    """The SBOM's purls need it: dpkg's ``all`` is not the node's architecture."""
    packages = {"deb": {"tzdata": "2024a", "bash": "5.2", "odd": "1"}}
    sources = {
        "deb": {
            "tzdata": {"name": "tzdata", "version": "2024a", "arch": "all"},
            "bash": {"name": "bash", "version": "5.2"},  # older minions send no arch
            "odd": {"name": "odd", "version": "1", "arch": {"x": 1}},  # hostile: dropped
        }
    }
    problems = []
    doc = inv.build_inventory(packages, sources, {}, errors=problems)
    assert doc["sources"]["deb"]["tzdata"]["arch"] == "all"
    assert "arch" not in doc["sources"]["deb"]["bash"]
    assert doc["sources"]["deb"]["odd"] == {"name": "odd", "version": "1"}
    assert any("architecture" in e for e in doc["errors"])


def test_build_inventory_hostile():
    packages = {
        "deb": {"bash": "5.2", "bad": {"x": 1}},
        "pypi": "not a table",
        7: {"x": "1"},
        "rpm": None,
    }
    sources = {"deb": {"bash": "not a mapping"}, 3: {}, "rpm": ["x"]}
    facts = {"os": "Debian", "osrelease": ["12"], 5: "x", "pip_python": {"/p": {"x": 1}}}
    doc = inv.build_inventory(packages, sources, facts, errors=["earlier", None, 12, {"a": 1}])
    assert doc["packages"] == {"deb": {"bash": "5.2"}}
    assert doc["sources"] == {"deb": {}}
    assert doc["facts"]["os"] == "Debian"
    assert "osrelease" not in doc["facts"]
    assert doc["facts"]["pip_python"] == {"/p": None}
    assert doc["errors"][0] == "earlier"
    assert "12" in doc["errors"]
    for words in (("bad",), ("pypi",), ("ecosystem", "int"), ("osrelease",), ("sources",)):
        assert problems_mention(doc["errors"], *words), words
    json.dumps(doc)


@pytest.mark.parametrize("packages", [None, "x", 5, ["deb"]])
def test_build_inventory_wrong_top_level_types(packages):
    doc = inv.build_inventory(packages, "nope", 42, errors="one error")
    assert doc["packages"] == {} and doc["sources"] == {} and doc["facts"] == {}
    assert "one error" in doc["errors"]
    assert len(doc["errors"]) >= 2  # sources and facts were reported
    assert len(doc["digest"]) == 64


def test_build_inventory_caps_errors():
    doc = inv.build_inventory({}, {}, {}, errors=[f"e{i}" for i in range(1000)])
    assert len(doc["errors"]) == inv.MAX_ERRORS + 1
    assert "800 more errors" in doc["errors"][-1]


def test_join_versions_and_add_version():
    assert inv.join_versions(["1", "2", "1"], "v") == "1,2"
    assert inv.join_versions("", "v") == ""
    assert inv.join_versions(1.5, "v") == "1.5"
    problems = []
    assert inv.join_versions({"a": 1}, "v", problems) is None and problems
    target = {}
    inv.add_version(target, "six", "1.16.0")
    inv.add_version(target, "six", "1.16.0")
    inv.add_version(target, "six", "1.15.0,1.17.0")
    assert target == {"six": "1.15.0,1.16.0,1.17.0"}
