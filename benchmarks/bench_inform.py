"""DeepzInformer training time on the DC2 training file, and where it goes.

For each ``--members`` value (the ``n_folds`` option: one network per fold, all members trained
together as one stacked network), ``DeepzInformer`` with the stage defaults trains on the 10,225
galaxies of the DC2 training file: wall and CPU seconds, peak RSS. A second, profiled run of the
first value gives the CPU seconds of each ``deepz.*`` region of the training code (profiling slows
training, so it is not the timed run; ``--no-profile`` skips it). The profiled run trains a quarter of
the default schedule (``PROFILE_EPOCHS``): torch's profiler keeps every operator event in memory, over
20 GB for the whole schedule, and the regions' shares per epoch do not depend on the epoch count.

``--loop`` also times the ensemble training alone (no calibration, no compact network) both ways:
the members as one stacked network (the informer's way) and a per-member loop (one network after
the other), ``--repeats`` times each, interleaved. Every member draws from its own random streams, so
both ways train the same networks (up to the rounding of differently batched matrix products).

    python benchmarks/bench_inform.py --threads 1 --loop
    python benchmarks/bench_inform.py --members 1,5,10 --threads 1
    python benchmarks/bench_inform.py --quick --output /tmp/bench_check
"""

from __future__ import annotations

import harness

QUICK = dict(epochs_per_step=[2, 1, 1], n_rows=2000)
#: the profiled run's schedule: a quarter of the default [40, 15, 5] epochs
PROFILE_EPOCHS = [10, 4, 1]


def inform(table: dict, members: int, args, epochs: list[int] | None = None) -> None:
    """Train one Deepz model in memory (nothing is written)."""
    from rail.deepz import DeepzInformer

    cfg = dict(n_folds=members, seed=args.seed, num_threads=args.threads, output_mode="return",
               checkpoint_dir="none", hdf5_groupname="")
    if args.quick or epochs:
        cfg["epochs_per_step"] = QUICK["epochs_per_step"] if args.quick else epochs
    DeepzInformer.make_stage(name=f"inform_{members}", **cfg).inform(table)


def loop_table(table: dict, args, data: dict) -> dict:
    """Stacked members against a per-member loop: the ensemble training alone, the fastest of ``--repeats``."""
    import torch

    options = dict(n_folds=harness.int_list(args.members)[0], seed=args.seed, num_threads=args.threads)
    if args.quick:
        options["epochs_per_step"] = QUICK["epochs_per_step"]
    seconds: dict[str, list[float]] = {"stacked": [], "loop": []}
    states = {}
    for _ in range(args.repeats):
        for way in ("stacked", "loop"):
            harness.log(f"ensemble training, {way}")
            sec, states[way] = harness.train_members(table, per_member=way == "loop", **options)
            seconds[way].append(sec)
    # the redshift network's output layer: how far apart the two ways' members end up
    out_layer = [k for k in states["stacked"] if k.startswith("mdn.") and k.endswith(".weight")][-1]
    gap = float(torch.max(torch.abs(states["stacked"][out_layer] - states["loop"][out_layer])))
    best = {k: min(v) for k, v in seconds.items()}
    data["loop"] = dict(seconds=seconds, members=options["n_folds"], speedup=best["loop"] / best["stacked"],
                        max_output_weight_difference=gap)
    return harness.table(f"Ensemble training alone, {options['n_folds']} members: stacked against a per-member loop",
                         ["way", "wall [s] (fastest)", "runs [s]", "speed-up"],
                         [["stacked members (the informer's)", f"{best['stacked']:.1f}",
                           ", ".join(f"{v:.1f}" for v in seconds["stacked"]), f"{best['loop'] / best['stacked']:.2f}x"],
                          ["per-member loop", f"{best['loop']:.1f}", ", ".join(f"{v:.1f}" for v in seconds["loop"]),
                           "1.00x"]],
                         f"--threads {args.threads}; largest difference of the output layers' weights between the "
                         f"two ways {gap:.1e} (rounding of differently batched products).")


def training_table(args) -> dict:
    """The DC2 training file (with ``--quick``, 2,000 random rows of it)."""
    table = harness.read_table(harness.dc2_paths()[0])
    if args.quick:
        table = harness.subset(table, harness.random_rows(len(table["redshift"]), QUICK["n_rows"], args.seed))
    return table


def main() -> None:
    """Time (and profile) the informer, write ``bench_inform.json``."""
    ap = harness.parser(__doc__)
    ap.add_argument("--members", default="5", help="ensemble sizes (n_folds), comma separated")
    ap.add_argument("--seed", type=int, default=87)
    ap.add_argument("--no-profile", action="store_true", help="skip the profiled run")
    ap.add_argument("--loop", action="store_true", help="also time a per-member loop against the stacked members")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs of each way with --loop")
    args = ap.parse_args()
    harness.set_threads(args.threads)
    table = training_table(args)
    import rail.estimation.algos.deepz  # noqa: F401  # imported before the clock starts
    n = len(table["redshift"])
    runs = []
    for members in harness.int_list(args.members):
        harness.log(f"inform, {members} members")
        with harness.timed() as t:
            inform(table, members, args)
        runs.append(dict(members=members, wall_s=t["wall_s"], cpu_s=t["cpu_s"],
                         peak_rss_mib=harness.peak_rss_mib()))
    cells = [[r["members"], f"{r['wall_s']:.1f}", f"{r['cpu_s']:.1f}", f"{r['peak_rss_mib']:,.0f}"]
             for r in runs]
    tables = [harness.table(f"DeepzInformer on {n:,} DC2 training galaxies",
                            ["members", "wall [s]", "CPU [s]", "peak RSS [MiB]"], cells,
                            f"Stage defaults{' (--quick: short schedule)' if args.quick else ''}, --threads "
                            f"{args.threads}; peak RSS is the process maximum so far.")]
    data = dict(runs=runs, n_train=n, quick=args.quick, load_average=harness.load_average())
    if args.loop:
        tables.append(loop_table(table, args, data))
    if not args.no_profile:
        members = runs[0]["members"]
        harness.log(f"profiled inform, {members} members")
        with harness.profiled() as regions, harness.timed() as t:  # profiler post-processing not timed
            inform(table, members, args, PROFILE_EPOCHS)
        title = (f"Training phases, profiled run with {members} members and epochs_per_step {PROFILE_EPOCHS} "
                 f"({t['wall_s']:.1f} s)")
        tables.append(harness.phase_table(title, regions, t["wall_s"]))
        data["profile"] = dict(members=members, epochs_per_step=PROFILE_EPOCHS, wall_s=t["wall_s"], regions_s=regions)
    harness.write_result("bench_inform", "DeepzInformer training time", tables, data, args.output)


if __name__ == "__main__":
    main()
