#!/usr/bin/env python
"""Calibration settings chosen on the DC2 *training* file only (the validation file is never read).

Outer 5-fold split of the training file (10,225 rows; fixed permutation, seed 2026). For each seed
and outer fold, a default DeepzInformer model is trained on the other four fifths (8,180 rows;
cached in ``--workdir``); its calibration is then refitted on the model's own held-out members
(what ``DeepzInformer`` does) with each fitter variant, applied with each ``recenter`` value, and
the model predicts the outer fold's 2,045 galaxies. The five folds' predictions are pooled (10,225
galaxies) and scored: |dz|/(1+z) > 0.15 outlier fraction and sigma68 of zmode, PIT KS, and the CDE
loss as the trapezoid integral of p^2 on the 301-point grid 0-3 minus 2 p(z_true) with p evaluated
exactly at z_true (``rail.deepz.metrics.cde_loss`` and the RAIL baseline take p at the nearest grid
point instead, so the values here are not directly comparable with theirs).

Fitter variants: ``power`` fits std_scale, shift and the weight power (the pre-session-4 default);
``default`` fits std_scale and shift (``calibrate_weight_power: false``). Each is scored with every
``--recenter`` and ``--ambiguity`` value (``ambiguity_shrink``: the pooled PDF narrowed by the
members' spread; 0 = off).

Usage::

    python benchmarks/calibration_folds.py --seeds 87,88          # ~6 min per seed on one core
    python benchmarks/calibration_folds.py --seeds 89,90 --recenter 0.5,0.75,1
    python benchmarks/calibration_folds.py --seeds 87,88 --ambiguity 0,1

Outputs ``<output>/calibration_folds.json`` and ``.md`` (default ``benchmarks/output``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

import numpy as np
import tables_io
import torch
from rail.utils.path_utils import find_rail_file
from scipy import stats

from rail.deepz import features as feat
from rail.deepz import informing, mixture
from rail.deepz.estimating import DeepzPredictor
from rail.deepz.metrics import outlier_fraction, sigma68
from rail.deepz.model_io import load_model, save_model
from rail.deepz.training import ensemble_splits
from rail.estimation.algos.deepz import DeepzInformer

HERE = os.path.dirname(os.path.abspath(__file__))
ERR_BANDS = [f"mag_err_{b}_lsst" for b in "ugrizy"]
GRID = np.linspace(0.0, 3.0, 301)
N_OUTER = 5
FITTERS = {"power": True, "default": False}  # name -> fit the weight power


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


def outer_folds(n: int) -> list[np.ndarray]:
    return [np.sort(f) for f in np.array_split(np.random.default_rng(2026).permutation(n), N_OUTER)]


def train_fold(train: dict, rows: np.ndarray, seed: int, path: str) -> dict:
    """Default model on the given training rows (cached at ``path``)."""
    if not os.path.exists(path):
        stage = DeepzInformer.make_stage(name=f"calfold_{seed}_{os.path.basename(path)}", hdf5_groupname="",
                                         seed=seed, output_mode="return", num_threads=1)
        t0 = time.time()
        stage.inform({k: v[rows] for k, v in train.items()})
        save_model(stage.get_data("model"), path)
        log(f"trained {path} in {time.time() - t0:.0f}s")
    return load_model(path)


def refit(model: dict, table: dict, seed: int, fit_power: bool) -> dict:
    """The model's calibration refitted on its own held-out members (as DeepzInformer fits it)."""
    pred = DeepzPredictor(model, torch.device("cpu"))
    x, _, _, bad = feat.flux_features(pred.photometry(table, ERR_BANDS), pred.ref_index)
    if bad.any():
        raise RuntimeError("training rows without a usable reference band: the splits would not match")
    arrays = model["arrays"]
    xs = torch.as_tensor((x - arrays["feature_mean"]) / arrays["feature_std"], dtype=torch.float32)
    z = np.asarray(table["redshift"], dtype=float)
    n_folds = int(model["meta"]["training"]["n_folds"])
    n_splits = int(model["meta"]["training"]["n_splits"])
    splits = ensemble_splits(len(z), n_splits, n_folds, seed)
    recenter = float(model["meta"]["calibration"]["recenter"])
    cal, _ = informing._calibrate(pred.net, xs, z, splits, n_folds, recenter, fit_power)  # pylint: disable=protected-access
    return cal.to_dict()


