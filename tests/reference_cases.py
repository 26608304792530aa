"""Reference runs that pin the behaviour of training and estimation, three ways.

Each case trains a model through the public stage API (fixed seed, one torch thread) and
estimates PDFs with it. ``tests/test_reference.py`` checks every case against what is stored in
``tests/data/``:

* ``reference_hashes.json``: SHA-256 hashes of the model's arrays and of the PDFs, bit for bit.
  Floating-point results depend on the CPU's kernels (torch's ATen capability, the BLAS and its
  code path for the processor), so the file records the platform it was written on, and the
  hashes are checked only on that platform (elsewhere the test is skipped, saying why).
* ``reference_scores.json``: bounds on each case's scores (sigma68, outliers, PIT KS, CDE loss)
  from the scatter over other seeds; they hold on any machine, and a change of behaviour that
  matters moves a score out of them.
* ``reference_model.npz`` and ``reference_pdfs.npz``: a stored model and the PDFs it gives; the
  estimator must reproduce them (inference only) to the tolerances of ``TOLERANCES``, measured
  across torch's CPU kernels.

Regenerate, only when a change of behaviour is intended (the commit says why):
``python tests/reference_cases.py --write`` (hashes of every case on this machine),
``--scatter`` (the score bounds: every case again for ``SCATTER_SEEDS``; minutes),
``--store-model`` (the 'small' case's model and its PDFs) or ``--store-pdfs`` (the stored model's PDFs
again, after an intended change of estimation).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
from typing import Any, Callable

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
HASH_FILE = os.path.join(DATA, "reference_hashes.json")
SCORE_FILE = os.path.join(DATA, "reference_scores.json")
MODEL_FILE = os.path.join(DATA, "reference_model.npz")
PDF_FILE = os.path.join(DATA, "reference_pdfs.npz")

# small networks that train to a calibration inside the fit's bounds (std_scale in (0.5, 2), shift
# in (-1, 1)) in about a second: 2,045 training rows spread over the redshift range (the DC2 files
# are sorted by redshift, so every 5th row), a short schedule at a higher learning rate
_SMALL = dict(learning_rates=[3e-3, 1e-3, 1e-4], epochs_per_step=[20, 5, 5], n_folds=4, encoder_layers=[16, 16],
              decoder_layers=[16, 16], mdn_layers=[16, 16], n_gaussians=5, batch_size=64, seed=11, num_threads=1)
TRAIN_ROWS = slice(0, 10225, 5)
TEST_ROWS = slice(0, 20449, 10)
#: seeds whose scores set each case's bounds (the pinned runs use seed 11, or 87 for 'default')
SCATTER_SEEDS = (12, 13, 14, 15, 16, 17, 18, 19)
DEFAULT_SCATTER_SEEDS = (88, 89, 90, 91)
SCORE_KEYS = ("sigma68", "outlier_frac", "pit_ks", "cde_loss")
#: bounds are the seeds' mean +- this many standard deviations (and always include every seed's value)
SCATTER_WIDTH = 4.0

#: tolerances of the stored model's PDFs: at least 20 times the largest differences between torch's
#: CPU kernels (``--kernels``: ATEN_CPU_CAPABILITY default against avx2 and avx512, which agree bit for
#: bit on an Intel Xeon with AVX-512: mixture parameters 9e-5 relative, CDF 1.3e-6, point estimates
#: 9e-6, ODDS 1.2e-5), and far below what a change of calibration, merging or folding moves (1e-3 and more)
TOLERANCES = dict(full_rtol=1e-3, full_atol=1e-5, cdf_atol=5e-5, point_atol=2e-4, odds_atol=5e-4)


def _hash_arrays(arrays: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(np.asarray(arrays[name]))
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


# -- the platform the bits belong to --------------------------------------------------------------
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _blas() -> str:
    """torch's BLAS and its version, e.g. 'mkl 2024.2-Product Build 20240605'."""
    import torch

    config = torch.__config__.show()
    name = re.search(r"BLAS_INFO=(\w+)", config)
    mkl = re.search(r"Math Kernel Library Version ([^\n]+?) for", config)
    return " ".join(p for p in (name.group(1) if name else "unknown", mkl.group(1) if mkl else "") if p)


