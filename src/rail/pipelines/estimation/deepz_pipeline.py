"""ceci pipelines for Deepz, as RailPipeline subclasses, and a writer that works with ceci 2.7.

Two pipelines (``python -m rail.pipelines.estimation.deepz_pipeline --help``):

* :class:`DeepzPipeline`: simulate (DeepzSimCreator, noise included) -> pretrain + fine-tune
  (DeepzTransferInformer) -> estimate (DeepzEstimator) -> evaluate (DeepzEvaluator: PIT, CDE loss,
  sigma68, outlier fractions).
* :class:`DeepzComparisonPipeline`: Deepz, FlexZBoost, KNN and GPz trained and run on the same inputs,
  each evaluated by the same evaluator settings.

``RailPipeline.build_and_write`` fails with ceci 2.7 (it reads the removed
``stage_execution_config``); :func:`write_pipeline` uses ``initialize`` + ``save`` instead, sets
``threads_per_process`` per stage and writes the config path relative to the pipeline file, so the
pair can be moved together. Run the result with ``ceci <name>.yml``.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import yaml
from rail.core.stage import RailPipeline

from rail.creation.engines.deepz_sims import DeepzSimCreator
from rail.estimation.algos.deepz import DeepzEstimator, DeepzInformer, DeepzTargetTransferInformer, DeepzTransferInformer
from rail.evaluation.deepz_evaluator import DeepzEvaluator

__all__ = [
    "DeepzPipeline", "DeepzComparisonPipeline", "COMPARISON_ALGORITHMS", "EVAL_METRICS", "SMALL_SETTINGS",
    "write_pipeline", "small_config", "dc2_files", "link_data",
]

GROUP = "photometry"
TRAIN_FILE = "examples_data/testdata/test_dc2_training_9816.hdf5"
TEST_FILE = "examples_data/testdata/test_dc2_validation_9816.hdf5"

#: metrics of every evaluate stage (summary keys: ``<metric>_zmode_redshift`` / ``<metric>_redshift``)
EVAL_METRICS = ["pit", "cdeloss", "point_stats_sigma68", "point_outlier_frac_015", "point_stats_iqr",
                "point_bias", "point_outlier_rate"]

#: settings of the other estimators: those of the RAIL demo notebooks (as benchmarks/compare_rail.py)
COMPARISON_ALGORITHMS: dict[str, dict[str, Any]] = {
    "fzboost": dict(
        module="rail.estimation.algos.flexzboost", inform="FlexZBoostInformer", estimate="FlexZBoostEstimator",
        inform_config=dict(trainfrac=0.75, bumpmin=0.02, bumpmax=0.35, nbump=20, sharpmin=0.7, sharpmax=2.1,
                           nsharp=15, max_basis=35, basis_system="cosine",
                           regression_params={"max_depth": 8, "objective": "reg:squarederror"}),
        estimate_config=dict(calculated_point_estimates=["zmode"]),
    ),
    "knn": dict(
        module="rail.estimation.algos.k_nearneigh", inform="KNearNeighInformer", estimate="KNearNeighEstimator",
        inform_config=dict(sigma_grid_min=0.01, sigma_grid_max=0.07, ngrid_sigma=10, nneigh_min=3, nneigh_max=7),
        estimate_config=dict(calculated_point_estimates=["zmode"]),
    ),
    "gpz": dict(
        module="rail.estimation.algos.gpz", inform="GPzInformer", estimate="GPzEstimator",
        inform_config=dict(n_basis=60, train_frac=0.8, csl_method="normal", max_iter=150),
        estimate_config=dict(calculated_point_estimates=["zmode"]),
    ),
}

#: per-stage overrides for a quick run (tests, notebooks): 1,000 simulations, small networks, 14 epochs
#: (Deepz sigma68 ~ 0.07 when trained on 1,000 DC2 galaxies; seconds per stage)
SMALL_SETTINGS: dict[str, dict[str, Any]] = {
    "simulate_deepz": dict(n_samples=1000),
    "inform_deepz": dict(epochs_per_step=[10, 3, 1], learning_rates=[1e-2, 1e-3, 1e-4], n_folds=2,
                         encoder_layers=[32, 32], decoder_layers=[32, 32], mdn_layers=[32, 32], n_gaussians=3,
                         batch_size=64, pretrain_epochs_per_step=[2, 1], pretrain_batch_size=200),
    "inform_fzboost": dict(nbump=3, nsharp=3, max_basis=15, regression_params={"max_depth": 4,
                                                                               "objective": "reg:squarederror"}),
    "inform_knn": dict(ngrid_sigma=3, nneigh_min=3, nneigh_max=4),
    "inform_gpz": dict(n_basis=10, max_iter=20),
    "evaluate_deepz": dict(chunk_size=500),
    "evaluate_fzboost": dict(chunk_size=500),
    "evaluate_knn": dict(chunk_size=500),
    "evaluate_gpz": dict(chunk_size=500),
}


def dc2_files() -> dict[str, str]:
    """Paths of pz-rail-base's DC2 test files: ``input_train`` (10,225 rows), ``input_test`` (20,449)."""
    from rail.utils.path_utils import find_rail_file

    return dict(input_train=find_rail_file(TRAIN_FILE), input_test=find_rail_file(TEST_FILE))


