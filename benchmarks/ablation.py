"""Ablation of Deepz's training ingredients on the cosmoDC2 files (issue 5).

Usage:  python benchmarks/ablation.py [--quick] [--parts pilot,a,sel,b,c,d,e] [--n-sims 50000]
Writes benchmarks/output/ablation.{md,json} and ablation_sigma68.png, and prints the table.

Parts (same seeds in every row; metrics on the DC2 validation file, which is never used to choose
anything; the fine-tuning scheme is chosen in part "pilot" on the training file's held-out rows):

pilot  fine-tuning schemes (naive, lower learning rate, L2-SP, simulations mixed into batches,
       frozen encoder) at 1,000 training galaxies, scored on the other 9,225 training rows
a      from scratch vs pretrained on each simulation engine (ssp, templates), 500 ... 10,225 rows
sel    spec-z-like selection: train on i < 23.5 only (2,576 rows of the training file). Every scheme of
       --sel-schemes fine-tunes from the same pretraining and is scored on the training file's i >= 23.5
       rows (rows "sel_holdout"); the scheme with the lowest outlier-rate + PIT-KS ratio to scratch there
       is then scored, with the scratch baseline, on the whole validation file (rows "sel"), for every
       seed of --sel-seeds (default 87,88,89; the bar uses the means: the from-scratch baseline's
       faint-end outlier rate changes up to 2x with the seed). Default candidates (from the session-2
       pilots on the same holdout, see the README): l2sp, l2sp_mix_sims.
b      single network vs ensemble (full training set, from scratch)
c      with / without autoencoder features (1,000 rows, pretrained on ssp; and from scratch)
d      simulated multi-exposure data with exposure outliers: plain vs randomised coadds. Training,
       validation and test galaxies are three simulations with different seeds (seed+101, +102, +103);
       the randomised-coadd setting (--d-settings, keep_prob:mode) is chosen on the validation
       simulations (rows "d_val") and plain vs chosen are reported on the test simulations (rows "d").
       --d-clean-reference adds the same galaxies without exposure outliers (what the outliers cost).
       Defaults (session-2 pilots on other simulation seeds): 1,000 training galaxies, 4x the default
       epochs (--d-epoch-scale): randomised coadds act as augmentation, which only pays off once the
       plain network starts to overfit (with 60 epochs and 3,000 galaxies it does not, and the gain was
       1-3%).
e      outlier augmentation: clean vs corrupted test set, with / without augmentation (full set)
scratch_long  (optional) from scratch with 4x the epochs at sizes <= 2,000
schemes  (optional, not in the default parts) every fine-tuning scheme at --scheme-sizes, to report what was tried
folds  (optional) choice of the DEFAULT fine-tuning on the training file only: --fold-k folds of the
       training file; in each, scratch and every scheme of --fold-schemes (pretrained on ssp) train on
       --fold-sizes galaxies drawn from the other folds ("all" = every other row) and predict the
       held-out fold; scores pool the held-out predictions of all folds (every training galaxy is
       predicted once per scheme and size).

``--quick`` shortens every schedule (flagged in the outputs); the full run uses the stage defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Any

import numpy as np
import tables_io
import torch
from rail.utils.path_utils import find_rail_file
from scipy import stats

from rail.deepz import mixture
from rail.deepz.augmentation import inject_outliers
from rail.deepz.estimating import DeepzPredictor
from rail.deepz.metrics import outlier_fraction, sigma68
from rail.deepz.simulation import OPTIONS, simulate_catalogue
from rail.estimation.algos.deepz import DeepzInformer

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "output")
SIZES = [500, 1000, 2000, 5000, 10225]
ENGINES = ["ssp", "templates"]
BANDS = [f"mag_{b}_lsst" for b in "ugrizy"]
SCHEMES: dict[str, dict] = {
    "naive": {},
    "low_lr": dict(finetune_learning_rates=[3e-4, 3e-5, 3e-6]),
    "l2sp": dict(finetune_learning_rates=[3e-4, 3e-5, 3e-6], finetune_l2sp=1e-3),
    "mix_sims": dict(finetune_learning_rates=[3e-4, 3e-5, 3e-6], finetune_sim_fraction=0.25),
    "freeze_encoder": dict(finetune_learning_rates=[3e-4, 3e-5, 3e-6], freeze=["encoder"]),
    "l2sp_mix_sims": dict(finetune_learning_rates=[3e-4, 3e-5, 3e-6], finetune_l2sp=1e-3, finetune_sim_fraction=0.25),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def zmode_and_pit(model: dict, table: dict, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mode (N,) and PIT = CDF at the true redshift (N,) of a model on a table (columns as training)."""
    pred = DeepzPredictor(model, torch.device("cpu"))
    res = pred.predict(table, [b.replace("mag_", "mag_err_") for b in BANDS])
    w, m, s = (torch.as_tensor(res[k]) for k in ("weights", "means", "stds"))
    pit = mixture.cdf(torch.as_tensor(z, dtype=torch.float64), w, m, s).numpy()
    return np.asarray(res["zmode"]), np.clip(pit, 0, 1)


