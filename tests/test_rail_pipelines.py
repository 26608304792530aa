"""Deepz in pz-rail-pipelines' own multi-estimator pipelines, run with ceci.

``PzPipeline`` (pz_all: inform + estimate + evaluate per algorithm), ``InformPipeline`` then
``EstimatePipeline`` (models read from a folder under estimate_all's names), and the
``EvaluationPipeline``, on small DC2 subsets written as flat tables under the ``rubin`` catalog tag's
column names (what pz_all expects). The tag applied here reaches the ceci subprocesses through the
written stage config (pz_all writes the tag's bands, sentinels and redshift column into every stage).
"""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tables_io
import yaml

pytest.importorskip("rail.pipelines.estimation.pz_all",
                    reason="pz-rail-pipelines is not installed (pip install 'pz-rail-pipelines>=2.0.2')")

# pylint: disable=wrong-import-position,import-outside-toplevel
import rail.deepz
from rail.deepz.model_io import load_model
from rail.pipelines.estimation.deepz_pipeline import SMALL_SETTINGS, small_config
from rail.utils.path_utils import find_rail_file

pytestmark = pytest.mark.pipelines

N_TRAIN, N_TEST = 600, 600
TAG = "rubin"
ZGRID = np.linspace(-2.0, 6.0, 16001)
# stage options for a quick run (the written configs are edited with small_config)
SMALL = {name: SMALL_SETTINGS[name] for name in ("inform_deepz", "inform_knn")}
# the shared options a catalog tag sets
TAG_KEYS = ("bands", "err_bands", "ref_band", "redshift_col", "mag_limits", "nondetect_val",
            "nonobserved_val")


@pytest.fixture(scope="module")
def rubin_tag():
    """The ``rubin`` catalog tag, active for this module; RAIL's shared defaults restored afterwards."""
    from rail.core.common_params import SHARED_PARAMS, set_param_defaults
    from rail.utils import catalog_utils
    from rail.utils.catalog_tag import CatalogTag

    saved = {k: dict.get(SHARED_PARAMS, k).default for k in SHARED_PARAMS}
    catalog_utils.apply_defaults(TAG)
    yield catalog_utils.get_active_tag().config
    set_param_defaults(**saved)
    CatalogTag._active_tag = None  # pylint: disable=protected-access


def _renamed_copies(src_dir, src_name: str, dst_dir, dst_name: str, keys):
    """Copy ``src_dir/src_name.format(key)`` to ``dst_dir/dst_name.format(key)`` for every key (the
    file names one pz-rail-pipelines pipeline writes and the next one reads differ); returns ``dst_dir``."""
    os.makedirs(dst_dir)
    for key in keys:
        shutil.copyfile(os.path.join(src_dir, src_name.format(key)), os.path.join(dst_dir, dst_name.format(key)))
    return dst_dir

