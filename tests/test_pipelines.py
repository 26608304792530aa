"""The example ceci pipelines, run end to end with the ``ceci`` command on small DC2 subsets.

The committed ``examples/*.yml`` pairs are (1) checked to be what ``write_pipeline`` produces and
(2) run as they are, with a small stage config (``small_config``: SMALL_SETTINGS) and 1,000-row
subsets of the DC2 files written under the names the examples read (``data/...``).
The comparison table is then recomputed from the written PDF files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tables_io
import yaml

from rail.pipelines.estimation.deepz_pipeline import SMALL_SETTINGS, dc2_files, small_config, write_pipeline

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(os.path.dirname(HERE), "examples")
N_TRAIN, N_TEST = 1000, 1000
COMPARED = ["deepz", "fzboost", "gpz", "knn"]


def _subset(src: str, dst: str, n: int, seed: int) -> None:
    table = tables_io.read(src)["photometry"]
    rows = np.sort(np.random.default_rng(seed).choice(len(table["redshift"]), n, replace=False))
    tables_io.write({"photometry": {k: np.asarray(v)[rows] for k, v in table.items()}}, dst)


def _read_yaml(path: str) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder with data/ holding 1,000-row subsets of the DC2 training and validation files."""
    root = tmp_path_factory.mktemp("pipelines")
    os.makedirs(root / "data")
    files = dc2_files()
    for (tag, src), seed in zip(files.items(), (1, 2)):
        _subset(src, str(root / "data" / os.path.basename(src)), N_TRAIN if tag == "input_train" else N_TEST, seed)
    return root


