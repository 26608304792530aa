"""The main job, end to end: simulate galaxies, pretrain Deepz on them and fine-tune on the DC2
training file, estimate the validation file, evaluate with RAIL's evaluator, print the scores.

Run ``python -m rail.deepz.quickstart`` (``--help`` for options). Uses the cosmoDC2 test files that
pz-rail-base ships (10,225 training and 20,449 validation galaxies) and DeepzSimCreator's default
engine (PopStar SSPs from PyPI); writes the simulations, the model, the PDFs and the scores (JSON)
to ``--output-dir``. ``--sims 0`` trains from scratch instead.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

# RAIL, torch, qp and numpy are imported inside the functions: `--help` and argument errors are instant

TRAIN_FILE = "examples_data/testdata/test_dc2_training_9816.hdf5"
TEST_FILE = "examples_data/testdata/test_dc2_validation_9816.hdf5"
RAIL_METRICS = ["pit", "cdeloss", "point_stats_sigma68", "point_outlier_frac_015", "point_stats_iqr",
                "point_bias", "point_outlier_rate"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rail.deepz.quickstart", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--output-dir", default="deepz_quickstart",
                   help="folder for the simulations, model, PDFs and scores (created if missing)")
    p.add_argument("--train", default=None, help="training table, HDF5; None: pz-rail-base's DC2 training file")
    p.add_argument("--test", default=None, help="test table, HDF5; None: pz-rail-base's DC2 validation file")
    p.add_argument("--sims", type=int, default=50_000, help="simulated galaxies for pretraining (0: no pretraining)")
    p.add_argument("--seed", type=int, default=87, help="seed of the simulation and the training")
    p.add_argument("--device", default="auto", help="torch device: 'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:N'")
    p.add_argument("--num-threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--inform-config", default="{}", help="JSON dict of extra DeepzInformer options")
    return p


def _parse(argv: list[str] | None) -> argparse.Namespace:
    return _parser().parse_args(argv)


def _rail_file(relative: str) -> str:
    """Path of a file pz-rail-base ships (the DC2 test files)."""
    from rail.utils.path_utils import find_rail_file

    return find_rail_file(relative)


def _input_problem(option: str, path: str) -> str | None:
    """Why ``path`` (given as ``option``) cannot be read, or None."""
    if not os.path.exists(path):
        return f"{option}: file '{path}' does not exist"
    if not os.path.isfile(path):
        return f"{option}: '{path}' is not a file"
    if not os.access(path, os.R_OK):
        return f"{option}: file '{path}' is not readable (permission denied)"
    return None


def _checked_arguments(argv: list[str] | None) -> tuple[argparse.Namespace, str, str, dict]:
    """The arguments, the input paths and the extra informer options; a bad one exits with its name.

    Checked before anything is created: a typo must not leave an empty output folder behind.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    train_path = args.train or _rail_file(TRAIN_FILE)
    test_path = args.test or _rail_file(TEST_FILE)
    for option, path in (("--train", train_path), ("--test", test_path)):
        problem = _input_problem(option, path)
        if problem:
            parser.error(problem)
    try:
        inform_config = json.loads(args.inform_config)
    except json.JSONDecodeError as exc:
        parser.error(f"--inform-config: not valid JSON ({exc}): {args.inform_config!r}")
    if not isinstance(inform_config, dict):
        parser.error(f"--inform-config: a JSON dict is needed, got {args.inform_config!r}")
    return args, train_path, test_path, inform_config


def _simulate(args: argparse.Namespace) -> tuple[Any, float]:
    """Step 1: the simulations (None with ``--sims 0``) and the seconds taken."""
    from rail.creation.engines.deepz_sims import DeepzSimCreator

    t0 = time.time()
    if args.sims <= 0:
        print("[1/4] simulate: skipped (--sims 0: training from scratch)", flush=True)
        return None, 0.0
    print(f"[1/4] simulate: {args.sims} galaxies with DeepzSimCreator (ssp engine)", flush=True)
    creator = DeepzSimCreator.make_stage(name="simulate_deepz", n_samples=args.sims, seed=args.seed,
                                         output=os.path.join(args.output_dir, "deepz_sims.hdf5"))
    return creator.sample().data, time.time() - t0


def _inform(args: argparse.Namespace, sims: Any, train_path: str, inform_config: dict, model_path: str,
            common: dict) -> float:
    """Step 2: pretrain on ``sims`` (if any) and fine-tune, write the model; returns the seconds taken."""
    import tables_io
    from rail.estimation.algos.deepz import DeepzInformer

    t0 = time.time()
    print(f"[2/4] inform: {'pretraining on the simulations, then fine-tuning' if sims else 'training'} "
          f"Deepz on {train_path}", flush=True)
    informer = DeepzInformer.make_stage(name="inform_deepz", model=model_path, seed=args.seed,
                                        **common, **inform_config)
    informer.inform(tables_io.read(train_path), sims=sims)
    return time.time() - t0