def scores_of(zmode: np.ndarray, pit: np.ndarray, z: np.ndarray) -> dict[str, float]:
    """sigma68, |dz|/(1+z) > 0.15 fraction and PIT KS."""
    return dict(sigma68=sigma68(zmode, z), outlier_frac=outlier_fraction(zmode, z),
                pit_ks=float(stats.kstest(pit, "uniform").statistic))


def scores(model: dict, table: dict, z: np.ndarray) -> dict[str, float]:
    """sigma68, |dz|/(1+z) > 0.15 fraction and PIT KS of a model on a table (columns as training)."""
    return scores_of(*zmode_and_pit(model, table, z), z)


def subset(table: dict, rows: np.ndarray) -> dict:
    return {k: np.asarray(v)[rows] for k, v in table.items()}


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.base: dict[str, Any] = dict(hdf5_groupname="", seed=args.seed, output_mode="return",
                                         sims_groupname="")
        if args.quick:
            self.base.update(epochs_per_step=[20, 8, 2])  # pretraining keeps its default schedule
        if args.smoke:
            self.base.update(epochs_per_step=[1, 0, 0], pretrain_epochs_per_step=[1, 0])
        if args.threads:
            self.base["num_threads"] = args.threads
        self.n = 0

    def inform(self, train: dict, sims: dict | None = None, pretrained: dict | None = None, **kw: Any) -> dict:
        self.n += 1
        cfg = dict(self.base, **kw)
        if "finetune_learning_rates" in cfg and "finetune_epochs_per_step" not in cfg:
            cfg["finetune_epochs_per_step"] = cfg.get("epochs_per_step", [40, 15, 5])
        stage = DeepzInformer.make_stage(name=f"abl_{self.n}", **cfg)
        t0 = time.time()
        stage.inform(train, sims=sims, pretrained=pretrained)
        model = stage.get_data("model")
        model["meta"]["_seconds"] = time.time() - t0
        return model


def sim_table(engine: str, n: int, seed: int, **extra: Any) -> dict:
    suffix = "" if not extra else "_exp" + "_".join(str(v) for v in extra.values()).replace(" ", "").replace(",", "-")
    path = os.path.join(OUT, f"ablation_sims_{engine}_{n}_{seed}{suffix}.hdf5")
    if os.path.exists(path):
        return tables_io.read(path)["photometry"]
    opts = {k: v[0] for k, v in OPTIONS.items()}
    opts.update(engine=engine, **extra)
    t0 = time.time()
    cat = simulate_catalogue(n, seed, opts)
    log(f"simulated {n} {engine} galaxies in {time.time() - t0:.0f}s")
    tables_io.write({"photometry": cat}, path)
    return cat


