#!/usr/bin/env python
"""Inform wall time: the vectorised ensemble (one stacked model) vs a per-member Python loop.

Both train the DeepzInformer default ensemble (5 members = 1 split x 5 folds, epochs [40, 15, 5],
batch 100, seed 87) on the same rows of the DC2 training file, in one process, one after the other:

* ``vectorised``: ``train_ensemble`` on one 5-member ``DeepzEnsemble`` (what DeepzInformer runs);
* ``loop``: for each member i, a 1-member ``DeepzEnsemble`` (``build_network(..., members=[i])``)
  trained alone on split i (``train_ensemble(..., members=[i])``), same settings.

Every member has its own random streams (initial weights, batch order, dropout), so both give the
same members up to floating-point rounding (torch sums a 1-member stack's bias gradient in a
different order). A random 20% of the file is held out (``--holdout``); the script reports the
best validation loss per member and sigma68 / outlier fraction of the pooled (uncalibrated)
ensemble and of each member on that holdout, for both.

Timed: network construction + ``train_ensemble`` (data preparation and calibration are the same
single step for both and are timed once, as ``prepare_seconds``). Wall and process CPU seconds
are recorded with the load average before and after each case.

    python benchmarks/bench_inform.py --threads 1                  # the full default schedule
    python benchmarks/bench_inform.py --threads 1 --epochs 2,1,1   # a short run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="OMP/MKL threads and torch threads (0 = library default)")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra environment (repeatable)")
    ap.add_argument("--epochs", default="", help="epochs per learning-rate step, e.g. 2,1,1 (default: stage default)")
    ap.add_argument("--members", type=int, default=0, help="n_folds (ensemble size; default: stage default 5)")
    ap.add_argument("--holdout", type=float, default=0.2, help="fraction of the file held out for sigma68")
    ap.add_argument("--seed", type=int, default=87)
    ap.add_argument("--order", default="vectorised,loop", help="cases and their order")
    ap.add_argument("--output", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "output"))
    ap.add_argument("--tag", default="", help="suffix of the output file names")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--env {item!r}: expected KEY=VALUE")
        os.environ[key] = value
    if args.threads > 0:  # before torch is imported
        for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[key] = str(args.threads)

    import numpy as np
    import tables_io
    import torch
    from rail.utils.path_utils import find_rail_file

    from rail.deepz import features as feat
    from rail.deepz import metrics, mixture
    from rail.deepz.informing import _architecture, build_network, prepare_training_data
    from rail.deepz.training import ensemble_splits, predict, train_ensemble
    from rail.estimation.algos.deepz import DeepzInformer

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    log = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)  # noqa: E731

    path = find_rail_file("examples_data/testdata/test_dc2_training_9816.hdf5")
    table = tables_io.read(path)["photometry"]
    n_all = len(table["redshift"])
    rng = np.random.default_rng(args.seed)
    perm = rng.permutation(n_all)
    n_hold = int(round(args.holdout * n_all))
    hold, train = np.sort(perm[:n_hold]), np.sort(perm[n_hold:])
    config: dict = dict(name="bench_inform", hdf5_groupname="photometry", seed=args.seed)
    if args.epochs:
        config["epochs_per_step"] = [int(e) for e in args.epochs.split(",")]
        config["learning_rates"] = [1e-3, 1e-4, 1e-5, 1e-6][: len(config["epochs_per_step"])]
    if args.members:
        config["n_folds"] = args.members
    opts = DeepzInformer.make_stage(**config)._options()
    cfg = opts.train

    t0 = time.perf_counter()
    data = prepare_training_data({k: np.asarray(v)[train] for k, v in table.items()}, opts)
    mean, std = feat.fit_scaler(data.features)
    x = torch.as_tensor((data.features - mean) / std)
    z = torch.as_tensor(data.redshift)
    ratios, ratio_err = torch.as_tensor(data.ratios), torch.as_tensor(data.ratio_err)
    arch = _architecture(opts, x.shape[1], z_scale=float(max(np.std(data.redshift), 0.05)))
    splits = ensemble_splits(len(z), opts.n_splits, opts.n_folds, cfg.seed)
    n_members = len(splits)
    hold_data = prepare_training_data({k: np.asarray(v)[hold] for k, v in table.items()}, opts)
    x_hold = torch.as_tensor((hold_data.features - mean) / std)
    z_hold = np.asarray(hold_data.redshift, dtype=np.float64)
    prepare_seconds = time.perf_counter() - t0
    log(f"{len(z)} training rows, {len(z_hold)} held out; {n_members} members, epochs {cfg.epochs_per_step}, "
        f"batch {cfg.batch_size}, torch threads {torch.get_num_threads()}")

    def scores(log_w: torch.Tensor, means: torch.Tensor, stds: torch.Tensor) -> dict:
        """sigma68 and outlier fraction of the mode of the equal-weight pool of (M, N, G) mixtures."""
        m, n, g = log_w.shape
        w = (torch.exp(log_w) / m).permute(1, 0, 2).reshape(n, m * g).double()
        zmode = mixture.mode(w, means.permute(1, 0, 2).reshape(n, m * g).double(),
                             stds.permute(1, 0, 2).reshape(n, m * g).double()).numpy()
        return dict(sigma68=round(metrics.sigma68(zmode, z_hold), 5),
                    outlier_frac=round(metrics.outlier_fraction(zmode, z_hold), 5))

    def evaluate(state: dict[str, torch.Tensor]) -> dict:
        model = build_network(arch, n_members, cfg.seed)
        model.load_state_dict(state)
        lw, mu, sd = predict(model, x_hold)
        return dict(pooled=scores(lw, mu, sd),
                    members=[scores(lw[i : i + 1], mu[i : i + 1], sd[i : i + 1]) for i in range(n_members)])

    def run_case(name: str) -> tuple[dict, dict[str, torch.Tensor]]:
        load_before = [round(v, 2) for v in os.getloadavg()]
        w0, c0 = time.perf_counter(), time.process_time()
        progress = lambda msg: log(f"{name}: {msg}")  # noqa: E731
        if name == "vectorised":
            model = build_network(arch, n_members, cfg.seed)
            res = train_ensemble(model, x, z, ratios, ratio_err, splits, cfg, progress=progress)
            state = model.state_dict()
            best_val, best_epoch = res.best_val_loss.tolist(), res.best_epoch.tolist()
        else:
            states, best_val, best_epoch = [], [], []
            for i in range(n_members):
                one = build_network(arch, 1, cfg.seed, members=[i])
                res = train_ensemble(one, x, z, ratios, ratio_err, splits, cfg, members=[i],
                                     progress=progress if i == 0 else None)
                log(f"loop: member {i + 1}/{n_members} done, {time.perf_counter() - w0:.0f}s")
                states.append(one.state_dict())
                best_val += res.best_val_loss.tolist()
                best_epoch += res.best_epoch.tolist()
            state = {}
            for key in states[0]:
                parts = [s[key] for s in states]
                state[key] = parts[0] if parts[0].dim() == 0 else torch.cat(parts, dim=0)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        out = dict(case=name, wall_seconds=round(wall, 2), cpu_seconds=round(cpu, 2),
                   load_before=load_before, load_after=[round(v, 2) for v in os.getloadavg()],
                   best_val_loss=[round(v, 5) for v in best_val], best_epoch=best_epoch)
        log(f"{name}: {wall:.1f}s wall, {cpu:.1f}s CPU")
        return out, state

    rows, states = [], {}
    for name in args.order.split(","):
        row, states[name] = run_case(name)
        row["holdout"] = evaluate(states[name])
        rows.append(row)
    by = {r["case"]: r for r in rows}
    result: dict = dict(
        script="bench_inform.py",
        argv=sys.argv[1:],
        machine=dict(cpus=os.cpu_count(), python=platform.python_version(), torch=torch.__version__,
                     processor=platform.processor() or platform.machine()),
        threads=args.threads, torch_threads=torch.get_num_threads(),
        env={k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")},
        n_train=int(len(z)), n_holdout=int(len(z_hold)), n_members=n_members,
        epochs_per_step=list(cfg.epochs_per_step), batch_size=cfg.batch_size, seed=args.seed,
        prepare_seconds=round(prepare_seconds, 2), cases=rows,
    )
    if "vectorised" in by and "loop" in by:
        v, lp = by["vectorised"], by["loop"]
        diffs = [abs(float((states["vectorised"][k].double() - states["loop"][k].double()).abs().max()))
                 for k in states["loop"] if states["loop"][k].dim()]
        result["speedup_wall"] = round(lp["wall_seconds"] / v["wall_seconds"], 2)
        result["speedup_cpu"] = round(lp["cpu_seconds"] / v["cpu_seconds"], 2)
        result["max_abs_weight_difference"] = max(diffs)
        result["bar_3x_wall"] = result["speedup_wall"] >= 3.0

    print()
    print("| case | wall s | CPU s | load before -> after | mean best val loss | pooled sigma68 | pooled outliers "
          "| member sigma68 (mean +- std) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ms = np.array([m["sigma68"] for m in r["holdout"]["members"]])
        print(f"| {r['case']} | {r['wall_seconds']:.1f} | {r['cpu_seconds']:.1f} | {r['load_before'][0]} -> "
              f"{r['load_after'][0]} | {np.mean(r['best_val_loss']):.4f} | {r['holdout']['pooled']['sigma68']:.4f} | "
              f"{r['holdout']['pooled']['outlier_frac']:.4f} | {ms.mean():.4f} +- {ms.std():.4f} |")
    if "speedup_wall" in result:
        print(f"\nspeed-up loop/vectorised: {result['speedup_wall']}x wall, {result['speedup_cpu']}x CPU "
              f"(bar >= 3x: {'PASS' if result['bar_3x_wall'] else 'NOT MET'}); "
              f"max |weight difference| {result['max_abs_weight_difference']:.3g}")
    os.makedirs(args.output, exist_ok=True)
    stem = "bench_inform" + (f"_{args.tag}" if args.tag else "")
    with open(os.path.join(args.output, stem + ".json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    log(f"wrote {os.path.join(args.output, stem + '.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
