"""The documentation: the Sphinx build (slow) and the generated README results block (quick)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


def _load_results_module():
    """Import docs/_ext/results.py by path (docs/ is not a package)."""
    spec = importlib.util.spec_from_file_location("deepz_docs_results", DOCS / "_ext" / "results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


results = _load_results_module()

EXAMPLE = {
    "benchmark": "compare_rail",
    "title": "Deepz and the other RAIL estimators",
    "command": "python benchmarks/compare_rail.py --seeds 87",
    "commit": "abc1234",
    "date": "2026-12-01",
    "machine": "2 cores, CPU only",
    "headline": True,
    "tables": [{"title": "Scores", "columns": ["estimator", "sigma68"],
                "rows": [["Deepz", "0.0219"], ["a|b", "1"]], "note": "A note."}],
    "data": {},
}


def test_readme_results_block_is_generated():
    """The README's results and summary blocks equal what docs/_ext/results.py renders from benchmarks/results."""
    text = (REPO / "README.md").read_text()
    assert results.readme_text(text, results.load_results(results.RESULTS_DIR)) == text, (
        "README results or summary blocks are out of date: run python docs/_ext/results.py --readme")


def test_summary_blocks(tmp_path):
    """A summary block is filled from the result file of its name, with the provenance; an unknown name fails."""
    (tmp_path / "suite_time.json").write_text(json.dumps(dict(EXAMPLE, summary="It took 3 min")))
    loaded = results.load_results(tmp_path)
    text = "a <!-- summary:suite_time:start -->old<!-- summary:suite_time:end --> b"
    filled = results.replace_summaries(text, loaded)
    assert filled == ("a <!-- summary:suite_time:start -->It took 3 min (measured with `python "
                      "benchmarks/compare_rail.py --seeds 87` at commit `abc1234` on 2026-12-01)."
                      "<!-- summary:suite_time:end --> b")
    with pytest.raises(KeyError, match="other"):
        results.replace_summaries("<!-- summary:other:start --><!-- summary:other:end -->", loaded)


def test_results_rendering(tmp_path):
    """Every table carries its provenance; headline files go to the README block; pipes are escaped."""
    (tmp_path / "b.json").write_text(json.dumps(EXAMPLE))
    (tmp_path / "a.json").write_text(json.dumps(dict(EXAMPLE, title="Other", headline=False)))
    loaded = results.load_results(tmp_path)
    assert [r["_file"] for r in loaded] == ["a.json", "b.json"]

    page = results.render_results_page(loaded)
    assert page.index("## Other") < page.index("## Deepz and the other RAIL estimators")
    assert page.count("Measured with `python benchmarks/compare_rail.py --seeds 87` at commit "
                      "`abc1234` on 2026-12-01 (2 cores, CPU only).") == 2
    assert "| a\\|b | 1 |" in page and "A note." in page

    block = results.render_readme_block(loaded)
    assert "Other" not in block and "### Deepz and the other RAIL estimators" in block
    two = dict(EXAMPLE, tables=EXAMPLE["tables"] + [dict(EXAMPLE["tables"][0], title="Per seed")])
    (tmp_path / "b.json").write_text(json.dumps(two))
    loaded = results.load_results(tmp_path)
    assert "#### Per seed" not in results.render_readme_block(loaded)  # the README: each file's first table
    assert "### Per seed" in results.render_results_page(loaded)
    snippet = results.render_snippet(loaded[1])  # included under any heading level: no headings of its own
    assert "**Scores**" in snippet and "**Per seed**" in snippet and "#" not in snippet

    readme = f"x\n{results.START}\nold\n{results.END}\ny\n"
    assert results.replace_block(readme, block) == f"x\n{results.START}{block}{results.END}\ny\n"


def test_results_page_without_results(tmp_path):
    """An empty results folder gives a page that says so."""
    assert results.render_results_page(results.load_results(tmp_path)) == results.NO_RESULTS + "\n"
    assert "No headline results" in results.render_readme_block([])


@pytest.mark.slow
@pytest.mark.docs
def test_sphinx_build(tmp_path):
    """The Sphinx site builds with warnings as errors."""
    for module in ("sphinx", "myst_nb", "numpydoc", "furo"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: pip install -e '.[docs]'")
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", str(DOCS), str(tmp_path / "html")],
        cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-10000:]
    assert (tmp_path / "html" / "options.html").exists()
