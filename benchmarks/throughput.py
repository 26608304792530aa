"""DeepzEstimator throughput, file in -> file out, beside GPz, and where its time goes.

The DC2 validation file is tiled to ``--rows`` rows; the estimate stage runs on it as ceci runs a
stage (``python -m ceci rail.estimation.algos.deepz.DeepzEstimator ...``, under ``mpiexec -n N`` for
each ``--nprocess`` value > 1), timed from the outside: galaxies/s, peak RSS, output bytes/galaxy.
Each ``--networks`` value is one DeepzEstimator setting (``auto``: the stage default, the compact
network; ``ensemble``: every member, merged to 10 components). ``--compare gpz`` runs GPz (stage
defaults, informed on the DC2 training file) on the same file in the same way, in the same run.
A separate, smaller run (``--profile-rows``) inside ``torch.profiler`` gives the CPU seconds of each
``deepz.*`` region of the estimation code with the first network setting (profiling slows the run,
so it is not the timed one).

The model has the stage-default architecture, ensemble and compact network but is trained for a
few epochs only: inference cost does not depend on the training length (``--model FILE`` uses a
trained model). ``--target`` times a model informed with a target (the validation photometry) from a
short pretraining on ``--n-sims`` simulations: the stage-default ``target_start`` keeps both sets of
networks (fine-tuned and from scratch) and the coverage classifiers (``throughput_target.json``).
``--threads 0`` (the default) leaves torch's own thread count, as a stage run does.

    python benchmarks/throughput.py --rows 1000000 --compare gpz --networks auto,ensemble
    python benchmarks/throughput.py --rows 1000000 --compare gpz --target
    python benchmarks/throughput.py --quick --output /tmp/bench_check
"""

from __future__ import annotations

import os
import sys
import tempfile

import yaml

import harness

SHORT_TRAINING = dict(epochs_per_step=[2, 1, 1])


def train_model(path: str, threads: int) -> str:
    """A stage-default Deepz ensemble trained briefly on the DC2 training file, saved at ``path``."""
    from rail.deepz import DeepzInformer

    informer = DeepzInformer.make_stage(name="inform_throughput", model=path, hdf5_groupname=harness.GROUP,
                                        num_threads=threads, **SHORT_TRAINING)
    informer.inform({harness.GROUP: harness.read_table(harness.dc2_paths()[0])})  # writes the model file
    return path


def train_target_model(path: str, threads: int, n_sims: int) -> str:
    """A stage-default Deepz model informed with the validation photometry as target, saved at ``path``.

    Pretrained briefly on ``n_sims`` DeepzSimCreator galaxies, then trained on the DC2 training file.
    """
    from rail.deepz import DeepzSimCreator
    from rail.deepz.model_io import save_model

    sims = DeepzSimCreator.make_stage(name="sims_throughput", model="none", n_samples=n_sims, seed=1,
                                      hdf5_groupname="", output_mode="return").sample(n_sims, 1).data
    valid = harness.read_table(harness.dc2_paths()[1])
    target = {k: v for k, v in valid.items() if k != "redshift"}
    model = harness.deepz_inform(harness.read_table(harness.dc2_paths()[0]), sims=sims, target=target,
                                 num_threads=threads, pretrain_epochs_per_step=[2, 1], **SHORT_TRAINING)
    save_model(model, path)
    return path


def train_gpz(path: str) -> str:
    """GPz with its stage defaults, informed on the DC2 training file, saved at ``path``."""
    from rail.estimation.algos.gpz import GPzInformer

    informer = GPzInformer.make_stage(name="inform_gpz_throughput", model=path, hdf5_groupname=harness.GROUP)
    informer.inform({harness.GROUP: harness.read_table(harness.dc2_paths()[0])})
    return path


def stage_config(args, network: str) -> dict:
    """DeepzEstimator options of a run."""
    return dict(hdf5_groupname=harness.GROUP, chunk_size=args.chunk_size, num_threads=args.threads, network=network)


#: the estimators a run can time: ceci class path and its options (None: Deepz, from ``stage_config``)
STAGES = {"deepz": "rail.estimation.algos.deepz.DeepzEstimator", "gpz": "rail.estimation.algos.gpz.GPzEstimator"}


def run_ceci(estimator: str, model: str, data: str, out: str, nprocess: int, config: dict, work: str) -> dict:
    """One estimate run in fresh processes -> wall [s] (start-up included), peak RSS [MiB], output bytes."""
    path = os.path.join(work, "config.yml")
    classname = STAGES[estimator]
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump({classname.rsplit(".", 1)[1]: config}, f)
    cmd = [sys.executable, "-m", "ceci", classname, f"--model={model}", f"--input={data}", f"--config={path}",
           f"--output={out}"]
    if nprocess > 1:
        cmd = ["mpiexec", "-n", str(nprocess), *cmd, "--mpi"]
    with harness.timed() as t:
        status, peak = harness.run_process(cmd, cwd=work)
    if status != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed with status {status}")
    size = os.path.getsize(out)
    os.remove(out)  # the next run writes the same name
    return dict(nprocess=nprocess, wall_s=t["wall_s"], peak_rss_mib=peak, output_bytes=size)


