"""ruff over the package, the tests and the benches, as CI runs it (config in pyproject.toml).

The selected rules are the ones the code's markers name (``noqa: BLE001``), RUF100 fails on a
marker for a rule that is not selected, and F821 is on everywhere: the Salt dunders are declared
as ruff ``builtins``, so a real undefined name in a loader module fails here.
"""

import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TARGETS = ["saltext_fleet", "tests", "bench"]


def _ruff() -> list[str]:
    exe = pathlib.Path(sys.executable).with_name("ruff")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("ruff")
    if not found:
        pytest.fail("ruff is not installed: it is part of the [test] extra")
    return [found]


def test_ruff_check_passes():
    proc = subprocess.run(
        [*_ruff(), "check", "--no-cache", *TARGETS], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format_is_clean():
    proc = subprocess.run(
        [*_ruff(), "format", "--check", "--no-cache", *TARGETS],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_an_undefined_name_in_a_loader_module_is_caught(tmp_path):
    """F821 is on in the Salt modules: a typo of a dunder is an error, the dunders are not."""
    module = tmp_path / "saltext_fleet" / "modules" / "typo.py"
    module.parent.mkdir(parents=True)
    module.write_text("def f():\n    return __salt__, __opts__, __slat__\n")
    proc = subprocess.run(
        [
            *_ruff(),
            "check",
            "--no-cache",
            "--output-format",
            "concise",
            "--config",
            str(ROOT / "pyproject.toml"),
            str(module),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "__slat__" in proc.stdout
    assert "__salt__" not in proc.stdout and "__opts__" not in proc.stdout
