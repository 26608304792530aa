"""Calibration variants scored on the DC2 *training* file only (the validation file is never read).

The training file (10,225 rows) is split into ``--folds`` outer folds (fixed permutation, seed 2026).
For each seed and outer fold, ``DeepzInformer`` (stage defaults) trains on the other folds; the model's
calibration is then refitted on its own held-out ensemble members, as the informer fits it, with
each fitter (``power``: also fits the weight power; ``default``: std scale and shift), applied with
each ``--recenter`` value, and the model estimates the outer fold. The folds' PDFs are pooled (every
training galaxy is scored once, by a model that did not train on it) and scored with
``rail.deepz.metrics.photoz_scores``.

    python benchmarks/calibration_folds.py --seeds 87,88 --threads 1
    python benchmarks/calibration_folds.py --quick --output /tmp/bench_check
"""

from __future__ import annotations

import copy

import numpy as np

import harness

FITTERS = {"power": True, "default": False}  # fitter name -> fit the weight power too
QUICK = dict(n_rows=3000, folds=3, epochs_per_step=[3, 1, 1])
COLUMNS = ["fitter", "recenter", "seed", "sigma68", "outliers", "PIT KS", "CDE loss"]


def outer_folds(n: int, k: int) -> list[np.ndarray]:
    """``k`` disjoint sorted row-index arrays covering ``range(n)``."""
    return [np.sort(f) for f in np.array_split(np.random.default_rng(2026).permutation(n), k)]


def fold_variants(train: dict, fit_rows: np.ndarray, held: np.ndarray, seed: int, args) -> dict:
    """Train on ``fit_rows``; -> {(fitter, recenter): qp ensemble of the ``held`` rows}."""
    fit_table = harness.subset(train, fit_rows)
    options = dict(seed=seed, num_threads=args.threads)
    if args.quick:
        options["epochs_per_step"] = QUICK["epochs_per_step"]
    model = harness.deepz_inform(fit_table, **options)
    held_table = harness.subset(train, held)
    out = {}
    for fitter in args.fitters.split(","):
        cal = harness.refit_calibration(model, fit_table, seed, FITTERS[fitter])
        for recenter in args.recenter:
            variant = copy.deepcopy(model)
            variant["meta"]["calibration"] = dict(cal, recenter=recenter)
            out[(fitter, recenter)] = harness.deepz_ensemble(variant, held_table)
    return out


def seed_rows(train: dict, folds: list[np.ndarray], seed: int, args) -> list[dict]:
    """Every (fitter, recenter) variant of one seed, scored over all outer folds."""
    n = len(train["redshift"])
    parts: dict[tuple, list] = {}
    for k, held in enumerate(folds):
        fit_rows = np.setdiff1d(np.arange(n), held)
        for key, ens in fold_variants(train, fit_rows, held, seed, args).items():
            parts.setdefault(key, []).append((held, ens))
        harness.log(f"seed {seed}, fold {k} done")
    z = train["redshift"]
    return [dict(fitter=fitter, recenter=rc, seed=seed, **harness.pooled_scores(p, z))
            for (fitter, rc), p in parts.items()]


def main() -> None:
    """Score the calibration variants, write ``calibration_folds.json``."""
    ap = harness.parser(__doc__)
    ap.add_argument("--seeds", default="87,88", help="DeepzInformer seeds, comma separated")
    ap.add_argument("--folds", type=int, default=5, help="outer folds of the training file")
    ap.add_argument("--recenter", default="1", help="recenter values, comma separated")
    ap.add_argument("--fitters", default="power,default", help="calibration fitters: power, default")
    args = ap.parse_args()
    args.recenter = [float(v) for v in args.recenter.split(",")]
    harness.set_threads(args.threads)
    train = harness.read_table(harness.dc2_paths()[0])  # the training file only
    if args.quick:
        train = harness.subset(train, harness.random_rows(len(train["redshift"]), QUICK["n_rows"], 2026))
        args.folds = QUICK["folds"]
    folds = outer_folds(len(train["redshift"]), args.folds)
    rows = [r for seed in harness.int_list(args.seeds) for r in seed_rows(train, folds, seed, args)]
    cells = [[r["fitter"], r["recenter"], r["seed"], harness.fmt(r["sigma68"]),
              harness.fmt(r["outlier_frac"]), harness.fmt(r["pit_ks"]), harness.fmt(r["cde_loss"], ".3f")]
             for r in rows]
    tab = harness.table(f"Calibration variants, {args.folds}-fold out-of-fold scores on the "
                        f"{len(train['redshift']):,} DC2 training galaxies", COLUMNS, cells,
                        "Each galaxy is scored by the model trained on the other folds; the validation file "
                        "is not read.")
    harness.write_result("calibration_folds", "Calibration settings chosen on the training file", [tab],
                         dict(rows=rows, folds=args.folds, quick=args.quick), args.output)


if __name__ == "__main__":
    main()
