"""Randomised coadds, outlier augmentation, on-device features, exposure inputs (small, CPU)."""

import numpy as np
import pytest
import torch

from rail.deepz import DeepzEstimator, DeepzInformer
from rail.deepz import features as feat
from rail.deepz import inputs
from rail.deepz.augmentation import Augmentation, BatchInputs, inject_outliers, randomized_coadd
from rail.deepz.inputs import FluxTable, coadd_exposures, pack_exposures
from rail.deepz.simulation.exposures import simulate_exposures

from conftest import BANDS, ERR_BANDS


pytestmark = pytest.mark.usefixtures("one_torch_thread")

KEYS = [b[4:] for b in BANDS]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def exposures():
    rng = np.random.default_rng(3)
    true = rng.uniform(50, 500, (2000, 6))
    out = simulate_exposures(rng, true, 0.1 * true, (0, 8))
    return true, torch.as_tensor(out["flux"]), torch.as_tensor(out["flux_err"])


def test_keep_prob_one_gives_the_full_coadd(exposures):
    _, flux, err = exposures
    full_f, full_e = coadd_exposures(flux, err)
    for mode in ("force_one", "drop"):
        f, e, ok = randomized_coadd(flux, err, 1.0, _gen(), mode)
        torch.testing.assert_close(f, full_f, equal_nan=True)
        torch.testing.assert_close(e, full_e)
        assert ok.all()


def test_randomised_coadd_is_unbiased_and_keeps_bands(exposures):
    true, flux, err = exposures
    observed = torch.isfinite(flux).any(-1)
    draws = torch.stack([randomized_coadd(flux, err, 0.6, _gen(s), "force_one")[0] for s in range(40)])
    assert torch.isfinite(draws[:, observed]).all()  # force_one: every observed band keeps a measurement
    # unbiased: the mean pull against the true flux is 0 within its Monte Carlo error
    full_f, full_e = coadd_exposures(flux, err)
    pull = ((draws.mean(0) - torch.as_tensor(true)) / full_e)[observed]
    assert abs(float(pull.mean())) < 4 * float(pull.std()) / np.sqrt(pull.numel())
    # the kept fraction of exposures is the keep probability (with forced ones slightly above)
    f, e, ok = randomized_coadd(flux, err, 0.6, _gen(1), "drop")
    assert ok.float().mean() < 1.0 and ok.any()
    assert float((e[ok][torch.isfinite(e[ok])] >= full_e[ok][torch.isfinite(e[ok])] * (1 - 1e-6)).float().mean()) == 1.0


def test_equal_errors_mean_over_masks_is_the_full_coadd():
    rng = np.random.default_rng(5)
    flux = torch.as_tensor(rng.normal(100, 10, (500, 1, 6)))
    err = torch.full_like(flux, 10.0)
    draws = torch.stack([randomized_coadd(flux, err, 0.5, _gen(s), "force_one")[0] for s in range(400)])
    full, _ = coadd_exposures(flux, err)
    mc_err = draws.std(0) / np.sqrt(draws.shape[0])
    z = (draws.mean(0) - full) / mc_err  # the mean over masks is the full coadd, within Monte Carlo errors
    assert abs(float(z.mean())) < 4 / np.sqrt(z.numel())
    assert 0.8 < float(z.std()) < 1.25


def test_outliers_hit_the_requested_fraction_and_never_the_reference():
    n = 20000
    flux = torch.full((n, 6), 100.0)
    err = torch.full((n, 6), 5.0)
    missing = torch.zeros(n, 6, dtype=torch.bool)
    missing[:, 0] = True
    new, hit = inject_outliers(flux, err, missing, 0.1, (0.2, 1.0), 3, _gen(2))
    assert float(hit.float().mean()) == pytest.approx(0.1, abs=0.01)
    changed = new != flux
    assert (changed.sum(1) == hit.long()).all()  # one band per corrupted galaxy
    assert not changed[:, 3].any() and not changed[:, 0].any()  # never the reference or a missing band
    rel = ((new - flux).abs() / flux)[changed]
    assert float(rel.min()) >= 0.2 - 1e-6 and float(rel.max()) <= 1.0 + 1e-6
    again, _ = inject_outliers(flux, err, missing, 0.1, (0.2, 1.0), 3, _gen(2))
    torch.testing.assert_close(new, again)