def corrupt(table: dict, fraction: float, amplitude: tuple[float, float], seed: int) -> dict:
    """Test-set outliers: the same injection as the training augmentation, applied to magnitudes."""
    mags = np.stack([np.asarray(table[b], dtype=float) for b in BANDS], axis=1)
    errs = np.stack([np.asarray(table[b.replace("mag_", "mag_err_")], dtype=float) for b in BANDS], axis=1)
    det = mags < 90
    flux = np.where(det, 10 ** (-0.4 * (mags - 31.4)), 0.0)
    err = np.where(det, flux * errs * np.log(10) / 2.5, 10 ** (-0.4 * (errs - 31.4)))
    gen = torch.Generator().manual_seed(seed)
    new, hit = inject_outliers(torch.as_tensor(flux), torch.as_tensor(err), torch.as_tensor(~det),
                               fraction, amplitude, BANDS.index("mag_i_lsst"), gen)
    new = new.numpy()
    out = {k: np.array(v) for k, v in table.items()}
    for j, b in enumerate(BANDS):
        changed = new[:, j] != flux[:, j]
        pos = new[:, j] > 0
        mag = np.where(pos, -2.5 * np.log10(np.where(pos, new[:, j], 1.0)) + 31.4, 99.0)
        out[b] = np.where(changed, mag, out[b])
        e = out[b.replace("mag_", "mag_err_")]
        out[b.replace("mag_", "mag_err_")] = np.where(changed & pos, 1.0857 * err[:, j] / np.where(pos, new[:, j], 1), e)
    log(f"corrupted {int(hit.sum())} of {len(hit)} test galaxies")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="shorter schedules (flagged in the output)")
    ap.add_argument("--parts", default="pilot,a,sel,b,c,d,e")
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--n-sims", type=int, default=50000)
    ap.add_argument("--scheme", default="", help="fine-tuning scheme (default: chosen by the pilot, else l2sp)")
    ap.add_argument("--seed", type=int, default=87)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (1 is fastest on a busy 2-core machine)")
    ap.add_argument("--tag", default="ablation")
    ap.add_argument("--scheme-sizes", default="10225", help="part schemes: training-set sizes")
    ap.add_argument("--exp-range", default="3,10", help="part d: exposures per band, min,max")
    ap.add_argument("--exp-outlier-fraction", type=float, default=0.05, help="part d: outlier exposure probability")
    ap.add_argument("--sel-seeds", default="87,88,89", help="part sel: seeds (the first also chooses the scheme)")
    ap.add_argument("--sel-schemes", default="l2sp,l2sp_mix_sims", help="part sel: candidate fine-tuning schemes "
                    "(chosen on the training file's i >= 23.5 rows)")
    ap.add_argument("--d-train-size", type=int, default=1000, help="part d: simulated training galaxies")
    ap.add_argument("--d-epoch-scale", type=int, default=4, help="part d: epochs x this (augmentation needs the longer "
                    "training: with the default 60 epochs the plain network does not overfit yet)")
    ap.add_argument("--d-settings", default="0.8:force_one,0.8:drop,0.5:force_one",
                    help="part d: randomised-coadd settings keep_prob:mode tried on the validation simulations")
    ap.add_argument("--d-clean-reference", action="store_true", help="part d: also train/test without exposure outliers")
    ap.add_argument("--fold-k", type=int, default=5, help="part folds: number of folds of the training file")
    ap.add_argument("--fold-sizes", default="500,1000,all", help="part folds: training sizes per fold")
    ap.add_argument("--fold-schemes", default="naive,l2sp,l2sp_mix_sims", help="part folds: fine-tuning schemes")
    ap.add_argument("--smoke", action="store_true", help="one epoch everywhere (plumbing check only)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.makedirs(OUT, exist_ok=True)
    parts = args.parts.split(",")
    sizes = [int(s) for s in args.sizes.split(",")]
    engines = args.engines.split(",")
    train = tables_io.read(find_rail_file("examples_data/testdata/test_dc2_training_9816.hdf5"))["photometry"]
    valid = tables_io.read(find_rail_file("examples_data/testdata/test_dc2_validation_9816.hdf5"))["photometry"]
    zv = np.asarray(valid["redshift"], dtype=float)
    n_train = len(train["redshift"])
    run = Runner(args)
    rows: list[dict] = []
    t_start = time.time()
    res_path = os.path.join(OUT, f"{args.tag}.json")

    def record(part: str, name: str, model: dict | None, table: dict, z: np.ndarray, **info: Any) -> dict:
        sc = scores(model, table, z) if model is not None else {}
        row = dict(part=part, name=name, **info, **sc,
                   seconds=None if model is None else round(model["meta"].get("_seconds", 0.0), 1))
        rows.append(row)
        log(f"{part:5s} {name:40s} " + " ".join(f"{k} {v:.4f}" for k, v in sc.items()))
        save_progress()
        return row

    def save_progress() -> None:
        with open(res_path, "w") as f:
            json.dump(dict(rows=rows, quick=args.quick, args=vars(args)), f, indent=1)

    sims = {e: sim_table(e, args.n_sims, args.seed) for e in engines} if {"pilot", "a", "sel", "c", "schemes", "folds"} & set(parts) else {}
    pretrained: dict[str, dict] = {}
    for e in sims:
        t0 = time.time()
        pretrained[e] = run.inform(sims[e], phase="pretrain")
        log(f"pretrained on {e} in {time.time() - t0:.0f}s")

    def with_scheme(tr: dict, engine: str, kw: dict, **extra: Any) -> dict:
        """Fine-tune from the engine's pretraining with scheme options kw (the simulations are passed
        when the scheme mixes them into the batches)."""
        use_sims = sims[engine] if kw.get("finetune_sim_fraction", 0) > 0 else None
        return run.inform(tr, sims=use_sims, pretrained=pretrained[engine], **dict(kw, **extra))

    def rows_of(size: int) -> np.ndarray:
        if size >= n_train:
            return np.arange(n_train)
        return np.sort(np.random.default_rng(args.seed + size).choice(n_train, size, replace=False))

    scheme = args.scheme
    if "pilot" in parts and engines:
        r = rows_of(1000)
        held = np.setdiff1d(np.arange(n_train), r)
        tr, ho = subset(train, r), subset(train, held)
        zh = np.asarray(ho["redshift"], dtype=float)
        base = record("pilot", "scratch", run.inform(tr), ho, zh, size=1000)
        best, best_score = "", np.inf
        for name, kw in SCHEMES.items():
            row = record("pilot", f"{engines[0]}:{name}", with_scheme(tr, engines[0], kw), ho, zh, size=1000,
                         scheme=name)
            score = row["sigma68"] / base["sigma68"] + row["outlier_frac"] / base["outlier_frac"]
            if score < best_score:
                best, best_score = name, score
        scheme = scheme or best
        log(f"pilot (training-file held-out rows) chose fine-tuning scheme '{scheme}'")
    scheme = scheme or "l2sp"
    fkw = SCHEMES[scheme]

    def finetune(tr: dict, engine: str, **kw: Any) -> dict:
        return with_scheme(tr, engine, fkw, **kw)

    scratch_full = None
    if "a" in parts:
        for size in sizes:
            tr = subset(train, rows_of(size))
            model = run.inform(tr)
            if size >= n_train:
                scratch_full = model
            record("a", f"scratch n={size}", model, valid, zv, size=size, pretrain="none")
            for e in engines:
                record("a", f"{e} ({scheme}) n={size}", finetune(tr, e), valid, zv, size=size, pretrain=e, scheme=scheme)
    if "scratch_long" in parts:  # is the from-scratch baseline short of optimiser steps at small sizes?
        for size in [v for v in sizes if v <= 2000]:
            eps = [4 * e for e in run.base.get("epochs_per_step", [40, 15, 5])]
            record("scratch_long", f"scratch 4x epochs n={size}", run.inform(subset(train, rows_of(size)),
                                                                              epochs_per_step=eps),
                   valid, zv, size=size, pretrain="none(4x epochs)")
    if "schemes" in parts:  # every fine-tuning scheme at the given sizes (what was tried), on the validation file
        for size in [int(v) for v in args.scheme_sizes.split(",")]:
            tr = subset(train, rows_of(size))
            for e in engines:
                for name, kw in SCHEMES.items():
                    record("schemes", f"{e} ({name}) n={size}", with_scheme(tr, e, kw),
                           valid, zv, size=size, pretrain=e, scheme=name)
    if "sel" in parts:
        # Spec-z-like selection. The scheme is chosen on the TRAINING file only: every candidate is trained
        # on its i < 23.5 rows and scored on its i >= 23.5 rows (rows never used for training); only the
        # scratch baseline and the chosen scheme are then scored on the validation file, for every seed of
        # --sel-seeds (the from-scratch network's extrapolation to faint galaxies changes a lot with the seed).
        ibright = np.asarray(train["mag_i_lsst"]) < 23.5
        tr, ho = subset(train, np.flatnonzero(ibright)), subset(train, np.flatnonzero(~ibright))
        zh = np.asarray(ho["redshift"], dtype=float)
        nsel = len(tr["redshift"])
        seeds = [int(v) for v in args.sel_seeds.split(",")]

        def sel_model(name: str, e: str, seed: int) -> dict:
            return with_scheme(tr, e, SCHEMES[name], seed=seed)

        scratch = {sd: run.inform(tr, seed=sd) for sd in seeds}
        base_ho = record("sel_holdout", "scratch i<23.5", scratch[seeds[0]], ho, zh, size=nsel, pretrain="none",
                         seed=seeds[0])
        for sd in seeds:
            record("sel", f"scratch i<23.5 (n={nsel}) seed {sd}", scratch[sd], valid, zv, size=nsel, pretrain="none",
                   seed=sd)
        for e in engines:
            best, best_score, best_model = "", np.inf, None
            for name in args.sel_schemes.split(","):
                model = sel_model(name, e, seeds[0])
                row = record("sel_holdout", f"{e} ({name}) i<23.5", model, ho, zh, size=nsel, pretrain=e, scheme=name,
                             seed=seeds[0])
                score = row["outlier_frac"] / base_ho["outlier_frac"] + row["pit_ks"] / base_ho["pit_ks"]
                if score < best_score:
                    best, best_score, best_model = name, score, model
            log(f"sel: training-file holdout (i >= 23.5 rows) chose '{best}' for {e}")
            for sd in seeds:
                model = best_model if sd == seeds[0] else sel_model(best, e, sd)
                record("sel", f"{e} ({best}) i<23.5 seed {sd}", model, valid, zv, size=nsel, pretrain=e, scheme=best,
                       seed=sd)
    if "folds" in parts:
        # Default-choice experiment on the TRAINING file only (the validation file is not read here).
        fold_of = np.random.default_rng(args.seed + 7).permutation(n_train) % args.fold_k
        e = engines[0]
        for size_s in args.fold_sizes.split(","):
            names = ["scratch"] + args.fold_schemes.split(",")
            pooled: dict[str, list] = {nm: [] for nm in names}
            z_pool, t_pool = [], {nm: 0.0 for nm in names}
            for k in range(args.fold_k):
                others = np.flatnonzero(fold_of != k)
                if size_s != "all":
                    others = np.sort(np.random.default_rng(args.seed + 1000 * k + int(size_s)).choice(
                        others, int(size_s), replace=False))
                tr, ho = subset(train, others), subset(train, np.flatnonzero(fold_of == k))
                z_pool.append(np.asarray(ho["redshift"], dtype=float))
                for nm in names:
                    model = run.inform(tr) if nm == "scratch" else with_scheme(tr, e, SCHEMES[nm])
                    t_pool[nm] += model["meta"]["_seconds"]
                    pooled[nm].append(zmode_and_pit(model, ho, z_pool[-1]))
                    log(f"folds size {size_s} fold {k} {nm} done")
            zall = np.concatenate(z_pool)
            for nm in names:
                sc = scores_of(np.concatenate([p[0] for p in pooled[nm]]), np.concatenate([p[1] for p in pooled[nm]]), zall)
                row = dict(part="folds", name=f"{nm if nm == 'scratch' else e + ':' + nm} n={size_s}/fold",
                           size=size_s, scheme=nm, **sc, seconds=round(t_pool[nm], 1))
                rows.append(row)
                log(f"folds {row['name']:40s} " + " ".join(f"{k2} {v:.4f}" for k2, v in sc.items()))
                save_progress()
    if "b" in parts:
        tr = subset(train, rows_of(n_train))
        record("b", "single network (80/20)", run.inform(tr, n_folds=1), valid, zv, size=n_train, members=1)
        if scratch_full is None:
            scratch_full = run.inform(tr)
        record("b", "ensemble (5 folds)", scratch_full, valid, zv, size=n_train, members=5)
    if "c" in parts and engines:
        tr = subset(train, rows_of(1000))
        e = engines[0]
        record("c", "scratch, AE features (latent 10)", run.inform(tr), valid, zv, size=1000)
        record("c", "scratch, no AE (latent 0)", run.inform(tr, latent_dim=0), valid, zv, size=1000)
        record("c", f"{e} pretrain + AE loss, latent 10", finetune(tr, e), valid, zv, size=1000)
        pre0 = run.inform(sims[e], phase="pretrain", latent_dim=0)
        record("c", f"{e} pretrain, no AE (latent 0)",
               run.inform(tr, pretrained=pre0, latent_dim=0, **{k: v for k, v in fkw.items() if k != "freeze"}),
               valid, zv, size=1000)
    if "d" in parts:
        # Three independent simulations (different seeds): training, validation (choice of the
        # randomised-coadd setting) and test (the reported numbers). Train and test coadds both contain
        # the outlier exposures; only training batches are randomised.
        exp_opts = dict(exposures=True, exposure_outlier_fraction=args.exp_outlier_fraction,
                        n_exposures_range=[int(v) for v in args.exp_range.split(",")])
        nd = args.d_train_size
        dkw = dict(epochs_per_step=[args.d_epoch_scale * e for e in run.base.get("epochs_per_step", [40, 15, 5])])
        tr = subset(sim_table("ssp", 10000, args.seed + 101, **exp_opts), np.arange(nd))
        va = subset(sim_table("ssp", 5000, args.seed + 102, **exp_opts), np.arange(5000))
        te = subset(sim_table("ssp", 5000, args.seed + 103, **exp_opts), np.arange(5000))
        zva, zte = (np.asarray(t["redshift"], dtype=float) for t in (va, te))
        plain = run.inform(tr, coadd_keep_prob=1.0, **dkw)
        record("d_val", "plain coadds (keep prob 1)", plain, va, zva, size=nd)
        best, best_s68, best_model = "", np.inf, None
        for setting in args.d_settings.split(","):
            p, mode = setting.split(":")
            model = run.inform(tr, coadd_keep_prob=float(p), coadd_mode=mode, **dkw)
            name = f"randomised coadds (p {p}, {mode})"
            row = record("d_val", name, model, va, zva, size=nd, keep_prob=float(p), coadd_mode=mode)
            if row["sigma68"] < best_s68:
                best, best_s68, best_model = name, row["sigma68"], model
        log(f"d: validation simulations chose '{best}'")
        record("d", "plain coadds (keep prob 1)", plain, te, zte, size=nd)
        record("d", f"{best} [chosen on validation sims]", best_model, te, zte, size=nd, chosen=True)
        if args.d_clean_reference:  # what the exposure outliers cost at all: same galaxies, no outliers
            clean_opts = dict(exp_opts, exposure_outlier_fraction=0.0)
            trc = subset(sim_table("ssp", 10000, args.seed + 101, **clean_opts), np.arange(nd))
            tec = subset(sim_table("ssp", 5000, args.seed + 103, **clean_opts), np.arange(5000))
            record("d", "reference: no exposure outliers, plain coadds", run.inform(trc, coadd_keep_prob=1.0, **dkw),
                   tec, zte, size=nd)
    if "e" in parts:
        tr = subset(train, rows_of(n_train))
        bad = corrupt(valid, 0.1, (0.2, 1.0), args.seed)
        plain = scratch_full if scratch_full is not None else run.inform(tr)
        aug = run.inform(tr, outlier_fraction=0.1)
        for name, model in (("no augmentation", plain), ("outlier augmentation 10%", aug)):
            record("e", f"{name}: clean test", model, valid, zv, size=n_train)
            record("e", f"{name}: corrupted test", model, bad, zv, size=n_train)

    summary = dict(rows=rows, quick=args.quick, scheme=scheme, args=vars(args), seconds=time.time() - t_start,
                   machine=dict(platform=platform.platform(), threads=torch.get_num_threads()))
    summary["bars"] = bars(rows, engines, scheme)
    with open(res_path, "w") as f:
        json.dump(summary, f, indent=1)
    md = markdown(summary)
    with open(os.path.join(OUT, f"{args.tag}.md"), "w") as f:
        f.write(md)
    print(md)
    plot(rows, engines, os.path.join(OUT, f"{args.tag}_sigma68.png"), args.quick)


def _get(rows: list[dict], part: str, **match: Any) -> dict | None:
    for r in rows:
        if r["part"] == part and all(r.get(k) == v for k, v in match.items()):
            return r
    return None


def bars(rows: list[dict], engines: list[str], scheme: str) -> list[dict]:
    """The issue's bars, evaluated on the measured rows."""
    out = []
    for e in engines:
        for size, need in ((500, 0.15), (1000, 0.10), (10225, 0.0)):
            s, p = _get(rows, "a", size=size, pretrain="none"), _get(rows, "a", size=size, pretrain=e)
            if s and p:
                gain = 1 - p["sigma68"] / s["sigma68"]
                out.append(dict(bar=f"{e}: sigma68 lower by >= {need:.0%} at n={size}", value=f"{gain:+.1%}",
                                passed=bool(gain >= need - 1e-12)))
        for size in SIZES:
            s, p = _get(rows, "a", size=size, pretrain="none"), _get(rows, "a", size=size, pretrain=e)
            if s and p:
                out.append(dict(bar=f"{e}: outlier rate does not rise at n={size}",
                                value=f"{s['outlier_frac']:.4f} -> {p['outlier_frac']:.4f}",
                                passed=bool(p["outlier_frac"] <= s["outlier_frac"])))
        s_rows = [r for r in rows if r["part"] == "sel" and r.get("pretrain") == "none"]
        p_rows = [r for r in rows if r["part"] == "sel" and r.get("pretrain") == e]
        if s_rows and p_rows:  # mean over the seeds (one seed: that seed)
            for key in ("outlier_frac", "pit_ks"):
                sm, pm = np.mean([r[key] for r in s_rows]), np.mean([r[key] for r in p_rows])
                gain = 1 - pm / sm
                per_seed = ", ".join(f"{1 - p[key] / s[key]:+.0%}" for s, p in zip(s_rows, p_rows))
                out.append(dict(bar=f"{e}: i<23.5 selection, {key} lower by >= 25% (mean of {len(s_rows)} seeds)",
                                value=f"{sm:.4f} -> {pm:.4f}: {gain:+.1%} (per seed {per_seed})",
                                passed=bool(gain >= 0.25)))
    plain = _get(rows, "d", name="plain coadds (keep prob 1)")
    rnd = _get(rows, "d", chosen=True)
    if plain and rnd:
        gain = 1 - rnd["sigma68"] / plain["sigma68"]
        out.append(dict(bar="randomised coadds: sigma68 lower by >= 15% (multi-exposure outlier test)",
                        value=f"{gain:+.1%}", passed=bool(gain >= 0.15)))
    for name in ("no augmentation", "outlier augmentation 10%"):
        c, b = _get(rows, "e", name=f"{name}: clean test"), _get(rows, "e", name=f"{name}: corrupted test")
        if c and b:
            ratio = b["outlier_frac"] / c["outlier_frac"]
            out.append(dict(bar=f"{name}: corrupted/clean outlier rate <= 1.5", value=f"{ratio:.2f}",
                            passed=bool(ratio <= 1.5) if "augmentation 10%" in name else None))
    return out


def markdown(summary: dict) -> str:
    lines = ["# Deepz ablation" + (" (QUICK: shortened schedules, not the stage defaults)" if summary["quick"] else ""),
             "", f"Fine-tuning scheme of parts pilot/a/c: `{summary['scheme']}` {SCHEMES.get(summary['scheme'], {})}"
             + "; part sel: the scheme named in its rows", "",
             "| part | run | n train | sigma68 | outliers | PIT KS | s |", "|---|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        lines.append(f"| {r['part']} | {r['name']} | {r.get('size', '')} | {r.get('sigma68', float('nan')):.4f} | "
                     f"{r.get('outlier_frac', float('nan')):.4f} | {r.get('pit_ks', float('nan')):.4f} | {r.get('seconds')} |")
    lines += ["", "Pilot and sel_holdout rows are scored on the training file's rows not used for training",
              "(sel_holdout: its i >= 23.5 rows); d_val rows on validation simulations, d rows on separate test",
              "simulations (exposure outliers in training and test coadds); all other rows on the DC2 validation file.", "",
              "| bar | measured | passed |", "|---|---|---|"]
    for b in summary["bars"]:
        lines.append(f"| {b['bar']} | {b['value']} | {b['passed']} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], engines: list[str], path: str, quick: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label in ["none"] + engines:
        pts = sorted((r["size"], r["sigma68"]) for r in rows if r["part"] == "a" and r.get("pretrain") == label)
        if pts:
            ax.plot(*zip(*pts), "o-", label="from scratch" if label == "none" else f"pretrained: {label}")
    ax.set_xscale("log")
    ax.set_xlabel("spec-z training galaxies")
    ax.set_ylabel("sigma68 (DC2 validation)")
    ax.set_title("Deepz transfer learning" + (" (quick schedules)" if quick else ""))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
