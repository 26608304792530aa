"""Training toward a target sample: density ratios, weights, coverage, weighted calibration, the stages."""

import numpy as np
import pytest
import torch

from rail.deepz import DeepzEstimator, DeepzInformer
from rail.deepz import features as feat
from rail.deepz.calibration import Calibration, held_out_scores, pit_cvm
from rail.deepz.density_ratio import DensityRatio, clipped_weights, fit_density_ratio
from rail.deepz.model_io import load_model, save_model
from rail.deepz.options import inform_options
from rail.deepz.target_shift import coverage_from_log_ratio, fit_target_shift
from rail.deepz.training_data import prepare_training_data
from rail.estimation.algos.deepz import DeepzTargetInformer, DeepzTargetTransferInformer


@pytest.fixture(scope="module")
def dc2_features(dc2_train):
    """Scaled network features (N, F), the i magnitudes and redshifts of the DC2 training file."""
    data = prepare_training_data(dc2_train, inform_options())
    mean, std = feat.fit_scaler(data.features)
    return (data.features - mean) / std, data.features[:, -1], data.redshift


def _halves(n, seed=0):
    perm = np.random.default_rng(seed).permutation(n)
    return perm[: n // 2], perm[n // 2 :]


def test_one_population_gives_weights_of_one(dc2_features, one_torch_thread):
    """Two random halves of one catalogue: the classifier finds nothing, every weight within 5% of 1."""
    x, _, _ = dc2_features
    a, b = _halves(len(x))
    shift = fit_target_shift(x[a], x[b], clip=5.0, seed=3)
    np.testing.assert_allclose(shift.spec_weights, 1.0, atol=0.05)
    assert shift.uncovered < 0.01
    assert np.all(shift.coverage(x[b][:500]) > 0.99)


def test_weights_normalise_and_follow_the_shift(dc2_features, one_torch_thread):
    """A bright spec-z selection against the whole catalogue: mean-1 weights rising with magnitude, clipped."""
    x, imag, _ = dc2_features
    a, b = _halves(len(x))
    bright = a[imag[a] < 23.5]
    shift = fit_target_shift(x[bright], x[b], clip=5.0, seed=3)
    w = shift.spec_weights
    assert w.mean() == pytest.approx(1.0)
    assert np.median(w[imag[bright] > 23.0]) > 1.2 * np.median(w[imag[bright] < 22.0])
    # coverage: high inside the spec-z sample's reach, low beyond it
    cov = shift.coverage(x[b])
    assert cov[imag[b] < 23.0].mean() > 0.95
    assert cov[imag[b] > 24.5].mean() < 0.1
    assert 0.5 < shift.uncovered < 0.9  # about 3/4 of the file is fainter than 23.5


def test_density_ratio_is_seeded_and_round_trips(dc2_features, one_torch_thread):
    x, imag, _ = dc2_features
    ref, tgt = x[imag < 23.5][:800], x[:800]
    r1, oof1, _ = fit_density_ratio(ref, tgt, seed=5)
    r2, oof2, _ = fit_density_ratio(ref, tgt, seed=5)
    np.testing.assert_array_equal(oof1, oof2)
    back = DensityRatio.from_arrays(r1.to_arrays("coverage"), "coverage", x.shape[1])
    np.testing.assert_allclose(back.log_ratio(x[:100]), r1.log_ratio(x[:100]))
    with pytest.raises(ValueError, match="shapes"):
        fit_density_ratio(ref, tgt[:, :3], seed=5)
    with pytest.raises(ValueError, match=r"expected features of shape \(N, 13\)"):
        r1.log_ratio(x[:10, :5])


def test_clipped_weights_and_coverage_formulas():
    log_r = np.log([0.5, 1.0, 4.0, 50.0])
    w = clipped_weights(log_r, clip=5.0)
    np.testing.assert_allclose(w, np.array([0.5, 1.0, 4.0, 5.0]) / 2.625)
    np.testing.assert_allclose(coverage_from_log_ratio(log_r, 5.0), [1.0, 1.0, 1.0, 0.1])


def test_weighted_pit_cvm():
    rng = np.random.default_rng(2)
    pit = rng.random(400) ** 1.5
    assert pit_cvm(pit, np.full(400, 3.0)) == pytest.approx(pit_cvm(pit))
    # integer weights count like repeated rows (up to the n_eff factor)
    reps = rng.integers(1, 4, 400)
    repeated = np.repeat(pit, reps)
    n_eff = reps.sum() ** 2 / np.sum(reps**2)
    assert pit_cvm(pit, reps) / n_eff == pytest.approx(pit_cvm(repeated) / reps.sum(), rel=1e-9)


def test_unit_row_weights_change_nothing(one_torch_thread):
    """train_ensemble with row weights of 1 is bit-identical to training without weights."""
    from rail.deepz.building import build_network
    from rail.deepz.networks import Architecture
    from rail.deepz.training import TrainConfig, ensemble_splits, train_ensemble

    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.normal(size=(300, 5)).astype(np.float32))
    z = torch.as_tensor(rng.random(300).astype(np.float32))
    ratios = torch.zeros(300, 2)
    arch = Architecture(n_inputs=5, n_bands=2, encoder_layers=[8], decoder_layers=[8], mdn_layers=[8],
                        latent_dim=2, n_gaussians=2)
    cfg = TrainConfig(learning_rates=[1e-3], epochs_per_step=[3], batch_size=50, seed=1)
    splits = ensemble_splits(300, 1, 2, 1)
    states = []
    for weights in (None, torch.ones(300)):
        net = build_network(arch, 2, 1)
        res = train_ensemble(net, x, z, ratios, torch.ones(300, 2), splits, cfg, row_weights=weights)
        states.append((net.state_dict(), res.best_val_loss))
    for k in states[0][0]:
        torch.testing.assert_close(states[0][0][k], states[1][0][k], rtol=0, atol=0)
    np.testing.assert_array_equal(states[0][1], states[1][1])


