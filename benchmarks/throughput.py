#!/usr/bin/env python
"""File-in/file-out throughput of DeepzEstimator, run the way a ceci pipeline runs it.

Steps:

1. tile the pz-rail-base DC2 validation file (20,449 rows) to ``--rows`` rows (default 1,000,000)
   into an HDF5 file (group ``photometry``, same columns and dtypes, ``id`` kept unique), written
   tile by tile (reused if it already exists with the right size; ``--tiled PATH`` to choose it);
2. train a default Deepz model on the DC2 training file (DeepzInformer defaults, seed 87), or use
   ``--model PATH``;
3. for each ``--chunk-sizes`` value, in a fresh Python process: build the stage with
   ``DeepzEstimator.make_stage(name=..., model=MODEL, input=TILED, output=OUT, chunk_size=...)``
   and call ``validate(); run(); finalize()`` (what ``ceci`` does; there is no read-back of the
   output, unlike ``estimate()``), timing the whole thing;
4. report galaxies/second (wall), CPU/wall, peak RSS (``ru_maxrss`` and an RSS-sampling thread),
   output file size and bytes per galaxy, and a time breakdown of the Deepz run (reading, features,
   network forward, calibration/pooling, point estimates, qp ensemble, HDF5 write, ...), measured by
   wrapping the functions the stage calls with timers for the whole run;
5. optionally (``--compare gpz,knn``) the same file-in/file-out run for other RAIL estimators
   trained with the settings of ``compare_rail.py`` (RAIL demo settings), at the first chunk size.

Usage::

    python benchmarks/throughput.py                         # 1e6 rows, chunk_size 100000
    python benchmarks/throughput.py --rows 100000 --chunk-sizes 10000,100000
    python benchmarks/throughput.py --model deepz_model.npz --compare gpz,knn
    python benchmarks/throughput.py --rows 200000 --threads 1,2 --micro   # thread sweep + part timings
    python benchmarks/throughput.py --threads 2 --env OMP_WAIT_POLICY=PASSIVE

On a shared machine use ``--threads 1`` (ceci's default) or ``--env OMP_WAIT_POLICY=PASSIVE``:
with OpenMP's default spinning barriers, 2 threads on 2 cores that are partly busy run 10-40x slower.

Outputs ``<output>/throughput.json`` and ``<output>/throughput.md`` (default ``benchmarks/output``);
the tiled input, model and estimator outputs go to ``<output>/throughput_work`` (``--workdir``);
estimator output files are deleted after measuring unless ``--keep-output``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import resource
import subprocess
import sys
import threading
import time
import traceback
from collections import defaultdict
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compare_rail as cr  # noqa: E402  (settings, machine info, helpers)

GROUP = cr.GROUP
DEFAULT_OUTPUT = cr.DEFAULT_OUTPUT
TARGET_GAL_PER_S = 50_000


# --------------------------------------------------------------------------------------------
# RSS sampling
# --------------------------------------------------------------------------------------------
class RssSampler(threading.Thread):
    """Samples this process's resident set size from /proc/self/statm every ``interval`` s."""

    def __init__(self, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._halt = threading.Event()
        self._t0 = time.perf_counter()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def rss_mb(self) -> float:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self._page / 2**20

    def run(self) -> None:
        while not self._halt.is_set():
            self.samples.append((time.perf_counter() - self._t0, self.rss_mb()))
            self._halt.wait(self.interval)

    def stop(self) -> dict[str, Any]:
        self._halt.set()
        self.join()
        self.samples.append((time.perf_counter() - self._t0, self.rss_mb()))
        step = max(1, len(self.samples) // 200)
        return dict(peak_mb=max(s[1] for s in self.samples), interval_s=self.interval,
                    series=[(round(t, 2), round(m, 1)) for t, m in self.samples[::step]])


# --------------------------------------------------------------------------------------------
# timers wrapped around the functions DeepzEstimator calls
# --------------------------------------------------------------------------------------------
# (label, parent label): the breakdown tree. Children of a node are disjoint parts of it; the
# remainder of each node is reported as "other".
BREAKDOWN_TREE = [
    ("stage run + finalize", None),
    ("open_model (load model, build networks)", "stage run + finalize"),
    ("read chunk (tables_io HDF5 iterator)", "stage run + finalize"),
    ("_process_chunk", "stage run + finalize"),
    ("predict", "_process_chunk"),
    ("magnitudes -> fluxes (read_photometry)", "predict"),
    ("flux features", "predict"),
    ("mixtures", "predict"),
    ("network forward (net.mixture)", "mixtures"),
    ("calibration", "mixtures"),
    ("pool members (combine_members)", "mixtures"),
    ("flags", "predict"),
    ("point estimates", "predict"),
    ("zmode (mixture.mode)", "point estimates"),
    ("zmedian (mixture.median)", "point estimates"),
    ("odds (interval_probability)", "point estimates"),
    ("_do_chunk_output", "_process_chunk"),
    ("RAIL point-estimate mixin", "_do_chunk_output"),
    ("qp HDF5 write_chunk", "_do_chunk_output"),
    ("qp initialize_write (first chunk)", "_do_chunk_output"),
    ("gc.collect (CatEstimator.run)", "stage run + finalize"),
    ("qp finalize_write", "stage run + finalize"),
    ("ceci finalize (rename)", "stage run + finalize"),
]


class Timers:
    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.per_chunk: list[dict[str, float]] = []
        self.not_found: list[str] = []  # functions this version of the code does not have

    def wrap(self, label: str, fn: Callable) -> Callable:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.total[label] += time.perf_counter() - t0
                self.calls[label] += 1

        wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
        return wrapper

    def patch(self, owner: Any, attr: str, label: str) -> None:
        fn = getattr(owner, attr, None)
        if fn is None:
            self.not_found.append(f"{getattr(owner, '__name__', owner)}.{attr}")
            return
        setattr(owner, attr, self.wrap(label, fn))


def instrument_deepz(timers: Timers) -> None:
    """Wrap the functions the Deepz stage calls (module attributes looked up at call time)."""
    import rail.deepz.estimating as est_mod
    import rail.deepz.features as feat
    import rail.deepz.mixture as mix
    import rail.deepz.networks as nets
    import rail.estimation.estimator as rail_est
    from rail.core.data import QPHandle
    from rail.core.point_estimation import PointEstimationMixin
    from rail.deepz.estimating import DeepzPredictor
    from rail.deepz.networks import DeepzEnsemble
    from rail.estimation.algos.deepz import DeepzEstimator
    from rail.estimation.estimator import CatEstimator

    timers.patch(DeepzEstimator, "open_model", "open_model (load model, build networks)")
    orig_process = DeepzEstimator._process_chunk

    def _process_chunk(self: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return orig_process(self, *args, **kwargs)
        finally:
            dt = time.perf_counter() - t0
            timers.total["_process_chunk"] += dt
            timers.calls["_process_chunk"] += 1
            if timers.per_chunk:
                timers.per_chunk[-1]["process_s"] = round(dt, 4)

    DeepzEstimator._process_chunk = _process_chunk  # type: ignore[method-assign]
    timers.patch(DeepzPredictor, "predict", "predict")
    timers.patch(DeepzPredictor, "photometry", "magnitudes -> fluxes (read_photometry)")
    timers.patch(feat, "flux_features", "flux features")
    timers.patch(DeepzPredictor, "mixtures", "mixtures")
    # the network pass: DeepzEnsemble.mixture, or the batch-norm-folded FusedEnsemble.mixture when the
    # installed version has it (only one of them runs per batch)
    timers.patch(DeepzEnsemble, "mixture", "network forward (net.mixture)")
    for owner in (getattr(est_mod, "FusedEnsemble", None), getattr(nets, "FusedEnsemble", None)):
        if owner is not None and not hasattr(owner.mixture, "__wrapped__"):
            timers.patch(owner, "mixture", "network forward (net.mixture)")
    timers.patch(est_mod, "apply_calibration", "calibration")
    timers.patch(mix, "combine_members", "pool members (combine_members)")
    timers.patch(est_mod, "compute_flags", "flags")
    timers.patch(DeepzPredictor, "point_estimates", "point estimates")
    timers.patch(mix, "mode", "zmode (mixture.mode)")
    timers.patch(mix, "median", "zmedian (mixture.median)")
    timers.patch(mix, "interval_probability", "odds (interval_probability)")
    timers.patch(CatEstimator, "_do_chunk_output", "_do_chunk_output")
    timers.patch(PointEstimationMixin, "calculate_point_estimates", "RAIL point-estimate mixin")
    timers.patch(QPHandle, "write_chunk", "qp HDF5 write_chunk")
    timers.patch(QPHandle, "initialize_write", "qp initialize_write (first chunk)")
    timers.patch(QPHandle, "finalize_write", "qp finalize_write")

    class _GC:  # CatEstimator.run calls gc.collect() after every chunk
        def __getattr__(self, name: str) -> Any:
            import gc

            return getattr(gc, name)

    import gc as _gc

    shim = _GC()
    shim.collect = timers.wrap("gc.collect (CatEstimator.run)", _gc.collect)  # type: ignore[attr-defined]
    rail_est.gc = shim  # type: ignore[attr-defined]

    orig_iter = CatEstimator.input_iterator

    def input_iterator(self: Any, tag: str, **kwargs: Any) -> Any:
        it = iter(orig_iter(self, tag, **kwargs))
        label = "read chunk (tables_io HDF5 iterator)"

        def gen():
            while True:
                t0 = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    timers.total[label] += time.perf_counter() - t0
                    return
                timers.total[label] += time.perf_counter() - t0
                timers.calls[label] += 1
                timers.per_chunk.append(dict(rows=int(item[1] - item[0]),
                                             read_s=round(time.perf_counter() - t0, 4)))
                yield item

        return gen()

    CatEstimator.input_iterator = input_iterator  # type: ignore[method-assign]


def breakdown_table(timers: Timers, n_rows: int) -> list[dict[str, Any]]:
    labels = [lab for lab, _ in BREAKDOWN_TREE]
    parent = dict(BREAKDOWN_TREE)
    total = timers.total["stage run + finalize"]
    rows: list[dict[str, Any]] = []

    def depth(lab: str) -> int:
        d = 0
        while parent[lab] is not None:
            lab, d = parent[lab], d + 1
        return d

    def add(lab: str, secs: float, d: int, calls: int | None) -> None:
        rows.append(dict(label=lab, depth=d, seconds=secs, calls=calls, fraction=secs / total if total else None,
                         us_per_galaxy=1e6 * secs / n_rows if n_rows else None))

    def visit(lab: str) -> None:
        add(lab, timers.total.get(lab, 0.0), depth(lab), timers.calls.get(lab))
        kids = [k for k in labels if parent[k] == lab]
        for k in kids:
            visit(k)
        if kids:
            rest = timers.total.get(lab, 0.0) - sum(timers.total.get(k, 0.0) for k in kids)
            name = {"_process_chunk": "qp.Ensemble construction + other",
                    "predict": "other (prior fill, tensor -> numpy)",
                    "mixtures": "other (to tensor, scaling, normalise, concat)",
                    "point estimates": "other (zmean, zstd, batching)",
                    "_do_chunk_output": "other (ancil id/redshift, set_data)"}.get(lab, "other")
            add(f"{name}", rest, depth(lab) + 1, None)

    visit("stage run + finalize")
    return rows


# --------------------------------------------------------------------------------------------
# child jobs
# --------------------------------------------------------------------------------------------
def child_train(job: dict[str, Any]) -> dict[str, Any]:
    """Train one estimator on the DC2 training file with compare_rail's settings; write its model."""
    import importlib

    import tables_io

    name = job["estimator"]
    entry = cr.ESTIMATORS[name]
    mod = importlib.import_module(entry["module"])
    inf_cls = getattr(mod, entry["informer"])
    cfg = {k: v for k, v in dict(hdf5_groupname=GROUP, zmin=cr.ZMIN, zmax=cr.ZMAX, nzbins=cr.NZBINS).items()
           if k in inf_cls.config_options}
    cfg.update(entry["inform"])
    cfg.update(job.get("overrides") or {})
    train = tables_io.read(job["train"])
    cr._seed_everything(job["seed"])
    stage = inf_cls.make_stage(name=f"inform_{name}", model=job["model"], **cfg)
    t0 = time.perf_counter()
    stage.inform(train)
    return dict(estimator=name, model=job["model"], inform_wall_s=time.perf_counter() - t0, inform_config=cfg,
                n_train=int(len(train[GROUP]["redshift"])))


def child_estimate(job: dict[str, Any]) -> dict[str, Any]:
    """One file-in/file-out estimator run, as ceci runs a stage."""
    import importlib

    name, cs = job["estimator"], int(job["chunk_size"])
    entry = cr.ESTIMATORS[name]
    timers = Timers()
    profiled = name == "deepz" and job.get("profile", True)
    if profiled:
        instrument_deepz(timers)
    t_imp = time.perf_counter()
    mod = importlib.import_module(entry["module"])
    est_cls = getattr(mod, entry["estimator"])
    import_s = time.perf_counter() - t_imp
    cfg = {k: v for k, v in dict(zmin=cr.ZMIN, zmax=cr.ZMAX, nzbins=cr.NZBINS).items()
           if k in est_cls.config_options}
    if "calculated_point_estimates" in est_cls.config_options:
        cfg["calculated_point_estimates"] = ["zmode"]
    if "id_col" in est_cls.config_options:
        cfg["id_col"] = "id"  # the DC2 files' id column (RAIL's default is 'object_id': no ids in the output)
    cfg.update(entry["estimate"])
    cfg.update(job.get("overrides") or {})
    out = job["output_file"]
    for p in (out, os.path.join(os.path.dirname(out), "inprogress_" + os.path.basename(out))):
        if os.path.exists(p):
            os.remove(p)
    try:
        import torch

        torch_threads = torch.get_num_threads()
    except ImportError:  # pragma: no cover
        torch_threads = None
    cr._seed_everything(job["seed"])
    comm = None
    if int(job.get("nprocess", 1)) > 1:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        comm.Barrier()
    sampler = RssSampler(job.get("rss_interval", 0.1))
    rss_before = sampler.rss_mb()
    sampler.start()
    c0, t0 = time.process_time(), time.perf_counter()
    stage = est_cls.make_stage(name=f"estimate_{name}", model=job["model"], input=job["input"], output=out,
                               hdf5_groupname=GROUP, chunk_size=cs, **cfg)
    if comm is not None:
        stage.setup_mpi(comm)
    stage.validate()
    t_run = time.perf_counter()
    stage.run()
    t_fin = time.perf_counter()
    stage.finalize()
    if comm is not None:
        comm.Barrier()
    t_end = time.perf_counter()
    wall = t_end - t0
    cpu = time.process_time() - c0
    rss = sampler.stop()
    rank_stats = None
    if comm is not None:  # every rank's CPU time and peak RSS; rank 0 reports
        rank_stats = comm.gather(dict(cpu_s=cpu, ru_maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                      / 1024, peak_rss_mb=rss.get("peak_mb") if isinstance(rss, dict) else None), 0)
        if comm.rank != 0:
            return None
        cpu = sum(r["cpu_s"] for r in rank_stats)
    timers.total["ceci finalize (rename)"] += t_end - t_fin
    timers.total["stage run + finalize"] = t_end - t_run
    n = int(job["rows"])
    res: dict[str, Any] = dict(
        estimator=name, chunk_size=cs, rows=n, config=cfg, torch_threads=torch_threads,
        omp_num_threads=os.environ.get("OMP_NUM_THREADS"), import_s=import_s,
        construct_s=t_run - t0, run_s=t_fin - t_run, finalize_s=t_end - t_fin, wall_s=wall, cpu_s=cpu,
        cpu_per_wall=cpu / wall, gal_per_s=n / wall, gal_per_s_run_only=n / (t_fin - t_run),
        ru_maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, rss_before_mb=rss_before,
        rss_sampled=rss, output_file=out, output_exists=os.path.exists(out),
        nprocess=int(job.get("nprocess", 1)), rank_stats=rank_stats,
    )
    if os.path.exists(out):
        res["output_bytes"] = os.path.getsize(out)
        res["output_bytes_per_galaxy"] = res["output_bytes"] / n
        import h5py

        with h5py.File(out, "r") as f:
            layout: dict[str, Any] = {}
            f.visititems(lambda k, v: layout.__setitem__(k, [list(v.shape), str(v.dtype)])
                         if isinstance(v, h5py.Dataset) else None)
        res["output_layout"] = layout
        if not job.get("keep_output"):
            os.remove(out)
    if profiled:
        res["breakdown"] = breakdown_table(timers, n)
        res["per_chunk"] = timers.per_chunk
        res["timers_not_found"] = timers.not_found
    return res


def child_micro(job: dict[str, Any]) -> dict[str, Any]:
    """Micro-benchmarks on rows held in memory: what each part costs in isolation, and what cheaper
    variants of the expensive parts would cost (the variants are for comparison only; they are not
    what DeepzEstimator runs)."""
    import gc

    import h5py
    import numpy as np
    import qp
    import torch
    from rail.deepz import features as feat
    from rail.deepz import mixture
    from rail.deepz.estimating import DeepzPredictor
    from rail.deepz.model_io import load_model

    model = load_model(job["model"])
    from rail.estimation.algos.deepz import DeepzEstimator

    batch = int(DeepzEstimator.config_options["batch_size"].default)  # the stage's default batch_size
    pred = DeepzPredictor(model, torch.device("cpu"), batch)
    n = int(job["rows"])
    with h5py.File(job["input"], "r") as f:  # only the first n rows
        table = {k: np.asarray(v[:n]) for k, v in f[GROUP].items()}
    err_bands = [f"mag_err_{b}_lsst" for b in "ugrizy"]
    rows: list[dict[str, Any]] = []

    def bench(label: str, fn: Callable, reps: int = 3, note: str = "") -> Any:
        ts, out = [], None
        for _ in range(reps):
            t0 = time.perf_counter()
            out = fn()
            ts.append(time.perf_counter() - t0)
        rows.append(dict(operation=label, seconds=min(ts), us_per_galaxy=1e6 * min(ts) / n, note=note))
        return out

    phot = bench("magnitudes -> fluxes", lambda: pred.photometry(table, err_bands))
    x = bench("flux features", lambda: feat.flux_features(phot, pred.ref_index))[0]
    xs = (torch.as_tensor(x) - pred.mean) / pred.std
    with torch.inference_mode():
        net = getattr(pred, "fused", None) or pred.net
        for bs in sorted({1024, batch, 16384}):
            bench(f"network forward ({type(net).__name__}), batch {bs} ({xs.dtype})",
                  lambda bs=bs: [net.mixture(xs[a:a + bs]) for a in range(0, n, bs)])
        w, m, s = bench(f"mixtures (forward + calibration + pooling, float64 out; batch {batch})",
                        lambda: pred.mixtures(x))
        bench("point estimates (all: zmode, zmean, zmedian, zstd, odds)",
              lambda: pred.point_estimates(w, m, s, 0.06), 1)
        bench("zmode: mixture.mode (its defaults)", lambda: mixture.mode(w, m, s), 1)
        bench("zmode: mixture.mode(n_candidates=2, n_iter=3)",
              lambda: mixture.mode(w, m, s, n_candidates=2, n_iter=3), 1, "variant")
        w32, m32, s32 = w.float(), m.float(), s.float()
        bench("zmode: mixture.mode in float32", lambda: mixture.mode(w32, m32, s32), 1, "variant")
        z_exact = mixture.mode(w, m, s)
        bench("zmedian: mixture.median", lambda: mixture.median(w, m, s), 1)
        bench("odds: interval_probability", lambda: mixture.interval_probability(
            z_exact - 0.06 * (1 + z_exact), z_exact + 0.06 * (1 + z_exact), w, m, s), 1)
    wn, mn, sn = w.numpy(), m.numpy(), s.numpy()
    bench("qp.Ensemble(qp.mixmod, ...) construction",
          lambda: qp.Ensemble(qp.mixmod, data=dict(weights=wn, means=mn, stds=sn)))
    sizes = {}
    for dt in ("float64", "float32"):
        path = os.path.join(job["workdir"], f"micro_write_{dt}.hdf5")
        ens = qp.Ensemble(qp.mixmod, data=dict(weights=wn.astype(dt), means=mn.astype(dt), stds=sn.astype(dt)))
        bench(f"qp write_to HDF5 ({dt} parameters)", lambda ens=ens, path=path: ens.write_to(path), 1,
              "variant" if dt == "float32" else "")
        sizes[dt] = os.path.getsize(path) / n
        rows[-1]["note"] = (rows[-1]["note"] + "; " if rows[-1]["note"] else "") + f"{sizes[dt]:.0f} B/galaxy"
        os.remove(path)
    bench("gc.collect() with this chunk alive", gc.collect, 3)
    return dict(rows=n, torch_threads=torch.get_num_threads(), mixture_components_K=int(w.shape[1]),
                operations=rows, bytes_per_galaxy=sizes)


CHILD_JOBS = dict(train=child_train, estimate=child_estimate, micro=child_micro)


EXTRA_ENV: dict[str, str] = {}  # --env KEY=VALUE, for every child process


def run_child(kind: str, job: dict[str, Any], workdir: str, threads: int | None, timeout: float) -> dict:
    job_file = os.path.join(workdir, f"job_{kind}_{os.getpid()}.json")
    res_file = job_file.replace(".json", "_result.json")
    with open(job_file, "w") as fh:
        json.dump(dict(job, kind=kind, result_file=res_file), fh)
    env = dict(os.environ)
    env.update(EXTRA_ENV)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    log_file = os.path.join(workdir, f"log_{kind}_{job.get('estimator', '')}_{job.get('chunk_size', '')}"
                                     f"_t{threads or 0}.txt")
    try:
        with open(log_file, "w") as log:
            launcher = ["mpiexec", "-n", str(job["nprocess"])] if int(job.get("nprocess", 1)) > 1 else []
            rc = subprocess.run(launcher + [sys.executable, os.path.abspath(__file__), "--_child", job_file],
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir,
                                timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    os.remove(job_file)
    if not os.path.exists(res_file):
        return dict(job, status="failed", error=f"child exit {rc}; see {log_file}", log_file=log_file)
    with open(res_file) as fh:
        res = json.load(fh)
    os.remove(res_file)
    res["log_file"] = log_file
    return res


# --------------------------------------------------------------------------------------------
# parent
# --------------------------------------------------------------------------------------------
def tile_file(src: str, dst: str, rows: int) -> dict[str, Any]:
    """Repeat ``src``'s photometry group to ``rows`` rows in ``dst``, tile by tile (ids offset)."""
    import h5py
    import numpy as np
    import tables_io

    if os.path.exists(dst):
        with h5py.File(dst, "r") as f:
            if GROUP in f and all(d.shape == (rows,) for d in f[GROUP].values()):
                return dict(path=dst, rows=rows, reused=True, bytes=os.path.getsize(dst))
    tab = tables_io.read(src)[GROUP]
    n_src = len(tab["redshift"])
    id_step = int(np.max(tab["id"])) + 1 if "id" in tab else 0
    tmp = dst + ".tmp"
    t0 = time.perf_counter()
    with h5py.File(tmp, "w") as f:
        g = f.create_group(GROUP)
        dsets = {k: g.create_dataset(k, shape=(rows,), dtype=np.asarray(v).dtype) for k, v in tab.items()}
        for k, start in enumerate(range(0, rows, n_src)):
            end = min(start + n_src, rows)
            for col, ds in dsets.items():
                block = np.asarray(tab[col])[: end - start]
                ds[start:end] = block + k * id_step if col == "id" else block
    os.replace(tmp, dst)
    return dict(path=dst, rows=rows, reused=False, bytes=os.path.getsize(dst), source_rows=n_src,
                write_s=time.perf_counter() - t0)


def _fmt_breakdown(results: list[dict[str, Any]]) -> list[str]:
    runs = [r for r in results if r.get("breakdown")]
    if not runs:
        return []
    L = ["", "Time breakdown of the Deepz runs (wall seconds summed over all chunks; % of `stage run + "
         "finalize`; µs per galaxy — the 50,000 gal/s target is a budget of 20 µs/galaxy):", ""]
    head = "| part | " + " | ".join(f"chunk {r['chunk_size']:,}, {r.get('torch_threads')} thr: s / % / µs/gal"
                                    for r in runs) + " |"
    L += [head, "|---|" + "---|" * len(runs)]
    for i, row in enumerate(runs[0]["breakdown"]):
        cells = []
        for r in runs:
            b = r["breakdown"][i]
            cells.append(f"{b['seconds']:.2f} / {100 * (b['fraction'] or 0):.1f}% / {b['us_per_galaxy']:.1f}")
        indent = "&nbsp;&nbsp;" * row["depth"]
        L.append(f"| {indent}{row['label']} | " + " | ".join(cells) + " |")
    return L


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    L = ["# DeepzEstimator throughput, file in / file out", ""]
    L.append(f"Generated {report['generated']} (`{report['command']}`).")
    L.append("")
    L.append(f"Machine: {env['cpu_model']}, {env['usable_cores']} usable cores, {env['mem_total_gb']} GiB RAM, "
             f"GPU: {env['gpu']}. Load average (1/5/15 min) at start {env['load_average_1_5_15']}, at end "
             f"{report.get('load_average_end')}. Code: {report['code'].get('describe')}"
             f"{' (uncommitted changes, src sha1 ' + report['code'].get('src_sha1', '')[:10] + ')' if report['code'].get('dirty') else ''}."
             + (f" Extra environment: {report['extra_env']}." if report.get("extra_env") else ""))
    t = report["tiled"]
    L.append("")
    L.append(f"Input: `{t['path']}`: {t['rows']:,} rows ({t['bytes'] / 1e6:.0f} MB, DC2 validation file tiled"
             f"{', reused' if t.get('reused') else ''}). Model: `{report['model']['path']}`"
             + (f" (trained here in {report['model']['inform_wall_s']:.0f} s)" if report['model'].get('inform_wall_s')
                else "") + ".")
    L += ["", "| estimator | chunk_size | threads | rows | wall [s] | gal/s | gal/s (run only) | CPU/wall "
          "| peak RSS ru_maxrss [MB] | peak RSS sampled [MB] | output [MB] | bytes/galaxy | load avg after |",
          "|" + "---|" * 13]
    for r in report["runs"]:
        if r.get("status") == "failed":
            L.append(f"| {r.get('estimator')} | {r.get('chunk_size')} | {r.get('omp_num_threads') or '–'} | – "
                     f"| **failed**: {r.get('error')} |" + " |" * 8)
            continue
        thr = f"{r['torch_threads']}" + ("" if r.get("omp_num_threads") else " (default)")
        if int(r.get("nprocess", 1)) > 1:
            thr += f" x {r['nprocess']} MPI processes"
        label = r["estimator"]
        extra = {k: v for k, v in (r.get("config") or {}).items() if k in ("n_output_components", "precision")}
        if extra:
            label += " " + ", ".join(f"{k}={v}" for k, v in extra.items())
        L.append(f"| {label} | {r['chunk_size']:,} | {thr} | {r['rows']:,} | {r['wall_s']:.1f} "
                 f"| {r['gal_per_s']:,.0f} | {r['gal_per_s_run_only']:,.0f} | {r['cpu_per_wall']:.2f} "
                 f"| {r['ru_maxrss_mb']:.0f} | {r['rss_sampled']['peak_mb']:.0f} "
                 f"| {cr._f(r.get('output_bytes', 0) / 1e6, '.0f')} | {cr._f(r.get('output_bytes_per_galaxy'), '.0f')} "
                 f"| {r.get('load_average_after')} |")
    L += _fmt_breakdown(report["runs"])
    mb = report.get("micro")
    if mb and mb.get("operations"):
        L += ["", f"Micro-benchmarks on {mb['rows']:,} rows in memory (best of 3 or single run; torch threads "
              f"{mb['torch_threads']}; K = {mb['mixture_components_K']} mixture components). Rows marked "
              "'variant' are cheaper alternatives for comparison, not what the stage runs:", "",
              "| operation | s | µs/galaxy | note |", "|---|---|---|---|"]
        for op in mb["operations"]:
            L.append(f"| {op['operation']} | {op['seconds']:.3f} | {op['us_per_galaxy']:.1f} | {op['note']} |")
    elif mb:
        L += ["", f"Micro-benchmarks failed: {mb.get('error')}"]
    L += ["", "wall = stage construction + validate + run + finalize (ceci's sequence, no read-back of the "
          "output); 'run only' excludes construction. CPU/wall is the process CPU time over wall time "
          "(≈ number of busy cores). Breakdown timers wrap the functions the stage calls and are summed over "
          "the whole run; nested rows are parts of the row above, 'other' is the unattributed remainder.",
          "", "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v)]
    return "\n".join(L) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows of the tiled input file (default 1e6)")
    ap.add_argument("--chunk-sizes", default="100000", help="comma list of chunk_size values (default 100000)")
    ap.add_argument("--model", help="existing Deepz model (.npz); default: train one with DeepzInformer defaults")
    ap.add_argument("--deepz-config", default="{}", help="JSON DeepzInformer overrides when training")
    ap.add_argument("--estimate-config", default="{}", help="JSON DeepzEstimator overrides (e.g. batch_size)")
    ap.add_argument("--tiled", help="path of the tiled input file (default <workdir>/dc2_tiled_<rows>.hdf5)")
    ap.add_argument("--compare", default="", help="other estimators to run on the same file, e.g. gpz,knn")
    ap.add_argument("--threads", default="0",
                    help="comma list of OMP_NUM_THREADS values for the estimator processes, each run in turn "
                         "(0: leave unset = torch default, one thread per core; ceci's default is 1)")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment for the child processes, e.g. OMP_WAIT_POLICY=PASSIVE (repeatable)")
    ap.add_argument("--variants", default="",
                    help="JSON list of extra DeepzEstimator override dicts, each run as its own Deepz row "
                         "(first chunk size), e.g. '[{\"n_output_components\": 10}, {\"n_output_components\": 1}]'")
    ap.add_argument("--nprocess", default="1",
                    help="comma list of MPI process counts for the Deepz runs (mpiexec -n N, as ceci nprocess; "
                         "each process uses --threads threads), e.g. 1,2")
    ap.add_argument("--no-profile", action="store_true", help="no timers around the Deepz functions")
    ap.add_argument("--micro", action="store_true",
                    help="also micro-benchmark the parts on min(rows, 100000) rows in memory")
    ap.add_argument("--keep-output", action="store_true", help="keep the estimator output files")
    ap.add_argument("--output", default=DEFAULT_OUTPUT, help="folder for throughput.json/.md")
    ap.add_argument("--workdir", help="tiled input, model, outputs, logs (default <output>/throughput_work)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--timeout", type=float, default=3600, help="limit per child process in seconds")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._child:
        with open(args._child) as fh:
            job = json.load(fh)
        try:
            res = CHILD_JOBS[job["kind"]](job)
        except Exception as exc:
            traceback.print_exc()
            res = dict(job, status="failed", error=f"{type(exc).__name__}: {exc}")
        if res is None:  # an MPI rank other than 0
            return 0
        with open(job["result_file"], "w") as fh:
            json.dump(res, fh, indent=1, default=str)
        return 0

    output = os.path.abspath(args.output)
    workdir = os.path.abspath(args.workdir or os.path.join(output, "throughput_work"))
    os.makedirs(workdir, exist_ok=True)
    for item in args.env:
        if "=" not in item:
            raise SystemExit(f"--env {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        EXTRA_ENV[key] = value
    chunk_sizes = [int(c) for c in args.chunk_sizes.split(",") if c.strip()]
    thread_list = [int(t) for t in args.threads.split(",") if t.strip()] or [0]
    compare = [c.strip() for c in args.compare.split(",") if c.strip()]
    for c in compare:
        if c not in cr.ESTIMATORS or c == "deepz":
            raise SystemExit(f"--compare: unknown estimator {c!r}; choose from "
                             f"{', '.join(k for k in cr.ESTIMATORS if k != 'deepz')}")
    deepz_inf = cr._json_obj(args.deepz_config, "--deepz-config")
    deepz_est = cr._json_obj(args.estimate_config, "--estimate-config")
    train, test = cr.data_files(None, None)
    env = cr.machine_info()

    def say(msg: str) -> None:
        print(f"{_dt.datetime.now():%H:%M:%S} {msg}", flush=True)

    say(f"throughput: {args.rows:,} rows, chunk sizes {chunk_sizes}, {env['usable_cores']} cores, "
        f"load {env['load_average_1_5_15']}")
    tiled_path = os.path.abspath(args.tiled or os.path.join(workdir, f"dc2_tiled_{args.rows}.hdf5"))
    say(f"tile start -> {tiled_path}")
    tiled = tile_file(test, tiled_path, args.rows)
    how = "reused" if tiled["reused"] else f"{tiled['write_s']:.1f} s"
    say(f"tile end ({how}, {tiled['bytes'] / 1e6:.0f} MB)")

    models: dict[str, dict[str, Any]] = {}
    if args.model:
        models["deepz"] = dict(path=os.path.abspath(args.model))
    todo = ([] if args.model else ["deepz"]) + compare
    for name in todo:
        suffix = cr.ESTIMATORS[name]["model_suffix"]
        path = os.path.join(workdir, f"model_{name}.{suffix}")
        say(f"inform {name} start")
        r = run_child("train", dict(estimator=name, model=path, train=train, seed=args.seed,
                                    overrides=deepz_inf if name == "deepz" else {}),
                      workdir, thread_list[0] or None, args.timeout)
        if r.get("status") == "failed":
            say(f"inform {name} FAILED: {r['error']}")
            continue
        models[name] = dict(path=path, inform_wall_s=r["inform_wall_s"], inform_config=r["inform_config"])
        say(f"inform {name} end ({r['inform_wall_s']:.1f} s)")

    runs = []
    nprocs = [int(n) for n in args.nprocess.split(",") if n.strip()] or [1]
    variants = json.loads(args.variants) if args.variants else []
    if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
        raise SystemExit("--variants: expected a JSON list of objects")
    plan = [("deepz", cs, t, n, deepz_est) for n in nprocs for t in thread_list for cs in chunk_sizes] + \
        [("deepz", chunk_sizes[0], thread_list[0], n, {**deepz_est, **v}) for n in nprocs for v in variants] + \
        [(c, chunk_sizes[0], t, 1, {}) for t in thread_list for c in compare]
    for name, cs, nthreads, nproc, overrides in plan:
        if name not in models:
            continue
        tlabel = (f", OMP_NUM_THREADS={nthreads}" if nthreads else "") + (f", {nproc} MPI processes" if nproc > 1 else "")
        say(f"estimate {name} chunk_size={cs:,}{tlabel} start")
        job = dict(estimator=name, chunk_size=cs, rows=args.rows, input=tiled_path, model=models[name]["path"],
                   output_file=os.path.join(workdir, f"output_{name}_{cs}.hdf5"), seed=args.seed,
                   keep_output=args.keep_output, profile=not args.no_profile,
                   overrides=overrides, nprocess=nproc)
        r = run_child("estimate", job, workdir, nthreads or None, args.timeout)
        r["load_average_after"] = cr.load_average()
        runs.append(r)
        if r.get("status") == "failed":
            say(f"estimate {name} chunk_size={cs:,}{tlabel} FAILED: {r['error']}")
        else:
            say(f"estimate {name} chunk_size={cs:,}{tlabel} end: {r['wall_s']:.1f} s, {r['gal_per_s']:,.0f} gal/s, "
                f"peak RSS {r['ru_maxrss_mb']:.0f} MB, {r.get('output_bytes_per_galaxy', 0):.0f} B/galaxy")

    micro = None
    if args.micro and "deepz" in models:
        say("micro-benchmarks start")
        micro = run_child("micro", dict(model=models["deepz"]["path"], input=tiled_path,
                                        rows=min(args.rows, 100_000), workdir=workdir),
                          workdir, thread_list[0] or None, args.timeout)
        say("micro-benchmarks end")

    report = dict(
        generated=_dt.datetime.now().isoformat(timespec="seconds"),
        command=" ".join(["throughput.py"] + (argv if argv is not None else sys.argv[1:])),
        environment=env, load_average_end=cr.load_average(), threads=thread_list, code=cr.code_state(),
        extra_env=dict(EXTRA_ENV),
        versions={d: cr.dist_version(d) for d in cr.VERSION_DISTS},
        tiled=tiled, model=models.get("deepz", {}), models=models, runs=runs, micro=micro,
        target_gal_per_s=TARGET_GAL_PER_S,
    )
    cr.write_report(report, markdown(report), output, "throughput")
    return 0 if all(r.get("status") != "failed" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
