"""Sphinx configuration of the pz-rail-deepz documentation."""

import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))

project = "pz-rail-deepz"
author = "pz-rail-deepz developers"
copyright = "pz-rail-deepz developers"  # noqa: A001 (Sphinx's name)
try:
    from rail.deepz._version import version as release
except ImportError:  # not installed from git: setuptools_scm wrote no version file
    release = "0.1.0"

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "options_tables",  # docs/_ext: option tables from the option schemas
    "results",  # docs/_ext: the results page from benchmarks/results/*.json
]

# docs/README.md explains the build; _generated/*.md are pieces {include}d by the pages.
exclude_patterns = ["_build", "README.md", "_generated/*.md", "**.ipynb_checkpoints"]

# Notebooks are committed (outputs cleared) in examples/ and are not executed here; copy them into
# the gitignored build-time folder so the docs never hold a second, drifting copy.
NOTEBOOKS = DOCS / "_generated" / "notebooks"
NOTEBOOKS.mkdir(parents=True, exist_ok=True)
for _nb in sorted((REPO / "examples").glob("*.ipynb")):
    _target = NOTEBOOKS / _nb.name
    if not _target.exists() or _target.read_bytes() != _nb.read_bytes():
        shutil.copyfile(_nb, _target)

nb_execution_mode = "off"
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # numpydoc sections already give the types
# Optional dependency: documenting the simulation modules must not need it installed.
autodoc_mock_imports = ["fsps"]

numpydoc_show_class_members = False  # autodoc's :members: lists them; no autosummary stubs
numpydoc_validation_checks = set()
numpydoc_xref_param_type = False

html_theme = "furo"
html_title = "pz-rail-deepz"

# Docstrings write absolute values as |x|, which reStructuredText reads as a substitution reference
# ("Undefined substitution referenced"). Show them as literals instead of rewriting the sources.
import re  # noqa: E402

_ABS_VALUE = re.compile(r"(?<![\w`|])\|([A-Za-z_(][^|`\n]*?)\|(?![\w`|])")


def _literal_abs_values(app, what, name, obj, options, lines):
    """Turn ``|expr|`` in a docstring into inline literals (in place)."""
    lines[:] = [_ABS_VALUE.sub(r"``|\1|``", line) for line in lines]


def setup(app):
    """Register the docstring hook before numpydoc parses the sections."""
    app.connect("autodoc-process-docstring", _literal_abs_values, priority=100)