@pytest.fixture(scope="module")
def bright_and_target(dc2_train):
    """1,200 bright (i < 23.5) training rows and the photometry of 3,000 other rows (no redshift)."""
    i = np.asarray(dc2_train["mag_i_lsst"])
    a, b = _halves(len(i), seed=1)
    spec = {k: np.asarray(v)[a][i[a] < 23.5][:1200] for k, v in dc2_train.items()}
    test = {k: np.asarray(v)[b][:3000] for k, v in dc2_train.items()}
    target = {k: v for k, v in test.items() if k != "redshift"}
    return spec, target, test


def test_informer_with_target_weights_calibrates_and_reports_coverage(tiny, bright_and_target, tmp_path,
                                                                       one_torch_thread):
    spec, target, test = bright_and_target
    inf = DeepzInformer.make_stage(name="inf_target", hdf5_groupname="", output_mode="return", checkpoint_dir="",
                                   **tiny())
    inf.inform(spec, target=target)
    model = inf.get_data("model")
    info = model["meta"]["target"]
    assert info["n_target"] == 3000 and info["weights"] and 0.5 < info["uncovered"] < 0.95
    assert any(k.startswith("coverage/") for k in model["arrays"])
    assert model["meta"]["calibration"]["scale_by_coverage"] is True  # target_width_by_coverage (default)
    path = str(tmp_path / "m.pkl")
    save_model(model, path)
    est = DeepzEstimator.make_stage(name="est_target", model=load_model(path), hdf5_groupname="",
                                    output_mode="return")
    ens = est.estimate(test).data
    cov = np.asarray(ens.ancil["coverage"]).ravel()
    i = test["mag_i_lsst"]
    assert np.all((cov >= 0) & (cov <= 1))
    assert cov[i < 23.0].mean() > 0.9 and cov[i > 24.5].mean() < 0.1
    # a model informed without a target reports unknown coverage
    plain = DeepzInformer.make_stage(name="inf_plain", hdf5_groupname="", output_mode="return", checkpoint_dir="",
                                     **tiny())
    plain.inform(spec)
    assert "scale_by_coverage" not in plain.get_data("model")["meta"]["calibration"]
    est2 = DeepzEstimator.make_stage(name="est_plain", model=plain.get_data("model"), hdf5_groupname="",
                                     output_mode="return")
    assert np.isnan(np.asarray(est2.estimate(test).data.ancil["coverage"])).all()


