"""Benchmark DeepzSimCreator engines: galaxies per second (bar: default engine >= 1,000 gal/s at 100k).

Usage: python benchmarks/bench_simulation.py [--n 100000] [--quick]
       python benchmarks/bench_simulation.py --parallel [--rows 1000000] [--jobs 1,2] [--threads 1]
Writes benchmarks/output/bench_simulation.json and prints a table. Each case runs the full catalogue
builder (parameters, SEDs, photometry, noise, column assembly) after one warm-up call that loads
and caches the SSP grid, as a RAIL stage would on its first call.

``--parallel``: the default engine on ``--rows`` galaxies with each ``n_jobs`` of ``--jobs``, each in a
fresh process (so peak RSS is its own): wall time, gal/s, peak RSS of the process and of its largest
worker, the load average, and a check that every catalogue equals the first one (same seed).
Writes benchmarks/output/bench_simulation_parallel.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

from rail.deepz.simulation import OPTIONS, simulate_catalogue


def _opts(**extra):
    opts = {k: v[0] for k, v in OPTIONS.items()}
    opts.update(extra)
    return opts


def _parallel_child(rows: int, n_jobs: int, seed: int, digest_path: str) -> None:
    """One --parallel case in this (fresh) process; prints a JSON line."""
    import hashlib

    simulate_catalogue(100, 0, _opts(n_jobs=1))  # warm-up: grid load and imports
    load = [round(v, 2) for v in os.getloadavg()]

    def cpu() -> float:  # user + system seconds of this process and its finished workers
        return sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                   for f in ("ru_utime", "ru_stime"))

    t0, c0 = time.perf_counter(), cpu()
    cat = simulate_catalogue(rows, seed, _opts(n_jobs=n_jobs))
    elapsed, cpu_seconds = time.perf_counter() - t0, cpu() - c0
    digest = hashlib.sha256()
    for key in sorted(cat):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(cat[key]).tobytes())
    with open(digest_path, "w", encoding="utf-8") as f:
        f.write(digest.hexdigest())
    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB
    child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps(dict(n_jobs=n_jobs, rows=rows, seconds=round(elapsed, 2), cpu_seconds=round(cpu_seconds, 2),
                          galaxies_per_second=round(rows / elapsed, 1), peak_rss_mb=round(self_mb, 1),
                          peak_worker_rss_mb=round(child_mb, 1), load_before=load,
                          load_after=[round(v, 2) for v in os.getloadavg()], sha256=digest.hexdigest())))


def _spin(seconds: float) -> float:
    """Busy-loop for ``seconds`` of wall time; returns the CPU seconds this process got."""
    t0, c0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        sum(range(10_000))
    return time.process_time() - c0


def cpu_probe(seconds: float = 3.0) -> dict:
    """CPU a busy process gets alone and with 1 sibling: how many cores are free for n_jobs=2."""
    import multiprocessing  # pylint: disable=import-outside-toplevel

    alone = _spin(seconds)
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pair = pool.map(_spin, [seconds, seconds])
    return dict(seconds=seconds, cores_used_by_1_process=round(alone / seconds, 2),
                cores_used_by_2_processes=round(sum(pair) / seconds, 2))


def parallel(args: argparse.Namespace) -> None:
    """n_jobs sweep of the default engine (--parallel)."""
    probe = cpu_probe()
    print(f"[{time.strftime('%H:%M:%S')}] CPU probe (busy loops): {probe}", flush=True)
    env = dict(os.environ)
    if args.threads > 0:
        for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[key] = str(args.threads)
    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "output")
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for n_jobs in [int(j) for j in args.jobs.split(",")]:
        print(f"[{time.strftime('%H:%M:%S')}] n_jobs={n_jobs}: {args.rows} galaxies ...", flush=True)
        digest_path = os.path.join(out_dir, f".sim_digest_{n_jobs}")
        res = subprocess.run([sys.executable, os.path.abspath(__file__), "--_child", str(args.rows), str(n_jobs),
                              str(args.seed), digest_path], env=env, capture_output=True, text=True, check=False)
        if res.returncode:
            raise SystemExit(f"n_jobs={n_jobs} failed:\n{res.stderr[-3000:]}")
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        os.remove(digest_path)
        print(f"[{time.strftime('%H:%M:%S')}]   {rows[-1]}", flush=True)
    identical = len({r["sha256"] for r in rows}) == 1
    print("\n| n_jobs | galaxies | seconds | CPU seconds | gal/s | peak RSS (MB) | largest worker RSS (MB) | load before |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n_jobs']} | {r['rows']} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | {r['galaxies_per_second']:.0f} | "
              f"{r['peak_rss_mb']:.0f} | {r['peak_worker_rss_mb']:.0f} | {r['load_before'][0]} |")
    base = rows[0]["seconds"]
    speedups = {r["n_jobs"]: round(base / r["seconds"], 2) for r in rows}
    print(f"speed-up vs n_jobs={rows[0]['n_jobs']}: {speedups}; catalogues identical: {identical}")
    with open(os.path.join(out_dir, "bench_simulation_parallel.json"), "w", encoding="utf-8") as f:
        json.dump(dict(machine=dict(cpus=os.cpu_count(), python=platform.python_version(),
                                    processor=platform.processor() or platform.machine()),
                       threads=args.threads, seed=args.seed, cpu_probe=probe, results=rows, speedup=speedups,
                       catalogues_identical=identical), f, indent=2)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--_child":
        _parallel_child(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="galaxies for the main cases")
    parser.add_argument("--quick", action="store_true", help="10x fewer galaxies (smoke test)")
    parser.add_argument("--parallel", action="store_true", help="n_jobs sweep of the default engine instead")
    parser.add_argument("--rows", type=int, default=1_000_000, help="--parallel: galaxies per case")
    parser.add_argument("--jobs", default="1,2", help="--parallel: n_jobs values")
    parser.add_argument("--threads", type=int, default=1, help="--parallel: OMP/BLAS threads (0 = library default)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.parallel:
        parallel(args)
        return
    n = args.n // 10 if args.quick else args.n
    cases = [
        ("ssp (default, LSST, depth noise)", n, _opts()),
        ("ssp + exposures (3-10 per band)", n, _opts(exposures=True)),
        ("ssp, delayed SFH, no noise", n, _opts(sfh="delayed", noise_model="none")),
        ("templates (COSMOS, LSST)", n, _opts(engine="templates")),
        ("ssp, PAUS 40 NB + LSST, S/N noise", max(n // 5, 1000),
         _opts(filter_set="paus_lsst", noise_model="snr")),
    ]
    if os.environ.get("SPS_HOME"):
        cases.append(("fsps (2 processes)", 200, _opts(engine="fsps", n_processes=2)))
    simulate_catalogue(100, 0, _opts())  # warm-up: grid load (+ disk cache) and imports
    rows = []
    for label, n_gal, opts in cases:
        t0 = time.perf_counter()
        cat = simulate_catalogue(n_gal, 1, dict(opts, n_jobs=1))  # one process (--parallel: n_jobs sweep)
        elapsed = time.perf_counter() - t0
        assert len(cat["redshift"]) == n_gal and np.isfinite(cat["flux_true_r_lsst"] if "flux_true_r_lsst" in cat
                                                             else cat["redshift"]).all()
        rows.append(dict(case=label, n_galaxies=n_gal, seconds=round(elapsed, 2),
                         galaxies_per_second=round(n_gal / elapsed, 1)))
    if not os.environ.get("SPS_HOME"):
        rows.append(dict(case="fsps", n_galaxies=0, seconds=None, galaxies_per_second=None,
                         note="skipped: SPS_HOME not set (FSPS data tree not installed)"))
    print(f"{'case':<40} {'N':>8} {'seconds':>9} {'gal/s':>10}")
    for r in rows:
        if r["seconds"] is None:
            print(f"{r['case']:<40} {'-':>8} {'-':>9} {'-':>10}  {r['note']}")
        else:
            print(f"{r['case']:<40} {r['n_galaxies']:>8} {r['seconds']:>9.2f} {r['galaxies_per_second']:>10.0f}")
    default = rows[0]
    passed = default["n_galaxies"] >= 100_000 and default["galaxies_per_second"] >= 1000
    print(f"bar (default engine, 100k LSST galaxies, >= 1000 gal/s): {'PASS' if passed else 'not met / not run'}")
    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "output")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "bench_simulation.json"), "w", encoding="utf-8") as f:
        json.dump(dict(machine=dict(cpus=os.cpu_count(), python=platform.python_version(),
                                    processor=platform.processor() or platform.machine()),
                       results=rows, bar_passed=passed), f, indent=2)


if __name__ == "__main__":
    main()
