"""Transfer learning from simulations against training from scratch, on the DC2 files.

Parts (``--parts``; same seeds in every row; PDFs scored with ``rail.deepz.metrics.photoz_scores``):

a      from scratch vs pretrained on each ``--engines`` simulation (``--n-sims`` DeepzSimCreator
       galaxies) and fine-tuned with ``--scheme``, on ``--sizes`` random training galaxies; scored
       on the validation file.
sel    a spec-z-like selection: only the training galaxies with i < 23.5; scratch vs pretrained,
       for each ``--sel-seeds`` seed; scored on the whole validation file.
folds  the training file alone: ``--fold-k`` folds; scratch and pretrained train on ``--fold-sizes``
       galaxies of the other folds and estimate the held-out fold; the held-out PDFs are pooled.

    python benchmarks/ablation.py --threads 1
    python benchmarks/ablation.py --quick --output /tmp/bench_check
"""

from __future__ import annotations

import numpy as np

import harness

#: fine-tuning schemes (DeepzInformer options used when starting from a pretrained model)
SCHEMES = {
    "naive": {},
    "l2sp": dict(finetune_learning_rates=[3e-4, 3e-5, 3e-6], finetune_l2sp=1e-3),
    "l2sp_mix_sims": dict(finetune_learning_rates=[3e-4, 3e-5, 3e-6], finetune_l2sp=1e-3,
                          finetune_sim_fraction=0.25),
}
QUICK = dict(epochs_per_step=[3, 1, 1], pretrain_epochs_per_step=[2, 1])
COLUMNS = ["part", "model", "training galaxies", "sigma68", "outliers", "PIT KS", "CDE loss", "train [s]"]


def default_epochs() -> list[int]:
    """DeepzInformer's default epochs per learning-rate step."""
    from rail.deepz import DeepzInformer

    return list(DeepzInformer.config_options["epochs_per_step"].default)


class Ablation:
    """Trains and scores the models of every part; keeps the simulations and pretrained models."""

    def __init__(self, args) -> None:
        self.args = args
        self.options = dict(num_threads=args.threads, **(QUICK if args.quick else {}))
        self.sims: dict[str, dict] = {}
        self.pretrained: dict[str, dict] = {}
        self.rows: list[dict] = []

    def simulations(self, engine: str) -> dict:
        """``--n-sims`` galaxies of one engine (flat table), simulated once."""
        if engine not in self.sims:
            from rail.deepz import DeepzSimCreator

            n, seed = self.args.n_sims, self.args.seed
            creator = DeepzSimCreator.make_stage(name=f"sims_{engine}", model="none", engine=engine,
                                                 n_samples=n, seed=seed, hdf5_groupname="")
            self.sims[engine] = creator.sample(n, seed).data
        return self.sims[engine]

    def train(self, table: dict, engine: str, seed: int) -> tuple[dict, float]:
        """From scratch (``engine`` "none") or fine-tuned from the engine's pretraining.

        Returns the model and the seconds of this training (pretraining, done once, excluded).
        """
        kw = dict(self.options, seed=seed)
        if engine != "none":
            if engine not in self.pretrained:
                sims = self.simulations(engine)
                self.pretrained[engine] = harness.deepz_inform(sims, phase="pretrain", **kw)
            scheme = SCHEMES[self.args.scheme]
            sims = self.simulations(engine) if scheme.get("finetune_sim_fraction") else None
            kw.update(scheme, sims=sims, pretrained=self.pretrained[engine])
            if "finetune_learning_rates" in scheme:  # one epoch count per fine-tuning rate
                kw["finetune_epochs_per_step"] = kw.get("epochs_per_step", default_epochs())
        with harness.timed() as t:
            model = harness.deepz_inform(table, **kw)
        return model, t["wall_s"]

    def record(self, part: str, name: str, n_train: int, scores: dict, seconds: float) -> None:
        """Keep one result row and print it."""
        self.rows.append(dict(part=part, name=name, n_train=n_train, seconds=seconds, **scores))
        harness.log(f"{part} {name} n={n_train}: sigma68 {scores['sigma68']:.4f}, outliers "
                    f"{scores['outlier_frac']:.4f}, PIT KS {scores['pit_ks']:.4f}")

    def engines(self) -> list[str]:
        """Engine names: "none" (from scratch), then the simulation engines."""
        return ["none", *[e for e in self.args.engines.split(",") if e]]

    def label(self, engine: str, seed: int | None = None) -> str:
        """Row label of a model."""
        name = "scratch" if engine == "none" else f"{engine} ({self.args.scheme})"
        return name if seed is None else f"{name}, seed {seed}"