def test_target_from_the_spec_population_changes_nothing(tiny, dc2_train, one_torch_thread):
    """Spec-z rows and a target drawn from the same rows' population: the same model as without a target."""
    a, b = _halves(len(dc2_train["redshift"]), seed=2)  # the file is ordered: random rows
    table = {k: np.asarray(v)[a[:2000]] for k, v in dc2_train.items()}
    other = {k: np.asarray(v)[b[:4000]] for k, v in dc2_train.items() if k != "redshift"}
    models = []
    for name, target in (("same_a", None), ("same_b", other)):
        inf = DeepzInformer.make_stage(name=name, hdf5_groupname="", output_mode="return", checkpoint_dir="",
                                       **tiny())
        inf.inform(table, target=target)
        models.append(inf.get_data("model"))
    assert models[1]["meta"]["target"]["weight_max"] == pytest.approx(1.0, abs=0.05)
    for k, v in models[0]["arrays"].items():
        np.testing.assert_allclose(models[1]["arrays"][k], v, rtol=0.05, atol=0.05)


def test_target_errors_name_the_input(tiny, bright_and_target):
    spec, target, _ = bright_and_target
    inf = DeepzInformer.make_stage(name="inf_bad_target", hdf5_groupname="", output_mode="return",
                                   checkpoint_dir="", **tiny())
    broken = {k: v for k, v in target.items() if k != "mag_g_lsst"}
    with pytest.raises(KeyError, match="input 'target'.*mag_g_lsst"):
        inf.inform(spec, target=broken)
    dark = dict(target, mag_i_lsst=np.full(len(target["mag_i_lsst"]), np.nan))
    with pytest.raises(ValueError, match="'mag_i_lsst' has no usable detection in input 'target'.*"
                       "reference band .option 'ref_band'. must be detected"):
        inf.inform(spec, target=dark)
    in_njy = dict(target, mag_r_lsst=10 ** (-0.4 * (np.asarray(target["mag_r_lsst"]) - 31.4)) + 1e4)
    with pytest.raises(ValueError, match="'mag_r_lsst' has no usable detection in input 'target'.*outside the "
                       "magnitude range.*are they fluxes.*remove the band from 'bands'"):
        inf.inform(spec, target=in_njy)
    with pytest.raises(FileNotFoundError, match="input 'target': file 'nowhere.hdf5'"):
        inf.inform(spec, target="nowhere.hdf5")


def test_target_from_a_file_path(tiny, bright_and_target, tmp_path, one_torch_thread):
    import tables_io

    spec, target, _ = bright_and_target
    path = str(tmp_path / "target.hdf5")
    tables_io.write({"photometry": target}, path)
    inf = DeepzInformer.make_stage(name="inf_path_target", hdf5_groupname="", output_mode="return",
                                   checkpoint_dir="", **tiny())
    with pytest.raises(KeyError, match="group .photometry.: set hdf5_groupname"):  # the stage reads flat tables
        inf.inform(spec, target=path)
    grouped = DeepzInformer.make_stage(name="inf_path_target2", hdf5_groupname="photometry", output_mode="return",
                                       checkpoint_dir="", **tiny())
    grouped.inform({"photometry": spec}, target=path)
    assert grouped.get_data("model")["meta"]["target"]["n_target"] == len(target["mag_i_lsst"])


def test_ceci_stages_declare_the_target_input():
    assert [t for t, _ in DeepzTargetInformer.inputs] == ["input", "target"]
    assert [t for t, _ in DeepzTargetTransferInformer.inputs] == ["input", "sims", "target"]


def test_target_transfer_fills_with_simulations(tiny, bright_and_target, one_torch_thread):
    from rail.deepz import DeepzSimCreator

    spec, target, _ = bright_and_target
    sims = DeepzSimCreator.make_stage(name="sims_fill", model="none", n_samples=3000, seed=4,
                                      hdf5_groupname="").sample(3000, 4).data
    stage = DeepzTargetTransferInformer.make_stage(name="inf_fill", hdf5_groupname="", sims_groupname="",
                                                   output_mode="return", checkpoint_dir="",
                                                   **tiny(pretrain_epochs_per_step=[2, 1], target_fill=True,
                                                          target_start="pretrained"))
    stage.inform(spec, sims, target=target)
    info = stage.get_data("model")["meta"]["target"]
    assert info["fill_fraction"] == pytest.approx(min(info["uncovered"], 0.9))
    assert info["fill_n_eff"] > 10


