"""The ssp engine: SFH weights, composite = SSP time integral, metallicity interpolation, lines."""

import numpy as np
import pytest

from rail.deepz.simulation.constants import L_SUN_ERG_S
from rail.deepz.simulation.emission_lines import LINE_NAMES, line_luminosities, oxygen_ratios
from rail.deepz.simulation.engines import SSPEngine
from rail.deepz.simulation.sfh import sfh_weights
from rail.deepz.simulation.ssp_grid import SSPGrid, load_popstar, load_ssp_grid, save_ssp_grid


@pytest.fixture(scope="module")
def grid():
    return load_popstar()


@pytest.fixture(scope="module")
def engine(grid):
    return SSPEngine(grid, (700.0, 12000.0), nebular=False)


def test_popstar_grid_shape(grid):
    assert grid.stellar.shape == (6, 106, grid.wavelength.size)
    assert np.all(np.diff(grid.wavelength) > 0)
    np.testing.assert_allclose(grid.metallicity, [0.0001, 0.0004, 0.004, 0.008, 0.02, 0.05])
    # Q(H) per Msun at Z = 0.02 (notes/ssp_sources.md): 46.62, 46.35, 44.04 dex at 1, 3, 10 Myr
    logq = np.log10(grid.ionising_photon_rate()[4])
    for age, expected in ((6.0, 46.62), (6.48, 46.35), (7.0, 44.04)):
        assert np.interp(age, grid.log_age_yr, logq) == pytest.approx(expected, abs=0.06)


@pytest.mark.parametrize("kind", ["tau", "delayed"])
def test_sfh_weights_normalised(kind):
    ages = 10 ** (np.linspace(5, 10.18, 106) - 9)
    rng = np.random.default_rng(0)
    n = 500
    tage = rng.uniform(1, 13.8, n)
    w = sfh_weights(ages, tage, rng.uniform(0, 0.9, n) * tage, rng.uniform(0.1, 12, n), rng.uniform(0, 1, n), kind)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(w >= 0)


def test_constant_sfr_reproduces_ssp_time_integral(grid, engine):
    """const = 1 from t = 0 to T (a grid age): composite = (1/T) int_0^T L(t) dt of the SSPs."""
    ages = grid.age_gyr
    for j in (60, 83, 100):
        tage = ages[j]
        w = sfh_weights(ages, np.array([tage]), np.array([0.0]), np.array([1.0]), np.array([1.0]))
        spec, _ = engine.composite(w, np.array([np.log10(0.02 / grid.zsun)]))
        ssp = grid.stellar[4][:, np.isin(grid.wavelength, engine.rest_wave)] * L_SUN_ERG_S
        reference = (ssp[0] * ages[0] + np.trapezoid(ssp[: j + 1], ages[: j + 1], axis=0)) / tage
        np.testing.assert_allclose(spec[0], reference, rtol=1e-9)


def test_tau_sfh_matches_numerical_integral(grid, engine):
    """Exponential SFH: weights vs brute-force quadrature of SFR(t) x linearly interpolated SSPs."""
    ages = grid.age_gyr
    tage, start, tau, const = 9.0, 1.5, 2.0, 0.1
    w = sfh_weights(ages, np.array([tage]), np.array([start]), np.array([tau]), np.array([const]))
    spec, _ = engine.composite(w, np.array([0.0]))
    t = np.concatenate([np.linspace(0, ages[0], 50), np.geomspace(ages[0], tage - start, 200000)[1:]])
    u = tage - start - t
    sfr = (1 - const) * np.exp(-u / tau) / (tau * (1 - np.exp(-(tage - start) / tau))) + const / (tage - start)
    i, f = engine.metallicity_weights(np.array([0.0]))
    cube = (1 - f[0]) * engine._spectra[i[0]] + f[0] * engine._spectra[i[0] + 1]
    sel = [100, 300, 500]  # a few wavelengths
    for s in sel:
        lt = np.interp(t, ages, cube[:, s])
        assert spec[0, s] == pytest.approx(np.trapezoid(sfr * lt, t), rel=2e-3)


def test_metallicity_interpolation_hits_grid_points(grid, engine):
    w = np.zeros((1, grid.log_age_yr.size))
    w[0, 70] = 1.0
    for iz in (3, 4):
        spec, _ = engine.composite(w, np.array([np.log10(grid.metallicity[iz] / grid.zsun)]))
        ssp = grid.stellar[iz, 70][np.isin(grid.wavelength, engine.rest_wave)] * L_SUN_ERG_S
        np.testing.assert_allclose(spec[0], ssp, rtol=1e-9)


def test_halpha_of_constant_sfr(grid):
    """1 Msun/yr for 100 Myr at Z = 0.02: L(H-alpha) ~ 1.8e41 erg/s, EW(H-alpha) ~ 300 A."""
    eng = SSPEngine(grid, (700.0, 12000.0), nebular=True)
    w = sfh_weights(grid.age_gyr, np.array([0.1]), np.array([0.0]), np.array([1.0]), np.array([1.0]))
    params = dict(tage=np.array([0.1]), sf_start=np.array([0.0]), tau=np.array([1.0]), const=np.array([1.0]),
                  logzsol=np.array([np.log10(0.02 / grid.zsun)]), dust2=np.array([0.0]), gas_logu=np.array([-3.0]))
    spec, lines = eng.rest_frame(params)
    mass = 1e8  # 1 Msun/yr x 100 Myr
    halpha = lines[0, LINE_NAMES.index("Halpha")] * mass
    assert halpha == pytest.approx(1.8e41, rel=0.15)
    cont = np.interp(6564.6, eng.rest_wave, spec[0]) * mass
    assert 200 < halpha / cont < 450
    assert np.all(w >= 0)


def test_oxygen_lines_depend_on_u_and_z():
    oii_lo, oiii_lo = oxygen_ratios(np.array([0.0]), np.array([-3.5]))
    oii_hi, oiii_hi = oxygen_ratios(np.array([0.0]), np.array([-2.0]))
    assert oiii_hi / oii_hi > 10 * oiii_lo / oii_lo
    _, oiii_metal_poor = oxygen_ratios(np.array([-0.5]), np.array([-2.5]))
    _, oiii_solar = oxygen_ratios(np.array([0.2]), np.array([-2.5]))
    assert oiii_metal_poor > oiii_solar
    lum = line_luminosities(np.array([1e53]), np.array([0.0]), np.array([-2.5]), lya_escape=0.0)
    assert lum[0, LINE_NAMES.index("Lya")] == 0.0
    assert lum[0, LINE_NAMES.index("Halpha")] / lum[0, LINE_NAMES.index("Hbeta")] == pytest.approx(2.86)


def test_grid_file_round_trip(tmp_path, grid):
    small = SSPGrid(grid.wavelength, grid.log_age_yr[:5], grid.metallicity[:2], grid.stellar[:2, :5],
                    grid.nebular[:2, :5], grid.zsun, "test")
    path = tmp_path / "grid.npz"
    save_ssp_grid(small, path)
    back = load_ssp_grid(path)
    np.testing.assert_allclose(back.stellar, small.stellar, rtol=1e-6)
    assert back.zsun == small.zsun and back.source == "test"
    with pytest.raises(FileNotFoundError):
        load_ssp_grid(tmp_path / "missing.npz")
