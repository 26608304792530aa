"""The benchmark harness: provenance, threads, DC2 data, timers, result files and the internals adapters.

Every script in ``benchmarks/`` runs as ``python benchmarks/<script>.py`` and imports this module.
Call :func:`set_threads` before anything imports torch (the BLAS/OpenMP pools read their environment
variables once, when torch is first imported), so scripts import ``rail`` lazily, inside functions.

Results go to ``<output>/<name>.json`` (default ``benchmarks/results``); the docs page and the README
table are generated from these files, so :func:`write_result` fixes their format.

The functions under "adapters" are the only places that reach below the stage classes
(``DeepzInformer``, ``DeepzEstimator``, ``DeepzSimCreator``) and ``rail.deepz.metrics``: those internals
are being renamed, and a rename then needs one edit here.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from typing import Any, Iterator

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUTPUT = os.path.join(HERE, "results")
GROUP = "photometry"
TRAIN_FILE = "examples_data/testdata/test_dc2_training_9816.hdf5"
TEST_FILE = "examples_data/testdata/test_dc2_validation_9816.hdf5"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
#: prefix of the torch.profiler.record_function regions in rail.deepz
REGION_PREFIX = "deepz."


# -- command line and threads ---------------------------------------------------------------------------
def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with the options every script has: ``--output``, ``--threads``, ``--quick``.

    Also records the commit now, when the run starts and imports the code it measures.
    """
    git_commit()
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", default=DEFAULT_OUTPUT, help="folder of the result JSON (benchmarks/results)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: library defaults)")
    ap.add_argument("--quick", action="store_true", help="small and short: checks the script only")
    return ap


def int_list(text: str) -> list[int]:
    """``"87,88"`` -> ``[87, 88]`` (empty string -> ``[]``)."""
    return [int(v) for v in text.split(",") if v.strip()]


def csv_list(text: str) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]`` (empty string -> ``[]``)."""
    return [v.strip() for v in text.split(",") if v.strip()]


def set_threads(n: int) -> None:
    """Use ``n`` CPU threads (0: leave the defaults); call before torch is imported.

    The environment variables cover the OpenMP/MKL/OpenBLAS pools, which read them once at import,
    and child processes; ``torch.set_num_threads`` covers torch's intra-op pool.
    """
    if n <= 0:
        return
    if "torch" in sys.modules:
        print("warning: torch imported before set_threads; BLAS pools may keep their size", file=sys.stderr)
    for var in THREAD_VARS:
        os.environ[var] = str(n)
    import torch

    torch.set_num_threads(n)


# -- provenance --------------------------------------------------------------------------------------
def command_line() -> str:
    """The command as it was typed from the repository root: ``python benchmarks/<script>.py <args>``."""
    script = os.path.relpath(os.path.abspath(sys.argv[0]), os.path.dirname(HERE))
    return shlex.join(["python", script, *sys.argv[1:]])


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """Short commit (``git describe --always --dirty``) at the first call, or "unknown"."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=HERE, capture_output=True,
                             text=True, timeout=30, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _ram_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def _gpu() -> str:
    if "torch" not in sys.modules:  # importing torch here would defeat set_threads
        return "CPU only"
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"