def _evaluate(output_dir: str, pdfs: Any, test_path: str) -> dict[str, float]:
    """RAIL's evaluator (DeepzEvaluator) on the PDF handle: its summary, metric name -> value."""
    import numpy as np
    from rail.core.data import TableHandle
    from rail.evaluation.deepz_evaluator import DeepzEvaluator

    evaluator = DeepzEvaluator.make_stage(
        name="evaluate_deepz", metrics=RAIL_METRICS, point_estimates=["zmode"],
        truth_point_estimates=["redshift"], hdf5_groupname="photometry", chunk_size=2000,
        output=os.path.join(output_dir, "deepz_eval.hdf5"),
        summary=os.path.join(output_dir, "deepz_eval_summary.hdf5"),
        single_distribution_summary=os.path.join(output_dir, "deepz_eval_pit.hdf5"),
    )
    summary = evaluator.evaluate(pdfs, TableHandle("truth", path=test_path))["summary"]()
    return {k: float(np.squeeze(v)) for k, v in summary.items()}


def _print_scores(scores: dict, rail_summary: dict[str, float]) -> None:
    """The table of scores: photoz_scores next to RAIL's evaluator."""
    rows = [
        ("sigma68", scores["sigma68"], rail_summary.get("point_stats_sigma68_zmode_redshift")),
        ("|dz|/(1+z) > 0.15 outliers", scores["outlier_frac"], rail_summary.get("point_outlier_frac_015_zmode_redshift")),
        ("sigma_IQR", scores["sigma_iqr"], rail_summary.get("point_stats_iqr_zmode_redshift")),
        ("bias (median dz)", scores["bias"], rail_summary.get("point_bias_zmode_redshift")),
        ("RAIL outlier rate (3 sigma_IQR)", None, rail_summary.get("point_outlier_rate_zmode_redshift")),
        ("PIT KS", scores["pit_ks"], None),
        ("PIT CvM", scores["pit_cvm"], None),
        ("PIT AD", scores["pit_ad"], None),
        ("CDE loss (grid 0-3 | RAIL: 0-2.5)", scores["cde_loss"], rail_summary.get("cdeloss_redshift")),
    ]
    print(f"\nDeepz on {scores['n']} galaxies (simulate {scores['simulate_seconds']:.0f} s, inform "
          f"{scores['inform_seconds']:.0f} s, estimate {scores['estimate_seconds']:.1f} s, "
          f"{scores['galaxies_per_second']:,.0f} galaxies/s)")
    print(f"{'metric':34s} {'photoz_scores':>14s} {'RAIL evaluator':>15s}")
    for name, ours, rails in rows:
        a = "" if ours is None else f"{ours:.4f}"
        b = "" if rails is None else f"{rails:.4f}"
        print(f"{name:34s} {a:>14s} {b:>15s}")


def main(argv: list[str] | None = None) -> dict:
    """Run inform -> estimate -> evaluate and print the scores; returns them."""
    args, train_path, test_path, inform_config = _checked_arguments(argv)
    import numpy as np
    import tables_io
    from rail.core.data import TableHandle
    from rail.estimation.algos.deepz import DeepzEstimator

    from rail.deepz.metrics import photoz_scores

    os.makedirs(args.output_dir, exist_ok=True)
    model_path = os.path.join(args.output_dir, "deepz_model.npz")
    pdf_path = os.path.join(args.output_dir, "deepz_pdfs.hdf5")
    common = dict(hdf5_groupname="photometry", device=args.device, num_threads=args.num_threads)
    sims, t_simulate = _simulate(args)
    t_inform = _inform(args, sims, train_path, inform_config, model_path, common)

    print(f"[3/4] estimate: PDFs for {test_path}", flush=True)
    t0 = time.time()
    estimator = DeepzEstimator.make_stage(name="estimate_deepz", model=model_path, output=pdf_path,
                                          chunk_size=100_000, **common)
    ens = estimator.estimate(TableHandle("test", path=test_path)).data
    t_estimate = time.time() - t0

    print("[4/4] evaluate: RAIL evaluator (DeepzEvaluator) and photoz_scores", flush=True)
    ztrue = np.asarray(tables_io.read(test_path)["photometry"]["redshift"], dtype=float)
    rail_summary = _evaluate(args.output_dir, estimator.get_handle("output"), test_path)
    scores = photoz_scores(ens, ztrue)
    scores.update(simulate_seconds=t_simulate, inform_seconds=t_inform, estimate_seconds=t_estimate,
                  galaxies_per_second=len(ztrue) / t_estimate, rail_evaluator=rail_summary)
    with open(os.path.join(args.output_dir, "scores.json"), "w") as f:
        json.dump(scores, f, indent=2)
    _print_scores(scores, rail_summary)
    print(f"\nwritten: {model_path}, {pdf_path}, {os.path.join(args.output_dir, 'scores.json')}")
    return scores


if __name__ == "__main__":
    main()
