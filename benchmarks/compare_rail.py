#!/usr/bin/env python
"""Deepz against other RAIL estimators on the pz-rail-base DC2 test files.

Every estimator is trained on ``test_dc2_training_9816.hdf5`` and run on
``test_dc2_validation_9816.hdf5`` (both shipped with pz-rail-base), each in its own fresh Python
process with fixed seeds, with the settings of the RAIL demo notebooks (the same settings as the
workplace baseline ``rail_baseline.py``). The scores are recomputed here from the ``qp.Ensemble``
each estimator returned, with :func:`rail.deepz.metrics.photoz_scores` (sigma68, sigma_IQR, bias,
|dz|/(1+z) > 0.15 outlier rate, PIT KS/CvM/AD, PIT outlier rate, CDE loss on the 301-point grid
0-3) plus ``qp.metrics.pit.PIT`` (whose Anderson-Darling statistic is the k-sample one used in
RAIL's evaluation notebooks and in the baseline table). For Deepz (``--rail-eval``) the CDE loss,
PIT and point metrics are also cross-checked with RAIL's evaluator stages.

Usage::

    python benchmarks/compare_rail.py                              # deepz,fzboost,knn,gpz (~5-10 min)
    python benchmarks/compare_rail.py --quick                      # smoke run on a subset (~1 min)
    python benchmarks/compare_rail.py --estimators deepz \\
        --deepz-config '{"n_folds": 5, "epochs_per_step": [100, 50, 20]}'
    python benchmarks/compare_rail.py --output /tmp/cmp           # JSON + markdown go there

Needs pz-rail-flexzboost, pz-rail-sklearn and pz-rail-gpz-v1 (``pip install .[benchmarks]``);
a missing plugin is reported as ``unavailable`` and the others still run.

Outputs: ``<output>/compare_rail.json`` and ``<output>/compare_rail.md`` (default output folder
``benchmarks/output``, gitignored). Model files, output files and per-estimator logs go to
``<output>/compare_rail_work`` (``--workdir``). Timings on a shared machine vary (up to ~2x between
runs on the 2-core VMs): compare estimators measured in the same run; the load average before and
after each estimator is recorded.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
import traceback
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUTPUT = os.path.join(HERE, "output")
TRAIN_REL = "examples_data/testdata/test_dc2_training_9816.hdf5"
TEST_REL = "examples_data/testdata/test_dc2_validation_9816.hdf5"
GROUP = "photometry"
ZMIN, ZMAX, NZBINS = 0.0, 3.0, 301
PROGRESS = "@@progress "  # child -> parent progress lines

# Settings: RAIL demo notebooks (RAIL_estimation_demo for KNN/FlexZBoost, GPz_estimation_example
# for GPz), identical to the workplace baseline; Deepz: the stage defaults with seed 87.
ESTIMATORS: dict[str, dict[str, Any]] = {
    "deepz": dict(
        module="rail.estimation.algos.deepz",
        informer="DeepzInformer",
        estimator="DeepzEstimator",
        dist="pz-rail-deepz",
        model_suffix="npz",
        settings="pz-rail-deepz defaults, seed 87 (+ --deepz-config)",
        inform=dict(seed=87),
        estimate={},
    ),
    "fzboost": dict(
        module="rail.estimation.algos.flexzboost",
        informer="FlexZBoostInformer",
        estimator="FlexZBoostEstimator",
        dist="pz-rail-flexzboost",
        model_suffix="pkl",
        settings="RAIL_estimation_demo settings",
        inform=dict(
            trainfrac=0.75, bumpmin=0.02, bumpmax=0.35, nbump=20, sharpmin=0.7, sharpmax=2.1, nsharp=15,
            max_basis=35, basis_system="cosine",
            regression_params={"max_depth": 8, "objective": "reg:squarederror"},
        ),
        estimate={},
    ),
    "knn": dict(
        module="rail.estimation.algos.k_nearneigh",
        informer="KNearNeighInformer",
        estimator="KNearNeighEstimator",
        dist="pz-rail-sklearn",
        model_suffix="pkl",
        settings="RAIL_estimation_demo settings",
        inform=dict(sigma_grid_min=0.01, sigma_grid_max=0.07, ngrid_sigma=10, nneigh_min=3, nneigh_max=7),
        estimate={},
    ),
    "gpz": dict(
        module="rail.estimation.algos.gpz",
        informer="GPzInformer",
        estimator="GPzEstimator",
        dist="pz-rail-gpz-v1",
        model_suffix="pkl",
        settings="GPz_estimation_example settings",
        inform=dict(n_basis=60, train_frac=0.8, csl_method="normal", max_iter=150),
        estimate={},
    ),
    "trainz": dict(
        module="rail.estimation.algos.train_z",
        informer="TrainZInformer",
        estimator="TrainZEstimator",
        dist="pz-rail-base",
        model_suffix="pkl",
        settings="floor: training-set n(z) for every galaxy",
        inform={},
        estimate={},
    ),
}
DEFAULT_ESTIMATORS = "deepz,fzboost,knn,gpz"

# --quick: subsets and a shorter Deepz training (a smoke run, not a benchmark)
QUICK_ROWS = dict(ntrain=2000, ntest=4000)
QUICK_DEEPZ = dict(epochs_per_step=[6, 3, 1])

VERSION_DISTS = [
    "pz-rail-deepz", "pz-rail-base", "qp-prob", "ceci", "tables-io", "torch", "numpy", "scipy",
    "scikit-learn", "h5py", "pz-rail-flexzboost", "flexcode", "qp-flexzboost", "xgboost",
    "pz-rail-sklearn", "pz-rail-gpz-v1",
]


# --------------------------------------------------------------------------------------------
# helpers shared by parent and child
# --------------------------------------------------------------------------------------------
def dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or ""
    mem_gb = None
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal"):
                    mem_gb = round(int(line.split()[1]) / 2**20, 1)
    except OSError:  # pragma: no cover
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        cores = os.cpu_count()
    gpu = "none"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except Exception:  # pragma: no cover
        gpu = "unknown (torch import failed)"
    return dict(
        hostname=platform.node(), platform=platform.platform(), python=sys.version.split()[0],
        cpu_model=cpu, cpu_count=os.cpu_count(), usable_cores=cores, mem_total_gb=mem_gb, gpu=gpu,
        load_average_1_5_15=load_average(),
        thread_env={k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
                    if k in os.environ},
    )


def code_state() -> dict[str, Any]:
    """git describe of the checkout and a hash of the Deepz sources, so numbers can be tied to code."""
    import hashlib

    root = os.path.dirname(HERE)
    out: dict[str, Any] = {}
    try:
        out["describe"] = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=root, text=True,
                                         capture_output=True, check=True).stdout.strip()
        out["dirty"] = out["describe"].endswith("-dirty")
    except (OSError, subprocess.CalledProcessError):  # pragma: no cover
        out["describe"] = "unknown"
    h = hashlib.sha1()
    src = os.path.join(root, "src", "rail")
    for folder, _, files in sorted(os.walk(src)):
        for name in sorted(files):
            if name.endswith(".py") and "deepz" in os.path.join(folder, name):
                with open(os.path.join(folder, name), "rb") as fh:
                    h.update(name.encode() + fh.read())
    out["src_sha1"] = h.hexdigest()
    return out


def data_files(train: str | None, test: str | None) -> tuple[str, str]:
    from rail.utils.path_utils import find_rail_file

    return train or find_rail_file(TRAIN_REL), test or find_rail_file(TEST_REL)


def _f(x: Any, fmt: str) -> str:
    if x is None:
        return "–"
    try:
        return format(x, fmt)
    except (TypeError, ValueError):
        return str(x)


# --------------------------------------------------------------------------------------------
# child: one estimator
# --------------------------------------------------------------------------------------------
def _progress(name: str, msg: str) -> None:
    print(f"{PROGRESS}[{name}] {msg}", flush=True)


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover
        pass


def _scalar(x: Any) -> float | None:
    import numpy as np

    try:
        return float(np.asarray(x).squeeze())
    except Exception:  # pragma: no cover
        return None


def qp_pit_metrics(ens, ztrue) -> dict[str, Any]:
    """PIT meta-metrics as RAIL's evaluation notebooks compute them (qp.metrics.pit.PIT)."""
    import numpy as np
    from qp.metrics.pit import PIT

    pit = PIT(ens, ztrue)
    samps = np.asarray(pit.pit_samps, dtype=float)
    return dict(
        ks=_scalar(pit.evaluate_PIT_KS().statistic),
        cvm=_scalar(pit.evaluate_PIT_CvM().statistic),
        ad_ksamp=_scalar(pit.evaluate_PIT_anderson_ksamp().statistic),
        outlier_rate_qp=_scalar(pit.evaluate_PIT_outlier_rate()),
        outlier_rate_direct=float(np.mean((samps < 1e-4) | (samps > 0.9999))),
        hist_10=np.histogram(samps, bins=10, range=(0.0, 1.0))[0].tolist(),
    ), samps


