"""Benchmark DeepzSimCreator engines: galaxies per second (bar: default engine >= 1,000 gal/s at 100k).

Usage: python benchmarks/bench_simulation.py [--n 100000] [--quick]
Writes benchmarks/output/bench_simulation.json and prints a table. Each case runs the full catalogue
builder (parameters, SEDs, photometry, noise, column assembly) after one warm-up call that loads
and caches the SSP grid, as a RAIL stage would on its first call.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from rail.deepz.simulation import OPTIONS, simulate_catalogue


def _opts(**extra):
    opts = {k: v[0] for k, v in OPTIONS.items()}
    opts.update(extra)
    return opts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100_000, help="galaxies for the main cases")
    parser.add_argument("--quick", action="store_true", help="10x fewer galaxies (smoke test)")
    args = parser.parse_args()
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
        cat = simulate_catalogue(n_gal, 1, opts)
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
