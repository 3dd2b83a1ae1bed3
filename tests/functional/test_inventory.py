"""fleet.inventory through Salt's real loader, against this host's dpkg and a real virtualenv.

The helpers at the top (a local wheel, a virtualenv, pip install) are shared with
``test_beacon.py``: no network is needed, the wheel is built here.
"""

import base64
import contextlib
import hashlib
import json
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

from saltext_fleet.core import inventory as core

# --- helpers shared with test_beacon.py -------------------------------------------------------


def build_wheel(directory: pathlib.Path, name: str = "fleettiny", version: str = "1.0"):
    """A minimal pure-Python wheel, written by hand (no build backend, no network)."""
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f'__version__ = "{version}"\n',
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist_info}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: saltext-fleet-tests\n"
            "Root-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for path, text in files.items():
        digest = hashlib.sha256(text.encode()).digest()
        b64 = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        record.append(f"{path},sha256={b64},{len(text.encode())}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = "\n".join(record) + "\n"
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def make_venv(path: pathlib.Path) -> pathlib.Path:
    """A real virtualenv (with its bundled pip); returns its python."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    return path / "bin" / "python"


def pip(python: pathlib.Path, *args: str) -> str:
    cmd = [str(python), "-m", "pip", "--disable-pip-version-check", "--no-input", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def pip_install_local(python: pathlib.Path, wheel: pathlib.Path) -> None:
    pip(python, "install", "--no-index", "--no-deps", str(wheel))


def venv_distributions(python: pathlib.Path) -> dict:
    """What pip itself says the venv holds: the oracle for the pypi ecosystem."""
    listing = json.loads(pip(python, "list", "--format", "json"))
    return {core.normalise_pypi_name(d["name"]): d["version"] for d in listing}


@contextlib.contextmanager
def salt_functions_patched(loaders, replacements: dict):
    """Replace functions in the modules' ``__salt__`` for the duration of a ``with`` block.

    ``patch.dict``/``monkeypatch.setitem`` cannot restore them: reading
    ``loaders.modules[name]`` gives a ``LoadedFunc`` that looks its function up by name,
    so writing it back makes the name point at itself. Save and restore the raw entries of
    both the outer loader and the inner one exec modules see as ``__salt__``.
    """
    outer = loaders.modules
    inner = getattr(outer, "_dunder_salt", outer)
    saved = []
    for name in replacements:
        assert name in outer, name  # loads the real function first
        saved.append((name, outer._dict.get(name), inner._dict.get(name)))
    try:
        for name, func in replacements.items():
            outer[name] = func  # salt's loader writes this through to the inner loader
            inner._dict[name] = func
        yield
    finally:
        for name, outer_func, inner_func in saved:
            for loader, func in ((outer, outer_func), (inner, inner_func)):
                if func is None:
                    loader._dict.pop(name, None)
                else:
                    loader._dict[name] = func


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory):
    return make_venv(tmp_path_factory.mktemp("inventory-venv") / "venv")


@pytest.fixture(scope="module")
def minion_config_overrides(venv_python):
    return {"fleet": {"inventory": {"pip": [str(venv_python)]}}}


@pytest.fixture
def fleet(loaders):
    return loaders.modules.fleet


def dpkg_installed() -> dict:
    """Installed packages per dpkg-query (status installed), ``{name: version}``."""
    fmt = "${Status}\t${Package}\t${Version}\n"
    out = subprocess.run(["dpkg-query", "-W", "-f", fmt], check=True, capture_output=True)
    result = {}
    for line in out.stdout.decode().splitlines():
        status, name, version = line.split("\t")
        want, _, state = status.split(" ")
        # Salt's aptpkg lists install/hold (and purge-pending) packages whose state is
        # "installed"; "deinstall ... installed" goes to its "removed" list.
        if state == "installed" and want in ("install", "hold", "purge"):
            result.setdefault(name, set()).add(version)
    return {name: ",".join(sorted(v)) for name, v in result.items()}


def dpkg_sources() -> dict:
    out = subprocess.run(core.DEB_SOURCES_CMD, check=True, capture_output=True).stdout.decode()
    return {
        cols[0]: {"name": cols[2] or cols[0], "version": cols[3], "arch": cols[1]}
        for cols in (line.split("\t") for line in out.splitlines())
    }


debian_only = pytest.mark.skipif(
    not shutil.which("dpkg-query"), reason="needs a Debian host (dpkg-query)"
)


# --- tests ------------------------------------------------------------------------------------


def test_inventory_document_shape(fleet):
    doc = fleet.inventory()
    assert set(doc) == {"packages", "sources", "facts", "digest", "errors"}
    assert doc["errors"] == [], doc["errors"]
    assert doc["digest"] == core.inventory_digest(doc["packages"], doc["sources"], doc["facts"])
    facts = doc["facts"]
    for key in ("os", "os_family", "osrelease", "osarch", "kernelrelease", "saltversion"):
        assert facts[key], key
    import salt.version

    assert facts["saltversion"] == salt.version.__version__
    json.dumps(doc)


@debian_only
def test_deb_packages_are_exactly_what_dpkg_lists(fleet):
    doc = fleet.inventory()
    ours = {}
    for name, version in doc["packages"]["deb"].items():
        # Salt names foreign-architecture packages "name:arch"; dpkg-query's ${Package} does not.
        core.add_version(ours, name.split(":", 1)[0], version)
    assert ours == dpkg_installed()


@debian_only
def test_deb_source_packages(fleet):
    doc = fleet.inventory()
    deb = doc["packages"]["deb"]
    sources = doc["sources"]["deb"]
    assert set(sources) == set(deb)  # every installed binary has its source package
    expected = dpkg_sources()
    for binary, source in sources.items():
        assert source == expected[binary.split(":", 1)[0]], binary


def test_pypi_lists_exactly_the_venv(fleet, venv_python):
    doc = fleet.inventory()
    assert doc["packages"]["pypi"] == venv_distributions(venv_python)
    version = subprocess.run(
        [str(venv_python), "-c", "import platform; print(platform.python_version())"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert doc["facts"]["pip_python"] == {str(venv_python): version}


def test_digest_changes_after_pip_install(fleet, venv_python, tmp_path):
    before = fleet.inventory()
    assert fleet.inventory()["digest"] == before["digest"]  # stable when nothing changed
    pip_install_local(venv_python, build_wheel(tmp_path, version="1.0"))
    try:
        after = fleet.inventory()
        assert after["packages"]["pypi"]["fleettiny"] == "1.0"
        assert after["packages"]["pypi"] == venv_distributions(venv_python)
        assert after["digest"] != before["digest"]
        pip_install_local(venv_python, build_wheel(tmp_path, version="1.1"))
        upgraded = fleet.inventory()
        assert upgraded["packages"]["pypi"]["fleettiny"] == "1.1"
        assert upgraded["digest"] not in (before["digest"], after["digest"])
    finally:
        pip(venv_python, "uninstall", "-y", "fleettiny")
    assert fleet.inventory()["digest"] == before["digest"]


def test_stamp_paths(fleet, venv_python):
    paths = fleet.stamp_paths()
    assert str(venv_python) in paths
    site = subprocess.run(
        [str(venv_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert site in paths
    if shutil.which("dpkg-query"):
        assert "/var/lib/dpkg/status" in paths


# --- hostile data from Salt and from commands -------------------------------------------------


def test_hostile_pkg_list_and_commands(loaders, fleet):
    def hostile_list_pkgs(**kwargs):
        assert kwargs.get("use_context") is False
        return {
            "good": "1.0",
            "multi": ["2.0", "1.0"],
            "nested": {"x": 1},
            7: "seven",
            "huge": "v" * (10 * 1024 * 1024),
        }

    def hostile_run_all(cmd, **kwargs):
        assert kwargs.get("python_shell") is False
        if cmd[0] == "dpkg-query":
            return {
                "retcode": 0,
                "stdout": b"good\tall\tgoodsrc\t1.0\nbroken\n\xff\xfe\tall\n",
                "stderr": "",
            }
        raise RuntimeError("interpreter exploded")

    patched = {"pkg.list_pkgs": hostile_list_pkgs, "cmd.run_all": hostile_run_all}
    with salt_functions_patched(loaders, patched):
        doc = fleet.inventory()
    deb = doc["packages"].get("deb", {})
    assert deb["good"] == "1.0"
    assert deb["multi"] == "1.0,2.0"
    assert len(deb["huge"]) == 512
    assert "nested" not in deb
    assert doc["sources"]["deb"] == {"good": {"name": "goodsrc", "version": "1.0", "arch": "all"}}
    assert "pypi" not in doc["packages"]
    errors = "\n".join(doc["errors"])
    assert "nested" in errors
    assert "truncated" in errors
    assert "columns" in errors
    assert "interpreter exploded" in errors
    assert doc["facts"]["os_family"]  # the rest is still there
    json.dumps(doc)


def test_failing_pkg_list_and_bad_outputs(loaders, fleet):
    def failing_list_pkgs(**kwargs):
        raise OSError("dpkg database locked")

    outputs = {
        "dpkg-query": {"retcode": 2, "stdout": "", "stderr": "dpkg-query: error"},
    }

    def run_all(cmd, **kwargs):
        if cmd[0] in outputs:
            return outputs[cmd[0]]
        return ["not", "a", "dict"]

    patched = {"pkg.list_pkgs": failing_list_pkgs, "cmd.run_all": run_all}
    with salt_functions_patched(loaders, patched):
        doc = fleet.inventory()
    errors = "\n".join(doc["errors"])
    assert "dpkg database locked" in errors
    assert "exited with 2" in errors
    assert "not a dict" in errors
    assert doc["facts"]["os"]
    assert len(doc["digest"]) == 64


@pytest.mark.parametrize(
    "value,fragment",
    [
        ({"not": "a list"}, "expected a list"),
        (42, "expected a list"),
        (["relative/python"], "not an absolute path"),
        (["/nonexistent/bin/python"], "not an executable file"),
    ],
)
def test_bad_pip_option_is_an_error_entry(loaders, fleet, monkeypatch, value, fragment):
    # config.get reads the loader's opts: change the option there, as a minion config would.
    monkeypatch.setitem(loaders.opts, "fleet", {"inventory": {"pip": value}})
    doc = fleet.inventory()
    assert any(fragment in e for e in doc["errors"]), doc["errors"]
    assert "pypi" not in doc["packages"]
    assert doc["packages"]  # the OS packages are still there


def test_pip_option_as_a_string(loaders, fleet, monkeypatch, venv_python):
    monkeypatch.setitem(loaders.opts, "fleet", {"inventory": {"pip": str(venv_python)}})
    doc = fleet.inventory()
    assert doc["errors"] == []
    assert doc["packages"]["pypi"] == venv_distributions(venv_python)


def test_config_get_failing(loaders, fleet):
    def config_get(key, default="", *args, **kwargs):
        raise KeyError(key)

    with salt_functions_patched(loaders, {"config.get": config_get}):
        doc = fleet.inventory()
    assert any("fleet:inventory:pip" in e for e in doc["errors"]), doc["errors"]


def test_no_pkg_provider(loaders, fleet, monkeypatch):
    """NixOS and friends: no pkg provider is loaded; the rest of the inventory still runs."""
    real_contains = type(loaders.modules._dunder_salt).__contains__

    def contains(self, key):
        return key != "pkg.list_pkgs" and real_contains(self, key)

    monkeypatch.setattr(type(loaders.modules._dunder_salt), "__contains__", contains)
    doc = fleet.inventory()
    assert "deb" not in doc["packages"]
    assert "pypi" in doc["packages"]
    assert doc["errors"] == []


def test_patches_are_undone(fleet):
    """After the hostile tests the real functions are back (guards the patch helper)."""
    doc = fleet.inventory()
    assert doc["errors"] == [], doc["errors"]
    assert doc["packages"]
