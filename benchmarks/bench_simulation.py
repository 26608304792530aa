"""DeepzSimCreator speed: simulated galaxies per second for each SED engine.

For each ``--engines`` value, ``DeepzSimCreator`` (stage defaults otherwise: LSST bands, depth noise)
simulates ``--n`` galaxies in one process, after a small warm-up run that loads the SED grids.
``--jobs 1,2`` (or ``--parallel``) adds an ``n_jobs`` sweep of the first engine (worker processes
synthesising blocks).

    python benchmarks/bench_simulation.py --threads 1
    python benchmarks/bench_simulation.py --engines ssp --jobs 1,2 --threads 1
    python benchmarks/bench_simulation.py --quick --output /tmp/bench_check
"""

from __future__ import annotations

import harness


def simulate(engine: str, n: int, n_jobs: int, seed: int) -> dict:
    """Simulate ``n`` galaxies -> timings [s] and galaxies/s."""
    from rail.deepz import DeepzSimCreator

    creator = DeepzSimCreator.make_stage(name=f"sims_{engine}_{n_jobs}_{n}", model="none", engine=engine,
                                         n_jobs=n_jobs, n_samples=n, seed=seed, hdf5_groupname="")
    with harness.timed() as t:
        table = creator.sample(n, seed).data
    if len(table["redshift"]) != n:
        raise RuntimeError(f"{engine}: {len(table['redshift'])} galaxies instead of {n}")
    return dict(engine=engine, n_jobs=n_jobs, n=n, wall_s=t["wall_s"], cpu_s=t["cpu_s"],
                gal_per_s=n / t["wall_s"])


def cases(args) -> list[tuple[str, int]]:
    """(engine, n_jobs) pairs: every engine with one process, then the n_jobs sweep of the first."""
    engines = [e for e in args.engines.split(",") if e]
    sweep = [(engines[0], j) for j in harness.int_list(args.jobs) if j != 1]
    return [(e, 1) for e in engines] + sweep


def main() -> None:
    """Time the simulation, write ``bench_simulation.json``."""
    ap = harness.parser(__doc__)
    ap.add_argument("--n", type=int, default=100_000, help="galaxies per case")
    ap.add_argument("--engines", default="ssp,templates", help="SED engines, comma separated")
    ap.add_argument("--jobs", default="1", help="n_jobs values of the first engine, comma separated")
    ap.add_argument("--parallel", action="store_true", help="shorthand for --jobs 1,2")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if args.parallel:
        args.jobs = "1,2"
    n = 2000 if args.quick else args.n
    harness.set_threads(args.threads)
    runs = []
    for engine, n_jobs in cases(args):
        simulate(engine, 100, 1, 0)  # warm-up: imports, SED grids and filters
        harness.log(f"{engine}, n_jobs {n_jobs}, {n:,} galaxies")
        runs.append(simulate(engine, n, n_jobs, args.seed))
    cells = [[r["engine"], r["n_jobs"], f"{r['wall_s']:.1f}", f"{r['cpu_s']:.1f}", f"{r['gal_per_s']:,.0f}"]
             for r in runs]
    tab = harness.table(f"DeepzSimCreator, {n:,} galaxies per case",
                        ["engine", "n_jobs", "wall [s]", "CPU [s]", "gal/s"], cells,
                        f"LSST bands, depth noise, --threads {args.threads}; CPU seconds of this process "
                        "only (workers excluded).")
    harness.write_result("bench_simulation", "Simulated galaxies per second", [tab],
                         dict(runs=runs, quick=args.quick, load_average=harness.load_average()), args.output)


if __name__ == "__main__":
    main()