def _evaluator_kwargs(algo: str, estimate_stage: Any, chunk_size: int = 2000) -> dict[str, Any]:
    """Options of ``evaluate_<algo>`` (DeepzEvaluator on the output of ``estimate_stage``).

    ``chunk_size`` bounds memory: the CDE loss evaluates each chunk of PDFs on a grid, about 1.2 GB per
    1,000 Deepz mixtures of 50 components.
    """
    return dict(
        aliases=dict(truth="input_test"),
        connections=dict(input=estimate_stage.io.output),
        metrics=list(EVAL_METRICS), point_estimates=["zmode"], truth_point_estimates=["redshift"],
        hdf5_groupname=GROUP, chunk_size=chunk_size,
    )


def _set_threads(pipe: RailPipeline, threads: dict[str, int], nprocess: int = 1) -> None:
    """threads_per_process per stage; ``nprocess`` MPI ranks for the Deepz inform and estimate stages."""
    for name, n in threads.items():
        pipe.get_stage_execution_config(name).threads_per_process = int(n)
    if int(nprocess) < 1:
        raise ValueError(f"nprocess must be >= 1, got {nprocess}")
    for name in ("inform_deepz", "estimate_deepz"):
        pipe.get_stage_execution_config(name).nprocess = int(nprocess)


class DeepzPipeline(RailPipeline):
    """Simulate -> pretrain + fine-tune -> estimate -> evaluate (paper section 3, Deepz with transfer learning).

    Stages: ``simulate_deepz`` (DeepzSimCreator: ``n_sims`` galaxies, ssp engine, LSST 10-year depth
    noise), ``inform_deepz`` (DeepzTransferInformer; inputs ``input_train`` and the simulations),
    ``estimate_deepz`` (DeepzEstimator on ``input_test``), ``evaluate_deepz`` (DeepzEvaluator).
    Outputs in ``output_dir``: ``output_simulate_deepz.hdf5``, ``model_inform_deepz.pkl``,
    ``output_estimate_deepz.hdf5`` (qp mixmod, ancil zmode/odds/...), ``summary_evaluate_deepz.hdf5``,
    ``output_evaluate_deepz.hdf5``, ``single_distribution_summary_evaluate_deepz.hdf5`` (the PIT).

    Parameters
    ----------
    n_sims : int
        Simulated galaxies for pretraining.
    seed : int
        Seed of the simulation and the training.
    device : str
        Torch device of the informer and estimator ('auto': CUDA when present, else CPU).
    threads : int
        ``threads_per_process`` (OMP/torch threads) of the simulate, inform and estimate stages.
    nprocess : int
        MPI ranks of the inform (ensemble members spread over ranks) and estimate (chunks spread
        over ranks) stages; ceci launches them with the site's ``mpi_command``.
    target : bool
        Train toward the test file's photometry: ``inform_deepz`` is a DeepzTargetTransferInformer
        whose ``target`` is ``input_test`` (documentation page "Training toward the target").
    """

    #: write_pipeline's default output and log folders
    default_dirs: tuple[str, str] = ("out", "logs")
    #: the simulation needs no model: its ``model`` input is the placeholder "none"
    default_input_dict: dict[str, str] = dict(input_train="dummy.in", input_test="dummy.in",
                                              model_simulate_deepz="none")

    def __init__(self, n_sims: int = 50_000, seed: int = 87, device: str = "auto", threads: int = 1,
                 nprocess: int = 1, target: bool = False) -> None:
        RailPipeline.__init__(self)
        self.simulate_deepz = DeepzSimCreator.build(
            aliases=dict(model="model_simulate_deepz", output="output_simulate_deepz"),
            n_samples=int(n_sims), seed=int(seed), engine="ssp", noise_model="depth", hdf5_groupname=GROUP,
        )
        informer, aliases = DeepzTransferInformer, dict(input="input_train", model="model_inform_deepz")
        if target:
            informer, aliases = DeepzTargetTransferInformer, dict(aliases, target="input_test")
        self.inform_deepz = informer.build(
            aliases=aliases,
            connections=dict(sims=self.simulate_deepz.io.output),
            hdf5_groupname=GROUP, sims_groupname=GROUP, seed=int(seed), device=device,
        )
        self.estimate_deepz = DeepzEstimator.build(
            aliases=dict(input="input_test", output="output_estimate_deepz"),
            connections=dict(model=self.inform_deepz.io.model),
            hdf5_groupname=GROUP, chunk_size=100_000, device=device,
        )
        self.evaluate_deepz = DeepzEvaluator.build(**_evaluator_kwargs("deepz", self.estimate_deepz))
        _set_threads(self, dict(simulate_deepz=threads, inform_deepz=threads, estimate_deepz=threads), nprocess)


