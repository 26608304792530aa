"""Deepz and the other RAIL estimators on the pz-rail-base DC2 test files.

Every estimator trains on the DC2 training file (10,225 galaxies) and estimates the validation file
(20,449 galaxies); every PDF ensemble is scored with ``rail.deepz.metrics.photoz_scores``. Deepz uses
the stage defaults, from scratch (``--sims N``: pretrained on N simulated galaxies first), once per
``--seeds`` value. The others use the RAIL demo settings of ``COMPARISON_ALGORITHMS`` in
``rail.pipelines.estimation.deepz_pipeline`` (TrainZ: stage defaults). ``--baseline FILE`` adds the
rows of another run of the other estimators (``rail_baseline.py`` output) with its provenance.

    python benchmarks/compare_rail.py --seeds 87,88,89 --threads 1 \\
        --baseline ../shared/baseline/rail_baseline_results.json
    python benchmarks/compare_rail.py --quick --output /tmp/bench_check
"""

from __future__ import annotations

import importlib
import json
import os
import tempfile

import harness

QUICK = dict(n_train=2000, n_test=4000,
             deepz=dict(epochs_per_step=[4, 2, 1], pretrain_epochs_per_step=[2, 1]))
#: TrainZ (the training-set n(z) for every galaxy: the floor any estimator should beat)
TRAINZ = dict(module="rail.estimation.algos.train_z", inform="TrainZInformer", estimate="TrainZEstimator",
              inform_config={}, estimate_config={})
BASELINE_NAMES = dict(fzboost="FlexZBoost", knn="KNN", gpz="GPz", trainz="TrainZ", sklnn="sklearn MLP",
                      sklnn_1chunk="sklearn MLP (one chunk)", bpz="BPZ", dnf="DNF", cmnn="CMNN",
                      pzflow="PZFlow")
COLUMNS = ["estimator", "sigma68", "outliers", "PIT KS", "CDE loss", "inform [s]", "estimate [s]", "gal/s"]


def algorithms() -> dict[str, dict]:
    """Settings of the other estimators: the pipeline's demo settings, plus TrainZ."""
    from rail.pipelines.estimation.deepz_pipeline import COMPARISON_ALGORITHMS

    return dict(COMPARISON_ALGORITHMS, trainz=TRAINZ)


def preload(others: str) -> dict[str, dict]:
    """Import every module the run needs before the first (long) training -> settings of ``others``.

    A module that fails to import then fails the run at once, not after the Deepz trainings.
    """
    import rail.deepz.metrics  # noqa: F401
    from rail.deepz import DeepzEstimator, DeepzInformer, DeepzSimCreator  # noqa: F401

    return algorithms() if others else {}


def simulations(n: int, seed: int) -> dict:
    """``n`` DeepzSimCreator galaxies (stage defaults) for pretraining."""
    from rail.deepz import DeepzSimCreator

    creator = DeepzSimCreator.make_stage(name=f"sims_{seed}", model="none", n_samples=n, seed=seed)
    return creator.sample(n, seed).data


def run_deepz(seed: int, args, files: dict, work: str) -> dict:
    """Deepz with the stage defaults and ``seed`` -> a result row (scores and timings)."""
    from rail.deepz import DeepzEstimator, DeepzInformer

    cfg = dict(seed=seed, num_threads=args.threads, **(QUICK["deepz"] if args.quick else {}))
    sims = simulations(args.sims, seed) if args.sims else None
    stages = DeepzInformer, DeepzEstimator
    ens, times = harness.inform_and_estimate(*stages, cfg, {}, files, work, f"deepz_{seed}", sims)
    label = f"Deepz (seed {seed}{f', {args.sims:,} sims' if args.sims else ''})"
    return dict(label=label, seed=seed, **times, **score(ens, files))


def run_other(name: str, settings: dict, files: dict, work: str) -> dict:
    """One of the other RAIL estimators -> a result row; ``error`` when its plugin is not installed."""
    try:
        module = importlib.import_module(settings["module"])
    except ImportError as exc:
        return dict(label=BASELINE_NAMES.get(name, name), error=f"unavailable: {exc}")
    stages = getattr(module, settings["inform"]), getattr(module, settings["estimate"])
    configs = settings["inform_config"], settings["estimate_config"]
    ens, times = harness.inform_and_estimate(*stages, *configs, files, work, name)
    return dict(label=BASELINE_NAMES.get(name, name), **times, **score(ens, files))


def score(ens, files: dict) -> dict:
    """photoz_scores of an ensemble against the test file's redshifts."""
    from rail.deepz.metrics import photoz_scores

    return photoz_scores(ens, harness.read_table(files["test"])["redshift"])


