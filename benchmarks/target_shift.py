"""Training toward the target: spec-z samples that do not look like the photometry to estimate.

Every Deepz model here uses the stage defaults; "+ target" passes the unlabelled photometry of the
catalogue it is scored on (``inform(..., target=...)``; its redshifts are never read, and no setting
was chosen on them). Pretrained models start from ``--n-sims`` DeepzSimCreator galaxies (stage
defaults, simulation seed 1), pretrained with each model seed: once per seed without a target (not
timed), inside each call with one (timed), since the default options pretrain toward the target.
Parts (``--parts``):

options  the training file alone: half A's i < 23.5 rows train, half B's photometry is the target
         and its redshifts score; every target option against the defaults (where the defaults
         were chosen)
sel      DC2 training rows with i < 23.5 (2,576) -> the validation file (20,449)
sel2     a second selection from the training file: a spec-z success that depends on magnitude
         and redshift (emission lines in the optical at 0.3 < z < 1.0) -> the validation file
starts   the training file alone: three selections of half A (i < 23.5; the success selection;
         fewer red and faint galaxies) train, half B's photometry is the target and its redshifts
         score; the defaults against the simulations used as given (not pretrained toward the
         target), 'auto' target_start (the candidate with the best held-out score) and the fine-tuned
         start, and the fitted width scale applied whatever the coverage
full     the whole random training file (10,225) -> the validation file, from scratch
noisy    another noise model: the training file re-observed by a shallower survey (flux errors x1.5
         in u and g, x2 in r and i, x3 in z and y, noise added to match; S/N < 1 a non-detection)
         while the simulations keep their own noise; half A's i < 23.5 rows train, half B's
         photometry is the target and its redshifts score
cost     inform time with and without the target, everything inside one call (the pretraining on
         the simulations included): DC2 training rows with i < 23.5, target = the validation
         photometry, scored on the validation file; from scratch and from the simulations
sims     models pretrained on the simulations alone, before and after the target options
         (noise from the target's error relation, weights toward it), scored on the DC2
         validation file and on a population of the package's template engine

Outliers are |dz| / (1 + z) > 0.15; "beyond" counts only galaxies above the training set's 99th
redshift percentile.

    python benchmarks/target_shift.py --threads 2
    python benchmarks/target_shift.py --quick --output /tmp/bench_check
"""

from __future__ import annotations

import os

import numpy as np

import harness

QUICK = dict(epochs_per_step=[3, 1, 1], pretrain_epochs_per_step=[2, 1])
COLUMNS = ["model", "seed", "start", "sigma68", "outliers", "beyond", "inside", "PIT KS", "CDE loss", "train [s]"]
#: part "options": each target option away from its default (the defaults are the first row with target)
OPTION_VARIANTS = {
    "+ target (defaults)": {},
    "+ target (auto start)": dict(target_start="auto"),
    "+ target (fine-tuned start)": dict(target_start="pretrained"),
    "+ target, no weights": dict(target_weights=False),
    "+ target, no member spread": dict(target_member_spread=False),
    "+ target, 2 dimmed copies": dict(target_dimmed_copies=2),
    "+ target, simulation fill": dict(target_fill=True),
    "+ target, no simulation noise": dict(target_sim_noise=False),
    "+ target, no simulation weights": dict(target_sim_weights=False),
}


#: parts sel, sel2, starts and noisy: the defaults against the simulations not pretrained toward the target,
#: another target_start, and the fitted width scale applied whatever the coverage
START_VARIANTS = (("pretrained + target (simulations as given)",
                   dict(target_sim_noise=False, target_sim_weights=False)),
                  ("pretrained + target (auto start)", dict(target_start="auto")),
                  ("pretrained + target (fine-tuned start)", dict(target_start="pretrained")),
                  ("pretrained + target (widths not by coverage)", dict(target_width_by_coverage=False)))


def toward_target(options: dict) -> bool:
    """Whether inform ``options`` pretrain on the simulations toward a target (noise or weights)."""
    from rail.deepz.options import inform_options

    opts = inform_options({k: v for k, v in options.items() if k in ("target_sim_noise", "target_sim_weights")})
    return bool(opts.target_sim_noise or opts.target_sim_weights)


def start_variants(target: dict) -> tuple:
    """Pretrained + target with the default target_start, then each of START_VARIANTS."""
    return (("pretrained + target", "pretrained", target, {}),
            *((name, "pretrained", target, extra) for name, extra in START_VARIANTS))