def test_dimmed_copies_look_like_the_target(dc2_train):
    """Copies: parents' redshifts and colours, the target's fainter magnitudes, its noise and detection rule."""
    from rail.deepz.dimming import detection_thresholds, dimmed_copies
    from rail.deepz.error_relation import ErrorRelation
    from rail.deepz.inputs import read_flux_table, read_photometry

    o = inform_options()
    phot = read_photometry(dc2_train, o.bands, o.err_bands, o.mag_limits)
    relation = ErrorRelation.fit(phot, o.bands)
    thresholds = detection_thresholds(phot)
    assert np.isfinite(thresholds[0]) and np.isneginf(thresholds[2])  # u has non-detections, r none
    i = np.asarray(dc2_train["mag_i_lsst"])
    bright = {k: np.asarray(v)[i < 23.0] for k, v in dc2_train.items()}
    fluxes, bright_phot = read_flux_table(bright, o.bands, o.err_bands, o.mag_limits, 99.0, -99.0, False)
    limits = 10 ** (-0.4 * (np.array([o.mag_limits[b] for b in o.bands]) - 31.4))
    copies, parents = dimmed_copies(fluxes, 3, i, relation, thresholds, limits, 2, seed=1)
    n = len(bright["mag_i_lsst"])
    assert len(parents) == 2 * n and np.array_equal(parents[:n], np.arange(n))
    again, _ = dimmed_copies(fluxes, 3, i, relation, thresholds, limits, 2, seed=1)
    np.testing.assert_array_equal(copies.flux, again.flux)
    new_i = 31.4 - 2.5 * np.log10(np.clip(copies.flux[:, 3], 1e-6, None))
    old_i = bright["mag_i_lsst"][parents]
    assert np.mean(new_i > old_i + 0.3) > 0.9  # dimmed toward the target's fainter magnitudes
    assert np.median(new_i) > 24.0
    # errors at least the target's at the dimmed flux; g - r colour kept on average for bright copies
    scale = copies.flux[:, 3] / bright_phot.flux[parents, 3]
    truth = bright_phot.flux[parents] * scale[:, None]
    ratio = copies.flux_err[:, 2] / relation.flux_errors(truth)[:, 2]  # truth up to the i-band noise
    assert 0.97 < np.median(ratio) < 1.1 and np.percentile(ratio, 1) > 0.9
    good = new_i < 24.5
    colour = lambda f: -2.5 * np.log10(np.clip(f[:, 1] / f[:, 2], 1e-3, None))  # noqa: E731
    assert abs(np.median(colour(copies.flux[good]) - colour(bright_phot.flux[parents][good]))) < 0.02
    # u non-detections where the copy's S/N is below the target's threshold: flux 0, the limit error
    nd = copies.flux[:, 0] == 0
    assert nd.any() and np.allclose(copies.flux_err[nd, 0], limits[0])


def test_informer_with_dimmed_copies(tiny, bright_and_target, one_torch_thread):
    spec, target, test = bright_and_target
    inf = DeepzInformer.make_stage(name="inf_copies", hdf5_groupname="", output_mode="return", checkpoint_dir="",
                                   **tiny(target_dimmed_copies=2))
    inf.inform(spec, target=target)
    model = inf.get_data("model")
    assert model["meta"]["training"]["n_train"] > 2.5 * len(spec["redshift"])
    # the coverage still compares the real spec-z galaxies with the target (copies do not count)
    assert model["meta"]["target"]["uncovered"] > 0.5


