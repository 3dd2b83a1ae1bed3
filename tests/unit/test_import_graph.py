"""The package's import graph has no cycle, and no module imports another's private name.

The graph is read from the source with ``ast``: every ``import`` and ``from ... import`` in a
file counts, at the top or inside a function (an import moved into a function to dodge a
cycle still closes it), relative imports resolved against the importing module, and
``from pkg import mod`` is an edge to ``pkg.mod`` when that is a module (to ``pkg``
otherwise). A private name is one with a single leading underscore (``_meta_values``, not
``__version__``).
"""

from __future__ import annotations

import ast
import pathlib
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = "saltext_fleet"


def modules_of(root: pathlib.Path, package: str) -> dict[str, pathlib.Path]:
    """``{dotted module name: file}`` of every module of ``package`` under ``root``."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _imports(module: str, path: pathlib.Path, modules: dict[str, pathlib.Path]):
    """``(line, target module, imported name or None)`` for every import in the file."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".") if is_package else module.split(".")[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                if candidate in modules:
                    yield node.lineno, candidate, None
                else:
                    yield node.lineno, base, alias.name


def import_graph(root: pathlib.Path, package: str):
    """``(graph, private)``: ``graph`` maps each module to the package modules it imports;
    ``private`` lists ``"module:line imports _name from other"`` for every private name
    imported from another module of the package."""
    modules = modules_of(root, package)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    private = []
    for module, path in modules.items():
        for line, target, name in _imports(module, path, modules):
            if target.split(".")[0] != package:
                continue
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target not in modules:
                continue
            if target != module:
                graph[module].add(target)
            if name is not None and _is_private(name) and target != module:
                private.append(f"{module}:{line} imports {name} from {target}")
    return graph, private


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as ``[a, b, ..., a]``, or None when it has none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


# -- the package -------------------------------------------------------------------------------


def test_the_package_has_no_import_cycle():
    graph, _private = import_graph(ROOT, PACKAGE)
    assert len(graph) > 50 and graph[f"{PACKAGE}.webui.app"]  # the walk saw the package
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_private_name_is_imported_across_modules():
    _graph, private = import_graph(ROOT, PACKAGE)
    assert not private, "private names imported across modules:\n" + "\n".join(private)


def test_the_web_ui_base_imports_nothing_else_of_the_web_ui():
    graph, _private = import_graph(ROOT, PACKAGE)
    webui = {m for m in graph[f"{PACKAGE}.webui.base"] if m.startswith(f"{PACKAGE}.webui")}
    assert webui <= {f"{PACKAGE}.webui"}, webui


# -- the checker itself, on small fake packages ------------------------------------------------


def _write(root: pathlib.Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_the_checker_finds_a_cycle_closed_inside_a_function(tmp_path):
    """a -> (from . import b) b -> (from pkg.sub import c, inside a function) sub.c ->
    (from ..a import thing) a: a cycle, though only one of its imports is at the top."""
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from . import b\nthing = 1\n",
            "pkg/b.py": "def late():\n    from pkg.sub import c\n    return c\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/c.py": "import os\nfrom ..a import thing\n",
            "pkg/d.py": "import pkg.a\n",
        },
    )
    graph, private = import_graph(tmp_path, "pkg")
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.sub.c"}
    assert graph["pkg.sub.c"] == {"pkg.a"} and graph["pkg.d"] == {"pkg.a"}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]
    assert private == []


def test_the_checker_finds_private_imports_and_passes_a_clean_package(tmp_path):
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "__version__ = '1'\n",
            "pkg/low.py": "def _helper():\n    pass\n\ndef helper():\n    pass\n",
            "pkg/high.py": "from pkg import __version__\nfrom pkg.low import helper\n",
            "pkg/sneaky.py": "def f():\n    from .low import _helper\n",
        },
    )
    graph, private = import_graph(tmp_path, "pkg")
    assert find_cycle(graph) is None
    assert graph["pkg.high"] == {"pkg", "pkg.low"}
    assert private == ["pkg.sneaky:2 imports _helper from pkg.low"]