class Runs:
    """Simulations and pretrained models (made once per seed), trainings and their score rows."""

    def __init__(self, args) -> None:
        self.args = args
        self.options = dict(num_threads=args.threads, **(QUICK if args.quick else {}))
        self._sims: dict | None = None
        self._pretrained: dict[int, dict] = {}
        self.rows: dict[str, list[dict]] = {}

    def wanted(self, name: str) -> bool:
        """Whether model ``name`` is among ``--models`` (all when that is empty)."""
        return not self.args.models or name in self.args.models

    def sims(self) -> dict:
        if self._sims is None:
            from rail.deepz import DeepzSimCreator

            n = self.args.n_sims
            stage = DeepzSimCreator.make_stage(name="target_sims", model="none", n_samples=n, seed=1,
                                               hdf5_groupname="")
            self._sims = stage.sample(n, 1).data
        return self._sims

    def pretrained(self, seed: int) -> dict:
        if seed not in self._pretrained:
            self._pretrained[seed] = harness.deepz_inform(self.sims(), phase="pretrain", seed=seed, **self.options)
        return self._pretrained[seed]

    def train(self, table: dict, seed: int, kind: str, target: dict | None = None, **extra) -> tuple[dict, float]:
        """``kind`` "scratch" or "pretrained": the seed's shared pretraining (excluded from the time), or
        with a target and the options that pretrain toward it, a pretraining inside the call (timed)."""
        kw = dict(self.options, seed=seed, **extra)
        if kind == "pretrained":
            kw.update(pretrained=self.pretrained(seed), sims=self.sims())
            if target is not None and toward_target(kw):
                kw.pop("pretrained")
        with harness.timed() as t:
            model = harness.deepz_inform(table, target=target, **kw)
        return model, t["wall_s"]

    def run(self, part: str, variants, table: dict, test: dict, seed: int, label: str = "") -> None:
        """Train and score each wanted (name, kind, target, extra options) of ``variants`` on ``table``."""
        for name, kind, target, extra in variants:
            if self.wanted(name):
                model, sec = self.train(table, seed, kind, target, **extra)
                self.score(part, label + name, seed, model, test, table["redshift"], sec)

    def score(self, part: str, name: str, seed: int, model: dict, test: dict, z_train: np.ndarray,
              seconds: float) -> None:
        from rail.deepz.metrics import photoz_scores

        ens = harness.deepz_ensemble(model, test)
        z = test["redshift"]
        s = photoz_scores(ens, z)
        zp = np.asarray(ens.ancil["zmode"]).ravel()
        out = np.abs(zp - z) / (1 + z) > 0.15
        beyond = z > np.percentile(z_train, 99)
        row = dict(model=name, seed=seed, sigma68=s["sigma68"], outliers=s["outlier_frac"],
                   beyond=float(out[beyond].mean()) if beyond.any() else float("nan"),
                   inside=float(out[~beyond].mean()), n_beyond=int(beyond.sum()), pit_ks=s["pit_ks"],
                   cde_loss=s["cde_loss"], bias=s["bias"], seconds=seconds, target=model["meta"].get("target"))
        self.rows.setdefault(part, []).append(row)
        harness.log(f"{part} {name} seed {seed}: sigma68 {row['sigma68']:.4f} outliers {row['outliers']:.4f} "
                    f"(beyond {row['beyond']:.3f}) PIT KS {row['pit_ks']:.4f}")


def selection_parts(runs: Runs, train: dict, valid: dict) -> None:
    """Parts sel and sel2: scratch, pretrained, pretrained + target, per seed; scored on the validation file."""
    target = {k: v for k, v in valid.items() if k != "redshift"}
    selections = {"sel": train["mag_i_lsst"] < 23.5, "sel2": success_selection(train)}
    for part in [p for p in ("sel", "sel2") if p in runs.args.parts]:
        table = harness.subset(train, selections[part])
        variants = (("scratch", "scratch", None, {}), ("scratch + target", "scratch", target, {}),
                    ("pretrained", "pretrained", None, {}), *start_variants(target))
        for seed in harness.int_list(runs.args.seeds):
            runs.run(part, variants, table, valid, seed)