def test_torch_features_match_numpy(dc2_train):
    table = {k: np.asarray(v[:3000]) for k, v in dc2_train.items()}
    limits = {b: 27.0 for b in BANDS}
    phot = inputs.read_photometry(table, BANDS, ERR_BANDS, limits)
    x, r, re, bad = feat.flux_features(phot, 3)
    xt, rt, ret, badt = feat.flux_features_torch(torch.as_tensor(phot.flux), torch.as_tensor(phot.flux_err),
                                                 torch.as_tensor(phot.status == inputs.STATUS_MISSING), 3)
    np.testing.assert_allclose(xt.numpy(), x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rt.numpy(), r, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(badt.numpy(), bad)


def test_batch_inputs_validation_path_is_unaugmented(exposures):
    _, flux, err = exposures
    missing = ~torch.isfinite(flux).any(-1)
    table = FluxTable(flux.numpy(), err.numpy(), missing.numpy(), True)
    aug = Augmentation(keep_prob=0.5, outlier_fraction=0.3)
    bi = BatchInputs(table, np.zeros(13, np.float32), np.ones(13, np.float32), 3, aug, torch.device("cpu"), 1)
    idx = torch.arange(100).reshape(2, 50)
    a, b = bi.batch(idx, train=False)[0], bi.batch(idx, train=False)[0]
    torch.testing.assert_close(a, b)
    c = bi.batch(idx, train=True)[0]
    assert not torch.allclose(a, c)


@pytest.fixture(scope="module")
def exposure_catalogue(dc2_train):
    """1,200 DC2 galaxies given 3-10 simulated exposures per band (5% outlier exposures)."""
    table = {k: np.asarray(v[:1200]) for k, v in dc2_train.items()}
    phot = inputs.read_photometry(table, BANDS, ERR_BANDS, {b: 27.0 for b in BANDS})
    out = simulate_exposures(np.random.default_rng(4), phot.flux, phot.flux_err, (3, 10), outlier_fraction=0.05)
    table.update(pack_exposures(out["flux"], out["flux_err"], KEYS))
    for j, key in enumerate(KEYS):
        table[f"flux_{key}"], table[f"flux_err_{key}"] = out["coadd_flux"][:, j], out["coadd_err"][:, j]
    return table


def test_informer_trains_on_exposures_and_estimator_uses_them(tiny, exposure_catalogue):
    cfg = tiny(hdf5_groupname="", num_threads=1)
    st = DeepzInformer.make_stage(name="exp_inf", output_mode="return", coadd_keep_prob=0.8, outlier_fraction=0.1, **cfg)
    st.inform(exposure_catalogue)
    model = st.get_data("model")
    assert model["meta"]["inputs"] == "exposures"
    assert model["meta"]["training"]["augmentation"]["keep_prob"] == 0.8
    st2 = DeepzInformer.make_stage(name="exp_inf2", output_mode="return", coadd_keep_prob=0.8, outlier_fraction=0.1, **cfg)
    st2.inform(exposure_catalogue)
    for k, v in model["arrays"].items():
        np.testing.assert_array_equal(v, st2.get_data("model")["arrays"][k])  # same seed, same model
    est = DeepzEstimator.make_stage(name="exp_est", model=model, hdf5_groupname="", output_mode="return")
    full = est.estimate(exposure_catalogue).data.ancil["zmode"]
    # without exposure columns, the coadd flux columns give the same inputs (they are the full coadd)
    coadds = {k: v for k, v in exposure_catalogue.items() if "_exp" not in k}
    est2 = DeepzEstimator.make_stage(name="exp_est2", model=model, hdf5_groupname="", output_mode="return")
    np.testing.assert_allclose(est2.estimate(coadds).data.ancil["zmode"], full, rtol=1e-5, atol=1e-6)


def test_bad_augmentation_options_are_named(tiny, small_train):
    for kw, word in ((dict(coadd_keep_prob=0.0), "coadd_keep_prob"), (dict(coadd_mode="x"), "coadd_mode"),
                     (dict(outlier_fraction=2.0), "outlier_fraction"), (dict(use_exposures="yes"), "exposure")):
        st = DeepzInformer.make_stage(name="bad_aug", output_mode="return", hdf5_groupname="", **tiny(**kw))
        with pytest.raises((ValueError, KeyError), match=word):
            st.inform(small_train)
