"""Execute an example notebook with nbclient on small settings (DEEPZ_NOTEBOOK_FAST=1)."""

from __future__ import annotations

import os

import nbformat
from nbclient import NotebookClient

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def run_notebook(name: str, cwd: str, env: dict[str, str] | None = None, timeout: int = 600):
    """Run ``examples/<name>`` in ``cwd`` (inline matplotlib backend, headless); returns the executed notebook."""
    nb = nbformat.read(os.path.join(EXAMPLES, name), as_version=4)
    saved = dict(os.environ)
    os.environ.update(DEEPZ_NOTEBOOK_FAST="1", DEEPZ_NOTEBOOK_OUTDIR=os.path.join(cwd, "nb_output"),
                      OMP_NUM_THREADS="1", **(env or {}))
    try:  # the kernel inherits this process's environment
        NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": cwd}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return nb