def platform_key() -> dict[str, str]:
    """What decides the bits of a run: library versions, torch's CPU kernels, the BLAS and the processor."""
    import scipy
    import torch

    return dict(torch=torch.__version__, numpy=np.__version__, scipy=scipy.__version__,
                cpu_capability=torch.backends.cpu.get_cpu_capability(), blas=_blas(), cpu=_cpu_model(),
                machine=platform.machine())


def platform_mismatch(stored: dict[str, str]) -> str:
    """'' when this machine is the stored platform, else a sentence naming what differs."""
    here = platform_key()
    diff = [f"{k} {stored.get(k)!r} (here {here[k]!r})" for k in here if stored.get(k) != here[k]]
    return "" if not diff else "the reference hashes were recorded with " + ", ".join(diff)


# -- the cases ------------------------------------------------------------------------------------
def _dc2(which: str) -> dict[str, np.ndarray]:
    import tables_io
    from rail.utils.path_utils import find_rail_file

    rel = f"examples_data/testdata/test_dc2_{which}_9816.hdf5"
    return {k: np.asarray(v) for k, v in tables_io.read(find_rail_file(rel))["photometry"].items()}


def _rows(table: dict, rows: Any) -> dict:
    return {k: np.asarray(v)[rows] for k, v in table.items()}


def estimate(model: dict, table: dict, n_output_components: int | None = None, network: str = "auto") -> Any:
    """The estimator's qp ensemble of ``table`` (default options; ``n_output_components`` if given)."""
    from rail.deepz import DeepzEstimator

    extra = {} if n_output_components is None else dict(n_output_components=n_output_components)
    extra["network"] = network
    stage = DeepzEstimator.make_stage(name="reference_estimate", model=model, hdf5_groupname="",
                                      output_mode="return", num_threads=1, **extra)
    return stage.estimate(table).data


def _pdf_arrays(ens: Any, prefix: str) -> dict[str, np.ndarray]:
    out = {f"{prefix}pdf/{k}": np.asarray(v) for k, v in ens.objdata.items()}
    # 'coverage' is all NaN for models informed without a target, 'confidence' without simulations
    out.update({f"{prefix}ancil/{k}": np.asarray(v) for k, v in ens.ancil.items()
                if not (k in ("coverage", "confidence") and np.isnan(np.asarray(v, dtype=float)).all())})
    return out


def _inform(table: dict, sims: dict | None = None, **options: Any) -> dict:
    from rail.deepz import DeepzInformer

    stage = DeepzInformer.make_stage(name="reference_inform", output_mode="return", hdf5_groupname="",
                                     checkpoint_dir="none", **options)
    stage.inform(table, sims=sims)
    return stage.get_data("model")


def _sims(n: int, seed: int, **options: Any) -> dict[str, np.ndarray]:
    from rail.deepz import DeepzSimCreator

    stage = DeepzSimCreator.make_stage(name="reference_sims", n_samples=n, seed=seed, hdf5_groupname="",
                                       output_mode="return", n_jobs=1, **options)
    return dict(stage.sample().data)


def case_default(seed: int = 87) -> tuple[dict, dict]:
    """Stage defaults on the DC2 training file; the validation file to estimate."""
    return _inform(_dc2("training"), num_threads=1, seed=seed), _dc2("validation")


def case_small(seed: int = 11) -> tuple[dict, dict]:
    """Small networks on 2,045 training rows; 2,045 validation rows to estimate."""
    model = _inform(_rows(_dc2("training"), TRAIN_ROWS), **{**_SMALL, "seed": seed})
    return model, _rows(_dc2("validation"), TEST_ROWS)


def case_small_transfer(seed: int = 11) -> tuple[dict, dict]:
    """Pretraining on 2,000 simulations, fine-tuning with L2-SP, frozen encoder and simulation mixing."""
    sims = _sims(2000, 5)
    model = _inform(_rows(_dc2("training"), TRAIN_ROWS), sims=sims, pretrain_epochs_per_step=[6, 2],
                    pretrain_batch_size=128, finetune_l2sp=1e-3, finetune_sim_fraction=0.25, freeze=["encoder"],
                    **{**_SMALL, "seed": seed})
    return model, _rows(_dc2("validation"), TEST_ROWS)


