"""Individual exposures: layout round trip, coadds (numpy and torch), consistency with the catalogue."""

import numpy as np
import pytest

from rail.deepz.simulation import default_options, simulate_catalogue
from rail.deepz.inputs import coadd_exposures, pack_exposures, unpack_exposures
from rail.deepz.simulation.exposures import random_keep_mask, simulate_exposures

KEYS = [f"{b}_lsst" for b in "ugrizy"]


@pytest.fixture(scope="module")
def catalogue():
    opts = default_options()
    opts.update(exposures=True, n_exposures_range=[0, 6], exposure_outlier_fraction=0.1)
    return simulate_catalogue(3000, 11, opts)


def test_coadd_of_exposures_equals_catalogue_flux(catalogue):
    flux, err = unpack_exposures(catalogue, KEYS)
    assert flux.shape == (3000, 6, 6)
    cflux, cerr = coadd_exposures(flux, err)
    for b, key in enumerate(KEYS):
        observed = catalogue[f"n_exp_{key}"] > 0
        np.testing.assert_allclose(cflux[observed, b], catalogue[f"flux_{key}"][observed], rtol=1e-12)
        np.testing.assert_allclose(cerr[observed, b], catalogue[f"flux_err_{key}"][observed], rtol=1e-12)
        # bands without exposures are unobserved: NaN flux, magnitude = nonobserved_val
        assert np.all(np.isnan(catalogue[f"flux_{key}"][~observed]))
        assert np.all(catalogue[f"mag_{key}"][~observed] == -99.0)


def test_missing_exposures_are_nan_and_counts_match(catalogue):
    flux, _ = unpack_exposures(catalogue, KEYS)
    for b, key in enumerate(KEYS):
        n = catalogue[f"n_exp_{key}"]
        assert set(np.unique(n)) <= set(range(7))
        np.testing.assert_array_equal(np.isfinite(flux[:, b]).sum(axis=1), n)
    frac = catalogue["n_exp_outliers"].sum() / sum(catalogue[f"n_exp_{k}"].sum() for k in KEYS)
    assert frac == pytest.approx(0.1, abs=0.02)


def test_coadd_errors_follow_noise_model():
    """Without outliers the exposure noise coadds to the requested catalogue error."""
    rng = np.random.default_rng(1)
    true = np.full((20000, 2), 1000.0)
    sigma = np.array([[50.0, 200.0]]).repeat(20000, axis=0)
    exp = simulate_exposures(rng, true, sigma, (3, 10), depth_scatter=0.3)
    np.testing.assert_allclose(exp["coadd_err"], sigma, rtol=1e-10)
    pulls = (exp["coadd_flux"] - true) / sigma
    assert abs(pulls.mean()) < 0.03 and pulls.std() == pytest.approx(1.0, abs=0.03)


def test_pack_unpack_round_trip():
    rng = np.random.default_rng(2)
    flux = rng.normal(size=(10, 3, 4))
    err = rng.uniform(1, 2, size=(10, 3, 4))
    flux[0, 1, 2:] = err[0, 1, 2:] = np.nan
    cols = pack_exposures(flux, err, ["a", "b", "c"])
    assert "flux_b_exp3" in cols and "flux_err_c_exp0" in cols and cols["n_exp_b"][0] == 2
    f2, e2 = unpack_exposures(cols, ["a", "b", "c"])
    np.testing.assert_array_equal(f2, flux)
    np.testing.assert_array_equal(e2, err)


def test_coadd_with_keep_mask_numpy_and_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    flux = rng.normal(10, 1, size=(200, 6, 8))
    err = rng.uniform(0.5, 2.0, size=(200, 6, 8))
    flux[:, :, 6:] = np.nan
    keep = random_keep_mask(flux, 0.5, rng, ensure_one=True)
    assert np.all(keep.any(axis=-1)) and not np.any(keep[..., 6:])
    f_np, e_np = coadd_exposures(flux, err, keep)
    w = np.where(keep, 1 / err**2, 0)
    np.testing.assert_allclose(f_np, np.nansum(np.where(keep, flux, 0) * w, -1) / w.sum(-1))
    np.testing.assert_allclose(e_np, w.sum(-1) ** -0.5)
    f_t, e_t = coadd_exposures(torch.tensor(flux), torch.tensor(err), torch.tensor(keep))
    np.testing.assert_allclose(f_t.numpy(), f_np)
    np.testing.assert_allclose(e_t.numpy(), e_np)
    none = np.zeros_like(keep)
    f0, e0 = coadd_exposures(flux, err, none)
    assert np.all(np.isnan(f0)) and np.all(np.isinf(e0))