def score(model: dict, table: dict) -> dict[str, np.ndarray]:
    """zmode, PIT and CDE-loss terms of a model on a table."""
    res = DeepzPredictor(model, torch.device("cpu")).predict(table, ERR_BANDS)
    z = torch.as_tensor(np.asarray(table["redshift"], dtype=float))
    w, m, s = (torch.as_tensor(res[k], dtype=torch.float64) for k in ("weights", "means", "stds"))
    pit = mixture.cdf(z, w, m, s).numpy()
    on_grid = mixture.pdf(torch.as_tensor(np.tile(GRID, (len(z), 1))), w, m, s).numpy()
    cde = np.trapezoid(on_grid**2, GRID, axis=1) - 2.0 * mixture.pdf(z, w, m, s).numpy()
    return dict(zmode=np.asarray(res["zmode"]), pit=np.clip(pit, 0.0, 1.0), cde=cde)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="87,88", help="comma list of DeepzInformer seeds")
    ap.add_argument("--recenter", default="1", help="comma list of recenter values to score")
    ap.add_argument("--ambiguity", default="1", help="comma list of ambiguity_shrink values to score")
    ap.add_argument("--fitters", default="power,default", help="comma list of fitters (power, default)")
    ap.add_argument("--output", default=os.path.join(HERE, "output"))
    ap.add_argument("--workdir", help="fold models (default <output>/calibration_folds_work)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    work = args.workdir or os.path.join(args.output, "calibration_folds_work")
    os.makedirs(work, exist_ok=True)
    train = tables_io.read(find_rail_file("examples_data/testdata/test_dc2_training_9816.hdf5"))["photometry"]
    train = {k: np.asarray(v) for k, v in train.items()}
    n = len(train["redshift"])
    ztrue = train["redshift"].astype(float)
    folds = outer_folds(n)
    seeds = [int(s) for s in args.seeds.split(",")]
    recenters = [float(r) for r in args.recenter.split(",")]
    ambiguities = [float(a) for a in args.ambiguity.split(",")]
    fitters = {name: FITTERS[name] for name in args.fitters.split(",")}
    rows: list[dict] = []
    for seed in seeds:
        pooled: dict[str, dict[str, np.ndarray]] = {}
        for k, held in enumerate(folds):
            fit_rows = np.sort(np.concatenate([f for j, f in enumerate(folds) if j != k]))
            model = train_fold(train, fit_rows, seed, os.path.join(work, f"seed{seed}_fold{k}.npz"))
            fit_table = {c: v[fit_rows] for c, v in train.items()}
            held_table = {c: v[held] for c, v in train.items()}
            for fitter, fit_power in fitters.items():
                cal = refit(model, fit_table, seed, fit_power)
                for rc in recenters:
                    for amb in ambiguities:
                        variant = copy.deepcopy(model)
                        variant["meta"]["calibration"] = dict(cal, recenter=rc, ambiguity=amb)
                        out = score(variant, held_table)
                        acc = pooled.setdefault(f"{fitter}|{rc}|{amb}", {key: np.zeros(n) for key in out})
                        for key, val in out.items():
                            acc[key][held] = val
            log(f"seed {seed} fold {k} scored")
        for name, acc in pooled.items():
            fitter, rc, amb = name.split("|")
            row = dict(seed=seed, fitter=fitter, recenter=float(rc), ambiguity=float(amb),
                       outlier_frac=outlier_fraction(acc["zmode"], ztrue), sigma68=sigma68(acc["zmode"], ztrue),
                       pit_ks=float(stats.kstest(acc["pit"], "uniform").statistic), cde_loss=float(acc["cde"].mean()))
            rows.append(row)
            log(" ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
    keys = ("outlier_frac", "sigma68", "pit_ks", "cde_loss")
    lines = ["# Calibration settings on the DC2 training file (outer 5-fold split)", "",
             f"`{' '.join(sys.argv)}`; seeds {seeds}; {n} training galaxies, each scored by the model that did not "
             "train on it.", "", "| fitter | recenter | ambiguity | seed | " + " | ".join(keys) + " |",
             "|---|---|---|---|" + "---|" * len(keys)]
    for r in rows:
        lines.append(f"| {r['fitter']} | {r['recenter']} | {r['ambiguity']} | {r['seed']} | "
                     + " | ".join(f"{r[k]:.4f}" for k in keys) + " |")
    lines += ["", "Mean over seeds:", "", "| fitter | recenter | ambiguity | " + " | ".join(keys) + " |",
              "|---|---|---|" + "---|" * len(keys)]
    for name in dict.fromkeys((r["fitter"], r["recenter"], r["ambiguity"]) for r in rows):
        sel = [r for r in rows if (r["fitter"], r["recenter"], r["ambiguity"]) == name]
        lines.append(f"| {name[0]} | {name[1]} | {name[2]} | "
                     + " | ".join(f"{np.mean([r[k] for r in sel]):.4f}" for k in keys) + " |")
    with open(os.path.join(args.output, "calibration_folds.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(args.output, "calibration_folds.json"), "w", encoding="utf-8") as f:
        json.dump(dict(command=sys.argv, seeds=seeds, rows=rows), f, indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