def case_small_exposures(seed: int = 11) -> tuple[dict, dict]:
    """Simulated exposures: randomised coadds and outlier augmentation; other simulations to estimate."""
    train = _sims(3000, 6, exposures=True, n_exposures_range=[1, 4], exposure_outlier_fraction=0.05)
    test = _sims(1000, 7, exposures=True, n_exposures_range=[1, 4])
    model = _inform(train, coadd_keep_prob=0.7, outlier_fraction=0.1, **{**_SMALL, "seed": seed})
    return model, test


CASES: dict[str, Callable[..., tuple[dict, dict]]] = dict(
    default=case_default, small=case_small, small_transfer=case_small_transfer,
    small_exposures=case_small_exposures,
)
QUICK = ("small", "small_transfer", "small_exposures")


def run_case(name: str, seed: int | None = None) -> dict[str, Any]:
    """Case ``name`` (at ``seed``, default the pinned one) on one torch thread.

    Returns ``hashes`` (``model``: network weights, scaler, prior, compact network; ``pdfs``: the
    default output and every component of the ensemble, with the ancil columns; ``calibration``),
    ``scores`` (of the default output against the true redshifts) and ``model``.
    """
    import torch

    from rail.deepz.metrics import photoz_scores

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, table = CASES[name]() if seed is None else CASES[name](seed)
        ens = estimate(model, table)
        pdfs = {**_pdf_arrays(ens, ""), **_pdf_arrays(estimate(model, table, 0, "ensemble"), "all/")}
        scores = photoz_scores(ens, table["redshift"])
    finally:
        torch.set_num_threads(old)
    hashes = dict(model=_hash_arrays(model["arrays"]), pdfs=_hash_arrays(pdfs),
                  calibration=json.dumps(model["meta"]["calibration"], sort_keys=True))
    return dict(hashes=hashes, scores={k: float(scores[k]) for k in SCORE_KEYS}, model=model)