def profile_run(model: str, data: str, out: str, args) -> tuple[dict, float]:
    """The estimate stage in this process under torch.profiler -> (seconds per region, wall [s])."""
    from rail.deepz import DeepzEstimator

    stage = DeepzEstimator.make_stage(name="estimate_profiled", model=model, input=data, output=out,
                                      **stage_config(args, harness.csv_list(args.networks)[0]))
    with harness.profiled() as regions, harness.timed() as t:  # profiler post-processing not timed
        stage.run()
        stage.finalize()
    return regions, t["wall_s"]


def throughput_table(runs: list[dict], rows: int, args) -> dict:
    """Table of the timed runs, with each run's rate relative to GPz's (one process) when GPz ran."""
    gpz = [r for r in runs if r["estimator"] == "GPz" and r["nprocess"] == 1]
    body = []
    for r in runs:
        rate = rows / r["wall_s"]
        ratio = f"{rate / (rows / gpz[0]['wall_s']):.2f}" if gpz else "-"
        body.append([r["estimator"], r["nprocess"], f"{rows:,}", f"{r['wall_s']:.1f}", f"{rate:,.0f}", ratio,
                     f"{r['peak_rss_mib']:,.0f}", f"{r['output_bytes'] / rows:.0f}"])
    columns = ["estimator", "processes", "rows", "wall [s]", "gal/s", "x GPz", "peak RSS [MiB]", "output bytes/gal"]
    kind = " (Deepz model informed with a target)" if args.target else ""
    threads = "torch's default threads" if args.threads <= 0 else f"--threads {args.threads}"
    return harness.table(f"Estimation of {rows:,} tiled DC2 galaxies{kind}, file in -> file out", columns, body,
                         f"Deepz chunk_size {args.chunk_size:,}, {threads} per process; GPz with its stage "
                         "defaults; wall time of the whole command (Python start-up and imports included).")


def main() -> None:
    """Time the estimate stage, profile a smaller run, write ``throughput.json``."""
    ap = harness.parser(__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows of the tiled input")
    ap.add_argument("--chunk-size", type=int, default=100_000, help="DeepzEstimator chunk_size")
    ap.add_argument("--nprocess", default="1", help="MPI ranks to time, comma separated (e.g. 1,2)")
    ap.add_argument("--profile-rows", type=int, default=100_000, help="rows of the profiled run")
    ap.add_argument("--model", default="", help="a trained Deepz model (default: train a short one)")
    ap.add_argument("--target", action="store_true", help="train the short model with a target (see above)")
    ap.add_argument("--n-sims", type=int, default=20_000, help="simulations pretrained on, with --target")
    ap.add_argument("--networks", default="auto", help="DeepzEstimator 'network' settings to time, comma separated")
    ap.add_argument("--compare", default="", help="other estimators timed on the same file: 'gpz' or ''")
    args = ap.parse_args()
    if args.model and args.target:
        ap.error("--target trains its own model: give --model or --target, not both")
    unknown = [c for c in harness.csv_list(args.compare) if c not in STAGES or c == "deepz"]
    if unknown:
        ap.error(f"--compare: unknown estimator(s) {unknown}; known: gpz")
    if args.quick:
        args.rows, args.profile_rows, args.chunk_size = min(args.rows, 30_000), 10_000, 10_000
    harness.set_threads(args.threads)
    load_start = harness.load_average()
    with tempfile.TemporaryDirectory(prefix="throughput_") as work:
        path = os.path.join(work, "model.npz")
        model = args.model or (train_target_model(path, args.threads, 2_000 if args.quick else args.n_sims)
                               if args.target else train_model(path, args.threads))
        test = harness.dc2_paths()[1]
        data = harness.tile_file(test, os.path.join(work, "tiled.hdf5"), args.rows)
        runs = [dict(estimator=f"Deepz (network {net})", **run_ceci("deepz", model, data,
                                                                     os.path.join(work, "out.hdf5"), n,
                                                                     stage_config(args, net), work))
                for net in harness.csv_list(args.networks) for n in harness.int_list(args.nprocess)]
        if "gpz" in harness.csv_list(args.compare):
            gpz_model = train_gpz(os.path.join(work, "gpz.pkl"))
            runs.append(dict(estimator="GPz", **run_ceci("gpz", gpz_model, data, os.path.join(work, "out.hdf5"), 1,
                                                          dict(hdf5_groupname=harness.GROUP), work)))
        small = harness.tile_file(test, os.path.join(work, "tiled_small.hdf5"), args.profile_rows)
        regions, wall = profile_run(model, small, os.path.join(work, "out_profiled.hdf5"), args)
    title = f"Estimation phases, profiled run of {args.profile_rows:,} rows ({wall:.1f} s)"
    phases = harness.phase_table(title, regions, wall)
    tables = [throughput_table(runs, args.rows, args), phases]
    name, title = ("throughput_target", "DeepzEstimator throughput, model informed with a target") if args.target \
        else ("throughput", "DeepzEstimator throughput")
    harness.write_result(name, title, tables,
                         dict(runs=runs, rows=args.rows, profile=dict(rows=args.profile_rows, wall_s=wall,
                                                                       regions_s=regions),
                              load_average_start=load_start, load_average_end=harness.load_average(),
                              quick=args.quick), args.output)


if __name__ == "__main__":
    main()
