"""RAIL's evaluator on Deepz output, as a RAIL user runs it, against KNN's output on the same galaxies.

Trains Deepz (stage defaults) and KNN (RAIL demo settings) on the DC2 training file, estimates the
validation file with each (Deepz once per ``--outputs`` value, ``network:n_output_components``: the
ensemble with every component (0) or merged to 20, 10 or 5, the compact network's 10 or merged to 5;
the estimation seconds, in this process, beside), then runs RAIL's ``SingleEvaluator`` with the metric set of pz-rail-pipelines' ``PzPipeline`` ('all' minus
its exclusions, limits [0, 3.5], point estimate zmode) at the default chunk size on every output, each
in a fresh process: wall seconds and peak RSS. PIT KS and CDE loss of each Deepz output come from
``rail.deepz.metrics.photoz_scores``. Run it on an idle machine: the timings are compared in one run.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import harness as H

# SingleEvaluator as PzPipeline configures it (pz-rail-pipelines 2.0.2, rail/pipelines/estimation/pz_all.py)
PZ_EXCLUDED = ["rmse", "ks", "kld", "cvm", "ad", "rbpe", "outlier"]
_EVALUATE = """
import sys
from rail.core.data import QPHandle, TableHandle
from rail.evaluation.single_evaluator import SingleEvaluator
pdfs, truth, out = sys.argv[1:4]
SingleEvaluator.make_stage(
    name="evaluate", metrics=["all"], exclude_metrics={excluded!r}, hdf5_groupname="photometry",
    limits=[0, 3.5], truth_point_estimates=["redshift"], point_estimates=["zmode"],
    output=out + "_out.hdf5", summary=out + "_summary.hdf5", single_distribution_summary=out + "_pit.hdf5",
).evaluate(QPHandle("pdfs", path=pdfs), TableHandle("truth", path=truth))
"""


def outputs(work: str, variants: list[tuple[str, int]], seed: int) -> tuple[dict[str, str], dict[str, dict],
                                                                          dict[str, float]]:
    """Estimate the DC2 validation file with KNN and with Deepz for each (network, n_output_components).

    Returns output files by label, the Deepz scores by label and the Deepz estimation seconds by label.
    """
    from rail.core.data import TableHandle
    from rail.deepz import DeepzEstimator, DeepzInformer, photoz_scores
    from rail.pipelines.estimation.deepz_pipeline import COMPARISON_ALGORITHMS

    train, test = H.dc2_paths()
    ztrue = H.read_table(test)["redshift"]
    files = {}
    knn = COMPARISON_ALGORITHMS["knn"]
    H.inform_and_estimate(*_knn_classes(knn), knn["inform_config"], knn["estimate_config"],
                          dict(train=train, test=test), work, "knn")
    files["KNN"] = os.path.join(work, "output_knn.hdf5")
    model = os.path.join(work, "deepz_model.npz")
    DeepzInformer.make_stage(name="inform_deepz", model=model, hdf5_groupname="photometry",
                             seed=seed).inform({"photometry": H.read_table(train)})
    scores, seconds = {}, {}
    for network, n in variants:
        label = f"Deepz {network}, n_output_components {n}"
        files[label] = os.path.join(work, f"output_deepz_{network}_{n}.hdf5")
        stage = DeepzEstimator.make_stage(name=f"estimate_deepz_{network}_{n}", model=model, hdf5_groupname="photometry",
                                          n_output_components=n, network=network, output=files[label])
        with H.timed() as t:
            ens = stage.estimate(TableHandle("test", path=test)).data
        seconds[label] = t["wall_s"]
        scores[label] = dict(photoz_scores(ens, ztrue), n_components=int(ens.objdata["weights"].shape[1]))
    return files, scores, seconds


def _knn_classes(spec: dict) -> tuple[type, type]:
    import importlib

    module = importlib.import_module(spec["module"])
    return getattr(module, spec["inform"]), getattr(module, spec["estimate"])


def evaluate(pdfs: str, work: str, label: str) -> dict[str, float]:
    """Run the evaluator on one output file in a fresh process: wall seconds and peak RSS [MiB]."""
    script = os.path.join(work, "evaluate.py")
    with open(script, "w") as fh:
        fh.write(_EVALUATE.format(excluded=PZ_EXCLUDED))
    out = os.path.join(work, "eval_" + "".join(c if c.isalnum() else "_" for c in label))
    t0 = time.perf_counter()
    status, rss = H.run_process([sys.executable, script, pdfs, H.dc2_paths()[1], out], cwd=work)
    if status != 0:
        raise RuntimeError(f"the evaluator failed on {pdfs} (exit status {status})")
    return dict(seconds=time.perf_counter() - t0, peak_rss_mib=rss)


def main() -> None:
    ap = H.parser(__doc__)
    ap.add_argument("--outputs", default="ensemble:0,ensemble:20,ensemble:10,ensemble:5,compact:0,compact:5",
                    help="Deepz outputs, network:n_output_components, comma separated (0: every component)")
    ap.add_argument("--seed", type=int, default=87)
    args = ap.parse_args()
    H.set_threads(args.threads)
    spec = "ensemble:0,compact:0" if args.quick else args.outputs
    variants = [(v.split(":")[0], int(v.split(":")[1])) for v in H.csv_list(spec)]
    with tempfile.TemporaryDirectory() as work:
        files, scores, estimate_s = outputs(work, variants, args.seed)
        load = H.load_average()
        runs = {label: evaluate(path, work, label) for label, path in files.items()}
    knn = runs["KNN"]
    full = scores.get("Deepz ensemble, n_output_components 0")
    rows = [["KNN", "", "", H.fmt(knn["seconds"], ".1f"), "1.0", H.fmt(knn["peak_rss_mib"] / 1024, ".2f"), "", ""]]
    for label, run in runs.items():
        if label == "KNN":
            continue
        s = scores[label]
        change = "" if full is None else (f" ({s['pit_ks'] / full['pit_ks'] - 1:+.1%})",
                                         f" ({s['cde_loss'] / full['cde_loss'] - 1:+.2%})")
        rows.append([label, H.fmt(estimate_s[label], ".2f"), str(s["n_components"]),
                     H.fmt(run["seconds"], ".1f"), H.fmt(run["seconds"] / knn["seconds"], ".1f"),
                     H.fmt(run["peak_rss_mib"] / 1024, ".2f"), H.fmt(s["pit_ks"]) + (change[0] if change else ""),
                     H.fmt(s["cde_loss"], ".3f") + (change[1] if change else "")])
    note = ("SingleEvaluator with PzPipeline's metrics ('all' minus " + ", ".join(PZ_EXCLUDED)
            + "), limits [0, 3.5], default chunk size, one fresh process per output; the 20,449 DC2 validation "
            "galaxies; PIT KS and CDE loss (grid 0-3) from photoz_scores, change against the ensemble's every "
            "component in brackets; estimate [s]: the Deepz stage in this process, file in, file out.")
    H.write_result("bench_evaluator", "RAIL's evaluator on Deepz and KNN output",
                   [H.table("Evaluation time and memory", ["output", "estimate [s]", "components", "evaluate [s]",
                                                           "x KNN", "peak RSS [GB]", "PIT KS", "CDE loss"], rows, note)],
                   dict(runs=runs, scores=scores, estimate_s=estimate_s, load_average=load, threads=args.threads),
                   args.output)


if __name__ == "__main__":
    main()