def version(dist: str) -> str:
    """Installed version of a distribution, or "absent"."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def machine() -> str:
    """One line: CPU model, cores, RAM, GPU or "CPU only"; Python and torch versions."""
    return (f"{_cpu_model()}, {os.cpu_count()} cores, {_ram_gib():.1f} GiB, {_gpu()}; "
            f"Python {platform.python_version()}, torch {version('torch').split('+')[0]}")


def deepz_location() -> str:
    """Where rail.deepz was imported from: "working tree" (this repository's src/), else the folder."""
    import rail.deepz

    folder = os.path.dirname(os.path.abspath(rail.deepz.__file__))
    repo = os.path.dirname(HERE)
    return "working tree" if folder.startswith(os.path.join(repo, "src")) else folder


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (a busy machine slows every timing)."""
    return [round(v, 2) for v in os.getloadavg()]


# -- data ------------------------------------------------------------------------------------------
def dc2_paths() -> tuple[str, str]:
    """Paths of pz-rail-base's DC2 training (10,225 rows) and validation (20,449 rows) files."""
    from rail.utils.path_utils import find_rail_file

    return find_rail_file(TRAIN_FILE), find_rail_file(TEST_FILE)


def dc2_files(work: str, n_train: int = 0, n_test: int = 0) -> dict[str, str]:
    """Paths ``train`` and ``test`` of the DC2 files, or of random subsets of ``n_train`` / ``n_test``
    rows written to ``work`` (0: the whole file)."""
    out = dict(zip(("train", "test"), dc2_paths()))
    for key, n in (("train", n_train), ("test", n_test)):
        if n:
            tab = read_table(out[key])
            rows = random_rows(len(tab["redshift"]), n, seed=1234)
            out[key] = write_table(subset(tab, rows), os.path.join(work, f"{key}.hdf5"))
    return out


def read_table(path: str) -> dict[str, Any]:
    """The ``photometry`` group of an HDF5 file as a dict of numpy arrays, each of shape (N,)."""
    import numpy as np
    import tables_io

    return {k: np.asarray(v) for k, v in tables_io.read(path)[GROUP].items()}


def subset(table: dict[str, Any], rows: Any) -> dict[str, Any]:
    """The given rows (indices or boolean mask) of every column."""
    return {k: v[rows] for k, v in table.items()}


def random_rows(n_total: int, n: int, seed: int) -> Any:
    """``n`` sorted random row indices out of ``n_total`` (all rows when ``n`` >= ``n_total``)."""
    import numpy as np

    if n >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).choice(n_total, n, replace=False))


def write_table(table: dict[str, Any], path: str) -> str:
    """Write a table under the ``photometry`` group; returns ``path``."""
    import tables_io

    tables_io.write({GROUP: table}, path)
    return path


def tile_file(src: str, dst: str, rows: int) -> str:
    """Repeat ``src``'s photometry to ``rows`` rows in ``dst`` (ids offset per tile); reused when present.

    Writes tile by tile, so memory stays at one copy of ``src``. Returns ``dst``.
    """
    import h5py
    import numpy as np

    if os.path.exists(dst):
        with h5py.File(dst, "r") as f:
            if GROUP in f and all(d.shape == (rows,) for d in f[GROUP].values()):
                return dst
    tab = read_table(src)
    n_src = len(tab["redshift"])
    id_step = int(np.max(tab["id"])) + 1 if "id" in tab else 0
    with h5py.File(dst + ".tmp", "w") as f:
        group = f.create_group(GROUP)
        for col, values in tab.items():
            ds = group.create_dataset(col, shape=(rows,), dtype=values.dtype)
            for k, start in enumerate(range(0, rows, n_src)):
                block = values[: min(n_src, rows - start)]
                ds[start:start + block.size] = block + k * id_step if col == "id" else block
    os.replace(dst + ".tmp", dst)
    return dst


# -- timing -----------------------------------------------------------------------------------------
@contextlib.contextmanager
def timed() -> Iterator[dict[str, float]]:
    """Measure a block: the yielded dict gets ``wall_s`` and ``cpu_s`` (this process, all threads) [s]."""
    out: dict[str, float] = {}
    c0, t0 = time.process_time(), time.perf_counter()
    try:
        yield out
    finally:
        out["wall_s"] = time.perf_counter() - t0
        out["cpu_s"] = time.process_time() - c0


