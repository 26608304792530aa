"""The example notebooks execute without error on small settings (the comparison notebook is run in
test_pipelines.py, on the comparison pipeline's outputs)."""

from __future__ import annotations

import json
import os

import nbformat
import pytest

pytest.importorskip("nbclient")
pytest.importorskip("matplotlib")

from nbrun import EXAMPLES, run_notebook  # noqa: E402

NOTEBOOKS = ["01_Deepz_quickstart.ipynb", "02_Deepz_simulations.ipynb", "03_Deepz_transfer_learning.ipynb"]


@pytest.mark.parametrize("name", sorted(n for n in os.listdir(EXAMPLES) if n.endswith(".ipynb")))
def test_notebooks_are_committed_without_outputs(name):
    nb = nbformat.read(os.path.join(EXAMPLES, name), as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, name
    text = "".join(c.source for c in nb.cells)
    assert "DEEPZ_NOTEBOOK_FAST" in text and "**Author:**" in text and "Next steps" in text


@pytest.mark.parametrize("name", NOTEBOOKS)
@pytest.mark.notebooks
def test_notebook_executes(name, tmp_path):
    nb = run_notebook(name, str(tmp_path))
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, json.dumps(errors)[:2000]
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert images, "the notebook should draw figures"
