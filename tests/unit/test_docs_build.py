"""The Sphinx docs build without a single warning.

The reference pages are generated from the loader modules' docstrings (``automodule``), so a
broken docstring (bad rST, a module that no longer imports) fails here and not only when
someone builds the docs by hand.
"""

import pathlib

from sphinx.cmd.build import build_main

DOCS_DIR = pathlib.Path(__file__).resolve().parents[2] / "docs"


def test_docs_build_without_warnings(tmp_path):
    html = tmp_path / "html"
    # -W: every warning is an error. -E: read every source again. -q: only warnings and errors
    # are printed, so a failure shows why.
    args = ["-W", "-E", "-q", "-b", "html", "-d", str(tmp_path / "doctrees")]
    status = build_main([*args, str(DOCS_DIR), str(html)])
    assert status == 0, "sphinx-build -W failed: see the warnings printed above"
    assert (html / "index.html").exists()
    assert (html / "ref" / "modules.html").exists()