def run_example(workdir, stem: str, threads: int | None = None) -> str:
    """Copy examples/<stem>.yml + config into ``workdir/stem``, shrink the config, run ceci; returns out dir."""
    folder = workdir / stem
    folder.mkdir()
    os.symlink(workdir / "data", folder / "data")
    shutil.copy(os.path.join(EXAMPLES, f"{stem}.yml"), folder / f"{stem}.yml")
    small_config(os.path.join(EXAMPLES, f"{stem}_config.yml"), str(folder / "small_config.yml"))
    if threads is not None:  # one-thread stages (no OpenMP oversubscription), two independent ones at once
        pipe = _read_yaml(str(folder / f"{stem}.yml"))
        for stage in pipe["stages"]:
            stage["threads_per_process"] = threads
        pipe["site"].update(max_threads=threads, max_processes=2)
        with open(folder / f"{stem}.yml", "w") as fh:
            yaml.safe_dump(pipe, fh, sort_keys=False)
    ceci = shutil.which("ceci") or os.path.join(os.path.dirname(sys.executable), "ceci")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([ceci, f"{stem}.yml", "config=small_config.yml"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=900)
    logs = ""
    if proc.returncode != 0:
        for name in sorted(os.listdir(folder / "logs")) if os.path.isdir(folder / "logs") else []:
            with open(folder / "logs" / name) as fh:
                logs += f"\n--- {name}\n" + fh.read()[-3000:]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + logs
    return str(folder / _read_yaml(str(folder / f"{stem}.yml"))["output_dir"])


@pytest.mark.parametrize("which,stem", [("deepz", "deepz_pipeline"), ("comparison", "comparison_pipeline")])
def test_examples_are_what_write_pipeline_writes(tmp_path, which, stem):
    """examples/<stem>.yml pair == write_pipeline(...) with the inputs under data/.

    The pipeline files must be identical. In the stage configs every committed value must be the current
    one and every committed key a current option (ceci accepts unknown keys silently); options added to
    a stage since the examples were written may be missing (their defaults apply). Regenerate with
    ``cd examples && python -m rail.pipelines.estimation.deepz_pipeline write deepz deepz_pipeline.yml
    --train data/test_dc2_training_9816.hdf5 --test data/test_dc2_validation_9816.hdf5`` (and
    ``comparison comparison_pipeline.yml``).
    """
    name = "DeepzPipeline" if which == "deepz" else "DeepzComparisonPipeline"
    inputs = dict(input_train="data/test_dc2_training_9816.hdf5", input_test="data/test_dc2_validation_9816.hdf5")
    yml, cfg = write_pipeline(name, str(tmp_path / f"{stem}.yml"), inputs)
    assert _read_yaml(yml) == _read_yaml(os.path.join(EXAMPLES, f"{stem}.yml"))
    written, committed = _read_yaml(cfg), _read_yaml(os.path.join(EXAMPLES, f"{stem}_config.yml"))
    assert sorted(written) == sorted(committed)
    for stage, options in committed.items():
        stale = sorted(set(options) - set(written[stage]))
        assert not stale, f"{stage}: options no longer exist: {stale}"
        changed = {k: (v, written[stage][k]) for k, v in options.items() if written[stage][k] != v}
        assert not changed, f"{stage}: committed vs current values {changed}"
    pipe = _read_yaml(yml)
    assert pipe["config"] == f"{stem}_config.yml"
    assert pipe["output_dir"] == ("out" if which == "deepz" else "out_comparison")
    assert all(s["nprocess"] == 1 for s in pipe["stages"])
    heavy = [s for s in pipe["stages"] if not s["name"].startswith("evaluate")]
    assert all(s["threads_per_process"] == 1 for s in heavy)  # default: one thread (busy/shared machines)
    assert all(committed[s]["device"] == "auto" for s in committed if s.endswith("_deepz") and "device" in committed[s])


def test_small_config_overrides(tmp_path):
    out = small_config(os.path.join(EXAMPLES, "deepz_pipeline_config.yml"), str(tmp_path / "small.yml"))
    cfg = _read_yaml(out)
    assert cfg["simulate_deepz"]["n_samples"] == SMALL_SETTINGS["simulate_deepz"]["n_samples"]
    assert cfg["inform_deepz"]["epochs_per_step"] == SMALL_SETTINGS["inform_deepz"]["epochs_per_step"]
    assert cfg["inform_deepz"]["weight_decay"] == 1e-5 and cfg["inform_deepz"]["seed"] == 87  # untouched keys kept


@pytest.fixture(scope="module")
def deepz_out(workdir):
    return run_example(workdir, "deepz_pipeline", threads=1)


@pytest.mark.pipelines
def test_deepz_pipeline_runs_with_ceci(deepz_out):
    import qp

    for name in ("output_simulate_deepz.hdf5", "model_inform_deepz.pkl", "output_estimate_deepz.hdf5",
                 "summary_evaluate_deepz.hdf5", "single_distribution_summary_evaluate_deepz.hdf5"):
        assert os.path.getsize(os.path.join(deepz_out, name)) > 0, name
    sims = tables_io.read(os.path.join(deepz_out, "output_simulate_deepz.hdf5"))["photometry"]
    assert len(sims["redshift"]) == SMALL_SETTINGS["simulate_deepz"]["n_samples"]
    ens = qp.read(os.path.join(deepz_out, "output_estimate_deepz.hdf5"))
    assert ens.npdf == N_TEST
    zmode = np.asarray(ens.ancil["zmode"]).ravel()
    odds = np.asarray(ens.ancil["odds"]).ravel()
    assert np.all(np.isfinite(zmode)) and np.all((zmode >= 0) & (zmode <= 3.5))
    assert np.all((odds >= 0) & (odds <= 1))
    summary = {k: float(np.squeeze(v)) for k, v in
               tables_io.read(os.path.join(deepz_out, "summary_evaluate_deepz.hdf5")).items()}
    # small networks trained briefly on 1,000 galaxies: loose sanity bounds only
    assert 0.0 < summary["point_stats_sigma68_zmode_redshift"] < 0.3
    assert 0.0 <= summary["point_outlier_frac_015_zmode_redshift"] < 0.4
    assert np.isfinite(summary["cdeloss_redshift"]) and summary["cdeloss_redshift"] < 0
    pit = qp.read_dict(os.path.join(deepz_out, "single_distribution_summary_evaluate_deepz.hdf5"))
    assert pit["pit_redshift"].npdf == 1


@pytest.fixture(scope="module")
def comparison_out(workdir):
    for mod in ("rail.estimation.algos.flexzboost", "rail.estimation.algos.k_nearneigh",
                "rail.estimation.algos.gpz"):
        pytest.importorskip(mod)
    return run_example(workdir, "comparison_pipeline", threads=1)


@pytest.mark.pipelines
def test_comparison_pipeline_runs_with_ceci(comparison_out):
    from rail.deepz.comparison import find_algorithms, read_summaries

    assert find_algorithms(comparison_out) == ["deepz", "fzboost", "gpz", "knn"]
    summaries = read_summaries(comparison_out)
    assert sorted(summaries) == sorted(COMPARED)
    for algo, summary in summaries.items():
        assert 0.0 < summary["point_stats_sigma68_zmode_redshift"] < (0.3 if algo == "deepz" else 0.5), algo
        assert np.isfinite(summary["cdeloss_redshift"]), algo


@pytest.mark.pipelines
def test_comparison_numbers_are_recomputed_from_files(comparison_out, workdir, tmp_path):
    """The table comes from the PDF files: it matches a direct recomputation and the evaluator's
    summaries, and changes when a PDF file changes."""
    import qp

    from rail.deepz.comparison import comparison_table, markdown_table, read_summaries
    from rail.deepz.metrics import outlier_fraction, sigma68

    truth = str(workdir / "data" / "test_dc2_validation_9816.hdf5")
    table = comparison_table(comparison_out, truth)
    zspec = tables_io.read(truth)["photometry"]["redshift"]
    summaries = read_summaries(comparison_out)
    for algo in COMPARED:
        ens = qp.read(os.path.join(comparison_out, f"output_estimate_{algo}.hdf5"))
        zphot = np.asarray(ens.ancil["zmode"]).ravel()
        assert table[algo]["n"] == N_TEST
        assert table[algo]["sigma68"] == pytest.approx(sigma68(zphot, zspec), abs=1e-12)
        assert table[algo]["outlier_frac"] == pytest.approx(outlier_fraction(zphot, zspec), abs=1e-12)
        # the evaluator (t-digest accumulation) agrees to digest accuracy
        s = summaries[algo]
        assert table[algo]["sigma68"] == pytest.approx(s["point_stats_sigma68_zmode_redshift"], rel=0.05)
        assert table[algo]["outlier_frac"] == pytest.approx(s["point_outlier_frac_015_zmode_redshift"], abs=0.01)
        assert table[algo]["sigma68_odds50"] <= table[algo]["sigma68"] * 1.2
    assert "| deepz |" in markdown_table(table)

    # a changed PDF file gives changed numbers: nothing is cached or copied
    copy = tmp_path / "out"
    shutil.copytree(comparison_out, copy)
    ens = qp.read(str(copy / "output_estimate_knn.hdf5"))
    shifted = np.asarray(ens.ancil["zmode"]).ravel() + 0.2
    ens.set_ancil(dict(zmode=shifted))
    ens.write_to(str(copy / "output_estimate_knn.hdf5"))
    changed = comparison_table(str(copy), truth, algorithms=["knn"])
    assert changed["knn"]["sigma68"] != pytest.approx(table["knn"]["sigma68"])
    assert changed["knn"]["sigma68"] == pytest.approx(sigma68(shifted, zspec), abs=1e-12)


@pytest.mark.pipelines
def test_comparison_notebook_on_the_pipeline_outputs(comparison_out, workdir, tmp_path):
    """examples/04_Deepz_comparison.ipynb runs on the outputs of the comparison pipeline above."""
    pytest.importorskip("nbclient")
    pytest.importorskip("matplotlib")
    from nbrun import run_notebook

    truth = str(workdir / "data" / "test_dc2_validation_9816.hdf5")
    nb = run_notebook("04_Deepz_comparison.ipynb", str(tmp_path),
                      env=dict(DEEPZ_COMPARISON_OUTPUT=comparison_out, DEEPZ_COMPARISON_TRUTH=truth))
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "| deepz |" in text and "| gpz |" in text


def test_command_line_write_and_link_data(tmp_path, capsys):
    from rail.pipelines.estimation.deepz_pipeline import main

    main(["link-data", str(tmp_path / "data")])
    linked = sorted(os.listdir(tmp_path / "data"))
    assert linked == ["test_dc2_training_9816.hdf5", "test_dc2_validation_9816.hdf5"]
    assert len(tables_io.read(str(tmp_path / "data" / linked[0]))["photometry"]["redshift"]) == 10225
    main(["write", "deepz", str(tmp_path / "p" / "d.yml"), "--small", "--device", "cpu", "--n-sims", "123"])
    pipe, cfg = _read_yaml(str(tmp_path / "p" / "d.yml")), _read_yaml(str(tmp_path / "p" / "d_config.yml"))
    assert pipe["config"] == "d_config.yml"
    assert cfg["simulate_deepz"]["n_samples"] == SMALL_SETTINGS["simulate_deepz"]["n_samples"]  # --small wins
    assert cfg["inform_deepz"]["device"] == "cpu" and cfg["estimate_deepz"]["device"] == "cpu"
    assert all(s["threads_per_process"] == 1 for s in pipe["stages"])  # --threads defaults to 1, written out
    assert pipe["site"]["max_threads"] == 2
    assert "wrote" in capsys.readouterr().out
    main(["write", "deepz", str(tmp_path / "p" / "t.yml"), "--threads", "3"])  # a dedicated machine
    pipe = _read_yaml(str(tmp_path / "p" / "t.yml"))
    heavy = [s for s in pipe["stages"] if not s["name"].startswith("evaluate")]
    assert heavy and all(s["threads_per_process"] == 3 for s in heavy)
    assert pipe["site"]["max_threads"] == 3


def test_nprocess_reaches_the_deepz_inform_and_estimate_stages(tmp_path):
    yml, _ = write_pipeline("DeepzPipeline", str(tmp_path / "mpi.yml"), nprocess=2, max_threads=4)
    stages = {st["name"]: st for st in _read_yaml(yml)["stages"]}
    assert stages["estimate_deepz"]["nprocess"] == 2 and stages["inform_deepz"]["nprocess"] == 2
    assert stages["simulate_deepz"]["nprocess"] == 1
    assert _read_yaml(yml)["site"]["max_threads"] == 4


def test_write_target_connects_the_test_photometry(tmp_path):
    """write --target: the informer trains toward input_test (its photometry; the estimator reads the same file)."""
    from rail.pipelines.estimation.deepz_pipeline import main

    main(["write", "deepz", str(tmp_path / "t.yml"), "--target", "--small"])
    stages = {st["name"]: st for st in _read_yaml(str(tmp_path / "t.yml"))["stages"]}
    inform = stages["inform_deepz"]
    assert inform["classname"] == "DeepzTargetTransferInformer"
    assert inform["aliases"]["target"] == stages["estimate_deepz"]["aliases"]["input"] == "input_test"
    plain = {st["name"]: st for st in _read_yaml(write_pipeline("DeepzPipeline", str(tmp_path / "p.yml"))[0])["stages"]}
    assert plain["inform_deepz"]["classname"] == "DeepzTransferInformer"
    assert "target" not in plain["inform_deepz"]["aliases"]
    with pytest.raises(SystemExit, match="deepz pipeline only"):
        main(["write", "comparison", str(tmp_path / "c.yml"), "--target"])