def scores_chunked(ens, ztrue, chunk: int) -> dict[str, Any]:
    """``rail.deepz.metrics.photoz_scores`` with the CDE loss evaluated ``chunk`` rows at a time.

    photoz_scores evaluates every PDF on the 301-point grid at once; for qp mixtures qp builds
    (N, 301, K) temporaries, ~1.2 GB per 1,000 galaxies for K = 50 (the 20,449 DC2 rows need ~24 GB).
    The CDE loss is a mean over galaxies, so the row-weighted mean of chunk values is the same number.
    The other scores are the helper's own functions on the whole sample.
    """
    import numpy as np
    from rail.deepz import metrics as M

    ztrue = np.asarray(ztrue, dtype=float).ravel()
    zphot = np.asarray(ens.ancil["zmode"], dtype=float).ravel()
    dz = M.delta_z(zphot, ztrue)
    q25, q75 = np.percentile(dz, [25.0, 75.0])
    scores: dict[str, Any] = dict(
        n=int(ztrue.size), sigma68=M.sigma68(zphot, ztrue), sigma_iqr=float((q75 - q25) / 1.349),
        bias=float(np.median(dz)), outlier_frac=M.outlier_fraction(zphot, ztrue, 0.15))
    scores.update(M.pit_statistics(M.pit_values(ens, ztrue)))
    n = ztrue.size
    total = 0.0
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        total += M.cde_loss(ens[a:b], ztrue[a:b]) * (b - a)
    scores["cde_loss"] = float(total / n)
    return scores