def part_a(ab: Ablation, train: dict, valid: dict) -> None:
    """Scratch vs pretrained at each training-set size, scored on the validation file."""
    from rail.deepz.metrics import photoz_scores

    n_total = len(train["redshift"])
    for size in harness.int_list(ab.args.sizes):
        table = harness.subset(train, harness.random_rows(n_total, size, ab.args.seed + size))
        for engine in ab.engines():
            model, sec = ab.train(table, engine, ab.args.seed)
            ab.record("a", ab.label(engine), min(size, n_total),
                      photoz_scores(harness.deepz_ensemble(model, valid), valid["redshift"]), sec)


def part_sel(ab: Ablation, train: dict, valid: dict) -> None:
    """Training on the i < 23.5 galaxies only (a spec-z-like selection), scored on the validation file."""
    from rail.deepz.metrics import photoz_scores

    bright = harness.subset(train, train["mag_i_lsst"] < 23.5)
    for seed in harness.int_list(ab.args.sel_seeds):
        for engine in ab.engines():
            model, sec = ab.train(bright, engine, seed)
            ab.record("sel", ab.label(engine, seed), len(bright["redshift"]),
                      photoz_scores(harness.deepz_ensemble(model, valid), valid["redshift"]), sec)


def part_folds(ab: Ablation, train: dict) -> None:
    """Scratch vs pretrained on the training file alone: held-out folds pooled."""
    n = len(train["redshift"])
    fold_of = np.random.default_rng(ab.args.seed + 7).permutation(n) % ab.args.fold_k
    for size in harness.int_list(ab.args.fold_sizes):
        for engine in ab.engines():
            parts, seconds = [], 0.0
            for k in range(ab.args.fold_k):
                held, others = np.flatnonzero(fold_of == k), np.flatnonzero(fold_of != k)
                rows = others[harness.random_rows(others.size, size, ab.args.seed + k)]
                model, sec = ab.train(harness.subset(train, rows), engine, ab.args.seed)
                parts.append((held, harness.deepz_ensemble(model, harness.subset(train, held))))
                seconds += sec
            ab.record("folds", ab.label(engine), min(size, n - n // ab.args.fold_k),
                      harness.pooled_scores(parts, train["redshift"]), seconds)


def main() -> None:
    """Run the parts, write ``ablation.json``."""
    ap = harness.parser(__doc__)
    ap.add_argument("--parts", default="a,sel,folds", help="parts to run: a, sel, folds")
    ap.add_argument("--sizes", default="500,1000,2000,5000,10225", help="part a: training-set sizes")
    ap.add_argument("--engines", default="ssp,templates", help="simulation engines to pretrain on")
    ap.add_argument("--n-sims", type=int, default=50_000, help="simulated galaxies per engine")
    ap.add_argument("--scheme", default="l2sp", choices=sorted(SCHEMES), help="fine-tuning scheme")
    ap.add_argument("--seed", type=int, default=87)
    ap.add_argument("--sel-seeds", default="87,88,89", help="part sel: seeds")
    ap.add_argument("--fold-k", type=int, default=5, help="part folds: folds of the training file")
    ap.add_argument("--fold-sizes", default="500,1000", help="part folds: training galaxies per fold")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.n_sims, args.sel_seeds, args.fold_k, args.fold_sizes = "500", 2000, "87", 2, "500"
        args.engines = args.engines.split(",")[0]
    harness.set_threads(args.threads)
    train, valid = (harness.read_table(p) for p in harness.dc2_paths())
    ab = Ablation(args)
    parts = args.parts.split(",")
    if "a" in parts:
        part_a(ab, train, valid)
    if "sel" in parts:
        part_sel(ab, train, valid)
    if "folds" in parts:
        part_folds(ab, train)
    write(ab, args)


def write(ab: Ablation, args) -> None:
    """The result file: one row per trained model."""
    cells = [[r["part"], r["name"], f"{r['n_train']:,}", harness.fmt(r["sigma68"]),
              harness.fmt(r["outlier_frac"]), harness.fmt(r["pit_ks"]), harness.fmt(r["cde_loss"], ".2f"),
              f"{r['seconds']:.0f}"] for r in ab.rows]
    note = ("Parts a and sel are scored on the 20,449 validation galaxies, part folds on the training file's "
            f"held-out folds. Pretraining: {args.n_sims:,} simulated galaxies per engine, not in train [s].")
    harness.write_result("ablation", "Transfer learning from simulations vs training from scratch",
                         [harness.table("Deepz trained from scratch and fine-tuned from simulations", COLUMNS,
                                        cells, note)],
                         dict(rows=ab.rows, quick=args.quick, scheme=SCHEMES[args.scheme]), args.output)


if __name__ == "__main__":
    main()
