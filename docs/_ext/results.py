"""The results page and the README's headline block, generated from benchmark JSON.

Every benchmark writes one JSON file to ``benchmarks/results/`` with its command, commit,
date, machine and one or more tables of already-formatted cells. This module renders

* the docs' results page (every table of every file, sorted by file name), and
* the README block between :data:`START` and :data:`END` (the tables of files with
  ``"headline": true``),

* one snippet per file, ``_generated/result_<name>.md`` (the file's tables without its
  heading), which the other pages include where they state a measured number,
* the one-sentence ``summary`` of a file that has one, with its provenance, as
  ``_generated/summary_<name>.md`` and in the README between ``<!-- summary:<name>:start -->`` and
  ``<!-- summary:<name>:end -->``,

so no measured number is ever copied by hand. ``python docs/_ext/results.py --readme``
rewrites the README block in place; ``--check`` only reports whether it is up to date.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO / "benchmarks" / "results"
README = REPO / "README.md"
START = "<!-- results:start -->"
END = "<!-- results:end -->"
NO_RESULTS = "No results are recorded yet: run the scripts in `benchmarks/` to produce them."


def load_results(results_dir: Path | None = None) -> list[dict]:
    """Read every ``*.json`` benchmark result, sorted by file name.

    Parameters
    ----------
    results_dir : pathlib.Path, optional
        Folder holding the JSON files (default :data:`RESULTS_DIR`); a missing folder gives no
        results.

    Returns
    -------
    list of dict
        The parsed files, each with an added ``"_file"`` entry (the file name).
    """
    results = []
    for path in sorted(Path(results_dir or RESULTS_DIR).glob("*.json")):
        result = json.loads(path.read_text())
        result["_file"] = path.name
        results.append(result)
    return results


def provenance(result: dict) -> str:
    """One sentence saying how, when and where a result was measured."""
    text = (f"Measured with `{result.get('command', '?')}` at commit `{result.get('commit', '?')}`"
            f" on {result.get('date', '?')}")
    if result.get("machine"):
        text += f" ({result['machine']})"
    return text + "."


def _cell(value) -> str:
    """Escape a cell: a pipe would end it, a newline the row."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_table(table: dict) -> str:
    """Render one table (``columns``, ``rows``, optional ``note``) as Markdown, no title."""
    columns = table.get("columns", [])
    lines = ["| " + " | ".join(_cell(c) for c in columns) + " |",
             "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table.get("rows", [])]
    text = "\n".join(lines) + "\n"
    if table.get("note"):
        text += f"\n{table['note']}\n"
    return text


def render_result(result: dict, level: int = 2, n_tables: int | None = None) -> str:
    """Render one result file: a heading, its provenance, then each table (or the first ``n_tables``) with its title.

    Parameters
    ----------
    result : dict
        A parsed benchmark JSON file.
    level : int
        Markdown heading level of the file's title; table titles get ``level + 1``.
    n_tables : int, optional
        Render only this many tables (the README shows each headline result's first table).

    Returns
    -------
    str
        Markdown text.
    """
    title = result.get("title") or result.get("benchmark") or result.get("_file", "results")
    parts = [f"{'#' * level} {title}\n", provenance(result) + "\n"]
    for table in result.get("tables", [])[:n_tables]:
        if table.get("title"):
            parts.append(f"{'#' * (level + 1)} {table['title']}\n")
        parts.append(render_table(table))
    return "\n".join(parts)


def render_results_page(results: list[dict]) -> str:
    """Body of the docs' results page: every table of every result file."""
    if not results:
        return NO_RESULTS + "\n"
    return "\n".join(render_result(r, level=2) for r in results)


def render_summary(result: dict) -> str:
    """A result file's one-sentence summary followed by how, when and where it was measured."""
    how = f"`{result.get('command', '?')}` at commit `{result.get('commit', '?')}` on {result.get('date', '?')}"
    return f"{result['summary']} (measured with {how})."


_SUMMARY = re.compile(r"(<!-- summary:(?P<name>[\w-]+):start -->)(.*?)(<!-- summary:(?P=name):end -->)", re.S)


def replace_summaries(text: str, results: list[dict]) -> str:
    """``text`` with every summary block filled from the result file of that name (an unknown name is an error)."""
    by_name = {Path(r["_file"]).stem: r for r in results}

    def fill(match: re.Match) -> str:
        name = match.group("name")
        if name not in by_name or "summary" not in by_name[name]:
            raise KeyError(f"README summary block '{name}': no benchmarks/results/{name}.json with a summary")
        return f"{match.group(1)}{render_summary(by_name[name])}{match.group(4)}"

    return _SUMMARY.sub(fill, text)


def render_readme_block(results: list[dict]) -> str:
    """Text between the README markers: the first table of each ``headline`` result.

    Parameters
    ----------
    results : list of dict
        Parsed result files (as from :func:`load_results`).

    Returns
    -------
    str
        Markdown, starting and ending with a newline so the markers sit on their own lines.
    """
    headline = [r for r in results if r.get("headline", False)]
    if not headline:
        body = "No headline results are recorded yet (see the results page of the documentation).\n"
    else:
        body = "\n".join(render_result(r, level=3, n_tables=1) for r in headline)
    return "\n" + body + "\n"


def replace_block(text: str, block: str) -> str:
    """Return ``text`` with the part between :data:`START` and :data:`END` set to ``block``."""
    start = text.index(START) + len(START)
    end = text.index(END, start)
    return text[:start] + block + text[end:]


def readme_block(text: str) -> str:
    """The current text between the README markers."""
    start = text.index(START) + len(START)
    return text[start:text.index(END, start)]


def readme_text(text: str, results: list[dict]) -> str:
    """The README with its headline block and summary blocks generated from ``results``."""
    return replace_summaries(replace_block(text, render_readme_block(results)), results)


def update_readme(readme: Path = README, results_dir: Path | None = None) -> bool:
    """Rewrite the README's headline and summary blocks; return whether the file changed."""
    text = readme.read_text()
    new = readme_text(text, load_results(results_dir))
    if new != text:
        readme.write_text(new)
    return new != text


def render_snippet(result: dict) -> str:
    """One result file for inclusion in another page: its provenance and tables, titles in bold.

    Bold titles, not headings: the snippet fits under a heading of any level of the including page.
    """
    parts = [provenance(result) + "\n"]
    for table in result.get("tables", []):
        if table.get("title"):
            parts.append(f"**{table['title']}**\n")
        parts.append(render_table(table))
    return "\n".join(parts)


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def write_results_page(out_dir: Path, results_dir: Path | None = None) -> Path:
    """Write the results page body to ``out_dir/results.md`` and every file's snippet,
    ``out_dir/result_<name>.md`` (each only when it changed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results = load_results(results_dir)
    path = out_dir / "results.md"
    _write_if_changed(path, render_results_page(results))
    for result in results:
        stem = Path(result["_file"]).stem
        _write_if_changed(out_dir / f"result_{stem}.md", render_snippet(result))
        if "summary" in result:
            _write_if_changed(out_dir / f"summary_{stem}.md", render_summary(result) + "\n")
    return path


def _on_builder_inited(app) -> None:
    write_results_page(Path(app.srcdir) / "_generated")


def setup(app):
    """Sphinx entry point: generate the results page before the sources are read."""
    app.connect("builder-inited", _on_builder_inited)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


def main(argv=None) -> int:
    """Command line: ``--readme`` rewrites the README block, ``--check`` tests it, else print the page."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", action="store_true", help="rewrite the README results block in place")
    parser.add_argument("--check", action="store_true", help="exit 1 if the README block is out of date")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.check:
        text = README.read_text()
        if readme_text(text, load_results(args.results_dir)) != text:
            print("README results or summary blocks are out of date: run python docs/_ext/results.py --readme")
            return 1
        return 0
    if args.readme:
        changed = update_readme(README, args.results_dir)
        print("README.md updated" if changed else "README.md already up to date")
        return 0
    sys.stdout.write(render_results_page(load_results(args.results_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