def _rubin_table(rel: str, n: int, rng) -> dict:
    """``n`` random rows of a DC2 test file, renamed to the rubin tag's columns, 99 -> NaN (nondetect_val)."""
    table = tables_io.read(find_rail_file(rel))["photometry"]
    idx = np.sort(rng.choice(len(table["redshift"]), n, replace=False))
    out = {"true_redshift": np.asarray(table["redshift"])[idx]}
    for band in "ugrizy":
        mag = np.array(table[f"mag_{band}_lsst"])[idx].astype(np.float32)
        mag[mag == 99.0] = np.nan
        out[f"LSST_obs_{band}"] = mag
        out[f"LSST_obs_{band}_err"] = np.array(table[f"mag_err_{band}_lsst"])[idx].astype(np.float32)
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Flat hdf5 files (pz_all reads ``hdf5_groupname=''``): paths by input name (input_train, input_test)."""
    folder = tmp_path_factory.mktemp("rail_pipelines_data")
    rng = np.random.default_rng(2026)
    paths = {}
    for key, rel, n in (("input_train", "examples_data/testdata/test_dc2_training_9816.hdf5", N_TRAIN),
                        ("input_test", "examples_data/testdata/test_dc2_validation_9816.hdf5", N_TEST)):
        paths[key] = str(folder / f"{key}.hdf5")
        tables_io.write(_rubin_table(rel, n, rng), paths[key])
    return paths


def _algorithms(*keys: str) -> dict:
    from rail.utils.algo_library import PZ_ALGORITHMS

    return {key: rail.deepz.PZ_ALGORITHM if key == "deepz" else PZ_ALGORITHMS[key] for key in keys}


def _tag_overrides(cfg: dict) -> dict:
    """The active tag's values of the shared options, for the stages that are not Deepz's.

    Stages declared with ``SharedParams.copy_param`` (e.g. TrainZInformer's ``redshift_col``) copy the
    shared defaults when their module is imported: imported before the tag was applied (by other tests in
    the same session), they keep RAIL's defaults. Deepz's stages use ``SHARED_PARAMS`` itself and always
    follow the tag, so they are left alone (and checked).
    """
    from rail.core.common_params import SHARED_PARAMS

    return {name: {k: dict.get(SHARED_PARAMS, k).default for k in TAG_KEYS if k in sec}
            for name, sec in cfg.items() if isinstance(sec, dict) and not name.endswith("_deepz")}


def _write(pipe, folder, name: str, inputs: dict) -> str:
    """initialize + save (build_and_write is broken with ceci 2.7); small settings; returns the yml path."""
    os.makedirs(folder, exist_ok=True)
    old = os.getcwd()
    os.chdir(folder)
    try:
        pipe.initialize(inputs, dict(output_dir="out", log_dir="logs", resume=False), None)
        pipe.save(f"{name}.yml")
        cfg_path = f"{name}_config.yml"
        with open(cfg_path) as fh:
            cfg = yaml.safe_load(fh)
        overrides = _tag_overrides(cfg)
        for stage, opts in SMALL.items():
            overrides[stage] = {**overrides.get(stage, {}), **opts}
        small_config(cfg_path, cfg_path, overrides)
    finally:
        os.chdir(old)
    return os.path.join(folder, f"{name}.yml")


def _ceci(yml: str) -> str:
    """Run ``ceci <yml>`` in its folder (one thread per stage); returns the output folder."""
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    folder = os.path.dirname(yml)
    res = subprocess.run(["ceci", os.path.basename(yml)], cwd=folder, env=env, capture_output=True, text=True,
                         timeout=900, check=False)
    if res.returncode != 0:
        logs = ""
        for log in sorted(os.listdir(os.path.join(folder, "logs"))):
            with open(os.path.join(folder, "logs", log)) as fh:
                logs += f"\n--- {log}\n" + fh.read()[-3000:]
        pytest.fail(f"ceci {yml} failed ({res.returncode}):\n{res.stdout[-3000:]}\n"
                    f"{res.stderr[-3000:]}{logs}")
    return os.path.join(folder, "out")


def _check_deepz_pdfs(path: str, n: int) -> None:
    import qp

    ens = qp.read(path)
    assert ens.npdf == n
    pdfs = ens.pdf(ZGRID)  # Gaussian mixtures: normalised on the real line, a little mass below z = 0
    assert np.all(np.isfinite(pdfs)) and np.all(pdfs >= 0)
    np.testing.assert_allclose(np.trapezoid(pdfs, ZGRID, axis=1), 1.0, atol=1e-4)
    assert np.all(np.trapezoid(pdfs[:, ZGRID >= 0], ZGRID[ZGRID >= 0], axis=1) > 0.9)
    zmode = np.asarray(ens.ancil["zmode"]).ravel()
    assert np.all(np.isfinite(zmode)) and np.all((zmode >= 0) & (zmode <= 3.5))


def _summary(path: str) -> dict:
    return {k: float(np.ravel(v)[0]) for k, v in tables_io.read(path).items()}


def test_algorithm_entry_matches_pz_algorithms():
    """rail.deepz.PZ_ALGORITHM has the keys of pz-rail-pipelines' entries and names loadable stages."""
    import ceci
    from rail.utils.algo_library import PZ_ALGORITHMS

    assert set(rail.deepz.PZ_ALGORITHM) == set(PZ_ALGORITHMS["knn"]) == {"Inform", "Estimate", "Module"}
    entry = rail.deepz.PZ_ALGORITHM
    assert ceci.PipelineStage.get_stage(entry["Inform"], entry["Module"]) is rail.deepz.DeepzInformer
    assert ceci.PipelineStage.get_stage(entry["Estimate"], entry["Module"]) is rail.deepz.DeepzEstimator
    assert rail.deepz.DeepzInformer.outputs[0][1].suffix == "pkl"  # the model name RAIL's tools expect


def test_pz_all_pipeline(rubin_tag, data, tmp_path):
    """PzPipeline with deepz, knn and train_z: models, PDFs and evaluator summaries for each."""
    from rail.core.common_params import SHARED_PARAMS
    from rail.pipelines.estimation.pz_all import PzPipeline

    algos = _algorithms("deepz", "knn", "train_z")
    yml = _write(PzPipeline(algorithms=algos), str(tmp_path), "pz_all", data)
    with open(os.path.join(tmp_path, "pz_all_config.yml")) as fh:
        cfg = yaml.safe_load(fh)
    # the tag's values are in the config (Deepz's sections as written), so they reach the ceci subprocesses
    for key in TAG_KEYS:
        want = dict.get(SHARED_PARAMS, key).default
        got = cfg["inform_deepz"][key]
        both_nan = isinstance(want, float) and np.isnan(want) and np.isnan(got)
        assert both_nan or got == want, key
    assert cfg["inform_deepz"]["bands"] == [f"LSST_obs_{b}" for b in "ugrizy"]
    assert cfg["inform_deepz"]["redshift_col"] == "true_redshift" == rubin_tag["redshift_col"]
    assert np.isnan(cfg["inform_deepz"]["nondetect_val"])
    assert cfg["inform_deepz"]["epochs_per_step"] == SMALL_SETTINGS["inform_deepz"]["epochs_per_step"]
    out = _ceci(yml)
    for key in algos:
        for name in (f"model_inform_{key}.pkl", f"output_estimate_{key}.hdf5", f"summary_evaluate_{key}.hdf5",
                     f"single_distribution_summary_evaluate_{key}.hdf5"):
            assert os.path.getsize(os.path.join(out, name)) > 0, name
    model = load_model(os.path.join(out, "model_inform_deepz.pkl"))  # a numpy archive under RAIL's name
    assert model["meta"]["bands"] == cfg["inform_deepz"]["bands"]
    _check_deepz_pdfs(os.path.join(out, "output_estimate_deepz.hdf5"), N_TEST)
    summary = _summary(os.path.join(out, "summary_evaluate_deepz.hdf5"))
    assert summary["point_outlier_rate_zmode_true_redshift"] < 0.5
    assert np.isfinite(summary["cdeloss_true_redshift"])


def test_inform_estimate_evaluate_pipelines(rubin_tag, data, tmp_path):
    """InformPipeline -> models folder (estimate_all's names) -> EstimatePipeline -> EvaluationPipeline."""
    from rail.pipelines.estimation.estimate_all import EstimatePipeline
    from rail.pipelines.estimation.inform_all import InformPipeline
    from rail.pipelines.evaluation.evaluate_all import EvaluationPipeline

    algos = _algorithms("deepz", "train_z")
    inform_out = _ceci(_write(InformPipeline(algorithms=algos), str(tmp_path / "inform"), "inform",
                              dict(input=data["input_train"])))
    # estimate_all reads <models_dir>/inform_model_<key>.pkl
    models_dir = _renamed_copies(inform_out, "model_inform_{}.pkl", tmp_path / "models", "inform_model_{}.pkl", algos)

    estimate = EstimatePipeline(algorithms=algos, models_dir=str(models_dir))
    # EstimatePipeline adds model_<key> to its class-level default_input_dict: take just this run's inputs
    inputs = dict(input=data["input_test"],
                  **{f"model_{k}": estimate.default_input_dict[f"model_{k}"] for k in algos})
    assert inputs["model_deepz"] == str(models_dir / "inform_model_deepz.pkl")
    estimate_out = _ceci(_write(estimate, str(tmp_path / "estimate"), "estimate", inputs))
    _check_deepz_pdfs(os.path.join(estimate_out, "output_estimate_deepz.hdf5"), N_TEST)

    # evaluate_all reads <pdfs_dir>/estimate_output_<key>.hdf5
    pdfs_dir = _renamed_copies(estimate_out, "output_estimate_{}.hdf5", tmp_path / "pdfs", "estimate_output_{}.hdf5",
                               algos)
    evaluation = EvaluationPipeline(algorithms=algos, pdfs_dir=str(pdfs_dir))
    inputs = dict(truth=data["input_test"],
                  **{f"input_evaluate_{k}": evaluation.default_input_dict[f"input_evaluate_{k}"]
                     for k in algos})
    yml = _write(evaluation, str(tmp_path / "evaluate"), "evaluate", inputs)
    # evaluate_all hard-codes truth_point_estimates=['redshift']; the tag's column is true_redshift
    small_config(yml.replace(".yml", "_config.yml"), yml.replace(".yml", "_config.yml"),
                 {f"evaluate_{k}": dict(truth_point_estimates=[rubin_tag["redshift_col"]]) for k in algos})
    evaluate_out = _ceci(yml)
    for key in algos:
        summary = _summary(os.path.join(evaluate_out, f"summary_evaluate_{key}.hdf5"))
        assert np.isfinite(summary["point_bias_zmode_true_redshift"]), key
