"""Option tables of the Deepz stages, generated from the option schemas.

The schemas (:data:`rail.deepz.options.INFORM_OPTIONS`, :data:`rail.deepz.options.ESTIMATE_OPTIONS`,
:data:`rail.deepz.simulation.OPTIONS`) are what the stages' ``config_options`` and value checks are
built from, so the tables always match the code. :func:`write_option_pages` and :func:`setup` are
the Sphinx plumbing.
"""

from __future__ import annotations

from pathlib import Path


def _rail_defaults(names) -> dict:
    """RAIL's defaults of shared parameters (a catalog tag may change them)."""
    from rail.core.common_params import SHARED_PARAMS

    return {n: dict.get(SHARED_PARAMS, n).default for n in names if n in SHARED_PARAMS}


def option_tables() -> dict[str, str]:
    """Markdown option table per generated page stem."""
    from rail.deepz.options import ESTIMATE_OPTIONS, INFORM_OPTIONS
    from rail.deepz.schema import markdown_table
    from rail.deepz.simulation import OPTIONS

    out = {}
    for stem, options in (("options_informer", INFORM_OPTIONS), ("options_estimator", ESTIMATE_OPTIONS),
                          ("options_simcreator", list(OPTIONS.values()))):
        shared = _rail_defaults([o.name for o in options if o.shared])
        out[stem] = markdown_table(options, shared)
    return out


def write_option_pages(out_dir: Path) -> list[Path]:
    """Write the option tables of :func:`option_tables` into ``out_dir`` (created if missing).

    Parameters
    ----------
    out_dir : pathlib.Path
        Folder for the generated files.

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, text in option_tables().items():
        path = out_dir / f"{stem}.md"
        # only rewrite on change so Sphinx does not rebuild the including pages every time
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        written.append(path)
    return written


def _on_builder_inited(app) -> None:
    write_option_pages(Path(app.srcdir) / "_generated")


def setup(app):
    """Sphinx entry point: generate the option tables before the sources are read."""
    app.connect("builder-inited", _on_builder_inited)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