def rail_evaluator_crosscheck(name: str, ens, out_path: str | None, truth_path: str, ztrue, pit_scores,
                              chunk: int) -> dict[str, Any]:
    """CDE loss, PIT and point metrics from RAIL's own evaluator stages, for comparison.

    The CDE loss comes from DistToPointEvaluator run over the estimator's output file in chunks of
    ``chunk`` rows (exact: its accumulate() sums the two terms); ``force_exact=True`` would evaluate
    all PDFs at once and run out of memory for qp mixtures (see scores_chunked).
    """
    import numpy as np
    from rail.core.data import QPHandle, TableHandle
    from rail.deepz.metrics import pit_values
    from rail.evaluation.dist_to_point_evaluator import DistToPointEvaluator
    from rail.evaluation.point_to_point_evaluator import PointToPointEvaluator
    from rail.evaluation.single_evaluator import SingleEvaluator

    out: dict[str, Any] = {}
    grid = np.linspace(ZMIN, ZMAX, NZBINS).tolist()

    def _summary(res) -> dict[str, float]:
        return {k: _scalar(v) for k, v in res["summary"]().items()}

    estimate = QPHandle("xcheck_input", path=out_path) if out_path and os.path.exists(out_path) else ens
    stage = DistToPointEvaluator.make_stage(
        name=f"xcheck_dist_{name}", metrics=["cdeloss"], metric_config={"cdeloss": {"eval_grid": grid}},
        hdf5_groupname=GROUP, force_exact=False, chunk_size=chunk, output_mode="return")
    out["DistToPointEvaluator"] = _summary(stage.evaluate(estimate, TableHandle("xcheck_truth", path=truth_path)))
    out["DistToPointEvaluator_chunk_size"] = chunk
    exact = dict(hdf5_groupname=GROUP, force_exact=True, output_mode="return")
    stage = SingleEvaluator.make_stage(
        name=f"xcheck_single_{name}", metrics=["point_stats_iqr", "point_bias", "point_outlier_rate"],
        point_estimates=["zmode"], truth_point_estimates=["redshift"], **exact)
    out["SingleEvaluator"] = _summary(stage.evaluate(ens, TableHandle("xcheck_truth2", path=truth_path)))
    stage = PointToPointEvaluator.make_stage(
        name=f"xcheck_point_{name}", metrics=["point_stats_iqr", "point_bias", "point_outlier_rate"],
        point_estimate_key="zmode", **exact)
    out["PointToPointEvaluator"] = _summary(stage.evaluate(ens, TableHandle("xcheck_truth3", path=truth_path)))
    # PIT values: the Deepz helper vs qp's PIT class, object by object
    ours = pit_values(ens, ztrue)
    out["pit_max_abs_diff_vs_qp_PIT"] = float(np.max(np.abs(np.clip(ours, 0, 1) - pit_scores)))
    return out


