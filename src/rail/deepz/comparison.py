"""Side-by-side scores of the estimators of a comparison pipeline, recomputed from its output files.

``DeepzComparisonPipeline`` (``rail.pipelines.estimation.deepz_pipeline``) writes, for every
algorithm ``a``, the PDFs ``output_estimate_a.hdf5`` and the evaluator's ``summary_evaluate_a.hdf5``.
:func:`comparison_table` reads the PDF files and the truth file again and recomputes every number
(sigma68, outlier rates, bias, PIT statistics, CDE loss, ODDS quality cuts); the evaluator summaries
are read separately (:func:`read_summaries`) as a cross-check, never copied into the table.

Command line: ``python -m rail.deepz.comparison OUTPUT_DIR TRUTH_FILE [--json out.json]``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
from typing import Any

import numpy as np

from .metrics import cde_loss, delta_z, outlier_fraction, pit_statistics, pit_values, sigma68
from .quality_cuts import CompletenessCurves, completeness_curves, odds_from_ensemble

__all__ = ["find_algorithms", "read_estimates", "read_truth", "read_summaries", "comparison_table",
           "completeness_by_algorithm", "markdown_table"]

ESTIMATE_PREFIX = "output_estimate_"
SUMMARY_PREFIX = "summary_evaluate_"
#: columns of :func:`markdown_table`: key, header, format
COLUMNS = [("n", "N", "d"), ("sigma68", "σ68", ".4f"), ("sigma_iqr", "σ_IQR", ".4f"), ("bias", "bias", "+.4f"),
           ("outlier_frac", "f(|Δz|>0.15)", ".4f"), ("pit_ks", "PIT KS", ".4f"), ("pit_cvm", "PIT CvM", ".3f"),
           ("pit_outlier_rate", "PIT outl.", ".4f"), ("cde_loss", "CDE loss", ".3f"),
           ("sigma68_odds50", "σ68 (50% by ODDS)", ".4f"),
           ("outlier_frac_odds50", "f_out (50% by ODDS)", ".4f")]


def find_algorithms(output_dir: str) -> list[str]:
    """Algorithms with an ``output_estimate_<a>.hdf5`` in ``output_dir`` (Deepz first, then sorted)."""
    names = sorted(os.path.basename(p)[len(ESTIMATE_PREFIX):-len(".hdf5")]
                   for p in glob.glob(os.path.join(output_dir, f"{ESTIMATE_PREFIX}*.hdf5")))
    return sorted(names, key=lambda a: (a != "deepz", a))


def read_estimates(output_dir: str, algorithms: list[str] | None = None) -> dict[str, Any]:
    """qp ensembles read from ``output_dir/output_estimate_<a>.hdf5``."""
    import qp

    algorithms = find_algorithms(output_dir) if algorithms is None else algorithms
    if not algorithms:
        raise FileNotFoundError(f"no {ESTIMATE_PREFIX}*.hdf5 file in {output_dir}")
    return {a: qp.read(os.path.join(output_dir, f"{ESTIMATE_PREFIX}{a}.hdf5")) for a in algorithms}


def read_truth(truth_file: str, group: str = "photometry", column: str = "redshift") -> dict[str, np.ndarray]:
    """Columns of the truth table (the estimators' input), as float arrays."""
    import tables_io

    table = tables_io.read(truth_file)
    table = table[group] if group else table
    out = {k: np.asarray(v) for k, v in table.items()}
    if column not in out:
        raise KeyError(f"{truth_file} has no column {column!r}")
    return out


def read_summaries(output_dir: str, algorithms: list[str] | None = None) -> dict[str, dict[str, float]]:
    """The evaluator summaries ``summary_evaluate_<a>.hdf5`` as ``{a: {metric: value}}`` (for cross-checks)."""
    import tables_io

    algorithms = find_algorithms(output_dir) if algorithms is None else algorithms
    out = {}
    for a in algorithms:
        path = os.path.join(output_dir, f"{SUMMARY_PREFIX}{a}.hdf5")
        if os.path.exists(path):
            out[a] = {k: float(np.squeeze(v)) for k, v in tables_io.read(path).items()}
    return out


def _odds(ens: Any, zphot: np.ndarray, window: float) -> np.ndarray:
    if ens.ancil is not None and "odds" in ens.ancil:
        return np.asarray(ens.ancil["odds"], dtype=float).ravel()
    return odds_from_ensemble(ens, zphot, window)


def completeness_by_algorithm(estimates: dict[str, Any], zspec: np.ndarray, completeness: np.ndarray | None = None,
                              odds_window: float = 0.06, point_key: str = "zmode") -> dict[str, CompletenessCurves]:
    """ODDS quality-cut curves per algorithm: Deepz's ``ancil["odds"]`` when present, otherwise the same
    ODDS computed from the PDF (:func:`rail.deepz.quality_cuts.odds_from_ensemble`)."""
    out = {}
    for a, ens in estimates.items():
        zphot = np.asarray(ens.ancil[point_key], dtype=float).ravel()
        out[a] = completeness_curves(zphot, zspec, _odds(ens, zphot, odds_window), completeness)
    return out


def comparison_table(output_dir: str, truth_file: str, algorithms: list[str] | None = None,
                     group: str = "photometry", point_key: str = "zmode", odds_window: float = 0.06,
                     estimates: dict[str, Any] | None = None) -> dict[str, dict[str, float]]:
    """Scores of every algorithm, recomputed from the PDF files and the truth file.

    Parameters
    ----------
    output_dir : str
        Pipeline output folder holding ``output_estimate_<a>.hdf5``.
    truth_file : str
        The test table the estimators ran on (column ``redshift`` in ``group``).
    algorithms : list of str, optional
        Default: every ``output_estimate_*.hdf5`` found.
    estimates : dict, optional
        Already-read ensembles (as from :func:`read_estimates`), to avoid reading twice.

    Returns
    -------
    dict
        ``{a: {n, sigma68, sigma_iqr, bias, outlier_frac, pit_ks, pit_cvm, pit_ad, pit_outlier_rate,
        cde_loss, sigma68_odds50, outlier_frac_odds50}}``; CDE loss on the 301-point grid 0-3;
        ``*_odds50``: the 50 % of galaxies with the highest ODDS.
    """
    estimates = read_estimates(output_dir, algorithms) if estimates is None else estimates
    zspec = np.asarray(read_truth(truth_file, group)["redshift"], dtype=float)
    table = {}
    for a, ens in estimates.items():
        if ens.npdf != zspec.size:
            raise ValueError(f"{a}: {ens.npdf} PDFs but {zspec.size} rows in {truth_file}")
        zphot = np.asarray(ens.ancil[point_key], dtype=float).ravel()
        dz = delta_z(zphot, zspec)
        q25, q75 = np.percentile(dz, [25.0, 75.0])
        row: dict[str, float] = dict(n=int(zspec.size), sigma68=sigma68(zphot, zspec),
                                     sigma_iqr=float((q75 - q25) / 1.349), bias=float(np.median(dz)),
                                     outlier_frac=outlier_fraction(zphot, zspec, 0.15))
        row.update(pit_statistics(pit_values(ens, zspec)))
        row["cde_loss"] = cde_loss(ens, zspec)
        half = completeness_curves(zphot, zspec, _odds(ens, zphot, odds_window), np.array([0.5]))
        row.update(sigma68_odds50=float(half.sigma68[0]), outlier_frac_odds50=float(half.outlier_rate[0]))
        table[a] = row
    return table


def markdown_table(table: dict[str, dict[str, float]]) -> str:
    """The table of :func:`comparison_table` as markdown (one row per algorithm)."""
    lines = ["| estimator | " + " | ".join(h for _, h, _ in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for a, row in table.items():
        lines.append(f"| {a} | " + " | ".join(format(row[k], f) for k, _, f in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Print the markdown table (and write JSON with ``--json``)."""
    p = argparse.ArgumentParser(prog="python -m rail.deepz.comparison", description=__doc__.split("\n\n")[0])
    p.add_argument("output_dir", help="pipeline output folder (output_estimate_<a>.hdf5 files)")
    p.add_argument("truth_file", help="test table the estimators ran on")
    p.add_argument("--group", default="photometry")
    p.add_argument("--json", help="also write the table here")
    args = p.parse_args(argv)
    table = comparison_table(args.output_dir, args.truth_file, group=args.group)
    print(markdown_table(table))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(table, fh, indent=1)
    return table


if __name__ == "__main__":
    main()
