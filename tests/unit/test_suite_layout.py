"""The suite's own layout: the integration modules that run apart from the package's master
really never ask for it (one that did would start a second master on another worker)."""

from __future__ import annotations

import ast
import pathlib

from tests import conftest

ROOT = pathlib.Path(__file__).resolve().parents[2]
#: The fixtures of tests/integration/conftest.py (all package-scoped, all on its master).
PACKAGE_FIXTURES = {
    "venvs",
    "salt_master",
    "salt_minion",
    "salt_minion_2",
    "salt_cli",
    "salt_run_cli",
    "salt_call_cli",
    "runner",
    "ui",
}


def _package_fixtures() -> set[str]:
    tree = ast.parse((ROOT / "tests/integration/conftest.py").read_text())
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and any("fixture" in ast.unparse(d) for d in node.decorator_list)
    }


def _arguments(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.update(a.arg for a in node.args.args + node.args.kwonlyargs)
    return names


def test_the_package_fixtures_are_the_ones_listed_here():
    assert _package_fixtures() == PACKAGE_FIXTURES


def test_self_contained_integration_modules_use_no_package_fixture():
    assert conftest.SELF_CONTAINED
    for module in sorted(conftest.SELF_CONTAINED):
        path = ROOT / module
        assert path.is_file(), module
        used = _arguments(path) & PACKAGE_FIXTURES
        assert not used, f"{module} asks for {sorted(used)}: it is not self-contained"


def test_scopes_group_the_package_master_modules_and_split_the_rest():
    assert conftest._scope("tests/integration/test_gate.py::test_x") == "tests/integration/"
    assert (
        conftest._scope("tests/integration/test_store_outage.py::test_y")
        == "tests/integration/test_store_outage.py"
    )
    assert conftest._scope("tests/unit/test_lint.py::test_z") == "tests/unit/test_lint.py"
