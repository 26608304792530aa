#!/usr/bin/env python
"""Whole Deepz pipeline on a GPU (or any device): simulate, pretrain + fine-tune, estimate, score.

Runs, on ``--device`` (default: ``cuda`` when available, else it says so and stops unless
``--device cpu`` is given):

1. DeepzSimCreator: ``--sims`` simulated galaxies (default engine);
2. DeepzInformer: pretraining on them and fine-tuning on the DC2 training file (stage defaults,
   ``device`` set), timed;
3. DeepzEstimator: the DC2 validation file tiled to ``--rows`` rows, file in / file out, for each
   ``--precisions`` value (float32, bfloat16, float16), timed; galaxies/second;
4. accuracy of each precision against float32 on the validation rows: sigma68, outlier rate,
   PIT KS and the median / 99th percentile of |zmode - zmode_float32| / (1 + z).

Writes ``<output>/gpu_check.json`` and ``.md``. Usage::

    python benchmarks/gpu_check.py                       # on a CUDA machine
    python benchmarks/gpu_check.py --device cpu --sims 2000 --rows 50000 --quick   # smoke test
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
import time
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compare_rail as cr  # noqa: E402  (machine info, data files)
from throughput import tile_file  # noqa: E402


def _say(msg: str) -> None:
    print(f"{_dt.datetime.now():%H:%M:%S} {msg}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="", help="torch device (default: cuda when available)")
    ap.add_argument("--sims", type=int, default=50_000, help="simulated galaxies for pretraining (0: none)")
    ap.add_argument("--sims-file", default="", help="pretrain on this DeepzSimCreator output (HDF5, group "
                    "'photometry') instead of simulating (for machines without the SSP data package)")
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows of the tiled estimation input")
    ap.add_argument("--precisions", default="float32,bfloat16,float16")
    ap.add_argument("--batch-size", type=int, default=16384, help="DeepzEstimator batch_size")
    ap.add_argument("--chunk-size", type=int, default=200_000)
    ap.add_argument("--quick", action="store_true", help="short training (smoke test)")
    ap.add_argument("--output", default=cr.DEFAULT_OUTPUT)
    args = ap.parse_args(argv)

    import qp
    import tables_io
    import torch

    from rail.deepz import DeepzEstimator, DeepzInformer, DeepzSimCreator
    from rail.deepz.metrics import photoz_scores

    device = args.device or ("cuda" if torch.cuda.is_available() else "")
    if not device:
        _say("no CUDA device here: nothing to check (use --device cpu for a smoke test)")
        return 0
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else "none"
    work = os.path.join(os.path.abspath(args.output), "gpu_check_work")
    os.makedirs(work, exist_ok=True)
    train_path, test_path = cr.data_files(None, None)
    report: dict[str, Any] = dict(generated=_dt.datetime.now().isoformat(timespec="seconds"), device=device, gpu=gpu,
                                  environment=cr.machine_info(), args=vars(args))
    quick = dict(epochs_per_step=[4, 2, 1], pretrain_epochs_per_step=[2, 1]) if args.quick else {}

    sims = None
    if args.sims_file:
        sims = tables_io.read(args.sims_file)  # as DeepzSimCreator writes it: {"photometry": {...}}
        n_sims = len(next(iter(sims.get("photometry", sims).values())))
        report["sims_file"] = args.sims_file
        _say(f"pretraining on {n_sims:,} simulated galaxies from {args.sims_file}")
    elif args.sims:
        t0 = time.perf_counter()
        creator = DeepzSimCreator.make_stage(name="gpu_sims", model="none", n_samples=args.sims, seed=87,
                                             output=os.path.join(work, "sims.hdf5"))
        sims = creator.sample(args.sims, 87).data
        report["simulate_s"] = time.perf_counter() - t0
        _say(f"simulated {args.sims:,} galaxies in {report['simulate_s']:.1f} s")

    train = tables_io.read(train_path)
    model_path = os.path.join(work, "model.npz")
    t0 = time.perf_counter()
    inform = DeepzInformer.make_stage(name="gpu_inform", model=model_path, hdf5_groupname="photometry",
                                      device=device, **quick)
    inform.inform(train, sims=sims)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    report["inform_s"] = time.perf_counter() - t0
    _say(f"inform (pretrain + fine-tune) on {device}: {report['inform_s']:.1f} s")

    tiled = tile_file(test_path, os.path.join(work, f"tiled_{args.rows}.hdf5"), args.rows)
    z_valid = np.asarray(tables_io.read(test_path)["photometry"]["redshift"])
    n_valid = len(z_valid)
    runs, ref_mode = [], None
    for prec in [p.strip() for p in args.precisions.split(",") if p.strip()]:
        out = os.path.join(work, f"estimate_{prec}.hdf5")
        stage = DeepzEstimator.make_stage(name=f"gpu_estimate_{prec}", model=model_path, input=tiled["path"],
                                          output=out, hdf5_groupname="photometry", device=device, precision=prec,
                                          batch_size=args.batch_size, chunk_size=args.chunk_size)
        t0 = time.perf_counter()
        stage.run()
        stage.finalize()
        wall = time.perf_counter() - t0
        ens = qp.read(out)
        head = ens[:n_valid]  # the first tile is the validation file itself
        zmode = np.asarray(head.ancil["zmode"]).ravel()
        scores = photoz_scores(head, z_valid)
        row = dict(precision=prec, rows=args.rows, wall_s=wall, gal_per_s=args.rows / wall,
                   sigma68=scores["sigma68"], outlier_frac=scores["outlier_frac"], pit_ks=scores["pit_ks"])
        if ref_mode is None:
            ref_mode = zmode
        dz = np.abs(zmode - ref_mode) / (1 + ref_mode)
        row.update(dzmode_median=float(np.median(dz)), dzmode_p99=float(np.quantile(dz, 0.99)))
        runs.append(row)
        os.remove(out)
        _say(f"estimate {prec}: {row['gal_per_s']:,.0f} gal/s, sigma68 {row['sigma68']:.4f}, "
             f"|dzmode| median {row['dzmode_median']:.1e}")
    report["estimate"] = runs

    lines = [f"# Deepz on {device} ({gpu})", "",
             f"Simulate {report.get('simulate_s', 0):.1f} s; inform (pretrain + fine-tune) {report['inform_s']:.1f} s.",
             "", "| precision | rows | wall [s] | gal/s | sigma68 | outliers | PIT KS | median / p99 |dzmode|/(1+z) vs float32 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['precision']} | {r['rows']:,} | {r['wall_s']:.1f} | {r['gal_per_s']:,.0f} | {r['sigma68']:.4f} "
                     f"| {r['outlier_frac']:.4f} | {r['pit_ks']:.4f} | {r['dzmode_median']:.1e} / {r['dzmode_p99']:.1e} |")
    cr.write_report(report, "\n".join(lines) + "\n", args.output, "gpu_check")
    return 0


if __name__ == "__main__":
    sys.exit(main())
