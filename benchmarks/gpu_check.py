"""The whole Deepz pipeline on a device: pretrain + fine-tune, estimate 10^7 rows, reduced precision.

On ``--device`` (default ``cuda``; without one the script says so and stops, unless ``--device cpu``):
DeepzInformer pretrains on ``--sims`` DeepzSimCreator galaxies (or ``--sims-file``, a DeepzSimCreator
output file) and fine-tunes on the DC2 training file; DeepzEstimator then estimates the validation file
tiled to ``--rows`` rows, file in -> file out, at each ``--precisions`` value (the stage default
network, the compact one). The first tile (the validation file itself) is scored with ``photoz_scores``
and its zmode compared with float32's. A separate run of ``--profile-rows`` rows at float32 inside
``torch.profiler`` gives the seconds of each ``deepz.*`` region and of RAIL's reading and writing, to
say what limits the rate (HDF5 reading, host-device copies, point estimates, qp writing).

    python benchmarks/gpu_check.py --sims 50000
    python benchmarks/gpu_check.py --device cpu --quick --output /tmp/bench_check
"""

from __future__ import annotations

import itertools
import os
import tempfile

import numpy as np

import harness

QUICK = dict(epochs_per_step=[2, 1, 1], pretrain_epochs_per_step=[1, 1])
_RUNS = itertools.count()  # stage names are unique within a process


def simulations(args) -> dict | None:
    """The pretraining table: ``--sims-file``, or ``--sims`` fresh galaxies, or None."""
    if args.sims_file:
        return harness.read_table(args.sims_file)
    if not args.sims:
        return None
    from rail.deepz import DeepzSimCreator

    creator = DeepzSimCreator.make_stage(name="gpu_sims", model="none", n_samples=args.sims, seed=87,
                                         hdf5_groupname="")
    return creator.sample(args.sims, 87).data


def inform(path: str, sims: dict | None, args) -> float:
    """Pretrain (when ``sims``), fine-tune on the DC2 training file, save at ``path`` -> wall [s]."""
    import torch

    from rail.deepz import DeepzInformer

    stage = DeepzInformer.make_stage(name="gpu_inform", model=path, hdf5_groupname=harness.GROUP,
                                     sims_groupname="", device=args.device, **(QUICK if args.quick else {}))
    with harness.timed() as t:
        stage.inform({harness.GROUP: harness.read_table(harness.dc2_paths()[0])}, sims=sims)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
    return t["wall_s"]


def estimate(model: str, data: str, out: str, precision: str, args) -> float:
    """DeepzEstimator file in -> file out at ``precision`` -> wall [s]."""
    from rail.deepz import DeepzEstimator

    stage = DeepzEstimator.make_stage(name=f"gpu_estimate_{precision}_{next(_RUNS)}", model=model, input=data,
                                      output=out,
                                      hdf5_groupname=harness.GROUP, device=args.device, precision=precision,
                                      batch_size=args.batch_size, chunk_size=args.chunk_size)
    with harness.timed() as t:
        stage.run()
        stage.finalize()
    return t["wall_s"]


def precision_row(precision: str, wall: float, out: str, z: np.ndarray, ref_mode: np.ndarray | None,
                  args) -> dict:
    """Throughput and scores of one precision; zmode differences against ``ref_mode`` (float32)."""
    import qp

    from rail.deepz.metrics import photoz_scores

    head = qp.read(out)[: z.size]  # the first tile is the validation file itself
    zmode = np.asarray(head.ancil["zmode"], dtype=float).ravel()
    ref = zmode if ref_mode is None else ref_mode
    dz = np.abs(zmode - ref) / (1 + ref)
    return dict(precision=precision, wall_s=wall, gal_per_s=args.rows / wall, zmode=zmode,
                dzmode_median=float(np.median(dz)), dzmode_p99=float(np.quantile(dz, 0.99)),
                **photoz_scores(head, z))


def main() -> None:
    """Run the pipeline on the device, write ``gpu_check.json``."""
    ap = harness.parser(__doc__)
    ap.add_argument("--device", default="", help="torch device (default: cuda when available)")
    ap.add_argument("--sims", type=int, default=50_000, help="simulated galaxies for pretraining (0: none)")
    ap.add_argument("--sims-file", default="", help="pretrain on this DeepzSimCreator output file instead")
    ap.add_argument("--rows", type=int, default=10_000_000, help="rows of the tiled estimation input")
    ap.add_argument("--profile-rows", type=int, default=2_000_000, help="rows of the profiled float32 run")
    ap.add_argument("--precisions", default="float32,bfloat16,float16", help="float32 first: the reference")
    ap.add_argument("--batch-size", type=int, default=65536, help="DeepzEstimator batch_size")
    ap.add_argument("--chunk-size", type=int, default=1_000_000, help="DeepzEstimator chunk_size")
    args = ap.parse_args()
    if args.quick:
        args.sims, args.rows, args.chunk_size = min(args.sims, 2000), min(args.rows, 50_000), 25_000
        args.profile_rows = min(args.profile_rows, 50_000)
    harness.set_threads(args.threads)
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "")
    if not args.device:
        print("no CUDA device here: nothing to check (--device cpu for a smoke test)")
        return
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
        model = os.path.join(work, "model.npz")
        inform_s = inform(model, simulations(args), args)
        test = harness.dc2_paths()[1]
        z = harness.read_table(test)["redshift"]
        data = harness.tile_file(test, os.path.join(work, "tiled.hdf5"), args.rows)
        runs, ref = [], None
        for precision in args.precisions.split(","):
            out = os.path.join(work, f"out_{precision}.hdf5")
            wall = estimate(model, data, out, precision, args)
            runs.append(precision_row(precision, wall, out, z, ref, args))
            ref = runs[0]["zmode"]
            os.remove(out)
        small = harness.tile_file(test, os.path.join(work, "tiled_profile.hdf5"), args.profile_rows)
        with harness.profiled() as regions, harness.timed() as t:
            estimate(model, small, os.path.join(work, "out_profile.hdf5"), "float32", args)
    write(runs, inform_s, args, harness.phase_table(
        f"Estimation phases at float32, profiled run of {args.profile_rows:,} rows ({t['wall_s']:.1f} s)",
        regions, t["wall_s"]), dict(rows=args.profile_rows, wall_s=t["wall_s"], regions_s=regions))


def write(runs: list[dict], inform_s: float, args, phases: dict, profile: dict) -> None:
    """The result file: one row per precision, and the phase table."""
    for r in runs:
        r.pop("zmode")
    cells = [[r["precision"], f"{r['gal_per_s']:,.0f}", harness.fmt(r["sigma68"]),
              harness.fmt(r["outlier_frac"]),
              harness.fmt(r["pit_ks"]), f"{r['dzmode_median']:.1e} / {r['dzmode_p99']:.1e}"] for r in runs]
    tab = harness.table(f"DeepzEstimator on {args.rows:,} rows on {args.device}",
                        ["precision", "gal/s", "sigma68", "outliers", "PIT KS", "zmode shift, median / p99"],
                        cells, "zmode shift: abs(zmode - zmode_float32) / (1 + zmode_float32). "
                        f"Inform (pretraining on {args.sims_file or f'{args.sims:,} simulations'} + "
                        "fine-tuning) "
                        f"took {inform_s:.0f} s; scores on the 20,449 validation galaxies (the first tile).")
    harness.write_result("gpu_check", "Deepz on a device", [tab, phases],
                         dict(device=args.device, inform_s=inform_s, runs=runs, profile=profile, quick=args.quick),
                         args.output)


if __name__ == "__main__":
    main()