def halves(table: dict) -> tuple[dict, dict, dict]:
    """The table split in two at random (seed 0): half A, half B, and half B's photometry (the target)."""
    n = len(table["redshift"])
    perm = np.random.default_rng(0).permutation(n)
    test = harness.subset(table, perm[n // 2 :])
    return harness.subset(table, perm[: n // 2]), test, {k: v for k, v in test.items() if k != "redshift"}


def part_starts(runs: Runs, train: dict) -> None:
    """The training file alone: three selections of half A train, half B is the target; each target_start."""
    half, test, target = halves(train)
    selections = {"i < 23.5": half["mag_i_lsst"] < 23.5, "success": success_selection(half),
                  "red and faint fewer": colour_selection(half)}
    for label, keep in selections.items():
        table = harness.subset(half, keep)
        for seed in harness.int_list(runs.args.seeds):
            runs.run("starts", start_variants(target), table, test, seed, label=f"{label}: ")


def colour_selection(train: dict) -> np.ndarray:
    """Spectra fail more for faint and red galaxies: p = clip(1.2 - 0.5 (i - 21), 0, 1), x 0.4 at g - r > 1 (seed 6)."""
    i, gr = train["mag_i_lsst"], train["mag_g_lsst"] - train["mag_r_lsst"]
    p = np.clip(1.2 - 0.5 * np.clip(i - 21.0, 0.0, None), 0.0, 1.0) * np.where(gr > 1.0, 0.4, 1.0)
    return np.random.default_rng(6).random(len(i)) < p


def success_selection(train: dict) -> np.ndarray:
    """A spec-z success selection: all of i < 22, 80% at 0.3 < z < 1.0 and 20% elsewhere to i = 24.5 (seed 5)."""
    i, z = train["mag_i_lsst"], train["redshift"]
    p = np.where(i < 22.0, 1.0, np.where(i < 24.5, np.where((z > 0.3) & (z < 1.0), 0.8, 0.2), 0.0))
    return np.random.default_rng(5).random(len(i)) < p


def part_full(runs: Runs, train: dict, valid: dict) -> None:
    """The whole training file, from scratch, with and without the validation photometry as target."""
    target = {k: v for k, v in valid.items() if k != "redshift"}
    for seed in harness.int_list(runs.args.seeds):
        for name, tgt in (("scratch", None), ("scratch + target", target)):
            if not runs.wanted(name):
                continue
            model, sec = runs.train(train, seed, "scratch", tgt)
            runs.score("full", name, seed, model, valid, train["redshift"], sec)


#: part "noisy": flux-error factors of the shallower survey, per band (u, g, r, i, z, y)
SHALLOW_FACTORS = (1.5, 1.5, 2.0, 2.0, 3.0, 3.0)


def shallower(table: dict, factors=SHALLOW_FACTORS, seed: int = 11) -> dict:
    """The catalogue as a shallower survey sees it: each band's flux error x ``factors``, noise added to match.

    Detected magnitudes (< 90) become fluxes, get Gaussian noise of sqrt(k^2 - 1) x their error and
    the error k x sigma; a flux below its new 1-sigma error becomes a non-detection (99, the error
    column holding the 1-sigma limiting magnitude, the DC2 convention). Old non-detections start from
    zero flux.
    """
    from rail.deepz.simulation.constants import AB_ZEROPOINT_NJY, MAG_ERR_FACTOR
    from rail.deepz.simulation.noise import fluxes_to_mags

    rng = np.random.default_rng(seed)
    out = dict(table)
    for band, k in zip("ugrizy", factors):
        mag = np.asarray(table[f"mag_{band}_lsst"], dtype=np.float64)
        err = np.asarray(table[f"mag_err_{band}_lsst"], dtype=np.float64)
        det = mag < 90
        flux = np.where(det, 10 ** (-0.4 * (mag - AB_ZEROPOINT_NJY)), 0.0)  # nJy
        sigma = np.where(det, flux * err / MAG_ERR_FACTOR, 10 ** (-0.4 * (err - AB_ZEROPOINT_NJY)))
        new = flux + rng.normal(size=flux.size) * np.sqrt(k * k - 1.0) * sigma
        mags, errs = fluxes_to_mags(new, k * sigma)  # S/N < 1: 99 and the 1-sigma limit
        out[f"mag_{band}_lsst"], out[f"mag_err_{band}_lsst"] = mags.astype(np.float32), errs.astype(np.float32)
    return out


def part_noisy(runs: Runs, train: dict) -> None:
    """Another noise model: the training file re-observed shallower; half A's i < 23.5 train, half B the target."""
    half, test, target = halves(shallower(train))
    table = harness.subset(half, half["mag_i_lsst"] < 23.5)
    variants = (("scratch", "scratch", None, {}), ("pretrained", "pretrained", None, {}), *start_variants(target))
    for seed in harness.int_list(runs.args.seeds):
        runs.run("noisy", variants, table, test, seed)


def part_cost(runs: Runs, train: dict, valid: dict) -> None:
    """Whole inform calls timed with and without the target: from scratch, and pretraining on the simulations."""
    target = {k: v for k, v in valid.items() if k != "redshift"}
    table = harness.subset(train, train["mag_i_lsst"] < 23.5)
    seed = harness.int_list(runs.args.seeds)[0]
    for name, sims, tgt in (("scratch", None, None), ("scratch + target", None, target),
                            ("simulations", runs.sims(), None), ("simulations + target", runs.sims(), target)):
        if not runs.wanted(name):
            continue
        with harness.timed() as t:
            model = harness.deepz_inform(table, sims=sims, target=tgt, **dict(runs.options, seed=seed))
        runs.score("cost", name, seed, model, valid, table["redshift"], t["wall_s"])


def part_options(runs: Runs, train: dict) -> None:
    """The training file alone: half A's bright rows train, half B is the target; every option's effect."""
    half, test, target = halves(train)
    table = harness.subset(half, half["mag_i_lsst"] < 23.5)
    variants = (("scratch", "scratch", None, {}), ("scratch + target", "scratch", target, {}),
                ("scratch + target, target autoencoder", "scratch", target, dict(target_autoencoder=True)),
                ("pretrained", "pretrained", None, {}),
                *((f"pretrained {k}", "pretrained", target, v) for k, v in OPTION_VARIANTS.items()))
    for seed in harness.int_list(runs.args.seeds):
        runs.run("options", variants, table, test, seed)


def part_sims(runs: Runs, valid: dict) -> None:
    """Simulation-only models before / after the target options, on DC2 and on a template population."""
    from rail.deepz import DeepzSimCreator

    n = 4000 if runs.args.quick else 20000
    templates = DeepzSimCreator.make_stage(name="template_population", model="none", n_samples=n, seed=2,
                                           engine="templates", noise_model="snr", snr_broad=15.0,
                                           hdf5_groupname="").sample(n, 2).data
    seed = harness.int_list(runs.args.seeds)[0]
    for population, test in (("DC2 validation", valid), ("template engine", templates)):
        target = {k: v for k, v in test.items() if k != "redshift"}
        for name, extra in (("before", dict(target_sim_noise=False, target_sim_weights=False)),
                            ("after (noise + weights)", dict(target_sim_noise=True, target_sim_weights=True)),
                            ("after (noise only)", dict(target_sim_noise=True, target_sim_weights=False))):
            with harness.timed() as t:
                model = harness.deepz_inform(runs.sims(), phase="pretrain", seed=seed,
                                             target=None if name == "before" else target, **runs.options, **extra)
            runs.score("sims", f"{population}: {name}", seed, model, test, runs.sims()["redshift"], t["wall_s"])


def tables(runs: Runs) -> list[dict]:
    titles = dict(
        options="Training file only: bright half-A rows train, half B is the target (defaults chosen here)",
        sel="DC2 training rows with i < 23.5 (2,576) -> validation file (20,449), target = its photometry",
        sel2="A magnitude- and redshift-dependent spec-z success selection from the training file -> validation file",
        full="The whole random training file (10,225) -> validation file, from scratch",
        sims="Pretrained on the simulations alone, without and with a target",
        starts="Training file only: three selections of half A train, half B is the target; target_start",
        cost="Whole inform calls (pretraining included) with and without the target: i < 23.5 -> validation file",
        noisy="Another noise model: the training file re-observed shallower (errors x1.5-3), i < 23.5 of half A "
              "-> half B",
    )
    out = []
    for part, rows in runs.rows.items():
        body = []
        names = list(dict.fromkeys(r["model"] for r in rows))
        for name in names:
            mine = [r for r in rows if r["model"] == name]
            for r in mine:
                body.append(_cells(r, str(r["seed"])))
            if len(mine) > 1:
                mean = {k: float(np.nanmean([r[k] for r in mine])) for k in
                        ("sigma68", "outliers", "beyond", "inside", "pit_ks", "cde_loss", "seconds")}
                body.append(_cells(dict(mean, model=f"**{name}**"), "**mean**"))
        counts = sorted({r["n_beyond"] for r in rows})
        n_beyond = str(counts[0]) if len(counts) == 1 else "/".join(map(str, counts))
        out.append(harness.table(titles[part], COLUMNS, body,
                                 note=f"beyond: outlier fraction of the {n_beyond} test galaxies above the training "
                                      "set's 99th redshift percentile; inside: of the others; start: the candidate "
                                      "kept (target_start) and, when another, the one 'auto' would keep; train: "
                                      "the inform call, with a pretraining toward the target where the options "
                                      "ask for one"))
    return out


def _start(r: dict) -> str:
    """The candidate a model with a target kept (target_start) and, if another, the one 'auto' would keep."""
    start = (r.get("target") or {}).get("start") or {}
    chosen, auto = str(start.get("chosen", "")), start.get("auto", "")
    return chosen if auto in ("", chosen) else f"{chosen} (auto: {auto})"


def _cells(r: dict, seed: str) -> list:
    f = harness.fmt
    return [r["model"], seed, _start(r), f(r["sigma68"]), f(r["outliers"]), f(r["beyond"], ".3f"), f(r["inside"]),
            f(r["pit_ks"]), f(r["cde_loss"], ".3f"), f(r["seconds"], ".0f")]


def plot(runs: Runs, path: str) -> None:
    """Outliers and PIT KS per model (mean and seeds) of every part with several seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [p for p in ("sel", "sel2", "starts", "full", "options", "noisy") if p in runs.rows]
    if not parts:
        return
    fig, axes = plt.subplots(2, len(parts), figsize=(4.2 * len(parts), 6.5), squeeze=False)
    for j, part in enumerate(parts):
        rows = runs.rows[part]
        names = list(dict.fromkeys(r["model"] for r in rows))
        for i, key in enumerate(("outliers", "pit_ks")):
            ax = axes[i, j]
            for k, name in enumerate(names):
                vals = [r[key] for r in rows if r["model"] == name]
                ax.bar(k, np.mean(vals), color="C0" if "target" not in name else "C1", alpha=0.7)
                ax.plot([k] * len(vals), vals, "k.", ms=4)
            ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
            ax.set_ylabel("outlier fraction" if key == "outliers" else "PIT KS")
            if i == 0:
                ax.set_title(part)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = harness.parser(__doc__)
    ap.add_argument("--parts", default="sel,sel2,starts,full,options,noisy,sims", help="comma-separated parts")
    ap.add_argument("--seeds", default="87,88,89", help="model seeds")
    ap.add_argument("--n-sims", type=int, default=100_000, help="simulated galaxies for pretraining")
    ap.add_argument("--figure", default=None,
                    help="plot file ('' = none; default docs/_static/target_shift.png, with --quick <output>/<name>.png)")
    ap.add_argument("--models", default="", help="only these models (comma-separated names as in the tables)")
    ap.add_argument("--name", default="target_shift", help="name of the result JSON")
    args = ap.parse_args()
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.parts = [p for p in args.parts.split(",") if p]
    if args.quick:
        args.n_sims, args.seeds = 3000, "87"
    if args.figure is None:  # a quick check never overwrites the documentation's figure
        args.figure = f"{args.output}/{args.name}.png" if args.quick else "docs/_static/target_shift.png"
    harness.set_threads(args.threads)
    train_path, valid_path = harness.dc2_paths()
    train, valid = harness.read_table(train_path), harness.read_table(valid_path)
    if args.quick:
        train = harness.subset(train, harness.random_rows(len(train["redshift"]), 3000, 1))
        valid = harness.subset(valid, harness.random_rows(len(valid["redshift"]), 3000, 1))
    runs = Runs(args)
    selection_parts(runs, train, valid)
    if "starts" in args.parts:
        part_starts(runs, train)
    if "full" in args.parts:
        part_full(runs, train, valid)
    if "options" in args.parts:
        part_options(runs, train)
    if "noisy" in args.parts:
        part_noisy(runs, train)
    if "cost" in args.parts:
        part_cost(runs, train, valid)
    if "sims" in args.parts:
        part_sims(runs, valid)
    if args.figure:
        plot(runs, args.figure)
    title = "Deepz with and without the target photometry" + (f" ({', '.join(args.models)})" if args.models else "")
    harness.write_result(args.name, title, tables(runs),
                         dict(rows=runs.rows, n_sims=args.n_sims, figure=args.figure), args.output)


if __name__ == "__main__":
    main()