class DeepzComparisonPipeline(RailPipeline):
    """Deepz next to FlexZBoost, KNN and GPz on the same training and test files, all evaluated alike.

    For every algorithm ``a`` in ``["deepz"] + algorithms``: ``inform_a`` (input ``input_train``),
    ``estimate_a`` (input ``input_test``, point estimate ``zmode``), ``evaluate_a`` (DeepzEvaluator
    with :data:`EVAL_METRICS`). Outputs ``output_estimate_a.hdf5``, ``summary_evaluate_a.hdf5`` etc.
    The other estimators use the settings of the RAIL demo notebooks (:data:`COMPARISON_ALGORITHMS`).

    Parameters
    ----------
    algorithms : list of str
        Keys of :data:`COMPARISON_ALGORITHMS` (default all: fzboost, knn, gpz).
    seed : int
        Seed of the Deepz training.
    device : str
        Torch device of the Deepz stages.
    threads : int
        ``threads_per_process`` of the inform and estimate stages.
    nprocess : int
        MPI ranks of the Deepz inform and estimate stages (the other estimators run on one process).
    """

    default_input_dict: dict[str, str] = dict(input_train="dummy.in", input_test="dummy.in")
    #: write_pipeline's default folders (kept apart from DeepzPipeline's, which uses the same file names)
    default_dirs: tuple[str, str] = ("out_comparison", "logs_comparison")

    def __init__(self, algorithms: list[str] | None = None, seed: int = 87, device: str = "auto",
                 threads: int = 1, nprocess: int = 1) -> None:
        import importlib

        RailPipeline.__init__(self)
        algorithms = list(COMPARISON_ALGORITHMS) if algorithms is None else list(algorithms)
        unknown = [a for a in algorithms if a not in COMPARISON_ALGORITHMS]
        if unknown:
            raise ValueError(f"unknown algorithm(s) {unknown}; choose from {list(COMPARISON_ALGORITHMS)}")
        self.inform_deepz = DeepzInformer.build(
            aliases=dict(input="input_train", model="model_inform_deepz"),
            hdf5_groupname=GROUP, seed=int(seed), device=device,
        )
        self.estimate_deepz = DeepzEstimator.build(
            aliases=dict(input="input_test", output="output_estimate_deepz"),
            connections=dict(model=self.inform_deepz.io.model),
            hdf5_groupname=GROUP, chunk_size=100_000, device=device,
        )
        self.evaluate_deepz = DeepzEvaluator.build(**_evaluator_kwargs("deepz", self.estimate_deepz))
        threads_cfg = dict(inform_deepz=threads, estimate_deepz=threads)
        for algo in algorithms:
            spec = COMPARISON_ALGORITHMS[algo]
            mod = importlib.import_module(spec["module"])
            inform = getattr(mod, spec["inform"]).make_and_connect(
                name=f"inform_{algo}", aliases=dict(input="input_train", model=f"model_inform_{algo}"),
                hdf5_groupname=GROUP, **spec["inform_config"])
            self.add_stage(inform)
            estimate = getattr(mod, spec["estimate"]).make_and_connect(
                name=f"estimate_{algo}", aliases=dict(input="input_test", output=f"output_estimate_{algo}"),
                connections=dict(model=inform.io.model), hdf5_groupname=GROUP, **spec["estimate_config"])
            self.add_stage(estimate)
            evaluate = DeepzEvaluator.make_and_connect(name=f"evaluate_{algo}", **_evaluator_kwargs(algo, estimate))
            self.add_stage(evaluate)
            threads_cfg.update({f"inform_{algo}": threads, f"estimate_{algo}": threads})
        _set_threads(self, threads_cfg, nprocess)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, val in over.items():
        out[key] = _merge(out[key], val) if isinstance(val, dict) and isinstance(out.get(key), dict) else val
    return out