def baseline_rows(path: str) -> tuple[list[dict], str]:
    """Result rows of a ``rail_baseline.py`` JSON file, and a note with its provenance."""
    with open(path, encoding="utf-8") as f:
        base = json.load(f)
    rows = []
    for r in base["results"]:
        if r.get("status") != "ok":
            continue
        m = r["metrics"]
        rows.append(dict(label=f"{BASELINE_NAMES.get(r['name'], r['name'])} (baseline)",
                         sigma68=m["point"]["sigma68"], outlier_frac=m["point"]["outlier_frac_0p15"],
                         pit_ks=m["pit"]["ks"]["statistic"], cde_loss=m["cdeloss_nansafe"],
                         inform_s=r["inform_wall_s"], estimate_s=r["estimate_wall_s"], n=r["n_test"]))
    env = base["environment"]
    note = (f"Rows marked (baseline): {base['command']} run on {base['generated'][:10]} ({env['cpu_model']}, "
            f"{env['cpu_count']} cores, {env['gpu']}), scored by that script with the same definitions "
            f"(PIT KS via qp), read from {os.path.basename(path)}.")
    return rows, note


def cells(row: dict) -> list[str]:
    """A result row as table cells."""
    if "error" in row:
        return [row["label"], row["error"]] + ["-"] * (len(COLUMNS) - 2)
    gal_s = row["n"] / row["estimate_s"] if row.get("estimate_s") else None
    return [row["label"], harness.fmt(row["sigma68"]), harness.fmt(row["outlier_frac"]),
            harness.fmt(row["pit_ks"]), harness.fmt(row["cde_loss"], ".2f"),
            harness.fmt(row["inform_s"], ".1f"),
            harness.fmt(row["estimate_s"], ".1f"), harness.fmt(gal_s, ",.0f")]


def main() -> None:
    """Run the estimators, write ``compare_rail.json``."""
    ap = harness.parser(__doc__)
    ap.add_argument("--seeds", default="87", help="Deepz seeds, comma separated")
    ap.add_argument("--sims", type=int, default=0, help="pretrain Deepz on this many simulations (0: none)")
    ap.add_argument("--others", default=None, help="other estimators to run here (default: "
                    "fzboost,knn,gpz,trainz; none with --baseline)")
    ap.add_argument("--baseline", default="", help="rail_baseline.py result JSON to add rows from")
    args = ap.parse_args()
    harness.set_threads(args.threads)
    others = (args.others if args.others is not None else "" if args.baseline else "fzboost,knn,gpz,trainz")
    settings = preload(others)
    rows, notes = [], []
    with tempfile.TemporaryDirectory(prefix="compare_rail_") as work:
        files = harness.dc2_files(work, *((QUICK["n_train"], QUICK["n_test"]) if args.quick else ()))
        for seed in harness.int_list(args.seeds):
            harness.log(f"Deepz seed {seed}")
            rows.append(run_deepz(seed, args, files, work))
        for name in [v for v in others.split(",") if v]:
            harness.log(name)
            rows.append(run_other(name, settings[name], files, work))
    deepz = [r for r in rows if "seed" in r]
    if len(deepz) > 1:  # the seed-to-seed spread is part of the result: show the mean next to the seeds
        rows.insert(len(deepz), seed_mean(deepz))
    if args.baseline:
        base, note = baseline_rows(args.baseline)
        rows += base
        notes.append(note)
    write(rows, notes, args)


def seed_mean(deepz_rows: list[dict]) -> dict:
    """The mean of the Deepz rows' numbers, as one more row."""
    keys = ("sigma68", "outlier_frac", "pit_ks", "cde_loss", "inform_s", "estimate_s", "n")
    mean = {k: sum(r[k] for r in deepz_rows) / len(deepz_rows) for k in keys}
    return dict(mean, label=f"Deepz (mean of {len(deepz_rows)} seeds)")


def write(rows: list[dict], notes: list[str], args) -> None:
    """The result file (the headline table unless ``--quick``)."""
    n_test = rows[0].get("n", 0)
    notes.insert(0, f"zmode and PDF scores on the {n_test:,} validation galaxies; timings with "
                    f"--threads {args.threads}, load average at the end {harness.load_average()}.")
    tab = harness.table(f"Scores on the {n_test:,} validation galaxies", COLUMNS, [cells(r) for r in rows],
                        " ".join(notes))
    data = dict(rows=rows, quick=args.quick, load_average=harness.load_average(),
                rail_deepz_imported_from=harness.deepz_location())
    title = "Deepz and the other RAIL estimators on the DC2 test files"
    harness.write_result("compare_rail", title, [tab], data, args.output, headline=not args.quick)


if __name__ == "__main__":
    main()