def run_child(job: dict[str, Any]) -> dict[str, Any]:
    name, entry, opts = job["name"], job["entry"], job["opts"]
    res: dict[str, Any] = dict(name=name, module=entry["module"], informer=entry["informer"],
                               estimator=entry["estimator"], dist=entry["dist"],
                               dist_version=dist_version(entry["dist"]), settings=entry["settings"],
                               status="started", load_average_start=load_average())
    workdir = opts["workdir"]
    os.chdir(workdir)  # some stages write side files into the cwd
    seed = opts["seed"]

    _progress(name, "import")
    t0 = time.perf_counter()
    try:
        import importlib

        mod = importlib.import_module(entry["module"])
        inf_cls, est_cls = getattr(mod, entry["informer"]), getattr(mod, entry["estimator"])
    except Exception as exc:
        res.update(status="unavailable", error=f"{type(exc).__name__}: {exc}")
        _progress(name, f"unavailable: {res['error']}")
        return res
    res["import_s"] = time.perf_counter() - t0

    import numpy as np
    import tables_io
    from rail.core.data import TableHandle
    from rail.deepz.metrics import photoz_scores

    try:
        import torch

        res["torch_threads"] = torch.get_num_threads()
    except ImportError:  # pragma: no cover
        pass

    training_data = tables_io.read(opts["train"])
    truth = tables_io.read(opts["test"])[GROUP]
    ztrue = np.asarray(truth["redshift"], dtype=float)
    res.update(n_train=int(len(training_data[GROUP]["redshift"])), n_test=int(ztrue.size))

    def _known(cls, cfg):
        return {k: v for k, v in cfg.items() if k in cls.config_options}

    common = dict(hdf5_groupname=GROUP, zmin=ZMIN, zmax=ZMAX, nzbins=NZBINS)
    inf_cfg = _known(inf_cls, common)
    inf_cfg.update(entry["inform"])
    inf_cfg.update(opts["inform_overrides"].get(name, {}))
    res["inform_config"] = inf_cfg
    model_path = os.path.join(workdir, f"model_{name}.{entry['model_suffix']}")

    # ---- inform ----------------------------------------------------------------------------
    _progress(name, f"inform start ({res['n_train']} galaxies)")
    try:
        informer = inf_cls.make_stage(name=f"inform_{name}", model=model_path, **inf_cfg)
        _seed_everything(seed)
        c0, t0 = time.process_time(), time.perf_counter()
        informer.inform(training_data)
        res["inform_wall_s"] = time.perf_counter() - t0
        res["inform_cpu_s"] = time.process_time() - c0
        res["inform_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        res["model_file_mb"] = os.path.getsize(model_path) / 1e6 if os.path.exists(model_path) else None
        model = informer.get_handle("model")
    except Exception as exc:
        res.update(status="inform_failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        _progress(name, f"inform FAILED: {res['error']}")
        return res
    _progress(name, f"inform end ({res['inform_wall_s']:.1f} s)")

    # ---- estimate (file-backed input, chunked like the baseline) ----------------------------
    est_cfg = _known(est_cls, common)
    if "calculated_point_estimates" in est_cls.config_options:
        est_cfg["calculated_point_estimates"] = ["zmode"]  # no-op when the estimator sets zmode
    est_cfg.update(entry["estimate"])
    est_cfg.update(opts["estimate_overrides"].get(name, {}))
    res["estimate_config"] = dict(est_cfg)
    out_path = os.path.join(workdir, f"output_{name}.hdf5")
    _progress(name, f"estimate start ({res['n_test']} galaxies)")
    try:
        estimator = est_cls.make_stage(name=f"estimate_{name}", model=model, output=out_path, **est_cfg)
        _seed_everything(seed)
        c0, t0 = time.process_time(), time.perf_counter()
        handle = estimator.estimate(TableHandle("test_data", path=opts["test"]))
        res["estimate_wall_s"] = time.perf_counter() - t0
        res["estimate_cpu_s"] = time.process_time() - c0
        res["estimate_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        res["throughput_gal_per_s"] = res["n_test"] / res["estimate_wall_s"]
        res["output_file_mb"] = os.path.getsize(out_path) / 1e6 if os.path.exists(out_path) else None
        ens = handle.data
        res["ensemble_class"] = type(ens.gen_obj).__name__
        res["ensemble_npdf"] = int(ens.npdf)
        if ens.npdf != res["n_test"]:
            raise ValueError(f"ensemble has {ens.npdf} PDFs for {res['n_test']} galaxies")
    except Exception as exc:
        res.update(status="estimate_failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        _progress(name, f"estimate FAILED: {res['error']}")
        return res
    _progress(name, f"estimate end ({res['estimate_wall_s']:.1f} s, {res['throughput_gal_per_s']:,.0f} gal/s)")

    # ---- scores, recomputed from the returned ensemble --------------------------------------
    _progress(name, "scoring start")
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    try:
        t1 = time.perf_counter()
        res["scores"] = scores_chunked(ens, ztrue, opts["score_chunk"])
        timings["scores (photoz_scores definitions, CDE chunked)"] = time.perf_counter() - t1
        # the chunked composition must reproduce photoz_scores itself: check on a small subset
        nchk = min(res["n_test"], 400)
        a = photoz_scores(ens[:nchk], ztrue[:nchk], point_key="zmode")
        b = scores_chunked(ens[:nchk], ztrue[:nchk], 100)
        res["photoz_scores_check"] = dict(rows=nchk, max_abs_diff=max(abs(a[k] - b[k]) for k in a))
        if not np.isfinite(res["scores"]["cde_loss"]):  # find the culprits (a second pdf evaluation)
            pdfs = np.asarray(ens.pdf(np.linspace(ZMIN, ZMAX, NZBINS)), dtype=float)
            res["scores"]["n_bad_pdf"] = int((~np.isfinite(pdfs).all(axis=1)).sum())
            del pdfs
        t1 = time.perf_counter()
        res["qp_pit"], pit_samps = qp_pit_metrics(ens, ztrue)
        timings["qp_PIT"] = time.perf_counter() - t1
        if opts["rail_eval"] == "all" or (opts["rail_eval"] == "deepz" and name == "deepz"):
            _progress(name, "RAIL evaluator cross-check")
            t1 = time.perf_counter()
            res["rail_evaluators"] = rail_evaluator_crosscheck(name, ens, out_path, opts["test"], ztrue, pit_samps,
                                                               opts["score_chunk"])
            timings["rail_evaluators"] = time.perf_counter() - t1
        res["status"] = "ok"
    except Exception as exc:
        res.update(status="scoring_failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        _progress(name, f"scoring FAILED: {res['error']}")
        return res
    res["scoring_wall_s"] = time.perf_counter() - t0
    res["scoring_timings_s"] = timings
    res["load_average_end"] = load_average()
    s = res["scores"]
    _progress(name, f"scoring end: sigma68 {s['sigma68']:.4f}, f(>0.15) {s['outlier_frac']:.4f}, "
                    f"PIT KS {s['pit_ks']:.4f}, CDE loss {s['cde_loss']:.3f}")
    return res


# --------------------------------------------------------------------------------------------
# parent
# --------------------------------------------------------------------------------------------
def _write_subset(src: str, n: int, seed: int, dst: str) -> str:
    import numpy as np
    import tables_io

    tab = tables_io.read(src)[GROUP]
    ntot = len(tab["redshift"])
    if not n or n >= ntot:
        return src
    idx = np.sort(np.random.default_rng(seed).choice(ntot, size=n, replace=False))
    tables_io.write({GROUP: {k: np.asarray(v)[idx] for k, v in tab.items()}}, dst)
    return dst


def run_in_child(name: str, job: dict, workdir: str, timeout: float, threads: int = 0) -> dict[str, Any]:
    job_file = os.path.join(workdir, f"job_{name}.json")
    res_file = os.path.join(workdir, f"result_{name}.json")
    log_file = os.path.join(workdir, f"log_{name}.txt")
    if os.path.exists(res_file):
        os.remove(res_file)
    with open(job_file, "w") as fh:
        json.dump(dict(job, result_file=res_file), fh)
    env = dict(os.environ)
    if threads:
        env.update({k: str(threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--_child", job_file],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            cwd=workdir, env=env)
    killed = threading.Event()

    def _kill() -> None:
        killed.set()
        proc.kill()

    timer = threading.Timer(timeout, _kill)
    timer.start()
    try:
        with open(log_file, "w") as log:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                if line.startswith(PROGRESS):
                    stamp = _dt.datetime.now().strftime("%H:%M:%S")
                    print(f"{stamp} {line[len(PROGRESS):].rstrip()}", flush=True)
        rc = proc.wait()
    finally:
        timer.cancel()
    timed_out = killed.is_set()
    if os.path.exists(res_file):
        with open(res_file) as fh:
            res = json.load(fh)
    else:
        res = dict(name=name, status="timeout" if timed_out else "crashed",
                   error=(f"killed after --timeout {timeout:.0f} s" if timed_out
                          else f"child exit code {rc}; see {log_file}"))
        print(f"[{name}] {res['status']}: {res['error']}", flush=True)
    res["process_wall_s"] = time.perf_counter() - t0
    res["log_file"] = log_file
    os.remove(job_file)
    return res


def markdown(report: dict[str, Any]) -> str:
    env, data = report["environment"], report["data"]
    L = ["# Deepz vs other RAIL estimators on the pz-rail-base DC2 test files", ""]
    L.append(f"Generated {report['generated']} by `benchmarks/compare_rail.py` (`{report['command']}`); code "
             f"{report['code'].get('describe')}, Deepz sources sha1 {report['code'].get('src_sha1', '')[:10]}.")
    L.append("")
    L.append(f"Machine: {env['cpu_model']}, {env['usable_cores']} usable cores, {env['mem_total_gb']} GiB RAM, "
             f"GPU: {env['gpu']}; Python {env['python']}; OMP/MKL/OPENBLAS_NUM_THREADS "
             f"{report.get('threads') or 'unset (library defaults)'}. Load average (1/5/15 min) at start "
             f"{env['load_average_1_5_15']}, at end {report.get('load_average_end')}.")
    L.append("")
    L.append(f"Training: `{os.path.basename(data['train_file'])}` ({data['n_train']} rows); test: "
             f"`{os.path.basename(data['test_file'])}` ({data['n_test']} rows)"
             + (" — **--quick subset, not a benchmark**" if report["quick"] else "") + ".")
    L.append("")
    hdr = ("| estimator | plugin | inform [s] | estimate [s] | gal/s | σ68 | σ_IQR | bias "
           "| f(\\|Δz\\|>0.15) | PIT KS | PIT CvM | PIT AD | PIT AD (qp k-samp) | PIT outl. | CDE loss "
           "| peak RSS [MB] |")
    L += [hdr, "|" + "---|" * 16]
    for r in report["results"]:
        plugin = f"{r.get('dist', '?')} {r.get('dist_version') or ''}".strip()
        if r.get("status") != "ok":
            L.append(f"| {r['name']} | {plugin} | {_f(r.get('inform_wall_s'), '.1f')} | "
                     f"{_f(r.get('estimate_wall_s'), '.1f')} | **{r.get('status')}**: "
                     f"{str(r.get('error', '')).replace('|', '/')[:150]} |" + " |" * 11)
            continue
        s, q = r["scores"], r.get("qp_pit", {})
        L.append(
            f"| {r['name']} | {plugin} | {_f(r['inform_wall_s'], '.1f')} | {_f(r['estimate_wall_s'], '.2f')} "
            f"| {_f(r['throughput_gal_per_s'], ',.0f')} | {s['sigma68']:.4f} | {s['sigma_iqr']:.4f} "
            f"| {s['bias']:+.4f} | {s['outlier_frac']:.4f} | {s['pit_ks']:.4f} | {s['pit_cvm']:.2f} "
            f"| {s['pit_ad']:.1f} | {_f(q.get('ad_ksamp'), '.1f')} | {s['pit_outlier_rate']:.4f} "
            f"| {s['cde_loss']:.3f} | {_f(r.get('estimate_maxrss_mb'), '.0f')} |")
    L.append("")
    L.append("Details:")
    L.append("")
    L.append("| estimator | settings | overrides | PDF class | inform CPU [s] | estimate CPU [s] | model [MB] "
             "| output [MB] | torch threads | load avg start → end |")
    L.append("|" + "---|" * 10)
    for r in report["results"]:
        ov = {k: v for k, v in (("inform", r.get("inform_overrides")), ("estimate", r.get("estimate_overrides")))
              if v}
        L.append(f"| {r['name']} | {r.get('settings', '')} | {json.dumps(ov).replace('|', '/') if ov else '–'} "
                 f"| {r.get('ensemble_class', '–')} | {_f(r.get('inform_cpu_s'), '.1f')} "
                 f"| {_f(r.get('estimate_cpu_s'), '.1f')} | {_f(r.get('model_file_mb'), '.2f')} "
                 f"| {_f(r.get('output_file_mb'), '.1f')} | {r.get('torch_threads', '–')} "
                 f"| {r.get('load_average_start')} → {r.get('load_average_end')} |")
    for r in report["results"]:
        x = r.get("rail_evaluators")
        if not x:
            continue
        s, q = r["scores"], r["qp_pit"]
        single = x["SingleEvaluator"]
        p2p = x["PointToPointEvaluator"]
        L += ["", f"Cross-check of the {r['name']} scores with RAIL's evaluators:", "",
              "| quantity | rail.deepz.metrics.photoz_scores | RAIL / qp |", "|---|---|---|",
              f"| CDE loss (grid 0–3, 301 pts) | {s['cde_loss']:.5f} | DistToPointEvaluator "
              f"{_f(x['DistToPointEvaluator'].get('cdeloss'), '.5f')} (chunked, {x.get('DistToPointEvaluator_chunk_size')} rows) |",
              f"| PIT KS | {s['pit_ks']:.5f} | qp PIT {q['ks']:.5f} |",
              f"| PIT CvM | {s['pit_cvm']:.4f} | qp PIT {q['cvm']:.4f} |",
              f"| PIT AD | {s['pit_ad']:.3f} (one-sample vs U(0,1)) | qp PIT {q['ad_ksamp']:.3f} "
              "(k-sample vs a uniform grid; a different statistic) |",
              f"| PIT outlier rate | {s['pit_outlier_rate']:.5f} | direct {q['outlier_rate_direct']:.5f}; "
              f"qp quantile fit {_f(q['outlier_rate_qp'], '.5f')} |",
              f"| PIT values | – | max abs difference to qp PIT samples {x['pit_max_abs_diff_vs_qp_PIT']:.2e} |",
              f"| σ_IQR | {s['sigma_iqr']:.5f} | PointToPointEvaluator {_f(p2p.get('point_stats_iqr'), '.5f')}; "
              f"SingleEvaluator {_f(single.get('point_stats_iqr_zmode_redshift'), '.5f')} |",
              f"| bias | {s['bias']:+.5f} | PointToPointEvaluator {_f(p2p.get('point_bias'), '+.5f')} |",
              f"| outlier rate (RAIL: \\|Δz\\| > max(0.06, 3σ_IQR)) | – | "
              f"{_f(p2p.get('point_outlier_rate'), '.5f')} |",
              f"| photoz_scores vs chunked scoring | max abs diff {_f(r.get('photoz_scores_check', {}).get('max_abs_diff'), '.1e')} "
              f"on the first {r.get('photoz_scores_check', {}).get('rows')} rows | – |"]
    L += ["", "Definitions: Δz = (zmode − z)/(1 + z) with zmode = the ensemble's `ancil['zmode']` (estimator's "
          "own, or RAIL's PointEstimationMixin on the 301-point grid); σ68 = ½(P84.1 − P15.9); σ_IQR = "
          "IQR/1.349; bias = median Δz; PIT = CDF(z_true); PIT KS/CvM/AD from `rail.deepz.metrics` "
          "(AD: one-sample vs U(0,1)); 'PIT AD (qp k-samp)' is `qp.metrics.pit.PIT.evaluate_PIT_anderson_ksamp`, "
          "the column of the workplace baseline; PIT outl. = fraction of PIT < 1e-4 or > 0.9999; CDE loss "
          "as qp's CDELossMetric on the 301-point grid 0–3. Times are wall clock of `.inform(table)` and "
          "`.estimate(TableHandle(path))` (chunked from the file, stage default chunk_size; includes writing "
          "the model/output file and RAIL's read-back of the output), each estimator in a fresh process with "
          "global numpy/random/torch RNGs seeded before inform and estimate.", ""]
    L.append("Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v))
    return "\n".join(L) + "\n"


def write_report(report: dict[str, Any], text: str, output: str, stem: str) -> None:
    """Write ``<output>/<stem>.json`` (the report) and ``<stem>.md`` (the markdown text), and print the text."""
    os.makedirs(output, exist_ok=True)
    json_path = os.path.join(output, f"{stem}.json")
    md_path = os.path.join(output, f"{stem}.md")
    with open(json_path, "w") as fh:
        json.dump(report, fh, indent=1, default=str)
    with open(md_path, "w") as fh:
        fh.write(text)
    print()
    print(text)
    print(f"wrote {json_path} and {md_path}")


def _json_obj(text: str, flag: str) -> dict:
    try:
        val = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"{flag}: invalid JSON ({exc})")
    if not isinstance(val, dict):
        raise SystemExit(f"{flag}: expected a JSON object")
    return val


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--estimators", default=DEFAULT_ESTIMATORS,
                    help=f"comma list from {', '.join(ESTIMATORS)} (default {DEFAULT_ESTIMATORS})")
    ap.add_argument("--deepz-config", default="{}", help="JSON object of DeepzInformer overrides")
    ap.add_argument("--deepz-estimate-config", default="{}",
                    help="JSON object of DeepzEstimator overrides (e.g. chunk_size, batch_size)")
    ap.add_argument("--quick", action="store_true",
                    help=f"smoke run: {QUICK_ROWS['ntrain']} training / {QUICK_ROWS['ntest']} test rows, "
                         f"Deepz {QUICK_DEEPZ}")
    ap.add_argument("--output", default=DEFAULT_OUTPUT, help="folder for compare_rail.json/.md")
    ap.add_argument("--workdir", help="models, outputs, logs (default <output>/compare_rail_work)")
    ap.add_argument("--train", help="training HDF5 (default: pz-rail-base DC2 training file)")
    ap.add_argument("--test", help="test HDF5 (default: pz-rail-base DC2 validation file)")
    ap.add_argument("--seed", type=int, default=1234, help="global RNG seed set before inform and estimate")
    ap.add_argument("--rail-eval", choices=["deepz", "all", "none"], default="deepz",
                    help="which estimators get the RAIL evaluator-stage cross-check (default deepz)")
    ap.add_argument("--score-chunk", type=int, default=1000,
                    help="rows per PDF-grid evaluation when scoring (qp mixtures need ~1.2 GB per 1000 rows)")
    ap.add_argument("--timeout", type=float, default=3600, help="per-estimator limit in seconds")
    ap.add_argument("--threads", type=int, default=0,
                    help="OMP/MKL/OPENBLAS_NUM_THREADS for the estimator processes (0: leave unset). On a "
                         "shared, loaded machine 1 avoids OpenMP oversubscription (see README)")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._child:
        with open(args._child) as fh:
            job = json.load(fh)
        try:
            res = run_child(job)
        except Exception as exc:  # pragma: no cover
            res = dict(name=job["name"], status="crashed", error=f"{type(exc).__name__}: {exc}",
                       traceback=traceback.format_exc())
        res.update(inform_overrides=job["opts"]["inform_overrides"].get(job["name"]),
                   estimate_overrides=job["opts"]["estimate_overrides"].get(job["name"]))
        with open(job["result_file"], "w") as fh:
            json.dump(res, fh, indent=1, default=str)
        return 0

    names = [n.strip() for n in args.estimators.split(",") if n.strip()]
    for n in names:
        if n not in ESTIMATORS:
            raise SystemExit(f"unknown estimator {n!r}; choose from {', '.join(ESTIMATORS)}")
    deepz_inf = _json_obj(args.deepz_config, "--deepz-config")
    deepz_est = _json_obj(args.deepz_estimate_config, "--deepz-estimate-config")
    if args.quick:
        deepz_inf = {**QUICK_DEEPZ, **deepz_inf}

    output = os.path.abspath(args.output)
    workdir = os.path.abspath(args.workdir or os.path.join(output, "compare_rail_work"))
    os.makedirs(output, exist_ok=True)
    os.makedirs(workdir, exist_ok=True)
    train, test = data_files(args.train, args.test)
    if args.quick:
        train = _write_subset(train, QUICK_ROWS["ntrain"], args.seed, os.path.join(workdir, "quick_train.hdf5"))
        test = _write_subset(test, QUICK_ROWS["ntest"], args.seed + 1, os.path.join(workdir, "quick_test.hdf5"))

    import tables_io

    n_train = len(tables_io.read(train)[GROUP]["redshift"])
    n_test = len(tables_io.read(test)[GROUP]["redshift"])
    env = machine_info()
    print(f"compare_rail: {', '.join(names)} | train {n_train} rows, test {n_test} rows"
          f"{' (quick)' if args.quick else ''} | {env['usable_cores']} cores, load {env['load_average_1_5_15']}",
          flush=True)
    opts = dict(train=train, test=test, seed=args.seed, workdir=workdir, rail_eval=args.rail_eval,
                score_chunk=args.score_chunk,
                inform_overrides={"deepz": deepz_inf} if deepz_inf else {},
                estimate_overrides={"deepz": deepz_est} if deepz_est else {})
    results = []
    for n in names:
        results.append(run_in_child(n, dict(name=n, entry=ESTIMATORS[n], opts=opts), workdir, args.timeout,
                                    args.threads))

    report = dict(
        generated=_dt.datetime.now().isoformat(timespec="seconds"),
        command=" ".join(["compare_rail.py"] + (argv if argv is not None else sys.argv[1:])),
        quick=args.quick,
        threads=args.threads or None,
        environment=env,
        code=code_state(),
        load_average_end=load_average(),
        versions={d: dist_version(d) for d in VERSION_DISTS},
        data=dict(train_file=train, test_file=test, n_train=n_train, n_test=n_test, hdf5_group=GROUP,
                  zgrid=[ZMIN, ZMAX, NZBINS], seed=args.seed),
        results=results,
    )
    write_report(report, markdown(report), output, "compare_rail")
    return 0 if all(r.get("status") == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