def write_pipeline(pipeline: str | type[RailPipeline], yml_path: str, inputs: dict[str, str] | None = None,
                   output_dir: str | None = None, log_dir: str | None = None, stages_config: dict[str, dict] | None = None,
                   max_threads: int = 2, **kwargs: Any) -> tuple[str, str]:
    """Build a pipeline and write ``<yml_path>`` and ``<stem>_config.yml`` (works with ceci 2.6 and 2.7).

    Parameters
    ----------
    pipeline : str or type
        RailPipeline subclass or its name (``"DeepzPipeline"``, ``"DeepzComparisonPipeline"``).
    yml_path : str
        Pipeline file to write; the stage configuration goes next to it as ``<stem>_config.yml`` and is
        referenced by its file name (relative paths in ceci are relative to the working directory, so
        run ``ceci`` from the folder holding both files, or pass ``config=<path>``).
    inputs : dict, optional
        ``input_train`` / ``input_test`` paths (default: the DC2 test files of pz-rail-base).
    output_dir, log_dir : str, optional
        Where ceci writes outputs and logs (default: the class's ``default_dirs``, ``out``/``logs`` for
        DeepzPipeline and ``out_comparison``/``logs_comparison`` for DeepzComparisonPipeline).
    stages_config : dict, optional
        Per-stage option overrides, e.g. ``SMALL_SETTINGS`` or ``{"estimate_deepz": {"device": "cpu"}}``.
    max_threads : int
        ``site.max_threads`` (cores ceci may use at once).
    **kwargs : Any
        Passed to the pipeline constructor (``n_sims``, ``seed``, ``device``, ``threads``, ``algorithms``).

    Returns
    -------
    tuple of str
        Paths of the pipeline and config files.
    """
    cls = RailPipeline.get_pipeline_class(pipeline) if isinstance(pipeline, str) else pipeline
    pipe = cls(**kwargs)
    default_out, default_log = getattr(cls, "default_dirs", ("out", "logs"))
    output_dir, log_dir = output_dir or default_out, log_dir or default_log
    full_inputs = dict(cls.default_input_dict)
    full_inputs.update(inputs if inputs is not None else dc2_files())
    existed = {d: os.path.isdir(d) for d in (output_dir, log_dir)}
    pipe.initialize(full_inputs, dict(output_dir=output_dir, log_dir=log_dir, resume=False), None)
    for folder, was_there in existed.items():  # ceci creates them relative to the cwd: tidy up
        if not was_there and os.path.isdir(folder) and not os.listdir(folder):
            os.rmdir(folder)
    yml_path = os.path.abspath(yml_path)
    cfg_path = os.path.splitext(yml_path)[0] + "_config.yml"
    os.makedirs(os.path.dirname(yml_path), exist_ok=True)
    pipe.save(yml_path, stagefile=cfg_path)
    with open(yml_path) as fh:
        pipe_dict = yaml.safe_load(fh)
    for stage in pipe_dict["stages"]:  # ceci leaves out the default 1: show where to raise it
        stage.setdefault("threads_per_process", int(pipe.get_stage_execution_config(stage["name"]).threads_per_process))
    pipe_dict["config"] = os.path.basename(cfg_path)
    pipe_dict["modules"] = "rail"
    pipe_dict["site"] = dict(name="local", max_threads=int(max_threads))
    _dump(pipe_dict, yml_path)
    with open(cfg_path) as fh:
        cfg = yaml.safe_load(fh)
    _dump(_apply(cfg, stages_config or {}), cfg_path)
    return yml_path, cfg_path


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _dump(obj: Any, path: str) -> None:
    with open(path, "w") as fh:
        yaml.dump(obj, fh, Dumper=_NoAliasDumper, sort_keys=False)


