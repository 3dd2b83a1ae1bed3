"""Sphinx configuration for the saltext-fleet documentation.

Built offline: no intersphinx, the built-in ``alabaster`` theme, no extension outside Sphinx
itself. The reference pages come from the loader modules' own docstrings (``automodule``), so a
broken docstring breaks ``python -m sphinx -W`` and the ``tests/unit/test_docs_build.py`` test.
"""

import os
import sys

DOCS_DIR = os.path.dirname(os.path.abspath(__file__))
PROJECT_ROOT = os.path.dirname(DOCS_DIR)

# The package is normally installed (editable) in the venv; putting the checkout first makes
# autodoc read the docstrings of this tree even when another copy is installed.
sys.path.insert(0, PROJECT_ROOT)

from saltext_fleet import __version__  # noqa: E402

# -- Project information -----------------------------------------------------------------------
project = "saltext-fleet"
author = "saltext-fleet developers"
copyright = "saltext-fleet developers"
release = __version__
version = ".".join(__version__.split(".")[:2])

# -- General configuration ---------------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
]

# Salt loader modules use dunders (__salt__, __opts__, __grains__, ...) only inside their
# functions, so they import as plain modules and need no mocking. Salt itself is a dependency
# of the package and is installed wherever the docs are built.
autodoc_mock_imports: list[str] = []
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "signature"

templates_path: list[str] = []
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
root_doc = "index"
default_role = "literal"
pygments_style = "sphinx"

# -- HTML output -------------------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"saltext-fleet {release}"
html_static_path: list[str] = []
html_theme_options = {
    "description": "A Salt master as the control plane of a build and device fleet",
    "fixed_sidebar": True,
}
