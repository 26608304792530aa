"""Redshifting + filter integration against analytic spectra and an independent direct integration."""

import numpy as np
import pytest

from rail.deepz.simulation.constants import C_AA_PER_S
from rail.deepz.simulation.dust import calzetti_k, calzetti_tau_shape
from rail.deepz.simulation.filters import get_filter_set, lsst_filters, paus_filters
from rail.deepz.simulation.igm import igm_transmission
from rail.deepz.simulation.photometry import (build_projection, continuum_band_luminosity,
                                              line_band_luminosity, njy_to_mag, to_njy)
from rail.deepz.simulation.cosmology import luminosity_distance_cm

REST = np.geomspace(500.0, 13000.0, 2500)
Z = np.array([0.0, 0.37, 1.0, 2.2, 3.0])


def _direct_mean_fnu(rest_wave, l_lambda, z, wave, trans):
    """Independent reference: observed f_lambda on the filter grid, trapezoid integrals."""
    f_lam = np.interp(wave / (1 + z), rest_wave, l_lambda) / (1 + z)
    return np.trapezoid(f_lam * trans * wave, wave) / np.trapezoid(trans * C_AA_PER_S / wave, wave)


@pytest.fixture(scope="module")
def lsst():
    return lsst_filters()


def test_flat_fnu_identical_in_every_band(lsst):
    table = build_projection(REST, lsst, 0.0, 3.0, igm="none")
    l_nu = 1e28  # erg/s/Hz
    spec = np.tile(l_nu * C_AA_PER_S / REST**2, (Z.size, 1))
    lum = continuum_band_luminosity(spec, Z, table)
    np.testing.assert_allclose(lum, l_nu * (1 + Z)[:, None] * np.ones((1, 6)), rtol=2e-4)
    mags = njy_to_mag(to_njy(lum[1:], luminosity_distance_cm(Z[1:])))
    # absolute check: m = -2.5 log10(L_nu (1+z) / (4 pi d_L^2)) - 48.6
    dl = luminosity_distance_cm(Z[1:])
    expected = -2.5 * np.log10(l_nu * (1 + Z[1:]) / (4 * np.pi * dl**2)) - 48.6
    np.testing.assert_allclose(mags, expected[:, None] * np.ones((1, 6)), atol=1e-3)


@pytest.mark.parametrize("alpha", [-2.0, 0.0, 1.5])
def test_power_law_colours_match_direct_integration(lsst, alpha):
    table = build_projection(REST, lsst, 0.0, 3.0, igm="none")
    l_nu = (C_AA_PER_S / REST) ** alpha
    l_lam = l_nu * C_AA_PER_S / REST**2
    lum = continuum_band_luminosity(np.tile(l_lam, (Z.size, 1)), Z, table)
    for iz, z in enumerate(Z):
        ref = np.array([_direct_mean_fnu(REST, l_lam, z, w, t) for w, t in zip(lsst.wave, lsst.trans)])
        np.testing.assert_allclose(-2.5 * np.log10(lum[iz] / ref), 0.0, atol=2e-3)


def test_redshift_interpolation_is_accurate(lsst):
    """A spectrum with a sharp break: grid interpolation vs an exact table at each galaxy's z."""
    rng = np.random.default_rng(4)
    z = rng.uniform(0.0, 3.0, 12)
    spec = np.where(REST > 4000.0, 1.0, 0.2) * (1 + 0.3 * np.sin(REST / 300.0))
    lum = continuum_band_luminosity(np.tile(spec, (z.size, 1)), z, build_projection(REST, lsst, 0, 3, "madau"))
    for i, zi in enumerate(z):
        exact = continuum_band_luminosity(spec[None, :], zi[None], build_projection(REST, lsst, zi, zi, "madau"))
        good = exact[0] > 1e-6 * exact[0].max()
        np.testing.assert_allclose(-2.5 * np.log10(lum[i, good] / exact[0, good]), 0.0, atol=5e-3)


def test_line_flux_is_delta_function(lsst):
    """A line of luminosity L at lambda_l adds L T(lambda_obs) lambda_obs / int T c/lambda dlambda."""
    z = np.array([0.0, 0.5])
    lum = line_band_luminosity(np.array([[1e40], [1e40]]), np.array([6564.61]), z, lsst, igm="none")
    for iz, zz in enumerate(z):
        lam = 6564.61 * (1 + zz)
        for b, (w, t) in enumerate(zip(lsst.wave, lsst.trans)):
            expected = 1e40 * np.interp(lam, w, t, left=0, right=0) * lam / np.trapezoid(t * C_AA_PER_S / w, w)
            assert lum[iz, b] == pytest.approx(expected, rel=1e-3, abs=1e-30)


def test_igm_madau_values():
    # no absorption redward of Ly-alpha, strong absorption below the Lyman limit at z = 3
    assert igm_transmission(np.array([1216.0 * 4.01]), np.array([3.0]))[0] == 1.0
    t_forest = igm_transmission(np.array([1100.0 * 4.0]), np.array([3.0]))[0]
    assert t_forest == pytest.approx(np.exp(-3.6e-3 * (4400 / 1215.67) ** 3.46), rel=1e-6)
    assert 0.0 < igm_transmission(np.array([850.0 * 4.0]), np.array([3.0]))[0] < 0.3
    assert np.all(igm_transmission(np.array([5000.0]), np.array([3.0]), "none") == 1.0)


def test_calzetti_curve():
    assert calzetti_tau_shape(np.array([5500.0]))[0] == pytest.approx(1.0)
    # Calzetti et al. (2000) eq. 4 at 0.15 micron: k = 10.33
    assert calzetti_k(np.array([1500.0]))[0] == pytest.approx(10.33, abs=0.02)
    k = calzetti_k(np.geomspace(500, 30000, 200))
    assert np.all(np.diff(k) <= 1e-12) and np.all(k >= 0)


def test_filter_sets():
    paus = paus_filters()
    assert len(paus) == 40 and paus.names[0] == "NB455" and paus.names[-1] == "NB845"
    np.testing.assert_allclose(paus.fwhm(), 130.0, atol=2.0)
    assert paus.is_narrow().all() and not lsst_filters().is_narrow().any()
    assert len(get_filter_set("paus_lsst")) == 46
    custom = get_filter_set("custom", ["hsc_g", "DC2LSST_r"])
    assert custom.names == ["hsc_g", "DC2LSST_r"]
    with pytest.raises(FileNotFoundError, match="no_such_filter"):
        get_filter_set("custom", ["no_such_filter"])
