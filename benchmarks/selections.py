"""Selected spec-z samples: Deepz beside FlexZBoost, GPz and KNN trained on the same selection.

Every row trains on a selection of the DC2 training file and scores on the DC2 validation file
(20,449 galaxies):

representative  the whole training file (10,225 rows, a random sample of the same catalogue)
i < 23.5        its rows brighter than i = 23.5 (a magnitude-limited spec-z sample)
success         a spec-z success that depends on magnitude and redshift (target_shift.py)
red and faint   fewer red and faint galaxies (target_shift.py)
shallower       both files re-observed by a shallower survey (target_shift.py), its i < 23.5 rows

Deepz runs its stage defaults with ``--n-sims`` DeepzSimCreator galaxies (seed 1) and the
validation photometry as the target (its redshifts are never read), for each of ``--seeds``;
FlexZBoost, GPz and KNN run the settings of the package's comparison pipeline. For Deepz the table
also gives the outlier fraction above the training selection's 99th redshift percentile
("beyond"), and the share of all outliers in the lowest 10% of each flag column (odds, coverage,
confidence).

    python benchmarks/selections.py --threads 2
    python benchmarks/selections.py --quick --output /tmp/bench_check
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

import compare_rail
import harness
import target_shift

QUICK = dict(n_sims=3000, seeds="87", n_train=1500, n_test=1500,
             deepz=dict(epochs_per_step=[3, 1, 1], pretrain_epochs_per_step=[2, 1]))
OTHERS = ("fzboost", "gpz", "knn")
NAMES = {"fzboost": "FlexZBoost", "gpz": "GPz", "knn": "KNN"}
FLAGS = ("odds", "coverage", "confidence")


def selections(train: dict, valid: dict) -> dict[str, tuple[dict, dict]]:
    """Selection name -> (training rows, test table)."""
    shallow_train, shallow_valid = target_shift.shallower(train), target_shift.shallower(valid, seed=12)
    return {"representative": (train, valid),
            "i < 23.5": (harness.subset(train, train["mag_i_lsst"] < 23.5), valid),
            "success": (harness.subset(train, target_shift.success_selection(train)), valid),
            "red and faint": (harness.subset(train, target_shift.colour_selection(train)), valid),
            "shallower": (harness.subset(shallow_train, shallow_train["mag_i_lsst"] < 23.5), shallow_valid)}


def removed_by(flag: np.ndarray, outlier: np.ndarray) -> float:
    """Share of the outliers among the 10% of rows lowest in ``flag`` (NaN when it is all NaN)."""
    if not np.isfinite(flag).any() or not outlier.any():
        return float("nan")
    order = np.argsort(np.where(np.isfinite(flag), flag, np.inf), kind="stable")  # ties: in row order
    low = order[: len(flag) // 10]
    return float(outlier[low].sum() / outlier.sum())


def run_deepz(table: dict, test: dict, seed: int, sims: dict, args, **extra) -> dict:
    """Deepz stage defaults (and ``extra`` options) with simulations and the test photometry as target -> scores."""
    from rail.deepz.metrics import photoz_scores

    target = {k: v for k, v in test.items() if k != "redshift"}
    options = dict(num_threads=args.threads, seed=seed, **(QUICK["deepz"] if args.quick else {}), **extra)
    with harness.timed() as t:
        model = harness.deepz_inform(table, sims=sims, target=target, **options)
    ens = harness.deepz_ensemble(model, test)
    z = test["redshift"]
    zp = np.asarray(ens.ancil["zmode"]).ravel()
    out = np.abs(zp - z) / (1 + z) > 0.15
    beyond = z > np.percentile(table["redshift"], 99)
    removed = {f: removed_by(np.asarray(ens.ancil[f], dtype=float).ravel(), out) for f in FLAGS}
    return dict(seed=seed, **photoz_scores(ens, z), beyond=float(out[beyond].mean()), n_beyond=int(beyond.sum()),
                removed=removed, inform_s=t["wall_s"])


def run_others(table: dict, test: dict, name: str, args, work: str) -> dict:
    """FlexZBoost, GPz and KNN (the comparison pipeline's settings) trained on ``table`` -> scores by estimator."""
    settings = compare_rail.preload(",".join(OTHERS))
    files = dict(train=harness.write_table(table, os.path.join(work, f"train_{name}.hdf5")),
                 test=harness.write_table(test, os.path.join(work, f"test_{name}.hdf5")))
    return {o: compare_rail.run_other(o, settings[o], files, work) for o in OTHERS}


def mean_of(rows: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def tables(results: dict, args) -> list[dict]:
    """The selections table (Deepz's mean over seeds beside the others) and Deepz per seed."""
    cols = ["selection", "train rows"] + [f"{e} {s}" for e in ("Deepz", *(NAMES[o] for o in OTHERS))
                                          for s in ("sigma68", "outliers", "PIT KS")]
    rows = []
    for sel, r in results.items():
        cells = [sel, f"{r['n_train']:,}"]
        cells += [harness.fmt(mean_of(r["deepz"], k)) for k in ("sigma68", "outlier_frac", "pit_ks")]
        for o in OTHERS:
            other = r["others"][o]
            cells += (["-"] * 3 if "error" in other else
                      [harness.fmt(other[k]) for k in ("sigma68", "outlier_frac", "pit_ks")])
        rows.append(cells)
    seeds = args.seeds
    main = harness.table(
        "Trained on a selection of the DC2 training file, scored on the validation file", cols, rows,
        f"Deepz: stage defaults, {args.n_sims:,} simulations and the validation photometry as target, mean of "
        f"seeds {seeds}; FlexZBoost, GPz, KNN: the comparison pipeline's settings, trained on the same rows. "
        "Outliers: |zmode - z| / (1 + z) > 0.15; PIT KS via qp.")
    detail = []
    for sel, r in results.items():
        for d in r["deepz"]:
            detail.append([sel, d["seed"], harness.fmt(d["sigma68"]), harness.fmt(d["outlier_frac"]),
                           harness.fmt(d["beyond"], ".3f"), harness.fmt(d["pit_ks"]), harness.fmt(d["cde_loss"], ".3f"),
                           *(harness.fmt(d["removed"][f], ".2f") for f in FLAGS), harness.fmt(d["inform_s"], ".0f")])
    per_seed = harness.table(
        "Deepz per seed: outliers beyond the training selection's redshifts, and what each flag finds", [
            "selection", "seed", "sigma68", "outliers", "beyond", "PIT KS", "CDE loss",
            *(f"outliers in lowest 10% of {f}" for f in FLAGS), "inform [s]"], detail,
        "beyond: outlier fraction of the validation galaxies above the training selection's 99th redshift "
        "percentile; 'outliers in lowest 10%': the share of all outliers among the 10% of galaxies with the "
        "lowest value of the column.")
    return [main, per_seed]


def main() -> None:
    """Train every estimator on every selection, write ``selections.json``."""
    ap = harness.parser(__doc__)
    ap.add_argument("--seeds", default="87,88,89", help="Deepz seeds")
    ap.add_argument("--n-sims", type=int, default=100_000, help="simulated galaxies for pretraining")
    ap.add_argument("--only", default="", help="comma-separated selections to run (default all)")
    args = ap.parse_args()
    if args.quick:
        args.n_sims, args.seeds = QUICK["n_sims"], QUICK["seeds"]
    harness.set_threads(args.threads)
    compare_rail.preload(",".join(OTHERS))
    train, valid = (harness.read_table(p) for p in harness.dc2_paths())
    if args.quick:
        train = harness.subset(train, harness.random_rows(len(train["redshift"]), QUICK["n_train"], 0))
        valid = harness.subset(valid, harness.random_rows(len(valid["redshift"]), QUICK["n_test"], 0))
    sims = harness.simulations(args.n_sims, seed=1)
    wanted = set(harness.csv_list(args.only))
    results = {}
    with tempfile.TemporaryDirectory(prefix="selections_") as work:
        for i, (sel, (table, test)) in enumerate(selections(train, valid).items()):
            if wanted and sel not in wanted:
                continue
            harness.log(f"{sel}: {len(table['redshift']):,} training rows")
            deepz = [run_deepz(table, test, seed, sims, args) for seed in harness.int_list(args.seeds)]
            results[sel] = dict(n_train=len(table["redshift"]), deepz=deepz,
                                others=run_others(table, test, f"sel{i}", args, work))
    harness.write_result("selections", "Selected spec-z samples", tables(results, args),
                         dict(results=results, n_sims=args.n_sims, seeds=args.seeds,
                              load_average=harness.load_average()), args.output, headline=True)


if __name__ == "__main__":
    main()
