"""Beyond the spec-z sample's redshifts: the simulations deciding there, on the training file's selections.

The DC2 training file is split in two at random (target_shift.py's halves): a selection of half A
trains, half B's photometry is the target and its redshifts score, so nothing here reads the
validation file. Selections: i < 23.5, the spec-z success selection, fewer red and faint galaxies,
and the shallower survey's i < 23.5 rows (target_shift.py). Each seed informs Deepz twice with the
stage defaults, ``--n-sims`` simulations and the target: with ``sims_beyond_range`` (the default)
and without it. Columns: the four scores, the outlier fraction above the training selection's 99th
redshift percentile ("beyond"), and the share of all outliers among the 10% of galaxies with the
lowest ODDS, coverage and confidence.

    python benchmarks/beyond_range.py --threads 2
    python benchmarks/beyond_range.py --quick --output /tmp/bench_check
"""

from __future__ import annotations

import numpy as np

import harness
import selections
import target_shift

QUICK = dict(n_sims=3000, seeds="87", n_rows=3000)
VARIANTS = {"defaults": {}, "sims_beyond_range=False": dict(sims_beyond_range=False)}
SCORES = ("sigma68", "outlier_frac", "beyond", "pit_ks", "cde_loss")


def fold_selections(train: dict) -> dict[str, tuple[dict, dict]]:
    """Selection -> (half A's selected rows, half B)."""
    half, test, _ = target_shift.halves(train)
    s_half, s_test, _ = target_shift.halves(target_shift.shallower(train))
    return {"i < 23.5": (harness.subset(half, half["mag_i_lsst"] < 23.5), test),
            "success": (harness.subset(half, target_shift.success_selection(half)), test),
            "red and faint": (harness.subset(half, target_shift.colour_selection(half)), test),
            "shallower": (harness.subset(s_half, s_half["mag_i_lsst"] < 23.5), s_test)}


def tables(rows: list[dict], args) -> list[dict]:
    """Means over seeds per selection and variant (with each seed's value), and the flags' share."""
    cells, flag_cells = [], []
    for sel in dict.fromkeys(r["selection"] for r in rows):
        for variant in VARIANTS:
            mine = [r for r in rows if r["selection"] == sel and r["variant"] == variant]
            mean = {k: float(np.mean([r[k] for r in mine])) for k in SCORES}
            cells.append([sel, variant, *(harness.fmt(mean[k], ".3f" if k in ("beyond", "cde_loss") else ".4f")
                                          for k in SCORES)])
            flag_cells.append([sel, variant, *(harness.fmt(np.mean([r["removed"][f] for r in mine]), ".3f")
                                               for f in selections.FLAGS)])
    note = (f"Half A's selection trains, half B's photometry is the target and its redshifts score; stage defaults "
            f"with {args.n_sims:,} simulations; means over seeds {args.seeds}. beyond: outlier fraction above the "
            "training selection's 99th redshift percentile.")
    return [harness.table("Training-file selections: the simulations beyond the spec-z range, or not",
                          ["selection", "model", "sigma68", "outliers", "beyond", "PIT KS", "CDE loss"], cells, note),
            harness.table("Share of all outliers among the 10% of galaxies lowest in each column",
                          ["selection", "model", *selections.FLAGS], flag_cells,
                          "confidence: ODDS x the simulation-pretrained network's probability that zmode is not an "
                          "outlier (NaN without simulations). Same runs as the table above.")]


def main() -> None:
    """Both variants on every selection and seed, write ``beyond_range.json``."""
    ap = harness.parser(__doc__)
    ap.add_argument("--seeds", default="87,88,89", help="Deepz seeds")
    ap.add_argument("--n-sims", type=int, default=100_000, help="simulated galaxies for pretraining")
    args = ap.parse_args()
    if args.quick:
        args.n_sims, args.seeds = QUICK["n_sims"], QUICK["seeds"]
    harness.set_threads(args.threads)
    train = harness.read_table(harness.dc2_paths()[0])
    if args.quick:
        train = harness.subset(train, harness.random_rows(len(train["redshift"]), QUICK["n_rows"], 0))
    sims = harness.simulations(args.n_sims, seed=1)
    rows = []
    for sel, (table, test) in fold_selections(train).items():
        for seed in harness.int_list(args.seeds):
            for variant, extra in VARIANTS.items():
                r = selections.run_deepz(table, test, seed, sims, args, **extra)
                rows.append(dict(selection=sel, variant=variant, n_train=len(table["redshift"]), **r))
                harness.log(f"{sel} seed {seed} {variant}: outliers {r['outlier_frac']:.4f} (beyond {r['beyond']:.3f}) "
                            f"PIT KS {r['pit_ks']:.4f} removed {r['removed']}")
    harness.write_result("beyond_range", "Beyond the spec-z sample's redshifts", tables(rows, args),
                         dict(rows=rows, n_sims=args.n_sims, seeds=args.seeds, load_average=harness.load_average()),
                         args.output)


if __name__ == "__main__":
    main()