def test_coverage_calibration_terms():
    """uncovered_* terms act only on poorly covered galaxies and are fitted when such rows exist."""
    from rail.deepz.calibration import Calibration, apply_calibration, fit_calibration

    g = torch.Generator().manual_seed(0)
    n = 600
    log_w = torch.log_softmax(torch.randn(2, n, 3, generator=g), -1)
    means = torch.rand(2, n, 3, generator=g) * 2
    stds = torch.full((2, n, 3), 0.1)
    cal = Calibration(uncovered_scale=2.0, uncovered_shift=0.5)
    cov = torch.cat([torch.ones(n // 2), torch.zeros(n // 2)])
    _, m2, s2 = apply_calibration(log_w, means, stds, cal, cov)
    assert torch.equal(s2[:, : n // 2], stds[:, : n // 2]) and torch.allclose(s2[:, n // 2 :], 2 * stds[:, n // 2 :])
    assert torch.allclose(m2[:, n // 2 :], means[:, n // 2 :] + 0.05)
    assert Calibration().to_dict() == dict(recenter=0.0, std_scale=1.0, weight_power=1.0, shift=0.0, ambiguity=0.0)
    # truth: covered galaxies as predicted, uncovered ones twice as wide -> uncovered_scale near 2
    w = torch.exp(log_w[0])
    comp = torch.multinomial(w, 1, generator=g)[:, 0]
    mu, sd = means[0, torch.arange(n), comp], stds[0, torch.arange(n), comp]
    widen = torch.where(cov > 0.5, 1.0, 2.0)
    z = mu + sd * widen * torch.randn(n, generator=g)
    fitted, info = fit_calibration(log_w[:1], means[:1], stds[:1], z, recenter=0.0, coverage=cov.numpy(),
                                   fit_uncovered=True)
    assert 1.6 < fitted.uncovered_scale < 2.5 and 0.8 < fitted.std_scale < 1.25
    assert info["cvm_after"] < info["cvm_before"]


@pytest.mark.pipelines
def test_ceci_pipeline_with_a_target_input(tiny, dc2_train, tmp_path):
    """DeepzTargetInformer in a ceci pipeline: target aliased to the estimator's input; coverage in the PDFs."""
    import os
    import shutil
    import subprocess
    import sys

    import tables_io
    import yaml

    i = np.asarray(dc2_train["mag_i_lsst"])
    a, b = _halves(len(i), seed=4)
    os.makedirs(tmp_path / "data")
    tables_io.write({"photometry": {k: np.asarray(v)[a][i[a] < 23.5][:800] for k, v in dc2_train.items()}},
                    str(tmp_path / "data" / "train.hdf5"))
    tables_io.write({"photometry": {k: np.asarray(v)[b][:1500] for k, v in dc2_train.items()}},
                    str(tmp_path / "data" / "test.hdf5"))
    pipe = dict(modules="rail", inputs=dict(input_train="data/train.hdf5", input_test="data/test.hdf5"),
                stages=[dict(name="inform_deepz", classname="DeepzTargetInformer", module_name="rail.estimation.algos.deepz",
                             aliases=dict(input="input_train", target="input_test", model="model_inform_deepz"),
                             threads_per_process=1),
                        dict(name="estimate_deepz", classname="DeepzEstimator", module_name="rail.estimation.algos.deepz",
                             aliases=dict(input="input_test", model="model_inform_deepz", output="output_estimate_deepz"),
                             threads_per_process=1)],
                output_dir="out", log_dir="logs", config="config.yml", resume=False,
                site=dict(name="local", max_threads=1))
    config = dict(inform_deepz=dict(name="inform_deepz", hdf5_groupname="photometry", **tiny()),
                  estimate_deepz=dict(name="estimate_deepz", hdf5_groupname="photometry"))
    (tmp_path / "pipe.yml").write_text(yaml.safe_dump(pipe, sort_keys=False))
    (tmp_path / "config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    ceci = shutil.which("ceci") or os.path.join(os.path.dirname(sys.executable), "ceci")
    proc = subprocess.run([ceci, "pipe.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    model = load_model(str(tmp_path / "out" / "model_inform_deepz.pkl"))
    assert model["meta"]["target"]["n_target"] == 1500
    import qp

    ens = qp.read(str(tmp_path / "out" / "output_estimate_deepz.hdf5"))
    cov = np.asarray(ens.ancil["coverage"]).ravel()
    assert cov.shape == (1500,) and np.all((cov >= 0) & (cov <= 1))


def test_member_spread_kept_where_coverage_is_low():
    """spread_by_coverage: recentring and ambiguity narrowing fade with coverage; full coverage = as before."""
    from rail.deepz.calibration import Calibration, apply_calibration

    g = torch.Generator().manual_seed(1)
    log_w = torch.log_softmax(torch.randn(5, 40, 3, generator=g), -1)
    means, stds = torch.rand(5, 40, 3, generator=g) * 2, torch.full((5, 40, 3), 0.1)
    plain = Calibration(recenter=1.0, ambiguity=1.0)
    spread = Calibration(recenter=1.0, ambiguity=1.0, spread_by_coverage=True)
    ones, zeros = torch.ones(40), torch.zeros(40)
    for a, b in zip(apply_calibration(log_w, means, stds, plain), apply_calibration(log_w, means, stds, spread, ones)):
        torch.testing.assert_close(a, b)
    for a, b in zip(apply_calibration(log_w, means, stds, Calibration()),
                    apply_calibration(log_w, means, stds, spread, zeros)):
        torch.testing.assert_close(a, b)
    assert spread.to_dict()["spread_by_coverage"] is True and "spread_by_coverage" not in plain.to_dict()


def test_target_autoencoder_and_simulation_options(tiny, bright_and_target, one_torch_thread):
    """target_autoencoder starts from an autoencoder on the target; sim noise / weights change the pretraining."""
    from rail.deepz import DeepzSimCreator
    from rail.deepz.target_training import sims_with_target_noise

    spec, target, _ = bright_and_target
    inf = DeepzInformer.make_stage(name="inf_ae", hdf5_groupname="", output_mode="return", checkpoint_dir="",
                                   **tiny(target_autoencoder=True, pretrain_epochs_per_step=[2, 1]))
    inf.inform(spec, target=target)
    assert inf.get_data("model")["meta"]["transfer"]["phase"] == "autoencoder"

    sims = DeepzSimCreator.make_stage(name="sims_opts", model="none", n_samples=2000, seed=6,
                                      hdf5_groupname="").sample(2000, 6).data
    opts = inform_options(tiny(target_sim_noise=True))
    renoised = sims_with_target_noise(sims, target, opts, lambda msg: None)
    assert not np.array_equal(renoised["mag_r_lsst"], sims["mag_r_lsst"])
    np.testing.assert_array_equal(renoised["redshift"], sims["redshift"])
    no_truth = {k: v for k, v in sims.items() if not k.startswith("flux_true_")}
    assert sims_with_target_noise(no_truth, target, opts, lambda msg: None) is no_truth

    pre = DeepzInformer.make_stage(name="pre_weights", hdf5_groupname="", output_mode="return", checkpoint_dir="",
                                   phase="pretrain", **tiny(target_sim_weights=True, pretrain_epochs_per_step=[2, 1]))
    pre.inform(sims, target=target)
    info = pre.get_data("model")["meta"]["training"]["target_weights"]
    assert info["weight_max"] > info["weight_min"] and info["weight_n_eff"] < 2000


def test_held_out_scores_prefer_sharp_calibrated_pdfs():
    """A mixture centred on the truth beats one 0.3 off (log score, outliers); weights pick the rows."""
    rng = np.random.default_rng(3)
    z = torch.as_tensor(rng.uniform(0.2, 2.0, 500))
    log_w = torch.zeros(2, 500, 1)
    good = z.expand(2, -1).unsqueeze(-1) + torch.as_tensor(rng.normal(0, 0.03, (2, 500, 1)))
    stds = torch.full((2, 500, 1), 0.05, dtype=torch.float64)
    bad = good + 0.3 * (1 + z).unsqueeze(-1)
    s_good = held_out_scores(log_w, good, stds, z, Calibration())
    s_bad = held_out_scores(log_w, bad, stds, z, Calibration())
    assert s_good["log_score"] > s_bad["log_score"] + 5 and s_good["outliers"] == 0.0
    assert s_bad["outliers"] == pytest.approx(1.0)
    mixed = torch.where(torch.arange(500).reshape(1, -1, 1) < 250, good, bad)  # rows 0-249 right, the rest off
    w = np.r_[np.ones(250), np.zeros(250)]
    assert held_out_scores(log_w, mixed, stds, z, Calibration(), weights=w)["outliers"] == 0.0
    assert held_out_scores(log_w, mixed, stds, z, Calibration(), weights=1 - w)["outliers"] == pytest.approx(1.0)


def test_target_start_trains_both_and_keeps_the_better(tiny, bright_and_target, one_torch_thread):
    """'auto' and 'pooled' (default) fine-tune, train from scratch and pool both, scored on one weighting."""
    from rail.deepz import DeepzSimCreator

    spec, target, _ = bright_and_target
    sims = DeepzSimCreator.make_stage(name="sims_start", model="none", n_samples=3000, seed=4,
                                      hdf5_groupname="").sample(3000, 4).data
    models = {}
    for start in ("auto", "pretrained", "scratch", "widened", None):
        stage = DeepzTargetTransferInformer.make_stage(name=f"inf_start_{start}", hdf5_groupname="",
                                                       sims_groupname="", output_mode="return", checkpoint_dir="",
                                                       **tiny(pretrain_epochs_per_step=[2, 1],
                                                              **({} if start is None else dict(target_start=start))))
        stage.inform(spec, sims, target=target)
        models[start or "pooled"] = stage.get_data("model")
    info = models["auto"]["meta"]["target"]["start"]
    order = ("pretrained", "scratch", "widened", "pooled")  # by cost; within 1e-3 of the best the cheaper is kept
    scores = {k: info[f"log_score_{k}"] for k in order}
    assert info["rule"] == "auto" and info["auto"] == info["chosen"]
    assert scores[info["chosen"]] >= max(scores.values()) - 1.0002e-3
    assert all(scores[k] < max(scores.values()) - 0.9998e-3 for k in order[:order.index(info["chosen"])])
    pooled_info = models["pooled"]["meta"]["target"]["start"]  # the default start
    assert inform_options().target_start == "pooled" and pooled_info["rule"] == "pooled"
    assert pooled_info["chosen"] == "pooled" and pooled_info["log_score_pooled"] == info["log_score_pooled"]
    assert pooled_info["auto"] == info["auto"]  # the scores, and so what 'auto' would keep, are recorded too
    assert all(0.0 <= info[f"outliers_{k}"] <= 1.0 for k in scores)
    n = models["pretrained"]["meta"]["n_members"]
    assert models["pooled"]["meta"]["n_members"] == 2 * n and models["scratch"]["meta"]["n_members"] == n
    # the kept candidate is the model its fixed start gives (same seed, splits and scaling)
    same = "pooled" if info["chosen"] == "pooled" else ("pretrained" if info["chosen"] == "pretrained" else None)
    if same is not None:
        for k, v in models[same]["arrays"].items():
            np.testing.assert_array_equal(models["auto"]["arrays"][k], v)
    assert "transfer" in models["pretrained"]["meta"] and "transfer" not in models["scratch"]["meta"]
    assert models["scratch"]["meta"]["target"]["start"] == {"chosen": "scratch"}
    # the pooled model estimates like any other; the widened one outputs the fine-tuned members' mixtures, wider
    n_g = models["pooled"]["meta"]["architecture"]["n_gaussians"]
    rows = {k: v[:200] for k, v in target.items()}
    out = {}
    for start in ("pooled", "widened", "pretrained"):
        est = DeepzEstimator.make_stage(name=f"est_{start}", model=models[start], hdf5_groupname="",
                                        output_mode="return", n_output_components=0, network="ensemble")
        out[start] = est.estimate(rows).data
        assert np.all(np.isfinite(np.asarray(out[start].ancil["zmode"])))
    assert out["pooled"].npdf == 200 and np.asarray(out["pooled"].objdata["weights"]).shape[1] == 2 * n * n_g
    assert np.asarray(out["widened"].objdata["weights"]).shape[1] == n * n_g
    cal = models["widened"]["meta"]["calibration"]
    assert cal["groups"] == 2 and 0.0 < cal["disagreement"] <= 4.0
    std = {k: np.median(np.asarray(out[k].ancil["zstd"])) for k in ("widened", "pretrained")}
    assert std["widened"] >= std["pretrained"]
    with pytest.raises(ValueError, match="target_start"):
        inform_options(tiny(target_start="best"))


def test_a_target_unlike_the_spec_sample_warns():
    """Weights resting on a handful of galaxies (e.g. the target in another magnitude system) are a warning."""
    from rail.deepz.target_training import fit_shift
    from rail.deepz.training_data import TrainingData

    rng = np.random.default_rng(3)
    opts = inform_options(dict(seed=1))

    def shift_log(offset: float) -> list[str]:
        x_spec, x_target = rng.normal(size=(600, 3)), rng.normal(size=(3000, 3)) + offset
        data = TrainingData(x_spec, np.zeros((600, 2)), np.ones((600, 2)), rng.random(600), 0, 0)
        target = TrainingData(x_target, np.zeros((3000, 2)), np.ones((3000, 2)), None, 0, 0)
        messages: list[str] = []
        fit_shift(data, 600, None, target, np.zeros(3), np.ones(3), False, opts, messages.append)
        return messages

    assert not [m for m in shift_log(0.3) if m.startswith("warning:")]
    warned = [m for m in shift_log(4.0) if m.startswith("warning:")]
    assert len(warned) == 1 and "effective" in warned[0] and "magnitude system" in warned[0]


def test_informer_warnings_reach_the_log_at_warning_level():
    calls = []

    class Log:
        def info(self, msg):
            calls.append(("info", msg))

        def warning(self, msg):
            calls.append(("warning", msg))

    stage = DeepzInformer.make_stage(name="inf_log_levels")
    stage.log = Log()
    stage._progress("target: 3000 galaxies")
    stage._progress("warning: input 'target' has only 50 usable rows")
    assert calls == [("info", "target: 3000 galaxies"),
                     ("warning", "warning: input 'target' has only 50 usable rows")]


@pytest.mark.parametrize("tag", ["target", "sims"])
def test_an_alias_for_an_input_the_informer_lacks_is_an_error(tag):
    """ceci would drop the data of such an alias without a word (the model trained without it)."""
    with pytest.raises(ValueError, match=f"alias '{tag}: input_test' names an input that DeepzInformer does not "
                       f"have.*input '{tag}' belongs to"):
        DeepzInformer.make_stage(name=f"inf_alias_{tag}", aliases={tag: "input_test"})
    with pytest.raises(ValueError, match="DeepzInformer does not have"):
        DeepzInformer.generate_command({"input": "a.hdf5", "input_test": "b.hdf5"}, "c.yml", {"model": "m.pkl"},
                                       {tag: "input_test"}, "inform_deepz")
    inputs = {"input": "a.hdf5", "sims": "s.hdf5", "target": "t.hdf5", "input_test": "b.hdf5"}
    command = DeepzTargetTransferInformer.generate_command(inputs, "c.yml", {"model": "m.pkl"}, {tag: "input_test"},
                                                           "inform_deepz")
    assert f"--{tag}=b.hdf5" in command


def test_non_detections_written_another_way_in_the_target_warn(dc2_train):
    """A target writing non-detections as NaN (the training table: 99) is named band by band."""
    from rail.deepz.training_data import sentinel_mismatch

    opts = inform_options()
    spec = prepare_training_data(dc2_train, opts)
    assert sentinel_mismatch(spec, prepare_training_data(dc2_train, opts, need_redshift=False), opts) is None
    nan_target = {k: np.where(np.asarray(v) >= 90, np.nan, v) if k.startswith("mag_") and "err" not in k else v
                  for k, v in dc2_train.items()}
    target = prepare_training_data(nan_target, opts, need_redshift=False)
    message = sentinel_mismatch(spec, target, opts)
    assert message is not None and message.startswith("warning:")
    nondetected = [b for j, b in enumerate(opts.bands) if spec.band_status[1, j] > 0.01]
    assert nondetected and all(f"'{b}'" in message for b in nondetected)
    assert "'nondetect_val' (99.0)" in message
    # the reverse: the training table with NaN, the target with 99
    assert sentinel_mismatch(target, spec, opts) is not None


def test_defaults_pretrain_toward_the_target(tiny, bright_and_target, one_torch_thread):
    """With sims and a target, the default pretraining takes the target's noise and weights; a given
    pretrained model is fine-tuned as it is, and says so."""
    from rail.deepz import DeepzSimCreator

    spec, target, _ = bright_and_target
    sims = DeepzSimCreator.make_stage(name="sims_toward", model="none", n_samples=2000, seed=7,
                                      hdf5_groupname="").sample(2000, 7).data
    messages: list[str] = []

    class Log:
        def info(self, msg):
            messages.append(msg)

        warning = info

    def inform(name, **kwargs):
        stage = DeepzTargetTransferInformer.make_stage(name=name, hdf5_groupname="", sims_groupname="",
                                                       output_mode="return", checkpoint_dir="",
                                                       **tiny(pretrain_epochs_per_step=[2, 1],
                                                              target_start="pretrained"))
        stage.log = Log()
        stage.inform(spec, sims, target=target, **kwargs)
        return stage.get_data("model")

    model = inform("inf_toward")
    assert any("simulation noise redrawn from the target's error" in m for m in messages)
    assert any("pretraining weighted toward the target" in m for m in messages)
    assert not any("fine-tuned as it is" in m for m in messages)
    messages.clear()
    inform("inf_given", pretrained=model)
    assert any("fine-tuned as it is" in m for m in messages)
    assert not any("pretraining weighted toward the target" in m for m in messages)