def peak_rss_mib() -> float:
    """Peak resident memory [MiB] of this process so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_process(cmd: list[str], cwd: str | None = None) -> tuple[int, float]:
    """Run a command (stdout discarded) -> (exit status, peak RSS [MiB] of its largest process).

    Measured by GNU time (``/usr/bin/time -f %M``) when it exists: a child forked from this process
    inherits this process's RSS high-water mark on Linux (kept across exec), so ``os.wait4`` would
    report at least this process's size; GNU time forks the command from a small process. Without
    GNU time, ``os.wait4``'s figure is returned (an upper bound).
    """
    gnu_time = "/usr/bin/time"
    if os.path.exists(gnu_time):
        with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
            status = subprocess.run([gnu_time, "-f", "%M", "-o", rss.name, *cmd], cwd=cwd,
                                    stdout=subprocess.DEVNULL).returncode
            lines = [line for line in rss.read().splitlines() if line.strip().isdigit()]
        return status, (int(lines[-1]) / 1024 if lines else float("nan"))  # GNU time reports KiB
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024


@contextlib.contextmanager
def profiled() -> Iterator[dict[str, float]]:
    """Profile a block with torch.profiler; the yielded dict gets the CPU seconds of each ``deepz.*`` region.

    The seconds are the profiler's CPU total time per event name summed over ``key_averages()``; nested
    regions overlap their parents, so shares need not add up to one. Profiling slows the block: time
    throughput in a separate, unprofiled run.
    """
    from torch.profiler import ProfilerActivity, profile

    regions: dict[str, float] = {}
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        yield regions
    for event in prof.key_averages():
        if event.key.startswith(REGION_PREFIX):
            regions[event.key] = regions.get(event.key, 0.0) + event.cpu_time_total / 1e6  # us -> s


def phase_table(title: str, regions: dict[str, float], wall_s: float) -> dict[str, Any]:
    """Result table of :func:`profiled` regions: seconds and share of ``wall_s`` [s], largest first."""
    order = sorted(regions.items(), key=lambda kv: -kv[1])
    rows = [[name, f"{sec:.2f}", f"{sec / wall_s:.1%}"] for name, sec in order]
    return table(title, ["region", "CPU seconds", "share of wall"], rows,
                 "torch.profiler CPU total time per record_function region; nested regions overlap.")


# -- results ----------------------------------------------------------------------------------------
def table(title: str, columns: list[str], rows: list[list[Any]], note: str = "") -> dict[str, Any]:
    """One table of a result file; every cell becomes a string."""
    out: dict[str, Any] = dict(title=title, columns=list(columns), rows=[[str(c) for c in r] for r in rows])
    if note:
        out["note"] = note
    return out


def markdown(tab: dict[str, Any]) -> str:
    """A result table as markdown (title, pipe table, note)."""
    lines = [f"### {tab['title']}", "", "| " + " | ".join(tab["columns"]) + " |",
             "|" + "---|" * len(tab["columns"])]
    lines += ["| " + " | ".join(row) + " |" for row in tab["rows"]]
    if tab.get("note"):
        lines += ["", tab["note"]]
    return "\n".join(lines) + "\n"


def write_result(name: str, title: str, tables: list[dict[str, Any]], data: dict[str, Any], output: str,
                 headline: bool = False, summary: str | None = None) -> str:
    """Write ``<output>/<name>.json`` in the format the docs generator reads and print the tables.

    Parameters
    ----------
    name, title : str
        File stem (the script's name) and a one-line title.
    tables : list of dict
        Tables made by :func:`table` (formatted cells, as published).
    data : dict
        The raw numbers, free form; numpy values are converted and NaN becomes null.
    output : str
        Folder of the file.
    headline : bool
        True only for the main comparison table (the README shows it).
    summary : str, optional
        One sentence that other pages quote (the README's summary blocks, ``_generated/summary_<name>.md``).

    Returns
    -------
    str
        The path of the file.
    """
    result = dict(benchmark=name, title=title, command=command_line(), commit=git_commit(),
                  date=datetime.date.today().isoformat(), machine=machine(), headline=bool(headline),
                  tables=tables, data=_json_safe(data))
    if summary:
        result["summary"] = summary
    os.makedirs(output, exist_ok=True)
    path = os.path.join(output, f"{name}.json")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2, default=_plain, allow_nan=False)
        f.write("\n")
    os.replace(path + ".tmp", path)
    print(f"## {title}\n\n`{result['command']}`\n")
    print(f"({result['commit']}, {result['date']}; {result['machine']})\n")
    print("\n".join(markdown(t) for t in tables))
    print(f"wrote {path}")
    return path


def _plain(x: Any) -> Any:
    """JSON fallback for numpy scalars and arrays."""
    return x.tolist() if hasattr(x, "tolist") else str(x)


def _json_safe(x: Any) -> Any:
    """``x`` with numpy values made plain and NaN / inf made None (strict JSON has neither)."""
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if hasattr(x, "tolist"):
        return _json_safe(x.tolist())
    if isinstance(x, float) and (x != x or x in (float("inf"), float("-inf"))):
        return None
    return x


def log(msg: str) -> None:
    """A time-stamped progress line."""
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


def fmt(x: float, spec: str = ".4f") -> str:
    """A number as a table cell ("-" for None or NaN)."""
    if x is None or x != x:
        return "-"
    return format(x, spec)


# -- RAIL stages ------------------------------------------------------------------------------------
#: the redshift grid of RAIL's demo notebooks and of the scores' CDE loss
ZGRID = dict(zmin=0.0, zmax=3.0, nzbins=301)


def _known(cls: type, cfg: dict) -> dict:
    """The options of ``cfg`` that stage class ``cls`` has."""
    return {k: v for k, v in cfg.items() if k in cls.config_options}


def inform_and_estimate(inf_cls: type, est_cls: type, inf_cfg: dict, est_cfg: dict, files: dict, work: str,
                        name: str, sims: dict | None = None) -> tuple[object, dict]:
    """Train on ``files["train"]``, estimate ``files["test"]`` (file in, file out).

    Returns the qp ensemble (one PDF per test galaxy) and the inform / estimate wall and CPU seconds.
    """
    from rail.core.data import TableHandle

    common = dict(hdf5_groupname=GROUP, **ZGRID)
    suffix = "npz" if inf_cls.__name__.startswith("Deepz") else "pkl"  # Deepz models are npz archives
    model = os.path.join(work, f"model_{name}.{suffix}")
    informer = inf_cls.make_stage(name=f"inform_{name}", model=model,
                                  **dict(_known(inf_cls, common), **inf_cfg))
    train = {GROUP: read_table(files["train"])}
    with timed() as t_inf:
        informer.inform(train, **({} if sims is None else dict(sims=sims)))
    # the estimator reads the model file the informer wrote (as in a pipeline), not the in-memory handle
    estimator = est_cls.make_stage(name=f"estimate_{name}", model=model,
                                   output=os.path.join(work, f"output_{name}.hdf5"),
                                   **dict(_known(est_cls, common), **est_cfg))
    with timed() as t_est:
        ens = estimator.estimate(TableHandle("input", path=files["test"])).data
    return ens, dict(inform_s=t_inf["wall_s"], estimate_s=t_est["wall_s"], inform_cpu_s=t_inf["cpu_s"],
                     estimate_cpu_s=t_est["cpu_s"])


# -- Deepz through the stage API ---------------------------------------------------------------------
_STAGES = iter(range(10**9))  # stage names must be unique within a process


def deepz_inform(table: dict[str, Any], sims: dict | None = None, pretrained: dict | None = None,
                 target: dict | None = None, **options: Any) -> dict:
    """A Deepz model trained in memory (DeepzInformer with ``options``; nothing is written).

    ``table``, ``sims`` and ``target`` are flat tables (column -> array of shape (N,)); ``pretrained``
    a model to fine-tune from; ``target`` the unlabelled photometry to weight training toward.
    """
    from rail.deepz import DeepzInformer

    stage = DeepzInformer.make_stage(name=f"inform_{next(_STAGES)}", hdf5_groupname="", sims_groupname="",
                                     output_mode="return", checkpoint_dir="none", **options)
    stage.inform(table, sims=sims, pretrained=pretrained, target=target)
    return stage.get_data("model")


def deepz_ensemble(model: dict, table: dict[str, Any], **options: Any) -> Any:
    """The qp ensemble of PDFs of a model (dict, in memory) on a flat table, one chunk (N PDFs)."""
    from rail.deepz import DeepzEstimator

    n = len(table["redshift"])
    stage = DeepzEstimator.make_stage(name=f"estimate_{next(_STAGES)}", model=model, hdf5_groupname="",
                                      output_mode="return", chunk_size=max(n, 1), **options)
    return stage.estimate(table).data


def simulations(n: int, seed: int, **options: Any) -> dict[str, Any]:
    """``n`` DeepzSimCreator galaxies (stage defaults and ``options``) as a flat table, in memory."""
    from rail.deepz import DeepzSimCreator

    stage = DeepzSimCreator.make_stage(name=f"sims_{next(_STAGES)}", model="none", n_samples=n, seed=seed,
                                       hdf5_groupname="", output_mode="return", **options)
    return dict(stage.sample(n, seed).data)


def pooled_scores(parts: list[tuple[Any, Any]], z: Any) -> dict[str, float]:
    """photoz_scores of held-out ensembles put back in row order.

    ``parts`` are (rows, qp ensemble) pairs whose rows partition ``range(len(z))``; ``z`` has shape (N,).
    """
    import numpy as np
    import qp

    from rail.deepz.metrics import photoz_scores

    order = np.argsort(np.concatenate([rows for rows, _ in parts]))
    return photoz_scores(qp.concatenate([ens for _, ens in parts])[order], z)


# -- adapters: the only calls below the stage classes ------------------------------------------------
def pdf_ensemble(weights: Any, means: Any, stds: Any, z_range: tuple[float, float] = (0.0, 3.0)) -> Any:
    """The qp ensemble the estimator would write for calibrated mixtures (N, K) (as numpy arrays): no merge,
    folded into ``z_range``, exact weight sums, its point estimates."""
    import numpy as np
    import qp
    import torch

    from rail.deepz.estimating import output_pdfs

    res = output_pdfs(*(torch.as_tensor(np.asarray(a, dtype=np.float64)) for a in (weights, means, stds)),
                      z_range=z_range)
    return qp.Ensemble(qp.mixmod, data={k: res.pop(k) for k in ("weights", "means", "stds")}, ancil=res)



def calibrate_out_of_fold(net: Any, x: Any, z: Any, splits: Any, n_folds: int, recenter: float,
                          fit_power: bool = False) -> tuple[Any, dict]:
    """The informer's calibration fitted on out-of-fold predictions -> ``(Calibration, info)``."""
    from rail.deepz.informing import calibrate_out_of_fold as fit

    return fit(net, x, z, splits, n_folds, recenter, fit_power=fit_power)


def train_members(table: dict[str, Any], per_member: bool, **options: Any) -> tuple[float, dict[str, Any]]:
    """The informer's ensemble training alone (no calibration, no compact network) on a flat table.

    All members as one stacked network, as the informer trains them, or (``per_member``) one network
    after the other, each from its own random streams. Returns the training seconds and the trained
    members' stacked state (member axis first), which is the same either way.
    """
    import numpy as np
    import torch

    from rail.deepz import features
    from rail.deepz.building import architecture_for, build_network
    from rail.deepz.informing import train_config
    from rail.deepz.options import inform_options
    from rail.deepz.training import ensemble_splits, train_ensemble
    from rail.deepz.training_data import augmentation, batch_inputs, prepare_training_data

    opts = inform_options(dict(options, hdf5_groupname=""))
    data = prepare_training_data(table, opts)
    mean, std = features.fit_scaler(data.features)
    arch = architecture_for(opts, data.features.shape[1], z_scale=float(max(np.std(data.redshift), 0.05)))
    n = data.features.shape[0]
    splits = ensemble_splits(n, opts.n_splits, opts.n_folds, opts.seed)
    groups = [[i] for i in range(len(splits))] if per_member else [list(range(len(splits)))]
    device = torch.device("cpu")
    x = torch.as_tensor((data.features - mean) / std)
    z, ratios, ratio_err = (torch.as_tensor(a) for a in (data.redshift, data.ratios, data.ratio_err))
    inputs = batch_inputs(data, mean, std, opts.bands.index(opts.ref_band), augmentation(opts), device, opts.seed)
    states = []
    with timed() as t:
        for members in groups:
            model = build_network(arch, len(members), opts.seed, members=members)
            train_ensemble(model, x, z, ratios, ratio_err, splits, train_config(opts), inputs=inputs, members=members)
            states.append(model.state_dict())
    stacked = {k: torch.cat([st[k].reshape(len(g), -1) for st, g in zip(states, groups)])
               for k in states[0] if states[0][k].dim() > 0}
    return t["wall_s"], stacked


def refit_calibration(model: dict, table: dict[str, Any], seed: int, fit_power: bool) -> dict:
    """A trained model's calibration refitted on its training ``table`` (as the informer fits it).

    Rebuilds the informer's ensemble splits from ``seed`` and the model's metadata, so ``table`` must be
    exactly the rows the model was trained on, with LSST ugrizy columns. Returns the calibration as a
    dict (the form of ``model["meta"]["calibration"]``).
    """
    import numpy as np
    import torch

    from rail.deepz import features
    from rail.deepz.estimating import DeepzPredictor
    from rail.deepz.training import ensemble_splits

    pred = DeepzPredictor(model, torch.device("cpu"))
    x, _, _, bad = features.flux_features(pred.photometry(table, LSST_ERR_BANDS), pred.ref_index)
    if bad.any():
        raise RuntimeError("training rows without a usable reference band: the splits would not match")
    arrays, meta = model["arrays"], model["meta"]
    xs = torch.as_tensor((x - arrays["feature_mean"]) / arrays["feature_std"], dtype=torch.float32)
    z = np.asarray(table["redshift"], dtype=float)
    n_folds, n_splits = int(meta["training"]["n_folds"]), int(meta["training"]["n_splits"])
    splits = ensemble_splits(len(z), n_splits, n_folds, seed)
    cal, _ = calibrate_out_of_fold(pred.net, xs, z, splits, n_folds, float(meta["calibration"]["recenter"]),
                                   fit_power)
    return cal.to_dict()


LSST_ERR_BANDS = [f"mag_err_{b}_lsst" for b in "ugrizy"]