def _read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _write_json(path: str, data: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")


def load_hashes() -> dict[str, Any]:
    """``{"platform": {...}, "cases": {name: hashes}}``."""
    return _read_json(HASH_FILE)


def load_score_bounds() -> dict[str, Any]:
    """``{"cases": {name: {score: [low, high]}}, ...}``."""
    return _read_json(SCORE_FILE)


def _provenance() -> dict[str, str]:
    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=HERE, capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return dict(commit=commit, date=datetime.date.today().isoformat(), command=" ".join(["python"] + sys.argv))


def scatter_bounds(runs: list[dict[str, float]], own: dict[str, float]) -> dict[str, list[float]]:
    """Bounds of each score: mean +- SCATTER_WIDTH standard deviations over ``runs``, widened to hold
    every run and the pinned run ``own``."""
    out = {}
    for key in SCORE_KEYS:
        values = np.array([r[key] for r in runs] + [own[key]])
        mean, sd = values.mean(), values.std(ddof=1)
        out[key] = [float(min(mean - SCATTER_WIDTH * sd, values.min())),
                    float(max(mean + SCATTER_WIDTH * sd, values.max()))]
    return out


# -- the stored model ---------------------------------------------------------------------------------
STORED_ROWS = slice(0, 20449, 20)  # 1,023 validation rows over the whole redshift range


def stored_table() -> dict[str, np.ndarray]:
    """The rows whose PDFs are stored with the model."""
    return _rows(_dc2("validation"), STORED_ROWS)


CDF_GRID = np.linspace(0.0, 3.0, 31)
POINT_KEYS = ("zmode", "zmean", "zmedian", "zstd")


def stored_outputs(model: dict) -> dict[str, np.ndarray]:
    """What the stored model's check compares: every component of the ensemble, the default output's
    (the compact network's) CDF on ``CDF_GRID`` and its ancil columns."""
    table = stored_table()
    full, out = estimate(model, table, 0, "ensemble"), estimate(model, table)
    res = {f"all/{k}": np.asarray(v) for k, v in full.objdata.items()}
    res["cdf"] = np.asarray(out.cdf(CDF_GRID), dtype=np.float32)
    res.update({k: np.asarray(out.ancil[k]) for k in POINT_KEYS + ("odds", "deepz_flag")})
    return res


def compare_outputs(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> dict[str, float]:
    """Largest differences of each kind: ``full_rel`` (relative, parameters above 1e-6), ``full_ratio``
    (difference / (full_atol + full_rtol |value|): within tolerance when <= 1), ``cdf``, ``point``,
    ``odds`` (absolute) and ``flags`` (rows whose flag differs)."""
    full = [k for k in want if k.startswith("all/")]
    diff = {k: np.abs(got[k].astype(np.float64) - want[k]) for k in full}
    rel = max(float(np.max(diff[k] / np.maximum(np.abs(want[k]), 1e-6))) for k in full)
    ratio = max(float(np.max(diff[k] / (TOLERANCES["full_atol"] + TOLERANCES["full_rtol"] * np.abs(want[k]))))
                for k in full)
    return dict(full_rel=rel, full_ratio=ratio, cdf=float(np.max(np.abs(got["cdf"] - want["cdf"]))),
                point=max(float(np.max(np.abs(got[k] - want[k]))) for k in POINT_KEYS),
                odds=float(np.max(np.abs(got["odds"] - want["odds"]))),
                flags=float(np.sum(got["deepz_flag"] != want["deepz_flag"])))


def _kernels() -> None:
    """Estimate with the stored model under each ATEN_CPU_CAPABILITY and print the differences."""
    from rail.deepz.model_io import load_model

    want = dict(np.load(PDF_FILE))
    if "--child" in sys.argv:
        got = stored_outputs(load_model(MODEL_FILE))
        print(json.dumps(compare_outputs(got, want)))
        return
    for cap in ("default", "avx2", "avx512"):
        env = dict(os.environ, ATEN_CPU_CAPABILITY=cap)
        out = subprocess.run([sys.executable, __file__, "--kernels", "--child"], env=env, capture_output=True,
                             text=True, check=True).stdout.strip().splitlines()[-1]
        print(cap, out, flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("cases", nargs="*", help=f"cases to run (default all: {', '.join(CASES)})")
    p.add_argument("--write", action="store_true", help=f"store the hashes (and this platform) in {HASH_FILE}")
    p.add_argument("--scatter", action="store_true", help=f"store score bounds from other seeds in {SCORE_FILE}")
    p.add_argument("--store-model", action="store_true", help=f"store the 'small' model and its PDFs ({MODEL_FILE})")
    p.add_argument("--store-pdfs", action="store_true", help=f"store the stored model's PDFs again ({PDF_FILE})")
    p.add_argument("--kernels", action="store_true", help="the stored model's differences across CPU kernels")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.kernels:
        _kernels()
        return
    if args.store_pdfs:
        from rail.deepz.model_io import load_model

        np.savez_compressed(PDF_FILE, **stored_outputs(load_model(MODEL_FILE)))
        if not (args.cases or args.write or args.scatter or args.store_model):
            return
    names = args.cases or list(CASES)
    stored = load_hashes() if os.path.exists(HASH_FILE) else {}
    same_platform = not platform_mismatch(stored.get("platform", {}))
    cases = dict(stored.get("cases", {})) if same_platform else {}
    bounds = load_score_bounds() if os.path.exists(SCORE_FILE) else {"cases": {}}
    for name in names:
        run = run_case(name)
        same = cases.get(name) == run["hashes"]
        print(f"{name}: {'matches' if same else 'DIFFERS from'} the stored hashes: {run['hashes']}; "
              f"scores {run['scores']}", flush=True)
        cases[name] = run["hashes"]
        if args.scatter:
            seeds = DEFAULT_SCATTER_SEEDS if name == "default" else SCATTER_SEEDS
            runs = []
            for seed in seeds:
                runs.append(run_case(name, seed)["scores"])
                print(f"  seed {seed}: {runs[-1]}", flush=True)
            bounds["cases"][name] = dict(bounds=scatter_bounds(runs, run["scores"]), seeds=list(seeds),
                                         runs=runs, pinned=run["scores"])
        if args.store_model and name == "small":
            from rail.deepz.model_io import save_model

            save_model(run["model"], MODEL_FILE)
            np.savez_compressed(PDF_FILE, **stored_outputs(run["model"]))
    if args.write:
        _write_json(HASH_FILE, dict(platform=platform_key(), cases=cases, **_provenance()))
    if args.scatter:
        bounds.update(_provenance(), width=SCATTER_WIDTH)
        _write_json(SCORE_FILE, bounds)


if __name__ == "__main__":
    sys.exit(main())