def _apply(cfg: dict, overrides: dict[str, dict]) -> dict:
    return {name: _merge(sec, overrides.get(name, {})) if isinstance(sec, dict) else sec
            for name, sec in cfg.items()}


def small_config(config_in: str, config_out: str, overrides: dict[str, dict] | None = None) -> str:
    """Write a copy of a stage config file with per-stage overrides (default :data:`SMALL_SETTINGS`).

    Run the small variant with ``ceci <pipeline>.yml config=<config_out>``; stages missing from the
    file are ignored, so one override dict serves both pipelines.
    """
    with open(config_in) as fh:
        cfg = yaml.safe_load(fh)
    _dump(_apply(cfg, SMALL_SETTINGS if overrides is None else overrides), config_out)
    return config_out


def link_data(folder: str, copy: bool = False) -> dict[str, str]:
    """Symlink (or copy) pz-rail-base's DC2 test files into ``folder`` under their own names.

    The example pipelines in ``examples/`` read ``data/test_dc2_training_9816.hdf5`` and
    ``data/test_dc2_validation_9816.hdf5`` relative to the folder ``ceci`` runs in.
    """
    import shutil

    os.makedirs(folder, exist_ok=True)
    out = {}
    for tag, src in dc2_files().items():
        dst = os.path.join(folder, os.path.basename(src))
        if not os.path.exists(dst):
            if copy:
                shutil.copyfile(src, dst)
            else:
                os.symlink(src, dst)
        out[tag] = dst
    return out


def main(argv: list[str] | None = None) -> None:
    """Command line: ``write`` a pipeline yml pair, or ``link-data`` the DC2 files for the examples."""
    p = argparse.ArgumentParser(prog="python -m rail.pipelines.estimation.deepz_pipeline",
                                description="Deepz ceci pipelines: write the yml pair, or link the DC2 data.")
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="write <yml> and <stem>_config.yml")
    w.add_argument("pipeline", choices=["deepz", "comparison"], help="DeepzPipeline or DeepzComparisonPipeline")
    w.add_argument("yml", help="pipeline file to write (the config goes to <stem>_config.yml)")
    w.add_argument("--train", help="training file (default: pz-rail-base DC2 training file)")
    w.add_argument("--test", help="test file (default: pz-rail-base DC2 validation file)")
    w.add_argument("--output-dir", help="default out (deepz) or out_comparison (comparison)")
    w.add_argument("--log-dir", help="default logs (deepz) or logs_comparison (comparison)")
    w.add_argument("--device", default="auto", help="torch device of the Deepz stages")
    w.add_argument("--threads", type=int, default=1,
                   help="threads_per_process (OMP/torch threads) of the heavy stages; raise it on a "
                        "dedicated machine with free cores")
    w.add_argument("--nprocess", type=int, default=1, help="MPI ranks of the Deepz inform and estimate stages")
    w.add_argument("--n-sims", type=int, default=50_000, help="DeepzPipeline: simulated galaxies")
    w.add_argument("--target", action="store_true",
                   help="DeepzPipeline: train toward the test file's photometry (DeepzTargetTransferInformer)")
    w.add_argument("--small", action="store_true", help="quick settings (SMALL_SETTINGS: tests, demos)")
    d = sub.add_parser("link-data", help="symlink the DC2 test files into a folder (default data/)")
    d.add_argument("folder", nargs="?", default="data")
    d.add_argument("--copy", action="store_true", help="copy instead of symlinking")
    args = p.parse_args(argv)
    if args.command == "link-data":
        print("\n".join(link_data(args.folder, args.copy).values()))
        return
    inputs = dc2_files()
    if args.train:
        inputs["input_train"] = args.train
    if args.test:
        inputs["input_test"] = args.test
    kwargs: dict[str, Any] = dict(device=args.device, threads=args.threads, nprocess=args.nprocess)
    if args.pipeline == "deepz":
        kwargs.update(n_sims=args.n_sims, target=args.target)
    elif args.target:
        raise SystemExit("--target applies to the deepz pipeline only")
    name = "DeepzPipeline" if args.pipeline == "deepz" else "DeepzComparisonPipeline"
    paths = write_pipeline(name, args.yml, inputs, args.output_dir, args.log_dir,
                           SMALL_SETTINGS if args.small else None, max(2, args.nprocess * args.threads), **kwargs)
    print("wrote", *paths)


if __name__ == "__main__":
    main()
