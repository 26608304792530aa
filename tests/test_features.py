import numpy as np
import pytest

from rail.deepz import features as F
from rail.deepz import inputs as I


LIMITS = np.array([27.0, 28.0, 28.0])


def test_detections_convert_to_njy():
    p = I.magnitudes_to_fluxes(np.array([[31.4, 23.9, 20.0]]), np.array([[0.1, 0.1, 0.01]]), LIMITS)
    np.testing.assert_allclose(p.flux[0], [1.0, 1000.0, 10 ** (-0.4 * (20.0 - 31.4))])
    np.testing.assert_allclose(p.flux_err[0], p.flux[0] * np.log(10) / 2.5 * np.array([0.1, 0.1, 0.01]))
    assert (p.status == 0).all()


def test_bad_values_follow_the_documented_rules():
    mags = np.array([[99.0, np.inf, np.nan], [-np.inf, -99.0, 95.0], [22.0, 22.0, 22.0]])
    errs = np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [np.nan, -1.0, 0.0]])
    p = I.magnitudes_to_fluxes(mags, errs, LIMITS)
    lim_flux = 10 ** (-0.4 * (LIMITS - 31.4))
    assert p.status.tolist() == [[1, 1, 2], [2, 2, 1], [0, 0, 0]]
    assert np.all(p.flux[:2] == 0)
    np.testing.assert_allclose(p.flux_err[0], lim_flux)
    # invalid errors of detections become the limit error, never NaN or <= 0
    np.testing.assert_allclose(p.flux_err[2], lim_flux)
    assert np.isfinite(p.flux).all() and np.isfinite(p.flux_err).all() and (p.flux_err > 0).all()


def test_features_are_finite_and_flag_bad_reference():
    mags = np.array([[23.0, 22.0, 21.0], [99.0, 22.0, 21.0], [23.0, np.nan, 21.0], [23.0, 22.0, 99.0]])
    errs = np.full(mags.shape, 0.05)
    p = I.magnitudes_to_fluxes(mags, errs, LIMITS)
    x, ratios, ratio_err, bad_ref = F.flux_features(p, ref_index=2)
    assert x.shape == (4, F.n_features(3))
    assert np.isfinite(x).all() and np.isfinite(ratios).all()
    assert bad_ref.tolist() == [False, False, False, True]
    np.testing.assert_allclose(ratios[0], 10 ** (-0.4 * (mags[0] - 21.0)), rtol=1e-6)
    assert ratios[1, 0] == 0 and ratios[2, 1] == 0  # non-detection and missing
    assert np.isinf(ratio_err[2, 1]) and np.isfinite(ratio_err[1, 0])
    assert x[3].tolist() == [0.0] * x.shape[1]


def test_read_photometry_errors_name_the_problem(small_train):
    bands = [f"mag_{b}_lsst" for b in "ugrizy"]
    errs = [f"mag_err_{b}_lsst" for b in "ugrizy"]
    lims = {b: 27.0 for b in bands}
    with pytest.raises(KeyError, match="mag_q_lsst"):
        I.read_photometry(small_train, bands[:-1] + ["mag_q_lsst"], errs, lims)
    with pytest.raises(ValueError, match="same length"):
        I.read_photometry(small_train, bands, errs[:-1], lims)
    with pytest.raises(ValueError, match="mag_limits"):
        I.read_photometry(small_train, bands, errs, {})
    empty = {k: v[:0] for k, v in small_train.items()}
    with pytest.raises(ValueError, match="empty"):
        I.read_photometry(empty, bands, errs, lims)
    bad = dict(small_train)
    bad["mag_u_lsst"] = np.array(["x"] * len(bad["mag_u_lsst"]))
    with pytest.raises(TypeError, match="mag_u_lsst"):
        I.read_photometry(bad, bands, errs, lims)
